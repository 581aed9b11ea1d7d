-- Categories an editor described: the slug products name in `category`, a name to show, a description and a
-- position. A product may name a slug not described here; it is listed undescribed.
CREATE TABLE categories (
    slug        TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    create_time BIGINT  NOT NULL,
    update_time BIGINT  NOT NULL
);
