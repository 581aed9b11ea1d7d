-- What confirmed orders paid for shipping, per day and currency (order.confirmed carries it; gross includes it).
-- Days before shipping rates keep 0; a rebuild replays the event log and finds the same.
ALTER TABLE daily_sales ADD COLUMN shipping_minor BIGINT NOT NULL DEFAULT 0;
