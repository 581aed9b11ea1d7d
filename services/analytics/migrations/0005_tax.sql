-- The tax confirmed orders' totals include, per day and currency (order.confirmed carries it, by rate; gross
-- includes it). Days before tax rates keep 0; a rebuild replays the event log and finds the same.
ALTER TABLE daily_sales ADD COLUMN tax_minor BIGINT NOT NULL DEFAULT 0;
