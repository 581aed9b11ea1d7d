-- Variants: a product names its group's base in variant_of (one level deep), and options tell the products of a
-- group apart: a JSON array of {name, value}, with options_key their case-folded names and values in order
-- (domain::variants::options_key), empty without options. No two products of a group share a key: the unique
-- index over (the group, the key) keeps it so even for writers racing each other.
ALTER TABLE products ADD COLUMN variant_of TEXT REFERENCES products (id);
ALTER TABLE products ADD COLUMN options TEXT NOT NULL DEFAULT '[]';
ALTER TABLE products ADD COLUMN options_key TEXT NOT NULL DEFAULT '';
CREATE INDEX products_by_variant_of ON products (variant_of);
CREATE UNIQUE INDEX products_variant_options ON products (COALESCE(variant_of, id), options_key) WHERE options_key <> '';
