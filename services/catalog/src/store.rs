//! All SQL of the catalog. Every statement is written once, in the subset SQLite and PostgreSQL share, and
//! run on whichever pool the [`Db`] holds through `with_db!` — except a checkout's hold and sale, which on
//! PostgreSQL take fewer round trips (`store/postgres.rs`).
//!
//! Stock changes are single conditional UPDATEs (`... WHERE on_hand - reserved >= $1`), so the database,
//! not a read-then-write in Rust, decides whether there is enough; every transaction writes first, so that
//! on SQLite it takes the write lock up front instead of failing with SQLITE_BUSY when upgrading.

use platform::db::{BeginWrite, Db, finish, is_foreign_key_violation, is_unique_violation};
use platform::with_db;

use crate::domain::{
    self, Cursor, MAX_STOCK, Price, ProductFields, ProductOption, ProductOrder, ReservationStatus, ReserveItem,
    SortField, SortKey, Stock, TaxClass, variants,
};
use crate::error::{Error, INSUFFICIENT_STOCK, PRODUCT_INACTIVE, RESERVATION_SETTLED, STOCK_LIMIT};

/// Appends a row to the stock history (a macro: it runs on either engine's transaction).
macro_rules! record_adjustment {
    ($conn:expr, $product_id:expr, $delta:expr, $reason:expr, $actor:expr, $now:expr) => {{
        let adjustment_id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO inventory_adjustments (id, product_id, delta, reason, actor, create_time) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&adjustment_id)
        .bind($product_id)
        .bind($delta)
        .bind($reason)
        .bind($actor)
        .bind($now)
        .execute(&mut *$conn)
        .await?;
        let adjusted = crate::events::inventory_adjusted(&adjustment_id, $product_id, $delta, $reason, $actor);
        platform::events::enqueue(&mut *$conn, crate::NAME, &adjusted).await?;
    }};
}

/// Publishes `inventory.low` (inside the caller's transaction) when taking `taken` available units of a
/// product left it at `available`, below the threshold where it was not before; evaluates to whether it did.
/// The caller knows `available` from its own UPDATE ... RETURNING: no extra read on the checkout's path, except
/// the product's SKU and name when it did fall low (once per crossing), which the event carries for whoever
/// restocks.
macro_rules! report_low_stock {
    ($conn:expr, $product_id:expr, $available:expr, $taken:expr) => {{
        let available: i64 = $available;
        let low = domain::fell_below(available + $taken, available, domain::LOW_STOCK_THRESHOLD);
        if low {
            let (sku, name): (String, String) = sqlx::query_as("SELECT sku, name FROM products WHERE id = $1")
                .bind($product_id)
                .fetch_one(&mut *$conn)
                .await?;
            let event = crate::events::inventory_low($product_id, &sku, &name, available);
            platform::events::enqueue(&mut *$conn, crate::NAME, &event).await?;
        }
        low
    }};
}

/// Holds one reservation line inside the reservation's transaction, or fails the whole reservation; evaluates to
/// whether it wrote an event (`inventory.low`).
macro_rules! hold_item {
    ($conn:expr, $reservation_id:expr, $item:expr, $now:expr) => {{
        let item: &ReserveItem = $item;
        // The line first: the inventory row is locked from its UPDATE to the commit, and a popular product's row
        // is every buyer's, so nothing else runs in between.
        let line =
            sqlx::query("INSERT INTO reservation_items (reservation_id, product_id, quantity) VALUES ($1, $2, $3)")
                .bind($reservation_id)
                .bind(&item.product_id)
                .bind(item.quantity)
                .execute(&mut *$conn)
                .await;
        match line {
            // The line names a product that does not exist (its foreign key).
            Err(e) if is_foreign_key_violation(&e) => return Err(Error::product_not_found(&item.product_id)),
            other => other?,
        };
        hold_stock!($conn, item, $now)
    }};
}

