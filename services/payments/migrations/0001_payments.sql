-- Payments: one row per charge attempt that reached a result (captured or failed). Amounts in minor units.
-- `refunded_minor` is the amount given back or being given back (reserved by a refund in flight); it never
-- exceeds `amount_minor`. `ledger_posted` says whether the capture's ledger transaction is recorded.
CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    refunded_minor BIGINT NOT NULL,
    status TEXT NOT NULL,
    payment_method TEXT NOT NULL,
    failure_code TEXT NOT NULL,
    failure_reason TEXT NOT NULL,
    processor_reference TEXT NOT NULL,
    ledger_posted BOOLEAN NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor)
);
CREATE INDEX payments_ledger_unposted ON payments (ledger_posted, create_time);

-- Idempotency keys as Stripe defines them: scoped to the customer, with the fingerprint of the request that
-- first used the key, its state ('started' while the first request runs, 'finished' after) and its result.
CREATE TABLE idempotency_keys (
    customer_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    payment_id TEXT,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    PRIMARY KEY (customer_id, idempotency_key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (create_time);

-- Refunds applied to payments, one per refund id of the refunds service: 'pending' while the processor is
-- asked (its amount already reserved in payments.refunded_minor), 'completed' after.
CREATE TABLE refunds_applied (
    refund_id TEXT PRIMARY KEY,
    payment_id TEXT NOT NULL REFERENCES payments (id),
    currency TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    processor_reference TEXT NOT NULL,
    ledger_posted BOOLEAN NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL
);
CREATE INDEX refunds_applied_payment ON refunds_applied (payment_id);
CREATE INDEX refunds_applied_ledger_unposted ON refunds_applied (ledger_posted, create_time);

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
