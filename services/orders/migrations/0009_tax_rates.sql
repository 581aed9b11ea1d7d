-- Tax rates by destination country (TaxRateService). The shop's prices include tax: a rate changes no total,
-- but an order shows the tax its total includes, at its shipping country's rates when it was placed. A country
-- may have a reduced rate for products in the reduced tax class (NULL: none, they pay the standard rate).
CREATE TABLE tax_rates (
    country TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    rate_basis_points BIGINT NOT NULL CHECK (rate_basis_points BETWEEN 0 AND 10000),
    reduced_rate_basis_points BIGINT CHECK (reduced_rate_basis_points BETWEEN 0 AND 10000),
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL
);

-- The tax an order's total includes, kept as placed: an empty name, its country had no rate; else the part at the
-- standard rate (NULL rate: every product was in the reduced class) and the part at the reduced rate (NULL rate:
-- none). Each part: its rate, what was charged at it (tax included) and the tax in that.
ALTER TABLE orders ADD COLUMN tax_name TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN tax_rate_basis_points BIGINT;
ALTER TABLE orders ADD COLUMN tax_taxable_minor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN tax_minor BIGINT NOT NULL DEFAULT 0 CHECK (tax_minor >= 0);
ALTER TABLE orders ADD COLUMN reduced_tax_rate_basis_points BIGINT;
ALTER TABLE orders ADD COLUMN reduced_taxable_minor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN reduced_tax_minor BIGINT NOT NULL DEFAULT 0 CHECK (reduced_tax_minor >= 0);
