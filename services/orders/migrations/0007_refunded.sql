-- What has been given back of an order's total so far (staff's refunds and a cancellation's), in its currency.
-- It follows the payment's `payment.refunded` events, whose amount refunded is cumulative: a later event
-- raises it, an earlier one redelivered cannot lower it, so no inbox is needed.
ALTER TABLE orders ADD COLUMN refunded_minor BIGINT NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0);
