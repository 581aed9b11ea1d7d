-- Units customers sent back (return.received), per product, day and currency: the top products report shows them
-- beside the units sold. Days before this migration have none (RebuildAggregates counts them from the event log).
ALTER TABLE daily_product_sales ADD COLUMN units_returned BIGINT NOT NULL DEFAULT 0;
