-- The catalog: products, their stock, stock history and reservations.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL. Times are BIGINT microseconds since the epoch,
-- ids are TEXT (UUIDv7, or the caller's reservation id).

CREATE TABLE products (
    id                 TEXT    PRIMARY KEY,
    sku                TEXT    NOT NULL UNIQUE,
    name               TEXT    NOT NULL,
    description        TEXT    NOT NULL,
    price_currency     TEXT    NOT NULL,
    price_amount_minor BIGINT  NOT NULL CHECK (price_amount_minor >= 0),
    category           TEXT    NOT NULL,
    active             BOOLEAN NOT NULL,
    create_time        BIGINT  NOT NULL,
    update_time        BIGINT  NOT NULL
);

-- Keyset pagination walks products newest first, optionally within one category.
CREATE INDEX products_newest ON products (create_time DESC, id DESC);
CREATE INDEX products_category_newest ON products (category, create_time DESC, id DESC);

-- One row per product, created with it. The checks are the last line of defence against overselling.
CREATE TABLE inventory (
    product_id  TEXT   PRIMARY KEY REFERENCES products (id),
    on_hand     BIGINT NOT NULL,
    reserved    BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    CHECK (reserved >= 0),
    CHECK (on_hand >= reserved)
);

-- Every change of on_hand: manual adjustments and sales (committed reservations).
CREATE TABLE inventory_adjustments (
    id          TEXT   PRIMARY KEY,
    product_id  TEXT   NOT NULL REFERENCES products (id),
    delta       BIGINT NOT NULL,
    reason      TEXT   NOT NULL,
    actor       TEXT   NOT NULL,
    create_time BIGINT NOT NULL
);

CREATE INDEX inventory_adjustments_product ON inventory_adjustments (product_id, create_time);

-- Stock held for a checkout; the id is the caller's (the order id), which makes reserving idempotent.
CREATE TABLE reservations (
    id          TEXT   PRIMARY KEY,
    status      TEXT   NOT NULL CHECK (status IN ('HELD', 'RELEASED', 'COMMITTED')),
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL
);

CREATE TABLE reservation_items (
    reservation_id TEXT   NOT NULL REFERENCES reservations (id),
    product_id     TEXT   NOT NULL REFERENCES products (id),
    quantity       BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, product_id)
);
