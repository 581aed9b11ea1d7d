-- Discount codes that take the shipping off: `free_shipping`, a third kind beside a percentage and an amount.
-- A CHECK cannot be changed in place on SQLite, so both tables are built anew (portable SQL: the same steps on
-- PostgreSQL), the rows copied, the old tables dropped (the redemptions first: they reference the codes) and the
-- new ones renamed, which on SQLite also rewrites the redemptions' reference to the codes' new name.
-- (PostgreSQL keeps the names its constraints got here, e.g. `discount_codes_new_check`.)

CREATE TABLE discount_codes_new (
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
    free_shipping     BOOLEAN NOT NULL,
    -- Exactly one kind: a percentage, an amount, or free shipping.
    CHECK ((CASE WHEN percent_off > 0 THEN 1 ELSE 0 END) + (CASE WHEN amount_off_minor > 0 THEN 1 ELSE 0 END)
           + (CASE WHEN free_shipping THEN 1 ELSE 0 END) = 1)
);

INSERT INTO discount_codes_new (code, description, percent_off, amount_off_minor, amount_currency, minimum_minor,
    minimum_currency, start_time, end_time, max_redemptions, once_per_customer, disabled, times_redeemed,
    create_time, update_time, free_shipping)
SELECT code, description, percent_off, amount_off_minor, amount_currency, minimum_minor, minimum_currency,
    start_time, end_time, max_redemptions, once_per_customer, disabled, times_redeemed, create_time, update_time,
    FALSE
FROM discount_codes;

CREATE TABLE discount_redemptions_new (
    order_id    TEXT   PRIMARY KEY REFERENCES orders (id),
    code        TEXT   NOT NULL REFERENCES discount_codes_new (code),
    customer_id TEXT   NOT NULL,
    create_time BIGINT NOT NULL
);

INSERT INTO discount_redemptions_new (order_id, code, customer_id, create_time)
SELECT order_id, code, customer_id, create_time FROM discount_redemptions;

DROP TABLE discount_redemptions;
DROP TABLE discount_codes;
ALTER TABLE discount_codes_new RENAME TO discount_codes;
ALTER TABLE discount_redemptions_new RENAME TO discount_redemptions;

CREATE INDEX discount_codes_newest ON discount_codes (create_time DESC, code DESC);
CREATE INDEX discount_redemptions_customer ON discount_redemptions (code, customer_id);
