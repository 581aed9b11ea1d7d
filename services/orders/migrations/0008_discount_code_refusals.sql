-- How many discount codes each customer had refused in the current hour (checkout and preview together): past
-- a limit every code is refused until the hour is over, so codes cannot be found by guessing. One row per
-- customer who was ever refused one, reset when a new hour's first refusal counts.
CREATE TABLE discount_code_refusals (
    customer_id  TEXT    PRIMARY KEY,
    window_start BIGINT  NOT NULL,
    refused      INTEGER NOT NULL CHECK (refused > 0)
);
