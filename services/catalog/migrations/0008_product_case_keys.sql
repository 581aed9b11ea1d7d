-- Case-folded copies of a product's name and description, written by the service with Unicode lower-casing:
-- SQLite's LOWER folds ASCII letters only, so a search for "äpfel" missed "Äpfel" and sorting by name put it
-- after "Zimt". Listings search and sort on these. Rows written before this migration get theirs when the
-- service next starts (name_key = '' marks them: a product's name is never empty).
ALTER TABLE products ADD COLUMN name_key TEXT NOT NULL DEFAULT '';
ALTER TABLE products ADD COLUMN description_key TEXT NOT NULL DEFAULT '';
DROP INDEX products_by_name;
CREATE INDEX products_by_name ON products (name_key, id);
