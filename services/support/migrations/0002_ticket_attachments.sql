-- Files attached to tickets. Their bytes are in the support service's blob store under
-- tickets/<ticket_id>/<id>; a row exists only for bytes that were stored first.
-- author_role is CUSTOMER or AGENT, as for messages.
CREATE TABLE ticket_attachments (
    id           TEXT   PRIMARY KEY,
    ticket_id    TEXT   NOT NULL REFERENCES tickets (id),
    filename     TEXT   NOT NULL,
    content_type TEXT   NOT NULL,
    size_bytes   BIGINT NOT NULL,
    author_role  TEXT   NOT NULL,
    author_id    TEXT   NOT NULL,
    create_time  BIGINT NOT NULL
);
CREATE INDEX ticket_attachments_by_ticket ON ticket_attachments (ticket_id, create_time, id);
