//! All SQL of analytics. Every statement is written once, in the subset SQLite and PostgreSQL share, and run
//! on whichever pool the [`Db`] holds through `with_db!`.
//!
//! Events are recorded in batches ([`Store::record_batch`]): their effects are summed first ([`Totals`]), so a
//! batch writes each aggregate row once.
//!
//! Every change of the aggregates (a batch of events, a rebuild) is one transaction that first writes the single
//! row of `aggregate_lock`: on PostgreSQL that locks it, on SQLite it takes the write lock up front. A rebuild
//! therefore never interleaves with an event being applied: an event committed before it is replayed, an
//! event arriving meanwhile waits and is applied after it, exactly once either way.

use platform::db::{BeginWrite, Db, finish};
use platform::with_db;

use crate::domain::{CodeFigures, CodeSales, Day, Effect, Funnel, Period, ProductSales, SalesFigures};
use crate::error::Error;
use crate::totals::Totals;

/// Events read per query while replaying the history.
const REPLAY_PAGE: i64 = 500;

/// Rows per multi-row upsert: nine parameters each stays far below SQLite's 32766 parameters per statement
/// (a page of the history can touch tens of thousands of product rows: orders have up to 100 lines).
const UPSERT_ROWS: usize = 1000;

/// Takes the aggregates' lock: the first statement of every transaction that changes them.
macro_rules! lock_aggregates {
    ($conn:expr) => {
        sqlx::query("UPDATE aggregate_lock SET id = id WHERE id = 1").execute($conn).await?
    };
}

