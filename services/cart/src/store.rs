//! All SQL of the cart. Every statement is written once, in the subset SQLite and PostgreSQL share, and run
//! on whichever pool the [`Db`] holds through `with_db!`.
//!
//! Every change is one transaction that writes the customer's `carts` row first: on PostgreSQL that locks
//! the cart, on SQLite it takes the write lock up front (no SQLITE_BUSY when upgrading a read), so changes
//! to one cart are serialised. Adding to a line is one conditional upsert, so the database, not a
//! read-then-write in Rust, keeps a line within [`MAX_QUANTITY`] under concurrency.

use platform::db::finish;
use platform::db::{BeginWrite, Db};
use platform::with_db;

use crate::domain::{self, Line, MAX_LINES, MAX_QUANTITY};
use crate::error::{CART_FULL, Error};

/// Creates the customer's cart row or bumps its update time (never backwards); the first write of every
/// change (a macro: it runs on either engine's transaction).
macro_rules! touch_cart {
    ($conn:expr, $customer_id:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO carts (customer_id, update_time) VALUES ($1, $2) \
             ON CONFLICT (customer_id) DO UPDATE SET update_time = \
             CASE WHEN excluded.update_time > carts.update_time THEN excluded.update_time \
             ELSE carts.update_time + 1 END",
        )
        .bind($customer_id)
        .bind($now)
        .execute($conn)
        .await?
    };
}

/// A stored cart: when it last changed and its lines, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredCart {
    /// Microseconds since the epoch; `None` for a customer who never changed their cart.
    pub update_time: Option<i64>,
    /// The lines, oldest first.
    pub lines: Vec<Line>,
}

#[derive(sqlx::FromRow)]
struct CartRow {
    update_time: i64,
    product_id: Option<String>,
    sku: Option<String>,
    name: Option<String>,
    quantity: Option<i32>,
}

/// What AddItem puts into a cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLine<'a> {
    /// The product.
    pub product_id: &'a str,
    /// Its sku now, kept for when the catalog no longer sells it.
    pub sku: &'a str,
    /// Its name now, kept for when the catalog no longer sells it.
    pub name: &'a str,
    /// Units to add.
    pub quantity: i32,
}

/// The cart's tables.
#[derive(Debug, Clone)]
pub struct Store {
    /// The cart's database (the wishlist's statements, `wishlist_store.rs`, run on it too).
    pub(crate) db: Db,
}

