-- Wishlists: the products each customer saved to buy later. Every change writes the customer's wishlists row
-- first (as carts do), so changes to one wishlist are serialised and its limit of products holds. sku and name are
-- as the catalog had them when saved, shown only once the catalog no longer sells the product.
CREATE TABLE wishlists (
    customer_id TEXT   PRIMARY KEY,
    update_time BIGINT NOT NULL
);

CREATE TABLE wishlist_items (
    customer_id TEXT   NOT NULL REFERENCES wishlists (customer_id),
    product_id  TEXT   NOT NULL,
    sku         TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    create_time BIGINT NOT NULL,
    PRIMARY KEY (customer_id, product_id)
);
CREATE INDEX wishlist_items_latest ON wishlist_items (customer_id, create_time);
