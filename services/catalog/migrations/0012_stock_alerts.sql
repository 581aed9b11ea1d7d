-- Back-in-stock alerts: a customer waits for a sold-out product. The sweeper deletes the alerts of products with
-- units available again, writing `stock_alert.triggered` for each in the same transaction (told once).
CREATE TABLE stock_alerts (
    customer_id TEXT   NOT NULL,
    product_id  TEXT   NOT NULL REFERENCES products (id),
    create_time BIGINT NOT NULL,
    PRIMARY KEY (customer_id, product_id)
);
CREATE INDEX stock_alerts_by_product ON stock_alerts (product_id);