/// Adds [`Totals`] to the aggregates within the transaction `$tx`: one statement per aggregate table and
/// [`UPSERT_ROWS`] rows, each row once (a macro: it runs on either engine's transaction). The keys of a
/// [`Totals`] are distinct, so every multi-row upsert touches a row at most once, as PostgreSQL requires.
macro_rules! apply_totals {
    ($tx:expr, $totals:expr) => {{
        let totals: &Totals = $totals;
        for rows in totals.sales.iter().collect::<Vec<_>>().chunks(UPSERT_ROWS) {
            let mut upsert = sqlx::QueryBuilder::new(
                "INSERT INTO daily_sales (day, currency, orders, gross_minor, cancelled_orders, cancelled_minor, \
                 refunds, refunded_minor, captured_minor, discounted_orders, discount_minor, shipping_minor, tax_minor) ",
            );
            upsert.push_values(rows, |mut row, ((day, currency), sales)| {
                row.push_bind(*day)
                    .push_bind(currency.clone())
                    .push_bind(sales.orders)
                    .push_bind(sales.gross_minor)
                    .push_bind(sales.cancelled_orders)
                    .push_bind(sales.cancelled_minor)
                    .push_bind(sales.refunds)
                    .push_bind(sales.refunded_minor)
                    .push_bind(sales.captured_minor)
                    .push_bind(sales.discounted_orders)
                    .push_bind(sales.discount_minor)
                    .push_bind(sales.shipping_minor)
                    .push_bind(sales.tax_minor);
            });
            upsert.push(
                " ON CONFLICT (day, currency) DO UPDATE SET \
                 orders = daily_sales.orders + excluded.orders, \
                 gross_minor = daily_sales.gross_minor + excluded.gross_minor, \
                 cancelled_orders = daily_sales.cancelled_orders + excluded.cancelled_orders, \
                 cancelled_minor = daily_sales.cancelled_minor + excluded.cancelled_minor, \
                 refunds = daily_sales.refunds + excluded.refunds, \
                 refunded_minor = daily_sales.refunded_minor + excluded.refunded_minor, \
                 captured_minor = daily_sales.captured_minor + excluded.captured_minor, \
                 discounted_orders = daily_sales.discounted_orders + excluded.discounted_orders, \
                 discount_minor = daily_sales.discount_minor + excluded.discount_minor, \
                 shipping_minor = daily_sales.shipping_minor + excluded.shipping_minor, \
                 tax_minor = daily_sales.tax_minor + excluded.tax_minor",
            );
            upsert.build().execute(&mut *$tx).await?;
        }
        for rows in totals.products.iter().collect::<Vec<_>>().chunks(UPSERT_ROWS) {
            let mut upsert = sqlx::QueryBuilder::new(
                "INSERT INTO daily_product_sales (day, product_id, currency, units_sold, sold_minor, \
                 units_cancelled, cancelled_minor, units_returned) ",
            );
            upsert.push_values(rows, |mut row, ((day, product_id, currency), counts)| {
                row.push_bind(*day)
                    .push_bind(product_id.clone())
                    .push_bind(currency.clone())
                    .push_bind(counts.units_sold)
                    .push_bind(counts.sold_minor)
                    .push_bind(counts.units_cancelled)
                    .push_bind(counts.cancelled_minor)
                    .push_bind(counts.units_returned);
            });
            upsert.push(
                " ON CONFLICT (day, product_id, currency) DO UPDATE SET \
                 units_sold = daily_product_sales.units_sold + excluded.units_sold, \
                 sold_minor = daily_product_sales.sold_minor + excluded.sold_minor, \
                 units_cancelled = daily_product_sales.units_cancelled + excluded.units_cancelled, \
                 cancelled_minor = daily_product_sales.cancelled_minor + excluded.cancelled_minor, \
                 units_returned = daily_product_sales.units_returned + excluded.units_returned",
            );
            upsert.build().execute(&mut *$tx).await?;
        }
        for rows in totals.labels.values().collect::<Vec<_>>().chunks(UPSERT_ROWS) {
            let mut upsert =
                sqlx::QueryBuilder::new("INSERT INTO products (product_id, sku, name, seen_time, seen_event) ");
            upsert.push_values(rows, |mut row, seen| {
                row.push_bind(seen.label.product_id.clone())
                    .push_bind(seen.label.sku.clone())
                    .push_bind(seen.label.name.clone())
                    .push_bind(seen.time)
                    .push_bind(seen.event_id.clone());
            });
            // The latest event wins, by (time, id): the same winner whatever order events arrive or replay in.
            upsert.push(
                " ON CONFLICT (product_id) DO UPDATE SET sku = excluded.sku, name = excluded.name, \
                 seen_time = excluded.seen_time, seen_event = excluded.seen_event \
                 WHERE excluded.seen_time > products.seen_time \
                 OR (excluded.seen_time = products.seen_time AND excluded.seen_event >= products.seen_event)",
            );
            upsert.build().execute(&mut *$tx).await?;
        }
        for rows in totals.funnel.iter().collect::<Vec<_>>().chunks(UPSERT_ROWS) {
            let mut upsert =
                sqlx::QueryBuilder::new("INSERT INTO daily_carts (day, carts_started, orders_from_carts) ");
            upsert.push_values(rows, |mut row, (day, funnel)| {
                row.push_bind(*day).push_bind(funnel.carts_started).push_bind(funnel.orders_from_carts);
            });
            upsert.push(
                " ON CONFLICT (day) DO UPDATE SET \
                 carts_started = daily_carts.carts_started + excluded.carts_started, \
                 orders_from_carts = daily_carts.orders_from_carts + excluded.orders_from_carts",
            );
            upsert.build().execute(&mut *$tx).await?;
        }
        for rows in totals.codes.iter().collect::<Vec<_>>().chunks(UPSERT_ROWS) {
            let mut upsert = sqlx::QueryBuilder::new(
                "INSERT INTO daily_discount_codes (day, code, currency, orders, discount_minor, gross_minor) ",
            );
            upsert.push_values(rows, |mut row, ((day, code, currency), figures)| {
                row.push_bind(*day)
                    .push_bind(code.clone())
                    .push_bind(currency.clone())
                    .push_bind(figures.orders)
                    .push_bind(figures.discount_minor)
                    .push_bind(figures.gross_minor);
            });
            upsert.push(
                " ON CONFLICT (day, code, currency) DO UPDATE SET \
                 orders = daily_discount_codes.orders + excluded.orders, \
                 discount_minor = daily_discount_codes.discount_minor + excluded.discount_minor, \
                 gross_minor = daily_discount_codes.gross_minor + excluded.gross_minor",
            );
            upsert.build().execute(&mut *$tx).await?;
        }
    }};
}

/// A consumed event as `event_log` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RecordedEvent {
    /// The envelope's id.
    pub id: String,
    /// The envelope's type, e.g. `order.confirmed`.
    pub event_type: String,
    /// The envelope's time, in microseconds since the epoch.
    pub event_time: i64,
    /// The envelope's data: the encoded payload message.
    pub payload: Vec<u8>,
}

