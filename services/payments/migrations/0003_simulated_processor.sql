-- What the SimulatedProcessor keeps on its side, as a real processor would on its own servers: its charges and
-- refunds, so that a charge made before a restart, or by another replica, can still be refunded. Only the
-- simulator reads or writes these tables; a real processor adapter has no use for them.

-- One per charge request (idempotency key): how it ended, and for an approved charge what was refunded of it.
CREATE TABLE sim_charges (
    idempotency_key TEXT    PRIMARY KEY,
    approved        BOOLEAN NOT NULL,
    -- The charge's reference; empty when declined.
    reference       TEXT    NOT NULL,
    -- Why it was declined (code, message); empty when approved.
    decline_code    TEXT    NOT NULL,
    decline_message TEXT    NOT NULL,
    amount_minor    BIGINT  NOT NULL,
    refunded_minor  BIGINT  NOT NULL CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor)
);
CREATE UNIQUE INDEX sim_charges_by_reference ON sim_charges (reference) WHERE approved;

-- One per refund request (idempotency key).
CREATE TABLE sim_refunds (
    idempotency_key  TEXT   PRIMARY KEY,
    charge_reference TEXT   NOT NULL,
    reference        TEXT   NOT NULL,
    amount_minor     BIGINT NOT NULL
);
