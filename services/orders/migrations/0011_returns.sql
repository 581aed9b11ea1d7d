-- Returns (ReturnService): a customer sends back items of a delivered order within the shop's return window.

-- When the carrier delivered each order, from the deliveries' `shipment.delivered` (the first one counts). A return
-- locks its order's row here, so the returns of one order are written one at a time. Orders delivered before this
-- migration have none, and cannot be returned through the API.
CREATE TABLE order_deliveries (
    order_id TEXT PRIMARY KEY,
    deliver_time BIGINT NOT NULL
);

CREATE TABLE returns (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (id),
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('requested', 'approved', 'rejected', 'received', 'refunded', 'cancelled')),
    -- The customer's words.
    reason TEXT NOT NULL DEFAULT '',
    currency TEXT NOT NULL,
    -- What the return gives back; at receipt, no more than is left of the payment.
    refund_minor BIGINT NOT NULL CHECK (refund_minor >= 0),
    reject_reason TEXT NOT NULL DEFAULT '',
    restocked BOOLEAN NOT NULL DEFAULT FALSE,
    -- The refund at the payments service once made ('return:<id>'), and why the last attempt was refused.
    refund_id TEXT NOT NULL DEFAULT '',
    refund_failure TEXT NOT NULL DEFAULT '',
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL
);

CREATE INDEX returns_by_order ON returns (order_id);
-- ListReturns: newest first, all or one customer's.
CREATE INDEX returns_by_create_time ON returns (create_time, id);
CREATE INDEX returns_by_customer ON returns (customer_id, create_time, id);
-- The background retry of refunds: received, not refunded yet.
CREATE INDEX returns_to_refund ON returns (update_time) WHERE status = 'received';

CREATE TABLE return_lines (
    return_id TEXT NOT NULL REFERENCES returns (id),
    line_no BIGINT NOT NULL,
    product_id TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (return_id, line_no)
);
