-- What each discount code brought in, per day, code and currency: confirmed orders that used it, what it took
-- off them and what they cost (order.confirmed carries the code). Rebuilt from the event log like the rest.
CREATE TABLE daily_discount_codes (
    day            BIGINT NOT NULL,
    code           TEXT   NOT NULL,
    currency       TEXT   NOT NULL,
    orders         BIGINT NOT NULL,
    discount_minor BIGINT NOT NULL,
    gross_minor    BIGINT NOT NULL,
    PRIMARY KEY (day, code, currency)
);
