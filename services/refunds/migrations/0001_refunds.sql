-- Per payment: what it captured (from the payments service, when its first refund was requested) and how
-- much of it this service's non-failed refunds (pending or completed) take. A refund reserves its amount here
-- with one conditional UPDATE, so concurrent refunds never take the total beyond the captured amount.
CREATE TABLE payment_refund_totals (
    payment_id TEXT PRIMARY KEY,
    currency TEXT NOT NULL,
    captured_minor BIGINT NOT NULL,
    refunded_minor BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    CHECK (refunded_minor >= 0)
);

-- Refunds: 'PENDING' while the payments service is asked (the amount reserved above), then 'COMPLETED' or
-- 'FAILED' (the amount given back to the total). `requester` + `idempotency_key` is the idempotency key as
-- Stripe defines it, with the fingerprint of the request that first used it. `lease_until` (microseconds)
-- says until when one worker drives a pending refund; 0 when nobody does.
CREATE TABLE refunds (
    id TEXT PRIMARY KEY,
    payment_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    failure_reason TEXT NOT NULL,
    requester TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    UNIQUE (requester, idempotency_key)
);
CREATE INDEX refunds_payment ON refunds (payment_id, id);
CREATE INDEX refunds_pending ON refunds (status, lease_until);

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
