//! The SQL of stock levels listed for restocking: every product's stock with its SKU and name, fewest units
//! available first.

use platform::with_db;

use super::Store;
use crate::domain::Stock;
use crate::domain::stock::{StockCursor, StockQuery};
use crate::error::Error;

/// A product's stock as the restocking list shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StockLevelRow {
    /// The product.
    pub product_id: String,
    /// Its stock-keeping unit.
    pub sku: String,
    /// Its name.
    pub name: String,
    /// Whether it is for sale.
    pub active: bool,
    /// Units in the warehouse.
    pub on_hand: i64,
    /// Units held by reservations.
    pub reserved: i64,
}

impl StockLevelRow {
    /// The stock alone.
    pub fn stock(&self) -> Stock {
        Stock { on_hand: self.on_hand, reserved: self.reserved }
    }

    /// Where a page ending with this line ends.
    pub fn cursor(&self) -> StockCursor {
        StockCursor { key: self.stock().available(), id: self.product_id.clone() }
    }
}

impl Store {
    /// Stock levels `query` selects, fewest available first (ties by product id); at most `limit` of them.
    /// `(on_hand - reserved, product_id)` is indexed (migration 0009), in the spelling used here.
    pub async fn stock_levels(&self, query: &StockQuery, limit: i64) -> Result<Vec<StockLevelRow>, Error> {
        let mut sql = String::from(
            "SELECT i.product_id, p.sku, p.name, p.active, i.on_hand, i.reserved \
             FROM inventory i JOIN products p ON p.id = i.product_id WHERE 1 = 1",
        );
        if !query.include_inactive {
            sql.push_str(" AND p.active = TRUE");
        }
        let mut parameters = 0;
        let mut next = || {
            parameters += 1;
            parameters
        };
        if query.available_below.is_some() {
            sql.push_str(&format!(" AND (i.on_hand - i.reserved) < ${}", next()));
        }
        if query.after.is_some() {
            let (available, id) = (next(), next());
            sql.push_str(&format!(
                " AND ((i.on_hand - i.reserved) > ${available} \
                 OR ((i.on_hand - i.reserved) = ${available} AND i.product_id > ${id}))"
            ));
        }
        sql.push_str(&format!(" ORDER BY (i.on_hand - i.reserved), i.product_id LIMIT ${}", next()));
        let rows = with_db!(&self.db, pool => {
            let mut statement = sqlx::query_as::<_, StockLevelRow>(sqlx::AssertSqlSafe(sql));
            if let Some(below) = query.available_below {
                statement = statement.bind(below);
            }
            if let Some(StockCursor { key: available, id }) = &query.after {
                statement = statement.bind(*available).bind(id.as_str());
            }
            statement.bind(limit).fetch_all(pool).await?
        });
        Ok(rows)
    }
}
