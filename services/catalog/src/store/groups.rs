//! The SQL of variant groups: the group rules checked inside the transaction that writes a product
//! ([`check_group!`]), and the groups as GetProduct and ListProducts show them ([`Store::groups_of`]).

use std::collections::HashMap;

use platform::with_db;

use super::{ProductRow, Store};
use crate::error::Error;

/// The product $1 as a base: locked until the transaction ends (so that no one makes it a variant, or gives it
/// twins, meanwhile), with its own variant_of and its options.
pub(super) const LOCK_BASE_SQL: &str =
    "UPDATE products SET update_time = update_time WHERE id = $1 RETURNING variant_of, options";

/// The first variant of product $1 (its id and options), if it has any.
pub(super) const FIRST_VARIANT_OPTIONS_SQL: &str =
    "SELECT id, options FROM products WHERE variant_of = $1 ORDER BY create_time, id LIMIT 1";

/// Another product (not $3) of group $1 with options key $2.
pub(super) const TWIN_SQL: &str = "SELECT id FROM products WHERE COALESCE(variant_of, id) = $1 \
     AND options_key = $2 AND options_key <> '' AND id <> $3 LIMIT 1";

/// Counts again the published reviews of the groups whose bases are $1, $2 and $3 onto their bases (a variant's own totals
/// are none: ADD_TO_TOTALS keeps a group's on its base), once a product moved between them; yields each row's
/// totals.
pub(super) const RECOUNT_RATINGS_SQL: &str = "UPDATE products SET \
     rating_count = (SELECT COUNT(*) FROM reviews r JOIN products m ON m.id = r.product_id \
         WHERE COALESCE(m.variant_of, m.id) = products.id AND r.published), \
     rating_sum = (SELECT COALESCE(SUM(r.rating), 0) FROM reviews r JOIN products m ON m.id = r.product_id \
         WHERE COALESCE(m.variant_of, m.id) = products.id AND r.published) \
     WHERE id IN ($1, $2, $3) RETURNING id, rating_count, rating_sum";

/// The name of the unique index that keeps a group's options apart (migration 0014).
const TWIN_INDEX: &str = "products_variant_options";

/// Whether `error` is the violation of the unique index that keeps a group's options apart: a writer that raced
/// another past [`check_group!`]'s look-up (both engines name the index in their message).
pub(super) fn is_twin(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| e.is_unique_violation() && e.message().contains(TWIN_INDEX))
}

/// Refuses (returns from the enclosing async block with) the write of product `$id` as `$fields` would have it
/// when it breaks a group rule (`domain::variants::check_group`: INVALID_ARGUMENT) or takes the options of
/// another product of its group (ALREADY_EXISTS). Runs inside the write's transaction `$conn`, before the write,
/// and locks the base it names first (a macro: it runs on either engine's transaction).
macro_rules! check_group {
    ($conn:expr, $id:expr, $fields:expr) => {{
        let id: &str = $id;
        let fields: &crate::domain::ProductFields = $fields;
        let mut facts = crate::domain::variants::GroupFacts::default();
        if !fields.variant_of.is_empty() && fields.variant_of != id {
            // fetch_all, not fetch_optional: the statement must run to completion on SQLite.
            let base = sqlx::query_as::<_, (Option<String>, String)>(groups::LOCK_BASE_SQL)
                .bind(&fields.variant_of)
                .fetch_all(&mut *$conn)
                .await?;
            if let Some((variant_of, options)) = base.into_iter().next() {
                facts.base = Some(variant_of);
                facts.sibling_options = Some(stored_options(&fields.variant_of, &options));
            }
        }
        let first_variant = sqlx::query_as::<_, (String, String)>(groups::FIRST_VARIANT_OPTIONS_SQL)
            .bind(id)
            .fetch_optional(&mut *$conn)
            .await?;
        if let Some((variant_id, options)) = first_variant {
            facts.has_variants = true;
            if fields.variant_of.is_empty() {
                facts.sibling_options = Some(stored_options(&variant_id, &options));
            }
        }
        let violations = crate::domain::variants::check_group(id, &fields.variant_of, &fields.options, &facts);
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        if !fields.variant_of.is_empty() || facts.has_variants {
            let group = if fields.variant_of.is_empty() { id } else { fields.variant_of.as_str() };
            let twin = sqlx::query_scalar::<_, String>(groups::TWIN_SQL)
                .bind(group)
                .bind(crate::domain::variants::options_key(&fields.options))
                .bind(id)
                .fetch_optional(&mut *$conn)
                .await?;
            if let Some(twin) = twin {
                return Err(Error::AlreadyExists(format!(
                    "product {twin} of the group already has the options {}",
                    crate::domain::variants::describe(&fields.options)
                )));
            }
        }
    }};
}

/// A product of a group, as its siblings show it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VariantRow {
    /// The group: its base's id.
    pub group_id: String,
    /// The product's id.
    pub id: String,
    /// Its sku.
    pub sku: String,
    /// Its name.
    pub name: String,
    /// Its options, as stored.
    pub options: String,
    /// Its price's currency.
    pub price_currency: String,
    /// Its price in minor units.
    pub price_amount_minor: i64,
    /// Whether it is for sale.
    pub active: bool,
    /// Units that can be ordered now.
    pub available: i64,
    /// How many reviews its group has, when it is the base (a group's totals are kept on its base).
    pub rating_count: i64,
    /// Their stars added up, as `rating_count`.
    pub rating_sum: i64,
}

impl Store {
    /// The ids of every product of `product`'s variant group (the base first), or its own alone when it has no
    /// options (every product of a group has options).
    pub async fn group_members(&self, product: &ProductRow) -> Result<Vec<String>, Error> {
        if product.options().is_empty() {
            return Ok(vec![product.id.clone()]);
        }
        let group = product.variant_of.as_deref().unwrap_or(&product.id);
        Ok(with_db!(&self.db, pool => {
            sqlx::query_scalar::<_, String>(
                "SELECT id FROM products WHERE id = $1 OR variant_of = $1 \
                 ORDER BY CASE WHEN variant_of IS NULL THEN 0 ELSE 1 END, create_time, id",
            )
            .bind(group)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Every product of the groups whose bases are `group_ids`, by group: the base first, then the variants in the
    /// order they were added. One query for them all.
    pub async fn groups_of(&self, group_ids: &[&str]) -> Result<HashMap<String, Vec<VariantRow>>, Error> {
        if group_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let list = platform::db::placeholders(1, group_ids.len());
        let sql = format!(
            "SELECT COALESCE(p.variant_of, p.id) AS group_id, p.id, p.sku, p.name, p.options, p.price_currency, \
             p.price_amount_minor, p.active, i.on_hand - i.reserved AS available, p.rating_count, p.rating_sum \
             FROM products p JOIN inventory i ON i.product_id = p.id \
             WHERE p.id IN ({list}) OR p.variant_of IN ({list}) \
             ORDER BY CASE WHEN p.variant_of IS NULL THEN 0 ELSE 1 END, p.create_time, p.id"
        );
        let rows = with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, VariantRow>(sqlx::AssertSqlSafe(sql));
            for id in group_ids {
                query = query.bind(*id);
            }
            query.fetch_all(pool).await?
        });
        let mut groups: HashMap<String, Vec<VariantRow>> = HashMap::new();
        for row in rows {
            groups.entry(row.group_id.clone()).or_default().push(row);
        }
        Ok(groups)
    }
}
