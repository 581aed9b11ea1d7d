-- The restocking list (ListStockLevels) reads stock fewest units available first: an index on that expression,
-- spelled as the query spells it, so neither engine sorts every product for a page.
CREATE INDEX inventory_by_available ON inventory ((on_hand - reserved), product_id);
