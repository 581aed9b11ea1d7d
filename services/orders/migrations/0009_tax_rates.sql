-- Tax rates by destination country (TaxRateService). The shop's prices include tax: a rate changes no total,
-- but an order shows the tax its total includes, at its shipping country's rate when it was placed.
CREATE TABLE tax_rates (
    country TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    rate_basis_points BIGINT NOT NULL CHECK (rate_basis_points BETWEEN 0 AND 10000),
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL
);

-- The tax an order's total includes, kept as placed; an empty name: its country had no rate.
ALTER TABLE orders ADD COLUMN tax_name TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN tax_rate_basis_points BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN tax_minor BIGINT NOT NULL DEFAULT 0 CHECK (tax_minor >= 0);
