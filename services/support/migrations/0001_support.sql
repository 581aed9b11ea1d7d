-- Support tickets and their conversations.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL. Times are BIGINT microseconds since the epoch,
-- ids are TEXT (UUIDv7 for tickets).

-- customer_id is empty for a contact-form ticket, which has an email and a name instead. status is the state's
-- name (OPEN, PENDING, RESOLVED). Every change writes this row first: on PostgreSQL that locks the ticket, on
-- SQLite it takes the write lock, so one ticket's messages are numbered without gaps or clashes.
CREATE TABLE tickets (
    id          TEXT   PRIMARY KEY,
    customer_id TEXT   NOT NULL,
    email       TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    subject     TEXT   NOT NULL,
    order_id    TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL
);
-- A customer's tickets and every ticket, the most recently changed first.
CREATE INDEX tickets_by_customer ON tickets (customer_id, update_time, id);
CREATE INDEX tickets_by_update ON tickets (update_time, id);

-- The conversation, append-only; seq numbers a ticket's messages from 1.
CREATE TABLE ticket_messages (
    ticket_id   TEXT    NOT NULL REFERENCES tickets (id),
    seq         INTEGER NOT NULL,
    author_role TEXT    NOT NULL,
    author_id   TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    create_time BIGINT  NOT NULL,
    PRIMARY KEY (ticket_id, seq)
);

-- The transactional outbox: events written in the same transaction as the change they report. The relay's
-- index holds only the unsent ones (a partial index), so it is as small as the backlog.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    event_type TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload TEXT NOT NULL,
    traceparent TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    sent_time BIGINT
);
CREATE INDEX outbox_unsent ON outbox (create_time, id) WHERE sent_time IS NULL;
