//! The SQL of discount codes as staff manage them and checkout reads them. Counting a use, and giving it back,
//! happen in the transactions that place and end orders ([`Store::insert_order`], [`Store::advance`]).

use platform::paging::KeyCursor;
use platform::with_db;

use crate::discount::{DiscountCode, Off};
use crate::domain::Price;
use crate::error::Error;
use crate::store::Store;

const COLUMNS: &str = "code, description, percent_off, amount_off_minor, amount_currency, minimum_minor, \
     minimum_currency, start_time, end_time, max_redemptions, once_per_customer, disabled, times_redeemed, \
     create_time, update_time, free_shipping";

#[derive(sqlx::FromRow)]
struct Row {
    code: String,
    description: String,
    percent_off: i64,
    amount_off_minor: i64,
    amount_currency: String,
    minimum_minor: i64,
    minimum_currency: String,
    start_time: i64,
    end_time: i64,
    max_redemptions: i64,
    once_per_customer: bool,
    disabled: bool,
    times_redeemed: i64,
    create_time: i64,
    update_time: i64,
    free_shipping: bool,
}

impl From<Row> for DiscountCode {
    fn from(row: Row) -> Self {
        Self {
            off: if row.free_shipping {
                Off::FreeShipping
            } else if row.percent_off > 0 {
                Off::Percent(row.percent_off)
            } else {
                Off::Amount(Price { currency: row.amount_currency, amount_minor: row.amount_off_minor })
            },
            minimum: (row.minimum_minor > 0)
                .then_some(Price { currency: row.minimum_currency, amount_minor: row.minimum_minor }),
            end_time: (row.end_time != 0).then_some(row.end_time),
            code: row.code,
            description: row.description,
            start_time: row.start_time,
            max_redemptions: row.max_redemptions,
            once_per_customer: row.once_per_customer,
            disabled: row.disabled,
            times_redeemed: row.times_redeemed,
            create_time: row.create_time,
            update_time: row.update_time,
        }
    }
}

impl Store {
    /// Stores a new code. False when the code exists.
    pub async fn insert_discount_code(&self, code: &DiscountCode) -> Result<bool, Error> {
        let (percent, amount) = match &code.off {
            Off::Percent(percent) => (*percent, None),
            Off::Amount(amount) => (0, Some(amount)),
            Off::FreeShipping => (0, None),
        };
        let sql = format!("INSERT INTO discount_codes ({COLUMNS}) VALUES ({})", platform::db::values_for(COLUMNS));
        let inserted = with_db!(self.db(), pool => {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&code.code)
                .bind(&code.description)
                .bind(percent)
                .bind(amount.map_or(0, |a| a.amount_minor))
                .bind(amount.map_or("", |a| a.currency.as_str()))
                .bind(code.minimum.as_ref().map_or(0, |m| m.amount_minor))
                .bind(code.minimum.as_ref().map_or("", |m| m.currency.as_str()))
                .bind(code.start_time)
                .bind(code.end_time.unwrap_or(0))
                .bind(code.max_redemptions)
                .bind(code.once_per_customer)
                .bind(code.disabled)
                .bind(code.times_redeemed)
                .bind(code.create_time)
                .bind(code.update_time)
                .bind(code.off == Off::FreeShipping)
                .execute(pool)
                .await
                .map(|_| ())
        });
        Ok(platform::db::inserted(inserted)?)
    }

    /// Code `code` (upper case), if it exists.
    pub async fn discount_code(&self, code: &str) -> Result<Option<DiscountCode>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM discount_codes WHERE code = $1");
        let row = with_db!(self.db(), pool => {
            sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql)).bind(code).fetch_optional(pool).await?
        });
        Ok(row.map(DiscountCode::from))
    }

    /// Whether `customer_id` holds a use of `code` (by an order not failed or cancelled).
    pub async fn has_redeemed(&self, code: &str, customer_id: &str) -> Result<bool, Error> {
        let uses: i64 = with_db!(self.db(), pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM discount_redemptions WHERE code = $1 AND customer_id = $2")
                .bind(code)
                .bind(customer_id)
                .fetch_one(pool)
                .await?
        });
        Ok(uses > 0)
    }

    /// How many discount codes `customer_id` had refused in the hour starting at `window`.
    pub async fn refused_codes(&self, customer_id: &str, window: i64) -> Result<i64, Error> {
        let refused: Option<i64> = with_db!(self.db(), pool => {
            sqlx::query_scalar(
                "SELECT CAST(refused AS BIGINT) FROM discount_code_refusals WHERE customer_id = $1 AND window_start = $2",
            )
            .bind(customer_id)
            .bind(window)
            .fetch_optional(pool)
            .await?
        });
        Ok(refused.unwrap_or(0))
    }

    /// Counts a refused code of `customer_id` in the hour starting at `window` (an earlier hour's count starts
    /// again from one).
    pub async fn count_refused_code(&self, customer_id: &str, window: i64) -> Result<(), Error> {
        with_db!(self.db(), pool => {
            sqlx::query(
                "INSERT INTO discount_code_refusals (customer_id, window_start, refused) VALUES ($1, $2, 1) \
                 ON CONFLICT (customer_id) DO UPDATE SET \
                 refused = CASE WHEN discount_code_refusals.window_start = excluded.window_start \
                     THEN discount_code_refusals.refused + 1 ELSE 1 END, \
                 window_start = excluded.window_start",
            )
            .bind(customer_id)
            .bind(window)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Codes newest first, after the cursor (create time and code), at most `limit`.
    pub async fn discount_codes(&self, after: Option<&KeyCursor>, limit: i64) -> Result<Vec<DiscountCode>, Error> {
        let (time, code) = after.map_or((i64::MAX, ""), |c| (c.key, c.id.as_str()));
        let sql = format!(
            "SELECT {COLUMNS} FROM discount_codes WHERE create_time < $1 OR (create_time = $1 AND code < $2) \
             ORDER BY create_time DESC, code DESC LIMIT $3"
        );
        let rows = with_db!(self.db(), pool => {
            sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql)).bind(time).bind(code).bind(limit).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(DiscountCode::from).collect())
    }

    /// Writes the terms staff may change (description, period, limit, disabled) of `code`, unless its row
    /// changed since `read_at` (its update time when read): a use counted meanwhile is kept, and the caller
    /// reads again. False when it changed or is gone.
    pub async fn update_discount_code(&self, code: &DiscountCode, read_at: i64) -> Result<bool, Error> {
        let updated = with_db!(self.db(), pool => {
            sqlx::query(
                "UPDATE discount_codes SET description = $1, start_time = $2, end_time = $3, max_redemptions = $4, \
                 disabled = $5, update_time = $6 WHERE code = $7 AND update_time = $8",
            )
            .bind(&code.description)
            .bind(code.start_time)
            .bind(code.end_time.unwrap_or(0))
            .bind(code.max_redemptions)
            .bind(code.disabled)
            .bind(code.update_time)
            .bind(&code.code)
            .bind(read_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }
}
