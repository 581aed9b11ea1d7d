-- Orders, their lines, the checkout saga's log, and the outbox of the events they cause.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL. Times are BIGINT microseconds since the epoch.

-- One row per order. `status` is what customers see; `saga_step` is where the checkout saga stands (the
-- next thing to do), so that a restarted service resumes from it:
--   PENDING   + reserve | pay | commit | refund | release   checkout in progress (refund/release: compensating)
--   CONFIRMED + done | cancel                               confirmed (cancel: the refund is under way)
--   FAILED    + done,  CANCELLED + done                     final
-- `step_time` is when the step was last entered or claimed: the recovery task resumes in-flight orders whose
-- step is older than a threshold.
CREATE TABLE orders (
    id               TEXT    PRIMARY KEY,
    customer_id      TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'FAILED', 'CANCELLED')),
    saga_step        TEXT    NOT NULL
        CHECK (saga_step IN ('reserve', 'pay', 'commit', 'refund', 'release', 'done', 'cancel')),
    step_time        BIGINT  NOT NULL,
    currency         TEXT    NOT NULL,
    total_minor      BIGINT  NOT NULL CHECK (total_minor >= 0),
    ship_name        TEXT    NOT NULL,
    ship_line1       TEXT    NOT NULL,
    ship_line2       TEXT    NOT NULL,
    ship_city        TEXT    NOT NULL,
    ship_region      TEXT    NOT NULL,
    ship_postal_code TEXT    NOT NULL,
    ship_country     TEXT    NOT NULL,
    payment_method   TEXT    NOT NULL,
    payment_id       TEXT    NOT NULL,
    failure_reason   TEXT    NOT NULL,
    cancel_reason    TEXT    NOT NULL,
    from_cart        BOOLEAN NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    request_hash     TEXT    NOT NULL,
    create_time      BIGINT  NOT NULL,
    update_time      BIGINT  NOT NULL,
    UNIQUE (customer_id, idempotency_key)
);

-- Keyset pagination, newest first: all orders (admins) and one customer's.
CREATE INDEX orders_newest ON orders (create_time DESC, id DESC);
CREATE INDEX orders_customer_newest ON orders (customer_id, create_time DESC, id DESC);
-- The recovery task's scan of in-flight sagas.
CREATE INDEX orders_in_flight ON orders (status, saga_step, step_time);

-- The lines of an order, priced when it was placed.
CREATE TABLE order_items (
    order_id         TEXT   NOT NULL REFERENCES orders (id),
    line_no          BIGINT NOT NULL,
    product_id       TEXT   NOT NULL,
    sku              TEXT   NOT NULL,
    name             TEXT   NOT NULL,
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_minor BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, product_id)
);

-- Every move of a saga, for operators: from which step to which, and why.
CREATE TABLE saga_log (
    id          TEXT   PRIMARY KEY,
    order_id    TEXT   NOT NULL REFERENCES orders (id),
    from_step   TEXT   NOT NULL,
    to_step     TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    note        TEXT   NOT NULL,
    create_time BIGINT NOT NULL
);

CREATE INDEX saga_log_order ON saga_log (order_id, create_time);

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
