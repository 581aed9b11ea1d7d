//! The SQL of wishlists. Every change is one transaction that writes the customer's `wishlists` row first (as the
//! cart's changes write `carts`), so two products saved at once are counted one at a time.

use platform::db::{BeginWrite, finish};
use platform::with_db;

use crate::error::{Error, WISHLIST_FULL};
use crate::store::Store;
use crate::wishlist::{MAX_WISHLIST_ITEMS, SavedItem};

/// What AddWishlistItem saves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSavedItem<'a> {
    /// The product.
    pub product_id: &'a str,
    /// Its sku now, kept for when the catalog no longer sells it.
    pub sku: &'a str,
    /// Its name now, kept for when the catalog no longer sells it.
    pub name: &'a str,
}

impl Store {
    /// The products `customer_id` saved, the latest first.
    pub async fn wishlist(&self, customer_id: &str) -> Result<Vec<SavedItem>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, SavedItem>(
                "SELECT product_id, sku, name, create_time FROM wishlist_items WHERE customer_id = $1 \
                 ORDER BY create_time DESC, product_id",
            )
            .bind(customer_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Saves a product on the wishlist of `customer_id` and returns it as stored: a product saved already stays
    /// as it was; a new one is refused (WISHLIST_FULL) when the wishlist holds [`MAX_WISHLIST_ITEMS`].
    pub async fn save(&self, customer_id: &str, item: &NewSavedItem<'_>, now: i64) -> Result<SavedItem, Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                sqlx::query(
                    "INSERT INTO wishlists (customer_id, update_time) VALUES ($1, $2) \
                     ON CONFLICT (customer_id) DO UPDATE SET update_time = excluded.update_time",
                )
                .bind(customer_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let saved_sql = "SELECT product_id, sku, name, create_time FROM wishlist_items \
                                 WHERE customer_id = $1 AND product_id = $2";
                let saved = sqlx::query_as::<_, SavedItem>(saved_sql)
                    .bind(customer_id)
                    .bind(item.product_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(saved) = saved {
                    return Ok(saved);
                }
                let held = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM wishlist_items WHERE customer_id = $1")
                    .bind(customer_id)
                    .fetch_one(&mut *tx)
                    .await?;
                if held >= MAX_WISHLIST_ITEMS {
                    return Err(Error::FailedPrecondition {
                        reason: WISHLIST_FULL,
                        message: format!(
                            "a wishlist holds at most {MAX_WISHLIST_ITEMS} products: take one off to save another"
                        ),
                    });
                }
                sqlx::query(
                    "INSERT INTO wishlist_items (customer_id, product_id, sku, name, create_time) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(customer_id)
                .bind(item.product_id)
                .bind(item.sku)
                .bind(item.name)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                Ok(SavedItem {
                    product_id: item.product_id.to_owned(),
                    sku: item.sku.to_owned(),
                    name: item.name.to_owned(),
                    create_time: now,
                })
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Takes a product off the wishlist of `customer_id`; one that is not there is no error.
    pub async fn unsave(&self, customer_id: &str, product_id: &str) -> Result<(), Error> {
        with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM wishlist_items WHERE customer_id = $1 AND product_id = $2")
                .bind(customer_id)
                .bind(product_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