impl Store {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The cart of `customer_id`, read in one statement (one consistent snapshot).
    pub async fn cart(&self, customer_id: &str) -> Result<StoredCart, Error> {
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, CartRow>(
                "SELECT c.update_time, i.product_id, i.sku, i.name, i.quantity \
                 FROM carts c LEFT JOIN cart_items i ON i.customer_id = c.customer_id \
                 WHERE c.customer_id = $1 ORDER BY i.add_time, i.product_id",
            )
            .bind(customer_id)
            .fetch_all(pool)
            .await?
        });
        let mut cart = StoredCart::default();
        for row in rows {
            cart.update_time = Some(row.update_time);
            if let (Some(product_id), Some(sku), Some(name), Some(quantity)) =
                (row.product_id, row.sku, row.name, row.quantity)
            {
                cart.lines.push(Line { product_id, sku, name, quantity });
            }
        }
        Ok(cart)
    }

    /// Adds `line.quantity` units of a product: a new line, or more units on the existing one as long as it
    /// stays within [`MAX_QUANTITY`]. A new product is refused when the cart already holds [`MAX_LINES`].
    /// The `cart.item_added` event is written in the same transaction.
    pub async fn add(&self, customer_id: &str, line: &NewLine<'_>, now: i64) -> Result<(), Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                touch_cart!(&mut *tx, customer_id, now);
                let lines_before = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM cart_items WHERE customer_id = $1")
                    .bind(customer_id)
                    .fetch_one(&mut *tx)
                    .await?;
                // The limit check and the merge are one statement: no concurrent add can slip in between.
                let added = sqlx::query(
                    "INSERT INTO cart_items (customer_id, product_id, sku, name, quantity, add_time) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (customer_id, product_id) DO UPDATE SET \
                     quantity = cart_items.quantity + excluded.quantity, sku = excluded.sku, name = excluded.name \
                     WHERE cart_items.quantity + excluded.quantity <= $7",
                )
                .bind(customer_id)
                .bind(line.product_id)
                .bind(line.sku)
                .bind(line.name)
                .bind(line.quantity)
                .bind(now)
                .bind(MAX_QUANTITY)
                .execute(&mut *tx)
                .await?;
                if added.rows_affected() != 1 {
                    let current = sqlx::query_scalar::<_, i32>(
                        "SELECT quantity FROM cart_items WHERE customer_id = $1 AND product_id = $2",
                    )
                    .bind(customer_id)
                    .bind(line.product_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    return Err(Error::invalid(domain::merge_violation(current, line.quantity)));
                }
                // Written first, checked after: only a new line can have pushed the count past the limit.
                let lines = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM cart_items WHERE customer_id = $1")
                    .bind(customer_id)
                    .fetch_one(&mut *tx)
                    .await?;
                if lines > MAX_LINES {
                    return Err(Error::FailedPrecondition {
                        reason: CART_FULL,
                        message: format!("a cart holds at most {MAX_LINES} products"),
                    });
                }
                let added = crate::events::item_added(customer_id, line.product_id, line.quantity, lines_before == 0);
                platform::events::enqueue(&mut *tx, crate::NAME, &added).await?;
                Ok(())
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Sets the quantity of a line; NOT_FOUND when the product is not in the cart.
    pub async fn set_quantity(
        &self,
        customer_id: &str,
        product_id: &str,
        quantity: i32,
        now: i64,
    ) -> Result<(), Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                touch_cart!(&mut *tx, customer_id, now);
                let updated =
                    sqlx::query("UPDATE cart_items SET quantity = $1 WHERE customer_id = $2 AND product_id = $3")
                        .bind(quantity)
                        .bind(customer_id)
                        .bind(product_id)
                        .execute(&mut *tx)
                        .await?;
                if updated.rows_affected() != 1 {
                    return Err(Error::item_not_found(product_id));
                }
                Ok(())
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Takes a line out; NOT_FOUND when the product is not in the cart.
    pub async fn remove(&self, customer_id: &str, product_id: &str, now: i64) -> Result<(), Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                touch_cart!(&mut *tx, customer_id, now);
                let removed = sqlx::query("DELETE FROM cart_items WHERE customer_id = $1 AND product_id = $2")
                    .bind(customer_id)
                    .bind(product_id)
                    .execute(&mut *tx)
                    .await?;
                if removed.rows_affected() != 1 {
                    return Err(Error::item_not_found(product_id));
                }
                Ok(())
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Empties the cart of `customer_id` for the event `event_id`, once (a redelivery changes nothing).
    ///
    /// Items added after the order was confirmed would be lost to a late redelivery; only lines older than
    /// the event are removed.
    pub async fn clear_for_event(&self, event_id: &str, customer_id: &str, now: i64) -> Result<bool, Error> {
        platform::once_per_event!(&self.db, crate::events::CONSUMER, event_id, |tx| {
            sqlx::query("DELETE FROM cart_items WHERE customer_id = $1 AND add_time <= $2")
                .bind(customer_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        })
    }

    /// Erases the cart and the wishlist of `customer_id` (their items and rows) for the event `event_id`, once
    /// (false for a redelivery): the account was deleted.
    pub async fn erase(&self, event_id: &str, customer_id: &str) -> Result<bool, Error> {
        platform::once_per_event!(&self.db, crate::events::CONSUMER, event_id, |tx| {
            for table in ["cart_items", "carts", "wishlist_items", "wishlists"] {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE customer_id = $1")))
                    .bind(customer_id)
                    .execute(&mut *tx)
                    .await?;
            }
        })
    }

    /// Empties the cart of `customer_id`; a customer without a cart keeps having none.
    pub async fn clear(&self, customer_id: &str, now: i64) -> Result<(), Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                // An UPDATE, not the upsert: clearing (e.g. by the orders service) creates no cart.
                sqlx::query(
                    "UPDATE carts SET update_time = CASE WHEN $1 > update_time THEN $1 ELSE update_time + 1 END \
                     WHERE customer_id = $2",
                )
                .bind(now)
                .bind(customer_id)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM cart_items WHERE customer_id = $1")
                    .bind(customer_id)
                    .execute(&mut *tx)
                    .await?;
                Ok(())
            }
            .await;
            finish(tx, result).await
        })
    }
}
