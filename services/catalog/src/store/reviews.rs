//! The SQL of reviews, of each product's totals of them, and of what customers bought (who may review).

use platform::db::{BeginWrite, finish, is_unique_violation};
use platform::with_db;

use super::Store;
use crate::domain::reviews::{ReviewFields, counted};
use crate::error::{Error, NOT_A_BUYER};

/// A stored review.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReviewRow {
    /// UUIDv7.
    pub id: String,
    /// The product reviewed.
    pub product_id: String,
    /// Its author (user id).
    pub customer_id: String,
    /// Stars, 1 to 5.
    pub rating: i32,
    /// The headline.
    pub title: String,
    /// The text.
    pub body: String,
    /// The name shown with it.
    pub author_name: String,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch; also the version a change compares on (publishing moves it too).
    pub update_time: i64,
    /// Shown with its product and counted in its group's totals; false while it waits for staff.
    pub published: bool,
}

impl ReviewRow {
    /// What its author wrote.
    pub fn fields(&self) -> ReviewFields {
        ReviewFields {
            rating: self.rating,
            title: self.title.clone(),
            body: self.body.clone(),
            author_name: self.author_name.clone(),
        }
    }
}

/// Which reviews a listing reads.
#[derive(Debug, Clone, Copy)]
pub struct ReviewQuery<'a> {
    /// Only these products' (a product's variant group); every product's when `None`.
    pub product_ids: Option<&'a [String]>,
    /// Only those of at most this many stars; 0 for all.
    pub max_rating: i32,
    /// Only the published (`Some(true)`) or only those waiting (`Some(false)`); all when `None`.
    pub published: Option<bool>,
    /// Start after this review id (empty: from the newest).
    pub after: &'a str,
    /// At most this many.
    pub limit: i64,
}

const REVIEW_COLUMNS: &str =
    "id, product_id, customer_id, rating, title, body, author_name, create_time, update_time, published";

/// Adds $2 reviews and $3 stars to the totals of product $1's group (negative to take them away): they are kept on
/// the group's base (the product itself when it is no variant), so the group is rated, and sorted by rating, as one.
const ADD_TO_TOTALS: &str = "UPDATE products SET rating_count = rating_count + $2, rating_sum = rating_sum + $3 \
     WHERE id = (SELECT COALESCE(p.variant_of, p.id) FROM products p WHERE p.id = $1)";

/// In the transaction `$tx` that stored `$review`: when it waits for staff, `review.submitted` (with its product's
/// name), so the shop hears of it exactly when it was stored.
macro_rules! submit_if_waiting {
    ($tx:expr, $review:expr) => {
        let review: &ReviewRow = $review;
        if !review.published {
            let product_name = sqlx::query_scalar::<_, String>("SELECT name FROM products WHERE id = $1")
                .bind(&review.product_id)
                .fetch_one(&mut *$tx)
                .await?;
            let event = crate::events::review_submitted(review, &product_name);
            platform::events::enqueue(&mut *$tx, crate::NAME, &event).await?;
        }
    };
}

fn review_not_found(product_id: &str, id: &str) -> Error {
    Error::NotFound(format!("review {id} of product {product_id} not found"))
}

