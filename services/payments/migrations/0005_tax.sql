-- The tax a payment's amount includes (an order's tax, as orders asks): the ledger books it as owed to the tax
-- authorities rather than as sales, and each refund gives back its share. Payments from before: none.
ALTER TABLE payments ADD COLUMN tax_minor BIGINT NOT NULL DEFAULT 0 CHECK (tax_minor >= 0 AND tax_minor <= amount_minor);
