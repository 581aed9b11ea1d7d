-- Analytics: the history of consumed events and the aggregates derived from it.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL. Times are BIGINT microseconds since the epoch; days
-- are BIGINT days since 1970-01-01 (UTC); money is BIGINT minor units beside its currency code.

-- The inbox: ids of events this service has handled, written in the transaction of their effect.
CREATE TABLE inbox (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    handle_time BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- Every consumed event, as received: the source of truth the aggregates are rebuilt from.
-- (BYTEA: a blob on both engines; SQLite stores blobs as given whatever the declared type.)
CREATE TABLE event_log (
    id         TEXT   PRIMARY KEY,
    event_type TEXT   NOT NULL,
    event_time BIGINT NOT NULL,
    payload    BYTEA  NOT NULL
);
CREATE INDEX event_log_replay ON event_log (event_time, id);

-- One row that every change of the aggregates writes first: on PostgreSQL that locks it, on SQLite it takes
-- the write lock, so a rebuild and the consumer never interleave.
CREATE TABLE aggregate_lock (
    id INTEGER PRIMARY KEY
);
INSERT INTO aggregate_lock (id) VALUES (1);

-- Sales per day and currency. refunded_minor counts refund.completed only; cancellations have their columns.
CREATE TABLE daily_sales (
    day              BIGINT NOT NULL,
    currency         TEXT   NOT NULL,
    orders           BIGINT NOT NULL,
    gross_minor      BIGINT NOT NULL,
    cancelled_orders BIGINT NOT NULL,
    cancelled_minor  BIGINT NOT NULL,
    refunds          BIGINT NOT NULL,
    refunded_minor   BIGINT NOT NULL,
    captured_minor   BIGINT NOT NULL,
    PRIMARY KEY (day, currency)
);

-- Units and line totals per day, product and currency: sold on confirmation, cancelled on cancellation.
CREATE TABLE daily_product_sales (
    day             BIGINT NOT NULL,
    product_id      TEXT   NOT NULL,
    currency        TEXT   NOT NULL,
    units_sold      BIGINT NOT NULL,
    sold_minor      BIGINT NOT NULL,
    units_cancelled BIGINT NOT NULL,
    cancelled_minor BIGINT NOT NULL,
    PRIMARY KEY (day, product_id, currency)
);

-- The cart funnel per day: carts started (a product put into an empty cart), orders confirmed from a cart.
CREATE TABLE daily_carts (
    day               BIGINT PRIMARY KEY,
    carts_started     BIGINT NOT NULL,
    orders_from_carts BIGINT NOT NULL
);

-- A product's sku and name as on its latest order (latest by event time, then event id, so a rebuild picks
-- the same one whatever order the events first arrived in).
CREATE TABLE products (
    product_id TEXT   PRIMARY KEY,
    sku        TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    seen_time  BIGINT NOT NULL,
    seen_event TEXT   NOT NULL
);
