//! The SQL of product images. Their bytes are in the blob store: the caller writes them before
//! [`Store::add_image`] and removes them after [`Store::delete_image`].

use std::collections::HashMap;

use platform::db::{BeginWrite, finish};
use platform::with_db;

use super::{PRODUCT_COLUMNS, ProductRow, Store};
use crate::domain::images::{ImageInput, MAX_IMAGES};
use crate::error::{Error, IMAGE_LIMIT};

/// The columns of `product_images`, in [`ImageRow`]'s order (a macro, so statements are built at compile time).
macro_rules! image_columns {
    () => {
        "id, product_id, content_type, size_bytes, alt_text, create_time"
    };
}

/// The images of product $1, in the order shown.
pub(super) const IMAGES_OF_PRODUCT_SQL: &str =
    concat!("SELECT ", image_columns!(), " FROM product_images WHERE product_id = $1 ORDER BY position");

/// Marks product $1 changed at $2 (strictly later than before: update_time is the version `update_product`
/// compares on) and yields its row; it stays locked until the transaction ends.
fn touch_product_sql() -> String {
    format!(
        "UPDATE products SET update_time = CASE WHEN update_time < $2 THEN $2 ELSE update_time + 1 END \
         WHERE id = $1 RETURNING {PRODUCT_COLUMNS}"
    )
}

/// A stored image of a product.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ImageRow {
    /// UUIDv7.
    pub id: String,
    /// Its product.
    pub product_id: String,
    /// image/jpeg, image/png, image/webp or image/gif.
    pub content_type: String,
    /// Bytes.
    pub size_bytes: i64,
    /// Alt text; may be empty.
    pub alt_text: String,
    /// Microseconds since the epoch.
    pub create_time: i64,
}

/// An image with whether its product is active, read in one query.
#[derive(sqlx::FromRow)]
struct ImageOfProduct {
    #[sqlx(flatten)]
    image: ImageRow,
    active: bool,
}

/// A product with one of its images, or with none (a LEFT JOIN's row of a product without images).
#[derive(sqlx::FromRow)]
struct ProductImageRow {
    #[sqlx(flatten)]
    product: ProductRow,
    image_id: Option<String>,
    image_content_type: Option<String>,
    image_size_bytes: Option<i64>,
    image_alt_text: Option<String>,
    image_create_time: Option<i64>,
}

/// Product $1 and its images in the order shown, one row per image (one row with NULL image columns for a
/// product without any): what GetProduct shows, in one round trip.
const PRODUCT_WITH_IMAGES_SQL: &str = "SELECT p.id, p.sku, p.name, p.description, p.price_currency, \
     p.price_amount_minor, p.category, p.active, p.create_time, p.update_time, p.rating_count, p.rating_sum, \
     p.tax_class, p.variant_of, p.options, i.id AS image_id, \
     i.content_type AS image_content_type, i.size_bytes AS image_size_bytes, i.alt_text AS image_alt_text, \
     i.create_time AS image_create_time \
     FROM products p LEFT JOIN product_images i ON i.product_id = p.id WHERE p.id = $1 ORDER BY i.position";