#[derive(sqlx::FromRow)]
struct DailySalesRow {
    day: i64,
    currency: String,
    orders: i64,
    gross_minor: i64,
    cancelled_orders: i64,
    cancelled_minor: i64,
    refunds: i64,
    refunded_minor: i64,
    captured_minor: i64,
    discounted_orders: i64,
    discount_minor: i64,
    shipping_minor: i64,
    tax_minor: i64,
}

#[derive(sqlx::FromRow)]
struct ProductSalesRow {
    product_id: String,
    currency: String,
    sku: String,
    name: String,
    units: i64,
    revenue_minor: i64,
    units_returned: i64,
}

/// The analytics tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Keeps `event` in the history and adds its `effect` to the aggregates, in one transaction with the
    /// event's id in the inbox. Returns false (and changes nothing) when the event was handled before.
    pub async fn record(&self, event: &RecordedEvent, effect: &Effect) -> Result<bool, Error> {
        let applied = self.record_batch(&[(event.clone(), effect.clone())]).await?;
        Ok(applied.first().copied().unwrap_or(false))
    }

    /// Keeps `events` in the history and adds their effects to the aggregates, in one transaction with their
    /// ids in the inbox: a handful of statements whatever the number of events. Returns, for each event in
    /// order, whether it was new; an event handled before (or earlier in `events`) changes nothing.
    pub async fn record_batch(&self, events: &[(RecordedEvent, Effect)]) -> Result<Vec<bool>, Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                lock_aggregates!(&mut *tx);
                let ids: Vec<&str> = events.iter().map(|(event, _)| event.id.as_str()).collect();
                let mut new = platform::events::first_deliveries(&mut *tx, crate::events::CONSUMER, &ids).await?;
                let mut totals = Totals::default();
                let mut kept = Vec::new();
                let applied: Vec<bool> = events
                    .iter()
                    .map(|(event, effect)| {
                        // `remove`: a second copy of an event in the batch is a repeat.
                        let first = new.remove(&event.id);
                        if first {
                            totals.add(effect, event.event_time, &event.id);
                            kept.push(event);
                        }
                        first
                    })
                    .collect();
                if !kept.is_empty() {
                    let mut log =
                        sqlx::QueryBuilder::new("INSERT INTO event_log (id, event_type, event_time, payload) ");
                    log.push_values(&kept, |mut row, event| {
                        row.push_bind(event.id.clone())
                            .push_bind(event.event_type.clone())
                            .push_bind(event.event_time)
                            .push_bind(event.payload.clone());
                    });
                    log.build().execute(&mut *tx).await?;
                    apply_totals!(tx, &totals);
                }
                Ok(applied)
            }
            .await;
            finish(tx, result).await
        })
    }

    /// Empties the aggregates and replays the whole history in order (time, then id) through `effect_of`,
    /// in one transaction; returns how many events were replayed. Any failure leaves the aggregates as they
    /// were.
    pub async fn rebuild<F>(&self, effect_of: F) -> Result<i64, Error>
    where
        F: Fn(&RecordedEvent) -> Result<Effect, Error> + Send + Sync,
    {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let result = async {
                lock_aggregates!(&mut *tx);
                sqlx::query("DELETE FROM daily_sales").execute(&mut *tx).await?;
                sqlx::query("DELETE FROM daily_product_sales").execute(&mut *tx).await?;
                sqlx::query("DELETE FROM daily_carts").execute(&mut *tx).await?;
                sqlx::query("DELETE FROM products").execute(&mut *tx).await?;
                sqlx::query("DELETE FROM daily_discount_codes").execute(&mut *tx).await?;
                let mut replayed = 0_i64;
                let (mut after_time, mut after_id) = (i64::MIN, String::new());
                loop {
                    // Keyset pages: the history may not fit in memory at once.
                    let page = sqlx::query_as::<_, RecordedEvent>(
                        "SELECT id, event_type, event_time, payload FROM event_log \
                         WHERE event_time > $1 OR (event_time = $1 AND id > $2) \
                         ORDER BY event_time, id LIMIT $3",
                    )
                    .bind(after_time)
                    .bind(&after_id)
                    .bind(REPLAY_PAGE)
                    .fetch_all(&mut *tx)
                    .await?;
                    let Some(last) = page.last() else { break };
                    (after_time, after_id) = (last.event_time, last.id.clone());
                    let mut totals = Totals::default();
                    for event in &page {
                        totals.add(&effect_of(event)?, event.event_time, &event.id);
                        replayed += 1;
                    }
                    apply_totals!(tx, &totals);
                }
                Ok(replayed)
            }
            .await;
            finish(tx, result).await
        })
    }

    /// The sales figures of every day of `period` that has any, by day then currency; only `currency`'s
    /// when given.
    pub async fn daily_sales(
        &self,
        period: Period,
        currency: Option<&str>,
    ) -> Result<Vec<(Day, String, SalesFigures)>, Error> {
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, DailySalesRow>(
                "SELECT day, currency, orders, gross_minor, cancelled_orders, cancelled_minor, refunds, \
                 refunded_minor, captured_minor, discounted_orders, discount_minor, shipping_minor, tax_minor \
                 FROM daily_sales \
                 WHERE day >= $1 AND day < $2 AND ($3 = '' OR currency = $3) ORDER BY day, currency",
            )
            .bind(period.from)
            .bind(period.to)
            .bind(currency.unwrap_or_default())
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| {
                let figures = SalesFigures {
                    orders: r.orders,
                    gross_minor: r.gross_minor,
                    cancelled_orders: r.cancelled_orders,
                    cancelled_minor: r.cancelled_minor,
                    refunds: r.refunds,
                    refunded_minor: r.refunded_minor,
                    captured_minor: r.captured_minor,
                    discounted_orders: r.discounted_orders,
                    discount_minor: r.discount_minor,
                    shipping_minor: r.shipping_minor,
                    tax_minor: r.tax_minor,
                };
                (r.day, r.currency, figures)
            })
            .collect())
    }

    /// The cart funnel summed over `period`.
    pub async fn funnel(&self, period: Period) -> Result<Funnel, Error> {
        let days = with_db!(&self.db, pool => {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT carts_started, orders_from_carts FROM daily_carts WHERE day >= $1 AND day < $2",
            )
            .bind(period.from)
            .bind(period.to)
            .fetch_all(pool)
            .await?
        });
        Ok(days.into_iter().fold(Funnel::default(), |sum, (started, ordered)| Funnel {
            carts_started: sum.carts_started + started,
            orders_from_carts: sum.orders_from_carts + ordered,
        }))
    }

    /// Every discount code's figures summed over `period`, one row per code and currency; only `currency`'s
    /// when given.
    pub async fn code_sales(&self, period: Period, currency: Option<&str>) -> Result<Vec<CodeSales>, Error> {
        // CAST: PostgreSQL's SUM of BIGINT is NUMERIC.
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, (String, String, i64, i64, i64)>(
                "SELECT code, currency, CAST(SUM(orders) AS BIGINT), CAST(SUM(discount_minor) AS BIGINT), \
                 CAST(SUM(gross_minor) AS BIGINT) FROM daily_discount_codes \
                 WHERE day >= $1 AND day < $2 AND ($3 = '' OR currency = $3) GROUP BY code, currency",
            )
            .bind(period.from)
            .bind(period.to)
            .bind(currency.unwrap_or_default())
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(code, currency, orders, discount_minor, gross_minor)| CodeSales {
                code,
                currency,
                figures: CodeFigures { orders, discount_minor, gross_minor },
            })
            .collect())
    }

    /// Every product's net sales over `period`, one row per product and currency, with its latest sku and
    /// name; only `currency`'s when given.
    pub async fn product_sales(&self, period: Period, currency: Option<&str>) -> Result<Vec<ProductSales>, Error> {
        // CAST: PostgreSQL's SUM of BIGINT is NUMERIC.
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, ProductSalesRow>(
                "SELECT s.product_id, s.currency, COALESCE(p.sku, '') AS sku, COALESCE(p.name, '') AS name, \
                 CAST(SUM(s.units_sold - s.units_cancelled) AS BIGINT) AS units, \
                 CAST(SUM(s.sold_minor - s.cancelled_minor) AS BIGINT) AS revenue_minor, \
                 CAST(SUM(s.units_returned) AS BIGINT) AS units_returned \
                 FROM daily_product_sales s LEFT JOIN products p ON p.product_id = s.product_id \
                 WHERE s.day >= $1 AND s.day < $2 AND ($3 = '' OR s.currency = $3) \
                 GROUP BY s.product_id, s.currency, p.sku, p.name",
            )
            .bind(period.from)
            .bind(period.to)
            .bind(currency.unwrap_or_default())
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| ProductSales {
                product_id: r.product_id,
                sku: r.sku,
                name: r.name,
                currency: r.currency,
                units: r.units,
                revenue_minor: r.revenue_minor,
                units_returned: r.units_returned,
            })
            .collect())
    }
}
