-- Carts: one per customer, and their lines.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL. Times are BIGINT microseconds since the epoch,
-- ids are TEXT (the customer's user id, the catalog's product id).

-- One row per customer who ever changed their cart. Every change writes this row first: on PostgreSQL that
-- locks the cart, on SQLite it takes the write lock, so changes to one cart are serialised.
CREATE TABLE carts (
    customer_id TEXT   PRIMARY KEY,
    update_time BIGINT NOT NULL
);

-- The lines. sku and name are as the catalog had them when the product was last added, shown only when the
-- catalog no longer sells the product; prices are always read from the catalog.
CREATE TABLE cart_items (
    customer_id TEXT    NOT NULL REFERENCES carts (customer_id),
    product_id  TEXT    NOT NULL,
    sku         TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    quantity    INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    add_time    BIGINT  NOT NULL,
    PRIMARY KEY (customer_id, product_id)
);
