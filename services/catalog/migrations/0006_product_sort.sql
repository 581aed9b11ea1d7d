-- ListProducts sorts by price or by name (ignoring case) besides the newest first: an index for each order,
-- with the id that breaks ties (keyset paging reads a page as one range of it).
CREATE INDEX products_by_price ON products (price_amount_minor, id);
CREATE INDEX products_by_name ON products (LOWER(name), id);