impl Store {
    /// Product `id` with its images in the order shown, read in one statement; `None` without the product.
    pub async fn product_with_images(&self, id: &str) -> Result<Option<(ProductRow, Vec<ImageRow>)>, Error> {
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, ProductImageRow>(PRODUCT_WITH_IMAGES_SQL).bind(id).fetch_all(pool).await?
        });
        let mut rows = rows.into_iter();
        let Some(first) = rows.next() else {
            return Ok(None);
        };
        let product = first.product.clone();
        let images = std::iter::once(first)
            .chain(rows)
            .filter_map(|row| {
                Some(ImageRow {
                    id: row.image_id?,
                    product_id: row.product.id,
                    content_type: row.image_content_type?,
                    size_bytes: row.image_size_bytes?,
                    alt_text: row.image_alt_text?,
                    create_time: row.image_create_time?,
                })
            })
            .collect();
        Ok(Some((product, images)))
    }

    /// Adds image `id` (its bytes already stored) after the other images of product `product_id`: NOT_FOUND
    /// without the product, FAILED_PRECONDITION (IMAGE_LIMIT) when it has [`MAX_IMAGES`] already. The
    /// product's row is written first (its update_time), so concurrent additions to one product are counted one
    /// at a time; `product.updated` tells of the new image.
    pub async fn add_image(
        &self,
        id: &str,
        product_id: &str,
        image: &ImageInput,
        size_bytes: i64,
        now: i64,
    ) -> Result<ImageRow, Error> {
        let row = ImageRow {
            id: id.to_owned(),
            product_id: product_id.to_owned(),
            content_type: image.content_type.clone(),
            size_bytes,
            alt_text: image.alt_text.clone(),
            create_time: now,
        };
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                let product = sqlx::query_as::<_, ProductRow>(sqlx::AssertSqlSafe(touch_product_sql()))
                    .bind(product_id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| Error::product_not_found(product_id))?;
                let (count, last) = sqlx::query_as::<_, (i64, i64)>(
                    "SELECT COUNT(*), COALESCE(MAX(position), 0) FROM product_images WHERE product_id = $1",
                )
                .bind(product_id)
                .fetch_one(&mut *tx)
                .await?;
                if count >= MAX_IMAGES {
                    return Err(Error::FailedPrecondition {
                        reason: IMAGE_LIMIT,
                        message: format!("product {product_id} has {MAX_IMAGES} images already; delete one first"),
                    });
                }
                sqlx::query(concat!(
                    "INSERT INTO product_images (",
                    image_columns!(),
                    ", position) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(&row.id)
                .bind(&row.product_id)
                .bind(&row.content_type)
                .bind(row.size_bytes)
                .bind(&row.alt_text)
                .bind(row.create_time)
                .bind(last + 1)
                .execute(&mut *tx)
                .await?;
                announce_update!(tx, &product);
                Ok(())
            }
            .await;
            finish(tx, result).await?
        });
        Ok(row)
    }

    /// Image `image_id` of product `product_id`, if it has it, with whether the product is active (one query:
    /// an inactive product's images are as hidden as the product).
    pub async fn image(&self, product_id: &str, image_id: &str) -> Result<Option<(ImageRow, bool)>, Error> {
        let found = with_db!(&self.db, pool => {
            sqlx::query_as::<_, ImageOfProduct>(
                "SELECT i.id, i.product_id, i.content_type, i.size_bytes, i.alt_text, i.create_time, p.active \
                 FROM product_images i JOIN products p ON p.id = i.product_id WHERE i.id = $1 AND i.product_id = $2",
            )
            .bind(image_id)
            .bind(product_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(found.map(|f| (f.image, f.active)))
    }

    /// The images of product `product_id`, in the order shown (one fixed statement, for a single product).
    pub async fn images_of_product(&self, product_id: &str) -> Result<Vec<ImageRow>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, ImageRow>(IMAGES_OF_PRODUCT_SQL)
            .bind(product_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The images of each of `product_ids`, in the order shown (a product without images is absent).
    pub async fn images_of(&self, product_ids: &[&str]) -> Result<HashMap<String, Vec<ImageRow>>, Error> {
        let mut images: HashMap<String, Vec<ImageRow>> = HashMap::new();
        if product_ids.is_empty() {
            return Ok(images);
        }
        // One placeholder per product of the page (at most a page size): `$1, $2, ...`.
        let placeholders = (1..=product_ids.len()).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            concat!(
                "SELECT ",
                image_columns!(),
                " FROM product_images WHERE product_id IN ({}) ORDER BY product_id, position"
            ),
            placeholders
        );
        let rows = with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, ImageRow>(sqlx::AssertSqlSafe(sql));
            for id in product_ids {
                query = query.bind(*id);
            }
            query.fetch_all(pool).await?
        });
        for row in rows {
            images.entry(row.product_id.clone()).or_default().push(row);
        }
        Ok(images)
    }

    /// The (product, image) ids of every image: what the blob store may keep ([`crate::sweep_orphan_images`]).
    pub async fn image_ids(&self) -> Result<Vec<(String, String)>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, (String, String)>("SELECT product_id, id FROM product_images").fetch_all(pool).await?
        }))
    }

    /// Removes image `image_id` from product `product_id` and tells of it (`product.updated`, its update_time
    /// moved); false, changing nothing, when it has no such image.
    pub async fn delete_image(&self, product_id: &str, image_id: &str, now: i64) -> Result<bool, Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                let deleted = sqlx::query("DELETE FROM product_images WHERE id = $1 AND product_id = $2")
                    .bind(image_id)
                    .bind(product_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted == 0 {
                    return Ok(false);
                }
                // The image's foreign key held its product in place.
                let product = sqlx::query_as::<_, ProductRow>(sqlx::AssertSqlSafe(touch_product_sql()))
                    .bind(product_id)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                announce_update!(tx, &product);
                Ok(true)
            }
            .await;
            finish(tx, result).await
        })
    }
}
