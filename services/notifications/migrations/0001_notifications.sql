-- The notifications service: whom it can address, the webhook endpoints, and the delivery log.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL. Times are BIGINT microseconds since the epoch,
-- ids are TEXT (UUIDv7, or other services' ids).

-- Users as user.registered told us (event-carried state: the service never asks auth).
CREATE TABLE recipients (
    user_id      TEXT   PRIMARY KEY,
    email        TEXT   NOT NULL,
    display_name TEXT   NOT NULL,
    locale       TEXT   NOT NULL,
    update_time  BIGINT NOT NULL
);

-- Which customer and order a payment belongs to, from order.confirmed: refund.completed names only the
-- payment.
CREATE TABLE payments (
    payment_id  TEXT   PRIMARY KEY,
    order_id    TEXT   NOT NULL,
    customer_id TEXT   NOT NULL,
    create_time BIGINT NOT NULL
);

-- Admin-managed webhook endpoints. event_types is a space-separated list; the secret signs deliveries.
CREATE TABLE webhook_endpoints (
    id          TEXT   PRIMARY KEY,
    url         TEXT   NOT NULL,
    event_types TEXT   NOT NULL,
    secret      TEXT   NOT NULL,
    create_time BIGINT NOT NULL
);

CREATE INDEX webhook_endpoints_newest ON webhook_endpoints (create_time DESC, id DESC);

-- The delivery log, and the dispatcher's queue: PENDING rows whose next_attempt_time has come are sent.
-- Emails keep their rendered subject and bodies, webhooks their JSON body and endpoint.
CREATE TABLE notifications (
    id                TEXT    PRIMARY KEY,
    user_id           TEXT    NOT NULL,
    channel           TEXT    NOT NULL CHECK (channel IN ('EMAIL', 'WEBHOOK')),
    event_type        TEXT    NOT NULL,
    event_id          TEXT    NOT NULL,
    recipient         TEXT    NOT NULL,
    subject           TEXT    NOT NULL,
    body_text         TEXT    NOT NULL,
    body_html         TEXT    NOT NULL,
    endpoint_id       TEXT    NOT NULL,
    payload           TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('PENDING', 'SENT', 'FAILED', 'SKIPPED', 'LOGGED')),
    attempts          INTEGER NOT NULL,
    last_error        TEXT    NOT NULL,
    next_attempt_time BIGINT  NOT NULL,
    create_time       BIGINT  NOT NULL,
    update_time       BIGINT  NOT NULL
);

CREATE INDEX notifications_due ON notifications (status, next_attempt_time);
CREATE INDEX notifications_newest ON notifications (create_time DESC, id DESC);
CREATE INDEX notifications_user_newest ON notifications (user_id, create_time DESC, id DESC);
