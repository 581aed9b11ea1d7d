-- The inbox: ids of events this service has handled, written in the transaction of their effect.
CREATE TABLE inbox (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    handle_time BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
