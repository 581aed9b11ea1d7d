//! The SQL of shipping rates, as staff manage them and checkout reads them.

use platform::with_db;

use crate::domain::Price;
use crate::error::Error;
use crate::shipping::ShippingRate;
use crate::store::Store;

const COLUMNS: &str = "id, name, countries, currency, price_minor, free_from_minor, disabled, create_time, update_time";

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    name: String,
    countries: String,
    currency: String,
    price_minor: i64,
    free_from_minor: i64,
    disabled: bool,
    create_time: i64,
    update_time: i64,
}

impl From<Row> for ShippingRate {
    fn from(row: Row) -> Self {
        Self {
            id: row.id,
            name: row.name,
            countries: row.countries.split_whitespace().map(str::to_owned).collect(),
            price: Price { currency: row.currency, amount_minor: row.price_minor },
            free_from_minor: (row.free_from_minor > 0).then_some(row.free_from_minor),
            disabled: row.disabled,
            create_time: row.create_time,
            update_time: row.update_time,
        }
    }
}

impl Store {
    /// Stores a new rate. False when its id exists.
    pub async fn insert_shipping_rate(&self, rate: &ShippingRate) -> Result<bool, Error> {
        let sql = format!("INSERT INTO shipping_rates ({COLUMNS}) VALUES ({})", platform::db::values_for(COLUMNS));
        let inserted = with_db!(self.db(), pool => {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&rate.id)
                .bind(&rate.name)
                .bind(rate.countries.join(" "))
                .bind(&rate.price.currency)
                .bind(rate.price.amount_minor)
                .bind(rate.free_from_minor.unwrap_or(0))
                .bind(rate.disabled)
                .bind(rate.create_time)
                .bind(rate.update_time)
                .execute(pool)
                .await
                .map(|_| ())
        });
        Ok(platform::db::inserted(inserted)?)
    }

    /// Rate `id` (lower case), if it exists.
    pub async fn shipping_rate(&self, id: &str) -> Result<Option<ShippingRate>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM shipping_rates WHERE id = $1");
        let row = with_db!(self.db(), pool => {
            sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?
        });
        Ok(row.map(ShippingRate::from))
    }

    /// Every rate, disabled ones too, cheapest first, then by id.
    pub async fn shipping_rates(&self) -> Result<Vec<ShippingRate>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM shipping_rates ORDER BY price_minor, id");
        let rows = with_db!(self.db(), pool => {
            sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(ShippingRate::from).collect())
    }

    /// Writes every field staff may change of `rate`, unless its row changed since `read_at` (its update time
    /// when read): of two staff editing one rate, the second reads again. False when it changed or is gone.
    pub async fn update_shipping_rate(&self, rate: &ShippingRate, read_at: i64) -> Result<bool, Error> {
        let updated = with_db!(self.db(), pool => {
            sqlx::query(
                "UPDATE shipping_rates SET name = $1, countries = $2, currency = $3, price_minor = $4, \
                 free_from_minor = $5, disabled = $6, update_time = $7 WHERE id = $8 AND update_time = $9",
            )
            .bind(&rate.name)
            .bind(rate.countries.join(" "))
            .bind(&rate.price.currency)
            .bind(rate.price.amount_minor)
            .bind(rate.free_from_minor.unwrap_or(0))
            .bind(rate.disabled)
            .bind(rate.update_time)
            .bind(&rate.id)
            .bind(read_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }
}
