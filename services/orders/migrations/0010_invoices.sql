-- Invoices and credit notes (InvoiceService): an invoice for every order, written once its stock is sold, just
-- before the move that confirms it; a credit note for every refund of an invoiced order. Numbers run without gaps in a series per kind and
-- calendar year: a number is taken in the transaction that writes its document (a rolled-back one takes none).
-- Orders confirmed before this migration have no invoice.
CREATE TABLE invoice_series (
    -- "INV-2026", "CN-2026".
    series TEXT PRIMARY KEY,
    -- The last number taken in the series.
    last_number BIGINT NOT NULL CHECK (last_number > 0),
    -- When that number was issued: a later number is never issued earlier, though its transaction read the clock
    -- before it queued for the series.
    last_issue_time BIGINT NOT NULL
);

-- Documents never change. The tax columns are those of orders: an empty name, no tax; a NULL rate, no such part.
CREATE TABLE invoices (
    number TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
    order_id TEXT NOT NULL REFERENCES orders (id),
    customer_id TEXT NOT NULL,
    -- A credit note: the invoice it corrects and the refund it documents; empty on an invoice.
    corrected_invoice TEXT NOT NULL DEFAULT '',
    refund_id TEXT NOT NULL DEFAULT '',
    currency TEXT NOT NULL,
    total_minor BIGINT NOT NULL CHECK (total_minor >= 0),
    tax_name TEXT NOT NULL DEFAULT '',
    tax_rate_basis_points BIGINT,
    tax_taxable_minor BIGINT NOT NULL DEFAULT 0,
    tax_minor BIGINT NOT NULL DEFAULT 0 CHECK (tax_minor >= 0),
    reduced_tax_rate_basis_points BIGINT,
    reduced_taxable_minor BIGINT NOT NULL DEFAULT 0,
    reduced_tax_minor BIGINT NOT NULL DEFAULT 0 CHECK (reduced_tax_minor >= 0),
    issue_time BIGINT NOT NULL,
    -- Who issued it, as set then (invoice_issuer); an empty name: not set.
    issuer_name TEXT NOT NULL DEFAULT '',
    issuer_line1 TEXT NOT NULL DEFAULT '',
    issuer_line2 TEXT NOT NULL DEFAULT '',
    issuer_city TEXT NOT NULL DEFAULT '',
    issuer_region TEXT NOT NULL DEFAULT '',
    issuer_postal_code TEXT NOT NULL DEFAULT '',
    issuer_country TEXT NOT NULL DEFAULT '',
    issuer_vat_id TEXT NOT NULL DEFAULT ''
);

-- One invoice per order, one credit note per refund: a redelivered event or a replayed move issues nothing twice.
CREATE UNIQUE INDEX invoices_one_per_order ON invoices (order_id) WHERE kind = 'invoice';
CREATE UNIQUE INDEX credit_notes_one_per_refund ON invoices (refund_id) WHERE kind = 'credit_note';
-- ListInvoices: the latest first, all or one customer's.
CREATE INDEX invoices_by_order ON invoices (order_id);
CREATE INDEX invoices_by_issue_time ON invoices (issue_time, number);
CREATE INDEX invoices_by_customer ON invoices (customer_id, issue_time, number);

-- Who issues the shop's invoices (SetInvoiceIssuer): one row at most, copied onto each document as it is issued.
CREATE TABLE invoice_issuer (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    line1 TEXT NOT NULL,
    line2 TEXT NOT NULL,
    city TEXT NOT NULL,
    region TEXT NOT NULL,
    postal_code TEXT NOT NULL,
    country TEXT NOT NULL,
    vat_id TEXT NOT NULL,
    update_time BIGINT NOT NULL
);