/// Holds the units of one reservation line (its row in `reservation_items` written already), or fails the whole
/// reservation; evaluates to whether it wrote an event (`inventory.low`).
macro_rules! hold_stock {
    ($conn:expr, $item:expr, $now:expr) => {{
        let item: &ReserveItem = $item;
        // The checks (product for sale, enough stock) and the hold are one statement: no other transaction can
        // slip in between, and a hold that succeeds costs one round trip.
        // fetch_all, not fetch_optional: the statement must run to completion on SQLite.
        let held = sqlx::query_scalar::<_, i64>(HOLD_SQL)
            .bind(item.quantity)
            .bind($now)
            .bind(&item.product_id)
            .fetch_all(&mut *$conn)
            .await?;
        let Some(&available) = held.first() else {
            return Err(refused_hold!($conn, item));
        };
        report_low_stock!($conn, item.product_id.as_str(), available, item.quantity)
    }};
}

/// Gives back the units a reservation line held, `sold` of them sold (taken off the units on hand); a macro, as it
/// runs on either engine's transaction.
macro_rules! settle_stock {
    ($conn:expr, $item:expr, $sold:expr, $now:expr) => {{
        let item: &ItemRow = $item;
        sqlx::query(SETTLE_STOCK_SQL)
            .bind($sold)
            .bind(item.quantity)
            .bind($now)
            .bind(&item.product_id)
            .execute(&mut *$conn)
            .await?;
    }};
}

/// Why a hold of `item` took nothing, the product's state first (a macro: it runs on either engine's transaction).
macro_rules! refused_hold {
    ($conn:expr, $item:expr) => {{
        let item: &ReserveItem = $item;
        let active = sqlx::query_scalar::<_, bool>("SELECT active FROM products WHERE id = $1")
            .bind(&item.product_id)
            .fetch_optional(&mut *$conn)
            .await?;
        match active {
            None => Error::product_not_found(&item.product_id),
            Some(false) => Error::FailedPrecondition {
                reason: PRODUCT_INACTIVE,
                message: format!("product {} is not for sale", item.product_id),
            },
            Some(true) => Error::FailedPrecondition {
                reason: INSUFFICIENT_STOCK,
                message: format!("not enough stock of product {} for {} units", item.product_id, item.quantity),
            },
        }
    }};
}

/// The reason of the stock adjustment that sells reservation `id`'s units.
fn sale_reason(id: &str) -> String {
    format!("sale: reservation {id}")
}

/// Holds $1 units of product $3 at time $2 when the product is for sale and has them available; returns the units
/// left available (no row when nothing was held).
const HOLD_SQL: &str = "UPDATE inventory SET reserved = reserved + $1, update_time = $2 \
                        WHERE product_id = $3 AND on_hand - reserved >= $1 \
                        AND EXISTS (SELECT 1 FROM products WHERE id = $3 AND active) RETURNING on_hand - reserved";

/// Gives back $2 held units of product $4 at time $3, $1 of them sold (taken off the units on hand).
const SETTLE_STOCK_SQL: &str = "UPDATE inventory SET on_hand = on_hand - $1, reserved = reserved - $2, \
                                update_time = $3 WHERE product_id = $4";

/// The lines of reservation $1, in product order (the order their inventory rows are locked in).
const RESERVATION_LINES_SQL: &str =
    "SELECT product_id, quantity FROM reservation_items WHERE reservation_id = $1 ORDER BY product_id";

/// Moves reservation $3 from HELD to $1 at time $2.
const MOVE_RESERVATION_SQL: &str =
    "UPDATE reservations SET status = $1, update_time = $2 WHERE id = $3 AND status = 'HELD'";

