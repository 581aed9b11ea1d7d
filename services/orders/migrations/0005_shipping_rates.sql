-- Shipping rates, and what an order was charged for shipping.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL. Times are BIGINT microseconds since the epoch.

-- One row per rate. `countries` holds ISO 3166-1 alpha-2 codes, upper case, sorted and separated by single
-- spaces ('' for every country). `free_from_minor` 0 means never free; otherwise it is in `currency`.
-- A shop has a handful of rates: checkout reads them all.
CREATE TABLE shipping_rates (
    id              TEXT    PRIMARY KEY,
    name            TEXT    NOT NULL,
    countries       TEXT    NOT NULL,
    currency        TEXT    NOT NULL,
    price_minor     BIGINT  NOT NULL CHECK (price_minor >= 0),
    free_from_minor BIGINT  NOT NULL CHECK (free_from_minor >= 0),
    disabled        BOOLEAN NOT NULL,
    create_time     BIGINT  NOT NULL,
    update_time     BIGINT  NOT NULL
);

-- What the order pays for shipping (in its currency; `total_minor` includes it), and the rate charged with its
-- name then ('' when the shop had no rates).
ALTER TABLE orders ADD COLUMN shipping_minor BIGINT NOT NULL DEFAULT 0 CHECK (shipping_minor >= 0);
ALTER TABLE orders ADD COLUMN shipping_rate_id TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN shipping_rate_name TEXT NOT NULL DEFAULT '';
