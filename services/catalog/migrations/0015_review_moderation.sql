-- Review moderation (MERCATO_REVIEW_MODERATION=pre): a review waits, unpublished, until staff publish it. Only
-- published reviews show with their product and count in its group's totals (products.rating_count/rating_sum).
-- Every review written before this migration was shown and counted: published.
ALTER TABLE reviews ADD COLUMN published BOOLEAN NOT NULL DEFAULT TRUE;
-- Staff's queue (ListReviews with state PENDING), newest first: the few that wait, not every review.
CREATE INDEX reviews_pending ON reviews (id) WHERE NOT published;