/// Writes `product.updated` for `$row` (the product as it is now) with its images, inside the change's
/// transaction `$conn`: images are part of the product, so adding or deleting one announces the product too.
macro_rules! announce_update {
    ($conn:expr, $row:expr) => {{
        let row: &crate::store::ProductRow = $row;
        let images = sqlx::query_as::<_, crate::store::ImageRow>(crate::store::images::IMAGES_OF_PRODUCT_SQL)
            .bind(&row.id)
            .fetch_all(&mut *$conn)
            .await?;
        platform::events::enqueue(&mut *$conn, crate::NAME, &crate::events::product_updated(row, images)).await?;
    }};
}

mod alerts;
mod categories;
mod images;
mod postgres;
mod reviews;
mod stock;
#[macro_use]
mod groups;

pub use alerts::{AlertRow, MAX_ALERTS_PER_CUSTOMER};
pub use categories::CategoryRow;
pub use groups::VariantRow;
pub use images::ImageRow;
pub use reviews::{ReviewQuery, ReviewRow};
pub use stock::StockLevelRow;

/// What [`Store::reserve`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    /// The reservation's status: HELD when this call held the items, else whatever an earlier call left.
    pub status: ReservationStatus,
    /// Whether it wrote an event (`inventory.low`), so that the relay has something to publish.
    pub wrote_events: bool,
}

const PRODUCT_COLUMNS: &str = "id, sku, name, description, price_currency, price_amount_minor, category, active, \
     create_time, update_time, rating_count, rating_sum, tax_class, variant_of, options";

/// A stored product.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProductRow {
    /// UUIDv7.
    pub id: String,
    /// Unique stock keeping unit.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Price currency.
    pub price_currency: String,
    /// Price in minor units.
    pub price_amount_minor: i64,
    /// Category slug.
    pub category: String,
    /// Visible to customers.
    pub active: bool,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
    /// How many reviews it has (kept with every review written, changed or deleted).
    pub rating_count: i64,
    /// Their stars added up.
    pub rating_sum: i64,
    /// `standard` or `reduced` ([`TaxClass::as_str`]).
    pub tax_class: String,
    /// The base product's id when this is a variant.
    pub variant_of: Option<String>,
    /// Its options, as [`variants::encode`] writes them.
    pub options: String,
}

impl ProductRow {
    fn new(id: &str, fields: ProductFields, create_time: i64, update_time: i64) -> Self {
        Self {
            id: id.to_owned(),
            sku: fields.sku,
            name: fields.name,
            description: fields.description,
            price_currency: fields.price.currency,
            price_amount_minor: fields.price.amount_minor,
            category: fields.category,
            active: fields.active,
            create_time,
            update_time,
            rating_count: 0,
            rating_sum: 0,
            tax_class: fields.tax_class.as_str().to_owned(),
            variant_of: Some(fields.variant_of).filter(|id| !id.is_empty()),
            options: variants::encode(&fields.options),
        }
    }

    /// Its options ([`stored_options`]).
    pub fn options(&self) -> Vec<ProductOption> {
        stored_options(&self.id, &self.options)
    }

    /// The editable fields.
    pub fn fields(&self) -> ProductFields {
        ProductFields {
            sku: self.sku.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            price: Price { currency: self.price_currency.clone(), amount_minor: self.price_amount_minor },
            category: self.category.clone(),
            active: self.active,
            tax_class: TaxClass::parse(&self.tax_class),
            variant_of: self.variant_of.clone().unwrap_or_default(),
            options: self.options(),
        }
    }
}

/// The options product `product_id` has stored as `stored`; none (and an error logged) when the column holds what
/// no release writes.
pub fn stored_options(product_id: &str, stored: &str) -> Vec<ProductOption> {
    variants::decode(stored).unwrap_or_else(|| {
        tracing::error!(%product_id, %stored, "a product's options are not readable");
        Vec::new()
    })
}

/// A product as a listing found it, with the database's sort text (the lowered name when sorting by name).
#[derive(sqlx::FromRow)]
struct ListedRow {
    #[sqlx(flatten)]
    product: ProductRow,
    sort_text: Option<String>,
}