impl Store {
    /// Records that `customer_id` bought `product_ids` with order `order_id`: confirmed (`order.confirmed`), or
    /// `cancelled` since (`order.cancelled`). A confirmation leaves a row written before as it is (a redelivery
    /// changes nothing, a cancellation that came first stays); a cancellation marks the rows, writing them
    /// cancelled when the confirmation has not been seen yet, so a late one cannot make them count.
    pub async fn record_purchase(
        &self,
        customer_id: &str,
        order_id: &str,
        product_ids: &[String],
        cancelled: bool,
        now: i64,
    ) -> Result<(), Error> {
        let sql = if cancelled {
            "INSERT INTO purchases (customer_id, product_id, order_id, cancelled, create_time) \
             VALUES ($1, $2, $3, TRUE, $4) ON CONFLICT (customer_id, product_id, order_id) DO UPDATE SET cancelled = TRUE"
        } else {
            "INSERT INTO purchases (customer_id, product_id, order_id, cancelled, create_time) \
             VALUES ($1, $2, $3, FALSE, $4) ON CONFLICT (customer_id, product_id, order_id) DO NOTHING"
        };
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<(), Error> = async {
                for product_id in product_ids {
                    sqlx::query(sql).bind(customer_id).bind(product_id).bind(order_id).bind(now).execute(&mut *tx).await?;
                }
                Ok(())
            }
            .await;
            finish(tx, result).await?;
        });
        Ok(())
    }

    /// Stores review `review` of a product customers can see: NOT_FOUND without one, FAILED_PRECONDITION
    /// ([`NOT_A_BUYER`]) when its author has no purchase of it that was not cancelled, ALREADY_EXISTS when they
    /// reviewed it before. The product's totals count it in the same transaction when it is published; one that waits
    /// for staff is announced (`review.submitted`) in it.
    pub async fn create_review(&self, review: &ReviewRow) -> Result<ReviewRow, Error> {
        let insert = format!("INSERT INTO reviews ({REVIEW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<(), Error> = async {
                let for_sale = sqlx::query_scalar::<_, bool>("SELECT active FROM products WHERE id = $1")
                    .bind(&review.product_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if for_sale != Some(true) {
                    return Err(Error::product_not_found(&review.product_id));
                }
                let bought = sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM purchases WHERE customer_id = $1 AND product_id = $2 AND NOT cancelled",
                )
                .bind(&review.customer_id)
                .bind(&review.product_id)
                .fetch_one(&mut *tx)
                .await?;
                if bought == 0 {
                    return Err(Error::FailedPrecondition {
                        reason: NOT_A_BUYER,
                        message: format!("only customers who bought product {} may review it", review.product_id),
                    });
                }
                let earlier = sqlx::query_scalar::<_, String>(
                    "SELECT id FROM reviews WHERE product_id = $1 AND customer_id = $2",
                )
                .bind(&review.product_id)
                .bind(&review.customer_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(id) = earlier {
                    return Err(Error::AlreadyExists(format!(
                        "you reviewed product {} already (review {id}): change that one",
                        review.product_id
                    )));
                }
                sqlx::query(sqlx::AssertSqlSafe(insert))
                    .bind(&review.id)
                    .bind(&review.product_id)
                    .bind(&review.customer_id)
                    .bind(review.rating)
                    .bind(&review.title)
                    .bind(&review.body)
                    .bind(&review.author_name)
                    .bind(review.create_time)
                    .bind(review.update_time)
                    .bind(review.published)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        // A concurrent first review by the same customer (PostgreSQL; SQLite writes one at a time).
                        if is_unique_violation(&e) {
                            Error::AlreadyExists(format!("you reviewed product {} already", review.product_id))
                        } else {
                            e.into()
                        }
                    })?;
                let (reviews, stars) = counted(review.published, review.rating);
                sqlx::query(ADD_TO_TOTALS).bind(&review.product_id).bind(reviews).bind(stars).execute(&mut *tx).await?;
                submit_if_waiting!(tx, review);
                Ok(())
            }
            .await;
            finish(tx, result).await?;
        });
        Ok(review.clone())
    }

    /// Review `id` of product `product_id`, if it exists.
    pub async fn review(&self, product_id: &str, id: &str) -> Result<Option<ReviewRow>, Error> {
        let sql = format!("SELECT {REVIEW_COLUMNS} FROM reviews WHERE id = $1 AND product_id = $2");
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, ReviewRow>(sqlx::AssertSqlSafe(sql)).bind(id).bind(product_id).fetch_optional(pool).await?
        }))
    }

    /// The reviews `query` selects, newest first.
    pub async fn reviews(&self, query: &ReviewQuery<'_>) -> Result<Vec<ReviewRow>, Error> {
        let mut sql =
            format!("SELECT {REVIEW_COLUMNS} FROM reviews WHERE ($1 = '' OR id < $1) AND ($2 = 0 OR rating <= $2)");
        // Only when asked for: then the page is one range of the index on (product_id, id) per product.
        if let Some(ids) = query.product_ids {
            sql.push_str(&format!(" AND product_id IN ({})", platform::db::placeholders(4, ids.len().max(1))));
        }
        match query.published {
            Some(true) => sql.push_str(" AND published"),
            Some(false) => sql.push_str(" AND NOT published"),
            None => {}
        }
        sql.push_str(" ORDER BY id DESC LIMIT $3");
        Ok(with_db!(&self.db, pool => {
            let mut select = sqlx::query_as::<_, ReviewRow>(sqlx::AssertSqlSafe(sql))
                .bind(query.after)
                .bind(query.max_rating)
                .bind(query.limit);
            match query.product_ids {
                Some([]) => select = select.bind(""),
                Some(ids) => {
                    for id in ids {
                        select = select.bind(id.as_str());
                    }
                }
                None => {}
            }
            select.fetch_all(pool).await?
        }))
    }

    /// How many published reviews of the products `product_ids` (a product's variant group) gave 1, 2, 3, 4 and 5
    /// stars.
    pub async fn star_counts(&self, product_ids: &[String]) -> Result<[i64; 5], Error> {
        let sql = format!(
            "SELECT rating, COUNT(*) FROM reviews WHERE product_id IN ({}) AND published GROUP BY rating",
            platform::db::placeholders(1, product_ids.len().max(1))
        );
        let rows = with_db!(&self.db, pool => {
            let mut select = sqlx::query_as::<_, (i32, i64)>(sqlx::AssertSqlSafe(sql));
            if product_ids.is_empty() {
                select = select.bind("");
            }
            for id in product_ids {
                select = select.bind(id.as_str());
            }
            select.fetch_all(pool).await?
        });
        let mut counts = [0; 5];
        for (rating, count) in rows {
            if let Some(slot) = usize::try_from(rating - 1).ok().and_then(|i| counts.get_mut(i)) {
                *slot = count;
            }
        }
        Ok(counts)
    }

    /// Changes review `id` of product `product_id`, written by `customer_id`, to what `change` makes of it,
    /// `published` after the change or waiting for staff: NOT_FOUND when there is no such review of theirs.
    /// Compare-and-set on update_time, so two concurrent changes (or a change and staff publishing it) cannot undo
    /// each other; the product's totals follow in the same transaction, and `review.submitted` when it waits.
    pub async fn update_review<F>(
        &self,
        product_id: &str,
        id: &str,
        customer_id: &str,
        now: i64,
        published: bool,
        change: F,
    ) -> Result<ReviewRow, Error>
    where
        F: Fn(&ReviewFields) -> Result<ReviewFields, Error>,
    {
        loop {
            let current = self
                .review(product_id, id)
                .await?
                .filter(|r| r.customer_id == customer_id)
                .ok_or_else(|| review_not_found(product_id, id))?;
            let next = change(&current.fields())?;
            let row = ReviewRow {
                rating: next.rating,
                title: next.title,
                body: next.body,
                author_name: next.author_name,
                // Strictly later, even within one microsecond: update_time is also the version compared on.
                update_time: now.max(current.update_time + 1),
                published,
                ..current.clone()
            };
            let updated = with_db!(&self.db, pool => {
                let mut tx = pool.begin_write().await?;
                let result: Result<bool, Error> = async {
                    let changed = sqlx::query(
                        "UPDATE reviews SET rating = $1, title = $2, body = $3, author_name = $4, update_time = $5, \
                         published = $8 WHERE id = $6 AND update_time = $7",
                    )
                    .bind(row.rating)
                    .bind(&row.title)
                    .bind(&row.body)
                    .bind(&row.author_name)
                    .bind(row.update_time)
                    .bind(id)
                    .bind(current.update_time)
                    .bind(row.published)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if changed != 1 {
                        return Ok(false);
                    }
                    let (before, after) = (counted(current.published, current.rating), counted(published, row.rating));
                    sqlx::query(ADD_TO_TOTALS)
                        .bind(product_id)
                        .bind(after.0 - before.0)
                        .bind(after.1 - before.1)
                        .execute(&mut *tx)
                        .await?;
                    submit_if_waiting!(tx, &row);
                    Ok(true)
                }
                .await;
                finish(tx, result).await?
            });
            if updated {
                return Ok(row);
            }
            // Changed meanwhile (or deleted: the next read says so): apply the change to what is there now.
        }
    }

    /// Deletes review `id` of product `product_id`: only one of `author`'s, when given (a customer deleting their
    /// own); any, when `None` (staff). NOT_FOUND when there is no such review. The product's totals follow.
    pub async fn delete_review(&self, product_id: &str, id: &str, author: Option<&str>) -> Result<ReviewRow, Error> {
        let sql = format!(
            "DELETE FROM reviews WHERE id = $1 AND product_id = $2 AND ($3 = '' OR customer_id = $3) \
             RETURNING {REVIEW_COLUMNS}"
        );
        let deleted = with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<Option<ReviewRow>, Error> = async {
                let deleted = sqlx::query_as::<_, ReviewRow>(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(product_id)
                    .bind(author.unwrap_or_default())
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(review) = &deleted {
                    let (reviews, stars) = counted(review.published, review.rating);
                    sqlx::query(ADD_TO_TOTALS).bind(product_id).bind(-reviews).bind(-stars).execute(&mut *tx).await?;
                }
                Ok(deleted)
            }
            .await;
            finish(tx, result).await?
        });
        deleted.ok_or_else(|| review_not_found(product_id, id))
    }

    /// Publishes review `id` of product `product_id` at `now`: it counts in its group's totals from the same
    /// transaction on. NOT_FOUND when there is no such review; a published one is answered as it is. Moves
    /// update_time, so a change its author was making meanwhile starts again from the published review.
    pub async fn publish_review(&self, product_id: &str, id: &str, now: i64) -> Result<ReviewRow, Error> {
        let sql = format!(
            "UPDATE reviews SET published = TRUE, \
             update_time = CASE WHEN update_time >= $3 THEN update_time + 1 ELSE $3 END \
             WHERE id = $1 AND product_id = $2 AND NOT published RETURNING {REVIEW_COLUMNS}"
        );
        let published = with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<Option<ReviewRow>, Error> = async {
                let published = sqlx::query_as::<_, ReviewRow>(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(product_id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(review) = &published {
                    let (reviews, stars) = counted(true, review.rating);
                    sqlx::query(ADD_TO_TOTALS).bind(product_id).bind(reviews).bind(stars).execute(&mut *tx).await?;
                }
                Ok(published)
            }
            .await;
            finish(tx, result).await?
        });
        match published {
            Some(review) => Ok(review),
            None => self.review(product_id, id).await?.ok_or_else(|| review_not_found(product_id, id)),
        }
    }

    /// Erases what the catalog keeps of customer `customer_id` (`user.deleted`): their reviews, taken out of
    /// their products' totals, their purchases and their stock alerts. Returns how many reviews went; again, none.
    pub async fn erase_customer(&self, customer_id: &str) -> Result<u64, Error> {
        let erased = with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<u64, Error> = async {
                // Out of the totals of each group they reviewed a product of (kept on its base: ADD_TO_TOTALS), for
                // the reviews that were counted (published).
                sqlx::query(
                    "UPDATE products SET \
                     rating_count = rating_count - (SELECT COUNT(*) FROM reviews r JOIN products m \
                         ON m.id = r.product_id WHERE COALESCE(m.variant_of, m.id) = products.id AND r.customer_id = $1 \
                         AND r.published), \
                     rating_sum = rating_sum - (SELECT COALESCE(SUM(r.rating), 0) FROM reviews r JOIN products m \
                         ON m.id = r.product_id WHERE COALESCE(m.variant_of, m.id) = products.id AND r.customer_id = $1 \
                         AND r.published) \
                     WHERE id IN (SELECT COALESCE(m.variant_of, m.id) FROM reviews r JOIN products m \
                         ON m.id = r.product_id WHERE r.customer_id = $1)",
                )
                .bind(customer_id)
                .execute(&mut *tx)
                .await?;
                let reviews = sqlx::query("DELETE FROM reviews WHERE customer_id = $1")
                    .bind(customer_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM purchases WHERE customer_id = $1").bind(customer_id).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM stock_alerts WHERE customer_id = $1").bind(customer_id).execute(&mut *tx).await?;
                Ok(reviews)
            }
            .await;
            finish(tx, result).await?
        });
        Ok(erased)
    }
}
