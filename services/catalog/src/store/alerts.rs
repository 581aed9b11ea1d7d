//! The SQL of back-in-stock alerts: customers' wishes to hear of a sold-out product, and the sweep that tells
//! them once it can be ordered again.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use platform::db::{BeginWrite, finish};
use platform::with_db;

use super::Store;
use crate::error::{ALERT_LIMIT, Error, IN_STOCK};

/// Most alerts a customer may have waiting.
pub const MAX_ALERTS_PER_CUSTOMER: i64 = 100;

/// A waiting alert, with its product's name.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AlertRow {
    /// The product.
    pub product_id: String,
    /// Its name.
    pub product_name: String,
    /// When the customer asked (microseconds since the epoch).
    pub create_time: i64,
}

/// The product of an alert the sweep took, as it is now.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct Triggered {
    product_id: String,
    name: String,
    sku: String,
    price_currency: String,
    price_amount_minor: i64,
    available: i64,
}

/// The alerts a sweep takes: of products for sale with units available, at most $1.
const DUE: &str = "SELECT a.customer_id, a.product_id FROM stock_alerts a \
     JOIN inventory i ON i.product_id = a.product_id JOIN products p ON p.id = a.product_id \
     WHERE p.active AND i.on_hand > i.reserved LIMIT $1";

const ALERT_OF: &str = "SELECT a.product_id, p.name AS product_name, a.create_time FROM stock_alerts a \
     JOIN products p ON p.id = a.product_id WHERE a.customer_id = $1";

impl Store {
    /// Records that `customer_id` waits for product `product_id` to be back in stock, or answers the alert there
    /// is: NOT_FOUND for a product not for sale, FAILED_PRECONDITION when it has units available ([`IN_STOCK`]) or
    /// the customer waits for [`MAX_ALERTS_PER_CUSTOMER`] products already ([`ALERT_LIMIT`]).
    pub async fn create_alert(&self, customer_id: &str, product_id: &str, now: i64) -> Result<AlertRow, Error> {
        let sql = format!("{ALERT_OF} AND a.product_id = $2");
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<AlertRow, Error> = async {
                let stock = sqlx::query_as::<_, (bool, i64)>(
                    "SELECT p.active, i.on_hand - i.reserved FROM products p \
                     JOIN inventory i ON i.product_id = p.id WHERE p.id = $1",
                )
                .bind(product_id)
                .fetch_optional(&mut *tx)
                .await?;
                match stock {
                    Some((true, available)) if available > 0 => {
                        return Err(Error::FailedPrecondition {
                            reason: IN_STOCK,
                            message: format!("product {product_id} is in stock ({available} available): order it now"),
                        });
                    }
                    Some((true, _)) => {}
                    _ => return Err(Error::product_not_found(product_id)),
                }
                let waiting = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM stock_alerts WHERE customer_id = $1")
                    .bind(customer_id)
                    .fetch_one(&mut *tx)
                    .await?;
                let existing = sqlx::query_as::<_, AlertRow>(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(customer_id)
                    .bind(product_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(existing) = existing {
                    return Ok(existing);
                }
                if waiting >= MAX_ALERTS_PER_CUSTOMER {
                    return Err(Error::FailedPrecondition {
                        reason: ALERT_LIMIT,
                        message: format!("at most {MAX_ALERTS_PER_CUSTOMER} products can be waited for; withdraw one first"),
                    });
                }
                // A concurrent request for the same alert may have written it: then this one writes nothing.
                sqlx::query(
                    "INSERT INTO stock_alerts (customer_id, product_id, create_time) VALUES ($1, $2, $3) \
                     ON CONFLICT (customer_id, product_id) DO NOTHING",
                )
                .bind(customer_id)
                .bind(product_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Ok(sqlx::query_as::<_, AlertRow>(sqlx::AssertSqlSafe(sql)).bind(customer_id).bind(product_id).fetch_one(&mut *tx).await?)
            }
            .await;
            finish(tx, result).await
        })
    }

    /// The alerts `customer_id` waits on, newest first.
    pub async fn alerts(&self, customer_id: &str) -> Result<Vec<AlertRow>, Error> {
        let sql = format!("{ALERT_OF} ORDER BY a.create_time DESC, a.product_id");
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, AlertRow>(sqlx::AssertSqlSafe(sql)).bind(customer_id).fetch_all(pool).await?
        }))
    }

    /// Withdraws the alert of `customer_id` for `product_id`; NOT_FOUND when there is none.
    pub async fn delete_alert(&self, customer_id: &str, product_id: &str) -> Result<(), Error> {
        let deleted = with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM stock_alerts WHERE customer_id = $1 AND product_id = $2")
                .bind(customer_id)
                .bind(product_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if deleted == 0 {
            return Err(Error::NotFound(format!("no alert for product {product_id}")));
        }
        Ok(())
    }

    /// Tells up to `limit` waiting customers whose product is for sale with units available: deletes their
    /// alerts and writes a `stock_alert.triggered` for each, in one transaction. Returns how many. Two sweeps at
    /// once (two replicas) cannot tell anyone twice: a row is deleted, and so told, by one of them.
    pub async fn trigger_stock_alerts(&self, limit: i64) -> Result<usize, Error> {
        let take = format!(
            "DELETE FROM stock_alerts WHERE (customer_id, product_id) IN ({DUE}) RETURNING customer_id, product_id"
        );
        with_db!(&self.db, pool => {
            // A read first: most sweeps find nothing, and a write transaction (SQLite's one writer) every two
            // seconds would make a checkout wait for it.
            let due = sqlx::query_as::<_, (String, String)>(DUE).bind(1_i64).fetch_optional(pool).await?;
            if due.is_none() {
                return Ok(0);
            }
            let mut tx = pool.begin_write().await?;
            let result: Result<usize, Error> = async {
                let taken = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(take))
                    .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                // Each product read once, however many waited for it.
                let mut products: HashMap<&str, Triggered> = HashMap::new();
                for (customer_id, product_id) in &taken {
                    let told = match products.entry(product_id.as_str()) {
                        Entry::Occupied(known) => known.into_mut(),
                        Entry::Vacant(slot) => slot.insert(
                            sqlx::query_as::<_, Triggered>(
                                "SELECT p.id AS product_id, p.name, p.sku, p.price_currency, p.price_amount_minor, \
                                 i.on_hand - i.reserved AS available \
                                 FROM products p JOIN inventory i ON i.product_id = p.id WHERE p.id = $1",
                            )
                            .bind(product_id)
                            .fetch_one(&mut *tx)
                            .await?,
                        ),
                    };
                    let event = crate::events::stock_alert_triggered(
                        customer_id,
                        &told.product_id,
                        &told.name,
                        &told.sku,
                        (&told.price_currency, told.price_amount_minor),
                        told.available,
                    );
                    platform::events::enqueue(&mut *tx, crate::NAME, &event).await?;
                }
                Ok(taken.len())
            }
            .await;
            finish(tx, result).await
        })
    }
}
