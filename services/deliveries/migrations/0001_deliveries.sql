-- Shipments of confirmed orders, what goes in each parcel, and each shipment's tracking history.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL. Times are BIGINT microseconds since the epoch,
-- ids are TEXT (UUIDv7 for shipments: ordering by id is ordering by creation).

-- One per order (order_id is unique: a redelivered or repeated order.confirmed makes no second shipment).
-- status is the state's name (PENDING, SHIPPED, ...). Every change writes this row first: on PostgreSQL that
-- locks the shipment, on SQLite it takes the write lock, so changes to one shipment are serialised.
CREATE TABLE shipments (
    id              TEXT   PRIMARY KEY,
    order_id        TEXT   NOT NULL UNIQUE,
    customer_id     TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    name            TEXT   NOT NULL,
    line1           TEXT   NOT NULL,
    line2           TEXT   NOT NULL,
    city            TEXT   NOT NULL,
    region          TEXT   NOT NULL,
    postal_code     TEXT   NOT NULL,
    country         TEXT   NOT NULL,
    carrier         TEXT   NOT NULL,
    tracking_number TEXT   NOT NULL,
    create_time     BIGINT NOT NULL,
    update_time     BIGINT NOT NULL,
    ship_time       BIGINT,
    deliver_time    BIGINT
);
-- A customer's shipments, newest first.
CREATE INDEX shipments_by_customer ON shipments (customer_id, id);

-- The order's lines as they were confirmed, in the order's order.
CREATE TABLE shipment_items (
    shipment_id TEXT    NOT NULL REFERENCES shipments (id),
    line        INTEGER NOT NULL,
    product_id  TEXT    NOT NULL,
    sku         TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (shipment_id, line)
);

-- The history, append-only. seq numbers a shipment's entries in the order they were recorded; occur_time is
-- when it happened (entries are shown in that order). origin is 'carrier' for a carrier's event and
-- 'service' for the service's own entries (created, dispatched, order cancelled): only carrier events decide
-- whether a later-arriving carrier event is late.
CREATE TABLE tracking_events (
    shipment_id      TEXT    NOT NULL REFERENCES shipments (id),
    seq              INTEGER NOT NULL,
    origin           TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    location         TEXT    NOT NULL,
    description      TEXT    NOT NULL,
    occur_time       BIGINT  NOT NULL,
    record_time      BIGINT  NOT NULL,
    carrier_event_id TEXT,
    PRIMARY KEY (shipment_id, seq)
);
-- A carrier's event is recorded once per shipment, however often its webhook is delivered.
CREATE UNIQUE INDEX tracking_events_carrier_event ON tracking_events (shipment_id, carrier_event_id)
    WHERE carrier_event_id IS NOT NULL;

-- The inbox: ids of events this service has handled, written in the transaction of their effect.
CREATE TABLE inbox (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    handle_time BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
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
