-- What discount codes took off confirmed orders, per day and currency (order.confirmed carries it). Days before
-- codes existed keep 0; a rebuild replays the event log and finds the same.
ALTER TABLE daily_sales ADD COLUMN discounted_orders BIGINT NOT NULL DEFAULT 0;
ALTER TABLE daily_sales ADD COLUMN discount_minor BIGINT NOT NULL DEFAULT 0;
