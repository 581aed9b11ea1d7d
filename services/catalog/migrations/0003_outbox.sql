-- The transactional outbox: events written in the same transaction as the change they report.
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
CREATE INDEX outbox_unsent ON outbox (sent_time, create_time, id);
