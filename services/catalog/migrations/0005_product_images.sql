-- The images of products, in the order shown. Their bytes are in the catalog's blob store, under
-- products/<product_id>/<id> (see platform::blob); a row here is what makes an image part of its product.
CREATE TABLE product_images (
    id           TEXT   PRIMARY KEY,
    product_id   TEXT   NOT NULL REFERENCES products (id),
    -- 1, 2, ... in the order added; deleting one leaves a gap, which keeps the others' order.
    position     BIGINT NOT NULL,
    content_type TEXT   NOT NULL,
    size_bytes   BIGINT NOT NULL,
    alt_text     TEXT   NOT NULL,
    create_time  BIGINT NOT NULL,
    UNIQUE (product_id, position)
);
