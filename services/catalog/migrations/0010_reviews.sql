-- What each customer bought, from `order.confirmed`: a row per order and product. `order.cancelled` marks its
-- order's rows cancelled (writing them if it overtook the confirmation, so a late confirmation cannot bring
-- them back); `user.deleted` deletes an account's. Only a buyer of an order not cancelled may review a product.
CREATE TABLE purchases (
    customer_id TEXT    NOT NULL,
    product_id  TEXT    NOT NULL,
    order_id    TEXT    NOT NULL,
    cancelled   BOOLEAN NOT NULL,
    create_time BIGINT  NOT NULL,
    PRIMARY KEY (customer_id, product_id, order_id)
);

-- Customers' reviews: one per customer and product; ids are UUIDv7, so a product's newest have the largest.
CREATE TABLE reviews (
    id          TEXT    PRIMARY KEY,
    product_id  TEXT    NOT NULL REFERENCES products (id),
    customer_id TEXT    NOT NULL,
    rating      INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    title       TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    author_name TEXT    NOT NULL,
    create_time BIGINT  NOT NULL,
    update_time BIGINT  NOT NULL,
    UNIQUE (product_id, customer_id)
);
CREATE INDEX reviews_by_product ON reviews (product_id, id);
CREATE INDEX reviews_by_customer ON reviews (customer_id);

-- Each product's reviews summed, kept in the transaction of every review written, changed or deleted, so
-- a product is read with its rating in the one statement that reads it.
ALTER TABLE products ADD COLUMN rating_count BIGINT NOT NULL DEFAULT 0 CHECK (rating_count >= 0);
ALTER TABLE products ADD COLUMN rating_sum BIGINT NOT NULL DEFAULT 0 CHECK (rating_sum >= 0);
