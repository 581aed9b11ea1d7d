-- Discount codes, the orders that use them now, and what an order's code took off.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL. Times are BIGINT microseconds since the epoch.

-- One row per code. `code` is upper case. A code takes `percent_off` (1 to 99) or `amount_off_minor` (in
-- `amount_currency`) off; the other is 0 (and ''). `minimum_minor` 0 means any subtotal; `minimum_currency` is
-- '' then. `end_time` 0 means no end, `max_redemptions` 0 no limit. `times_redeemed` counts the rows of
-- `discount_redemptions` for the code: both change in the transaction that places or ends an order.
CREATE TABLE discount_codes (
    code              TEXT    PRIMARY KEY,
    description       TEXT    NOT NULL,
    percent_off       BIGINT  NOT NULL CHECK (percent_off BETWEEN 0 AND 99),
    amount_off_minor  BIGINT  NOT NULL CHECK (amount_off_minor >= 0),
    amount_currency   TEXT    NOT NULL,
    minimum_minor     BIGINT  NOT NULL CHECK (minimum_minor >= 0),
    minimum_currency  TEXT    NOT NULL,
    start_time        BIGINT  NOT NULL,
    end_time          BIGINT  NOT NULL,
    max_redemptions   BIGINT  NOT NULL CHECK (max_redemptions >= 0),
    once_per_customer BOOLEAN NOT NULL,
    disabled          BOOLEAN NOT NULL,
    times_redeemed    BIGINT  NOT NULL CHECK (times_redeemed >= 0),
    create_time       BIGINT  NOT NULL,
    update_time       BIGINT  NOT NULL,
    CHECK ((percent_off > 0) <> (amount_off_minor > 0))
);

-- Newest first, for the staff's list.
CREATE INDEX discount_codes_newest ON discount_codes (create_time DESC, code DESC);

-- The orders holding a use of a code: written when the order is placed, deleted when it fails or is cancelled
-- (which gives the use back). A customer's uses of a once-per-customer code are found by (code, customer_id).
CREATE TABLE discount_redemptions (
    order_id    TEXT   PRIMARY KEY REFERENCES orders (id),
    code        TEXT   NOT NULL REFERENCES discount_codes (code),
    customer_id TEXT   NOT NULL,
    create_time BIGINT NOT NULL
);

CREATE INDEX discount_redemptions_customer ON discount_redemptions (code, customer_id);

-- What an order's code took off its subtotal (the sum of its lines); `total_minor` is what the customer pays.
ALTER TABLE orders ADD COLUMN discount_minor BIGINT NOT NULL DEFAULT 0 CHECK (discount_minor >= 0);
ALTER TABLE orders ADD COLUMN discount_code TEXT NOT NULL DEFAULT '';