impl ListedRow {
    /// The product, and the cursor of a page of `order` ending with it.
    fn into_listed(self, order: ProductOrder) -> (ProductRow, Cursor) {
        let key = match order.field {
            SortField::CreateTime => SortKey::Int(self.product.create_time),
            SortField::Price => SortKey::Int(self.product.price_amount_minor),
            SortField::Name => SortKey::Text(self.sort_text.unwrap_or_default()),
            SortField::Rating => {
                SortKey::Int(domain::listing::rating_sort_key(self.product.rating_count, self.product.rating_sum))
            }
        };
        let cursor = Cursor { order, key, id: self.product.id.clone() };
        (self.product, cursor)
    }
}

#[derive(sqlx::FromRow)]
struct StockRow {
    on_hand: i64,
    reserved: i64,
}

impl From<StockRow> for Stock {
    fn from(r: StockRow) -> Self {
        Stock { on_hand: r.on_hand, reserved: r.reserved }
    }
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    product_id: String,
    quantity: i64,
}

/// What ListProducts asks of the store.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Also return inactive products.
    pub include_inactive: bool,
    /// Also return variants (else a group is its base).
    pub include_variants: bool,
    /// Only this category, when not empty.
    pub category: String,
    /// A `LIKE` pattern (lower case, `!`-escaped) on name, description or sku.
    pub pattern: Option<String>,
    /// Only prices of at least this many minor units.
    pub min_price: Option<i64>,
    /// Only prices of at most this many minor units.
    pub max_price: Option<i64>,
    /// The order.
    pub order: ProductOrder,
    /// Start after this product (a cursor of `order`).
    pub after: Option<Cursor>,
    /// At most this many rows.
    pub limit: i64,
}

enum Arg {
    Text(String),
    Int(i64),
}

fn sku_taken(error: sqlx::Error, sku: &str) -> Error {
    if groups::is_twin(&error) {
        Error::AlreadyExists("another product of the group has these options".to_owned())
    } else if is_unique_violation(&error) {
        Error::AlreadyExists(format!("a product with sku {sku} already exists"))
    } else {
        error.into()
    }
}

