-- ListProducts sorts by rating too (`order_by=rating desc`: the best rated first): an index on the expression it
-- sorts on, with the id that breaks ties, spelt exactly as the query spells it (`RATING_SORT_SQL` in
-- domain/listing.rs): the average in hundredths times 10^9, plus the number of reviews.
CREATE INDEX products_by_rating ON products ((CASE WHEN rating_count = 0 THEN 0 ELSE ((rating_sum * 200 + rating_count) / (2 * rating_count)) * 1000000000 + rating_count END), id);
