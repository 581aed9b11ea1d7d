//! The SQL of tax rates, as staff set them and checkout reads them.

use platform::with_db;

use crate::error::Error;
use crate::store::Store;
use crate::tax::TaxRate;

const COLUMNS: &str = "country, name, rate_basis_points, reduced_rate_basis_points, create_time, update_time";

#[derive(sqlx::FromRow)]
struct Row {
    country: String,
    name: String,
    rate_basis_points: i64,
    reduced_rate_basis_points: Option<i64>,
    create_time: i64,
    update_time: i64,
}

impl From<Row> for TaxRate {
    fn from(row: Row) -> Self {
        Self {
            country: row.country,
            name: row.name,
            // The table's CHECKs keep both within 0..=10000.
            rate_basis_points: u32::try_from(row.rate_basis_points).unwrap_or_default(),
            reduced_rate_basis_points: row.reduced_rate_basis_points.map(|r| u32::try_from(r).unwrap_or_default()),
            create_time: row.create_time,
            update_time: row.update_time,
        }
    }
}

impl Store {
    /// Sets the rate of its country: inserts it, or replaces the name and rates of the one there, keeping when it
    /// was first set. Returns the rate as stored.
    pub async fn set_tax_rate(&self, rate: &TaxRate) -> Result<TaxRate, Error> {
        let sql = format!(
            "INSERT INTO tax_rates ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (country) DO UPDATE SET \
             name = excluded.name, rate_basis_points = excluded.rate_basis_points, \
             reduced_rate_basis_points = excluded.reduced_rate_basis_points, update_time = excluded.update_time \
             RETURNING {COLUMNS}"
        );
        let row = with_db!(self.db(), pool => {
            sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql))
                .bind(&rate.country)
                .bind(&rate.name)
                .bind(i64::from(rate.rate_basis_points))
                .bind(rate.reduced_rate_basis_points.map(i64::from))
                .bind(rate.create_time)
                .bind(rate.update_time)
                .fetch_one(pool)
                .await?
        });
        Ok(TaxRate::from(row))
    }

    /// The rate of `country` (upper case), if it has one.
    pub async fn tax_rate(&self, country: &str) -> Result<Option<TaxRate>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM tax_rates WHERE country = $1");
        let row = with_db!(self.db(), pool => {
            sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql)).bind(country).fetch_optional(pool).await?
        });
        Ok(row.map(TaxRate::from))
    }

    /// Every rate, by country.
    pub async fn tax_rates(&self) -> Result<Vec<TaxRate>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM tax_rates ORDER BY country");
        let rows = with_db!(self.db(), pool => {
            sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(TaxRate::from).collect())
    }

    /// Removes the rate of `country` (upper case). False when it had none.
    pub async fn delete_tax_rate(&self, country: &str) -> Result<bool, Error> {
        let deleted = with_db!(self.db(), pool => {
            sqlx::query("DELETE FROM tax_rates WHERE country = $1").bind(country).execute(pool).await?.rows_affected()
        });
        Ok(deleted == 1)
    }
}