/// The catalog's tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Inserts a product and its empty inventory row.
    pub async fn create_product(&self, id: &str, fields: ProductFields, now: i64) -> Result<ProductRow, Error> {
        let row = ProductRow::new(id, fields, now, now);
        let insert = format!(
            "INSERT INTO products ({PRODUCT_COLUMNS}, name_key, description_key, options_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        );
        let fields = row.fields();
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<_, Error> = async {
                check_group!(tx, id, &fields);
                sqlx::query(sqlx::AssertSqlSafe(insert))
                    .bind(&row.id)
                    .bind(&row.sku)
                    .bind(&row.name)
                    .bind(&row.description)
                    .bind(&row.price_currency)
                    .bind(row.price_amount_minor)
                    .bind(&row.category)
                    .bind(row.active)
                    .bind(row.create_time)
                    .bind(row.update_time)
                    .bind(row.rating_count)
                    .bind(row.rating_sum)
                    .bind(&row.tax_class)
                    .bind(&row.variant_of)
                    .bind(&row.options)
                    .bind(platform::db::case_key(&row.name))
                    .bind(platform::db::case_key(&row.description))
                    .bind(variants::options_key(&fields.options))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| sku_taken(e, &row.sku))?;
                sqlx::query("INSERT INTO inventory (product_id, on_hand, reserved, update_time) VALUES ($1, 0, 0, $2)")
                    .bind(&row.id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                platform::events::enqueue(&mut *tx, crate::NAME, &crate::events::product_created(&row)).await?;
                Ok(())
            }
            .await;
            finish(tx, result).await?
        });
        Ok(row)
    }

    /// Writes the case-folded keys of the products stored before they had them (migration 0008); returns how
    /// many. Run at start-up, before serving: afterwards every write keeps them.
    pub async fn fill_missing_case_keys(&self) -> Result<usize, Error> {
        let keys = [("name", "name_key"), ("description", "description_key")];
        Ok(platform::db::fill_case_keys(&self.db, "products", &keys).await?)
    }

    /// The product `id`, if it exists.
    pub async fn get_product(&self, id: &str) -> Result<Option<ProductRow>, Error> {
        let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1");
        let row = with_db!(&self.db, pool => {
            sqlx::query_as::<_, ProductRow>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?
        });
        Ok(row)
    }

    /// Products filtered and sorted as asked, after the cursor, each with the cursor of a page ending with it.
    pub async fn list_products(&self, q: &ListQuery) -> Result<Vec<(ProductRow, Cursor)>, Error> {
        let field = q.order.field;
        let sort_text = if field == SortField::Name { "name_key" } else { "CAST(NULL AS TEXT)" };
        let mut sql = format!("SELECT {PRODUCT_COLUMNS}, {sort_text} AS sort_text FROM products WHERE 1 = 1");
        let mut args = Vec::new();
        let mut arg = |a: Arg| {
            args.push(a);
            args.len()
        };
        if !q.include_inactive {
            sql.push_str(" AND active = TRUE");
        }
        if !q.include_variants {
            sql.push_str(" AND variant_of IS NULL");
        }
        if !q.category.is_empty() {
            let n = arg(Arg::Text(q.category.clone()));
            sql.push_str(&format!(" AND category = ${n}"));
        }
        if let Some(pattern) = &q.pattern {
            let n = arg(Arg::Text(pattern.clone()));
            sql.push_str(&format!(
                " AND (name_key LIKE ${n} ESCAPE '!' OR description_key LIKE ${n} ESCAPE '!' \
                 OR LOWER(sku) LIKE ${n} ESCAPE '!')"
            ));
        }
        if let Some(min) = q.min_price {
            let n = arg(Arg::Int(min));
            sql.push_str(&format!(" AND price_amount_minor >= ${n}"));
        }
        if let Some(max) = q.max_price {
            let n = arg(Arg::Int(max));
            sql.push_str(&format!(" AND price_amount_minor <= ${n}"));
        }
        let expression = field.expression();
        let (direction, beyond) = if q.order.descending { ("DESC", "<") } else { ("ASC", ">") };
        if let Some(after) = &q.after {
            // Keyset pagination: rows strictly after the cursor in (key, id) order, the direction of the listing.
            let k = arg(match &after.key {
                SortKey::Int(n) => Arg::Int(*n),
                SortKey::Text(text) => Arg::Text(text.clone()),
            });
            let i = arg(Arg::Text(after.id.clone()));
            sql.push_str(&format!(" AND ({expression} {beyond} ${k} OR ({expression} = ${k} AND id {beyond} ${i}))"));
        }
        let n = arg(Arg::Int(q.limit));
        sql.push_str(&format!(" ORDER BY {expression} {direction}, id {direction} LIMIT ${n}"));
        let rows = with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, ListedRow>(sqlx::AssertSqlSafe(sql));
            for a in &args {
                query = match a {
                    Arg::Text(s) => query.bind(s.as_str()),
                    Arg::Int(i) => query.bind(*i),
                };
            }
            query.fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(|row| row.into_listed(q.order)).collect())
    }

    /// Changes product `id` to what `change` makes of its current fields. Compare-and-set on update_time, so
    /// two concurrent partial updates cannot silently undo each other.
    pub async fn update_product<F>(&self, id: &str, now: i64, change: F) -> Result<ProductRow, Error>
    where
        F: Fn(&ProductFields) -> Result<ProductFields, Error>,
    {
        loop {
            let current = self.get_product(id).await?.ok_or_else(|| Error::product_not_found(id))?;
            let next = change(&current.fields())?;
            let key = variants::options_key(&next.options);
            // Strictly later, even within one microsecond: update_time is also the version we compare on.
            let update_time = now.max(current.update_time + 1);
            // The reviews' totals are not the editor's to change; they are shown as read.
            let mut row = ProductRow {
                rating_count: current.rating_count,
                rating_sum: current.rating_sum,
                ..ProductRow::new(id, next.clone(), current.create_time, update_time)
            };
            let updated = with_db!(&self.db, pool => {
                let mut tx = pool.begin_write().await?;
                let result: Result<bool, Error> = async {
                    // The base first, then the product: two products made variants of each other at once take
                    // their rows in opposite orders, which PostgreSQL settles by aborting one (a 500 for a move
                    // that would have been refused anyway).
                    check_group!(tx, id, &next);
                    let changed = sqlx::query(
                        "UPDATE products SET sku = $1, name = $2, description = $3, price_currency = $4, \
                         price_amount_minor = $5, category = $6, active = $7, update_time = $8, name_key = $11, \
                         description_key = $12, tax_class = $13, variant_of = $14, options = $15, options_key = $16 \
                         WHERE id = $9 AND update_time = $10",
                    )
                    .bind(&row.sku)
                    .bind(&row.name)
                    .bind(&row.description)
                    .bind(&row.price_currency)
                    .bind(row.price_amount_minor)
                    .bind(&row.category)
                    .bind(row.active)
                    .bind(row.update_time)
                    .bind(id)
                    .bind(current.update_time)
                    .bind(platform::db::case_key(&row.name))
                    .bind(platform::db::case_key(&row.description))
                    .bind(&row.tax_class)
                    .bind(&row.variant_of)
                    .bind(&row.options)
                    .bind(&key)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| sku_taken(e, &row.sku))?
                    .rows_affected();
                    if changed != 1 {
                        return Ok(false);
                    }
                    if current.variant_of != row.variant_of {
                        // Its reviews count for its new group now, and no longer for the old one.
                        let groups = [current.variant_of.as_deref().unwrap_or(id), row.variant_of.as_deref().unwrap_or(id)];
                        let recounted = sqlx::query_as::<_, (String, i64, i64)>(groups::RECOUNT_RATINGS_SQL)
                            .bind(groups[0])
                            .bind(groups[1])
                            .bind(id)
                            .fetch_all(&mut *tx)
                            .await?;
                        if let Some((_, count, sum)) = recounted.into_iter().find(|(recounted, _, _)| recounted == id) {
                            (row.rating_count, row.rating_sum) = (count, sum);
                        }
                    }
                    announce_update!(tx, &row);
                    Ok(true)
                }
                .await;
                finish(tx, result).await?
            });
            if updated {
                return Ok(row);
            }
            // Someone changed the product meanwhile: apply the change to their version.
        }
    }

    /// How many products exist.
    pub async fn count_products(&self) -> Result<i64, Error> {
        let n = with_db!(&self.db, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM products").fetch_one(pool).await?
        });
        Ok(n)
    }

    /// The stock of product `product_id`, if the product exists.
    pub async fn inventory(&self, product_id: &str) -> Result<Option<Stock>, Error> {
        let row = with_db!(&self.db, pool => {
            sqlx::query_as::<_, StockRow>("SELECT on_hand, reserved FROM inventory WHERE product_id = $1")
                .bind(product_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(Stock::from))
    }

    /// Adds `delta` to on hand, recording why and who; on hand never falls below what is reserved.
    pub async fn adjust_inventory(
        &self,
        product_id: &str,
        delta: i64,
        reason: &str,
        actor: &str,
        now: i64,
    ) -> Result<Stock, Error> {
        loop {
            let updated = with_db!(&self.db, pool => {
                let mut tx = pool.begin_write().await?;
                let result: Result<_, Error> = async {
                    // fetch_all, not fetch_optional: the statement must run to completion on SQLite.
                    let rows = sqlx::query_as::<_, StockRow>(
                        "UPDATE inventory SET on_hand = on_hand + $1, update_time = $2 \
                         WHERE product_id = $3 AND on_hand + $1 >= reserved AND on_hand + $1 >= 0 \
                         AND on_hand + $1 <= $4 RETURNING on_hand, reserved",
                    )
                    .bind(delta)
                    .bind(now)
                    .bind(product_id)
                    .bind(MAX_STOCK)
                    .fetch_all(&mut *tx)
                    .await?;
                    let Some(row) = rows.into_iter().next() else {
                        return Ok(None);
                    };
                    record_adjustment!(&mut *tx, product_id, delta, reason, actor, now);
                    if delta < 0 {
                        report_low_stock!(&mut *tx, product_id, row.on_hand - row.reserved, -delta);
                    }
                    Ok(Some(Stock::from(row)))
                }
                .await;
                finish(tx, result).await?
            });
            if let Some(stock) = updated {
                return Ok(stock);
            }
            let current = self.inventory(product_id).await?.ok_or_else(|| Error::product_not_found(product_id))?;
            match domain::adjust(current, delta) {
                Err(domain::AdjustError::BelowReserved) => {
                    return Err(Error::FailedPrecondition {
                        reason: INSUFFICIENT_STOCK,
                        message: format!(
                            "cannot change the stock of product {product_id} by {delta}: {} on hand, {} reserved",
                            current.on_hand, current.reserved
                        ),
                    });
                }
                Err(domain::AdjustError::TooLarge) => {
                    return Err(Error::FailedPrecondition {
                        reason: STOCK_LIMIT,
                        message: format!("on hand of product {product_id} cannot exceed {MAX_STOCK}"),
                    });
                }
                // The stock changed between our two statements and would now allow it: try again.
                Ok(_) => {}
            }
        }
    }

    /// Puts `items` (product id, units) back on hand for the event `event_id`, once: a redelivered event
    /// changes nothing and returns false. Products that no longer exist are skipped.
    pub async fn restock(
        &self,
        event_id: &str,
        items: &[(String, i64)],
        reason: &str,
        now: i64,
    ) -> Result<bool, Error> {
        platform::once_per_event!(&self.db, crate::events::CONSUMER, event_id, |tx| {
            for (product_id, units) in items {
                let changed = sqlx::query(
                    "UPDATE inventory SET on_hand = on_hand + $1, update_time = $2 \
                     WHERE product_id = $3 AND on_hand + $1 <= $4",
                )
                .bind(*units)
                .bind(now)
                .bind(product_id)
                .bind(MAX_STOCK)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if changed == 1 {
                    record_adjustment!(&mut *tx, product_id, *units, reason, "orders", now);
                }
            }
        })
    }

    /// Holds `items` under `reservation_id`, all or none. A reservation id seen before returns that
    /// reservation's status and holds nothing more.
    pub async fn reserve(&self, reservation_id: &str, items: &[ReserveItem], now: i64) -> Result<Reserved, Error> {
        let created = match &self.db {
            Db::Postgres(pool) => postgres::reserve(pool, reservation_id, items, now).await?,
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                // The reservation row first: it takes SQLite's write lock and makes duplicates collide at once.
                let inserted = sqlx::query(
                    "INSERT INTO reservations (id, status, create_time, update_time) VALUES ($1, $2, $3, $3)",
                )
                .bind(reservation_id)
                .bind(ReservationStatus::Held.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await;
                match inserted {
                    Err(e) if is_unique_violation(&e) => {
                        tx.rollback().await?;
                        None
                    }
                    Err(e) => {
                        tx.rollback().await?;
                        return Err(e.into());
                    }
                    Ok(_) => {
                        let result = async {
                            let mut wrote_events = false;
                            for item in items {
                                wrote_events |= hold_item!(&mut *tx, reservation_id, item, now);
                            }
                            Ok(wrote_events)
                        }
                        .await;
                        Some(finish(tx, result).await?)
                    }
                }
            }
        };
        if let Some(wrote_events) = created {
            return Ok(Reserved { status: ReservationStatus::Held, wrote_events });
        }
        let status = self
            .reservation_status(reservation_id)
            .await?
            .ok_or_else(|| Error::reservation_not_found(reservation_id))?;
        Ok(Reserved { status, wrote_events: false })
    }

    /// The status of reservation `id`, if it exists.
    pub async fn reservation_status(&self, id: &str) -> Result<Option<ReservationStatus>, Error> {
        let status = with_db!(&self.db, pool => {
            sqlx::query_scalar::<_, String>("SELECT status FROM reservations WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        status
            .map(|s| {
                ReservationStatus::parse(&s)
                    .ok_or_else(|| Error::Database(sqlx::Error::Protocol(format!("unknown reservation status {s}"))))
            })
            .transpose()
    }

    /// Moves reservation `id` to `target` (RELEASED or COMMITTED); repeating a done move is fine, moving a
    /// reservation settled the other way is refused.
    pub async fn settle(&self, id: &str, target: ReservationStatus, actor: &str, now: i64) -> Result<(), Error> {
        // The move is tried first (it is conditional on HELD), so settling a held reservation — the usual case —
        // reads nothing beforehand. Terminates: nothing ever returns to HELD, so a move that did not apply leaves
        // a settled state to decide on.
        loop {
            if self.apply_settlement(id, target, actor, now).await? {
                return Ok(());
            }
            let current = self.reservation_status(id).await?.ok_or_else(|| Error::reservation_not_found(id))?;
            match domain::transition(current, target) {
                domain::Transition::AlreadyDone => return Ok(()),
                domain::Transition::Refused => {
                    return Err(Error::FailedPrecondition {
                        reason: RESERVATION_SETTLED,
                        message: format!(
                            "reservation {id} is {} and cannot become {}",
                            current.as_str(),
                            target.as_str()
                        ),
                    });
                }
                domain::Transition::Apply => {}
            }
        }
    }

    /// Settles a HELD reservation; false when it was no longer HELD. On SQLite here, on PostgreSQL in fewer round
    /// trips (`postgres::settle`).
    async fn apply_settlement(
        &self,
        id: &str,
        target: ReservationStatus,
        actor: &str,
        now: i64,
    ) -> Result<bool, Error> {
        let pool = match &self.db {
            Db::Postgres(pool) => return postgres::settle(pool, id, target, actor, now).await,
            Db::Sqlite(pool) => pool,
        };
        let commit = target == ReservationStatus::Committed;
        let sale = sale_reason(id);
        let mut tx = pool.begin_write().await?;
        let result: Result<_, Error> = async {
            // The state change first, conditional on HELD: of two concurrent settlements only one moves stock.
            let moved =
                sqlx::query(MOVE_RESERVATION_SQL).bind(target.as_str()).bind(now).bind(id).execute(&mut *tx).await?;
            if moved.rows_affected() != 1 {
                return Ok(false);
            }
            let items = sqlx::query_as::<_, ItemRow>(RESERVATION_LINES_SQL).bind(id).fetch_all(&mut *tx).await?;
            // The adjustments first, then the inventory rows, locked from their UPDATE to the commit.
            if commit {
                for item in &items {
                    record_adjustment!(&mut *tx, &item.product_id, -item.quantity, &sale, actor, now);
                }
            }
            for item in &items {
                settle_stock!(&mut *tx, item, if commit { item.quantity } else { 0 }, now);
            }
            Ok(true)
        }
        .await;
        let applied = finish(tx, result).await?;
        Ok(applied)
    }
}

impl Store {
    /// The ids of the reservations in state COMMITTED.
    pub async fn committed_reservations(&self) -> Result<std::collections::HashSet<String>, Error> {
        let ids = with_db!(&self.db, pool => {
            sqlx::query_scalar::<_, String>("SELECT id FROM reservations WHERE status = 'COMMITTED'")
                .fetch_all(pool)
                .await?
        });
        Ok(ids.into_iter().collect())
    }
}
