-- The FAQ: questions and answers agents write, grouped by category (a slug) and ordered by position within it.
-- Only published entries are shown to customers.
CREATE TABLE faq_entries (
    id          TEXT    PRIMARY KEY,
    question    TEXT    NOT NULL,
    answer      TEXT    NOT NULL,
    category    TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    published   BOOLEAN NOT NULL,
    create_time BIGINT  NOT NULL,
    update_time BIGINT  NOT NULL
);
CREATE INDEX faq_entries_in_order ON faq_entries (category, position, id);
