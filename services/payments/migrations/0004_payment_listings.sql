-- Listing payments (ListPayments), newest first: a customer's own and an order's. Everyone's pages backwards
-- through the primary key (ids are UUIDv7, so by id is by time).
CREATE INDEX payments_by_customer ON payments (customer_id, id);
CREATE INDEX payments_by_order ON payments (order_id, id);
