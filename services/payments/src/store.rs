//! All SQL of the payments service. Every statement is written once, in the subset SQLite and PostgreSQL
//! share, and run on whichever pool the [`Db`] holds through `with_db!`.
//!
//! Every transaction writes first, so that on SQLite it takes the write lock up front and on PostgreSQL the
//! row lock that serialises concurrent requests is the first thing it takes:
//! - an idempotency key is claimed by a lone `INSERT` (the primary key decides who runs the request);
//! - a payment is stored with its outbox event and its key's result in one transaction that starts with the
//!   payment's `INSERT` (on PostgreSQL one statement: data-modifying CTEs, the payment's `INSERT` first);
//! - a refund reserves its amount with one conditional
//!   `UPDATE payments SET refunded_minor = refunded_minor + $1 ... AND refunded_minor + $1 <= amount_minor`
//!   as its first statement, so concurrent refunds never take the total beyond the captured amount.

use platform::db::finish;
use platform::db::{BeginWrite, Db, is_unique_violation};
use platform::events::{self, NewEvent};
use platform::with_db;

use crate::domain::Status;
use crate::error::Error;

const PAYMENT_COLUMNS: &str = "id, order_id, customer_id, currency, amount_minor, refunded_minor, status, \
     payment_method, failure_code, failure_reason, processor_reference, ledger_posted, create_time, update_time, \
     tax_minor";

const REFUND_COLUMNS: &str = "refund_id, payment_id, currency, amount_minor, state, reason, processor_reference, \
     ledger_posted, create_time, update_time";

/// Inserts a payment; [`bind_payment`] binds $1 to $15.
static INSERT_PAYMENT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("INSERT INTO payments ({PAYMENT_COLUMNS}) VALUES ({})", platform::db::values_for(PAYMENT_COLUMNS))
});

/// PostgreSQL: the payment ($1 to $15), its key's result (state $16 for key $17 of the payment's customer) and
/// its event ($18 to $24) in one statement.
static INSERT_PAYMENT_WITH_EVENT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH paid AS ({} RETURNING id), \
         kept AS (UPDATE idempotency_keys SET state = $16, payment_id = $1, update_time = $14 \
         WHERE customer_id = $3 AND idempotency_key = $17) {}",
        *INSERT_PAYMENT_SQL,
        events::OutboxEntry::insert_from("paid", 18)
    )
});

/// Binds a payment's columns, in the order of [`PAYMENT_COLUMNS`].
fn bind_payment<'q, DB>(query: platform::db::Query<'q, DB>, p: &'q PaymentRow) -> platform::db::Query<'q, DB>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(p.id.as_str())
        .bind(p.order_id.as_str())
        .bind(p.customer_id.as_str())
        .bind(p.currency.as_str())
        .bind(p.amount_minor)
        .bind(p.refunded_minor)
        .bind(p.status.as_str())
        .bind(p.payment_method.as_str())
        .bind(p.failure_code.as_str())
        .bind(p.failure_reason.as_str())
        .bind(p.processor_reference.as_str())
        .bind(p.ledger_posted)
        .bind(p.create_time)
        .bind(p.update_time)
        .bind(p.tax_minor)
}

/// Idempotency key state while its first request runs.
pub const KEY_STARTED: &str = "started";
/// Idempotency key state once its result is stored.
pub const KEY_FINISHED: &str = "finished";
/// Refund state while the processor is asked (the amount is reserved).
pub const REFUND_PENDING: &str = "pending";
/// Refund state once the processor gave the money back.
pub const REFUND_COMPLETED: &str = "completed";

/// Which payments a listing reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFilter {
    /// Only this customer's.
    pub customer_id: Option<String>,
    /// Only this order's.
    pub order_id: Option<String>,
    /// Only those in this state.
    pub status: Option<Status>,
    /// Only those older than this payment (the last of the previous page).
    pub after: Option<String>,
    /// Only those made in this period (microseconds, start inclusive, end exclusive).
    pub period: (i64, i64),
    /// At most this many.
    pub limit: i64,
}

/// A stored payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRow {
    /// UUIDv7.
    pub id: String,
    /// The order paid for.
    pub order_id: String,
    /// The customer charged.
    pub customer_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Amount charged, minor units.
    pub amount_minor: i64,
    /// Amount given back or being given back.
    pub refunded_minor: i64,
    /// State.
    pub status: Status,
    /// Payment method token.
    pub payment_method: String,
    /// Machine-readable failure code; empty unless failed.
    pub failure_code: String,
    /// Failure reason for customers; empty unless failed.
    pub failure_reason: String,
    /// Processor reference of the charge; empty unless captured.
    pub processor_reference: String,
    /// Whether the capture's ledger transaction is recorded.
    pub ledger_posted: bool,
    /// The tax the amount includes (0: none), booked as owed rather than as sales.
    pub tax_minor: i64,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
}

#[derive(sqlx::FromRow)]
struct RawPayment {
    id: String,
    order_id: String,
    customer_id: String,
    currency: String,
    amount_minor: i64,
    refunded_minor: i64,
    status: String,
    payment_method: String,
    failure_code: String,
    failure_reason: String,
    processor_reference: String,
    ledger_posted: bool,
    create_time: i64,
    update_time: i64,
    tax_minor: i64,
}

impl TryFrom<RawPayment> for PaymentRow {
    type Error = Error;

    fn try_from(r: RawPayment) -> Result<Self, Error> {
        let status = Status::parse(&r.status)
            .ok_or_else(|| Error::Corrupt(format!("payment {} has status {}", r.id, r.status)))?;
        Ok(Self {
            id: r.id,
            order_id: r.order_id,
            customer_id: r.customer_id,
            currency: r.currency,
            amount_minor: r.amount_minor,
            refunded_minor: r.refunded_minor,
            status,
            payment_method: r.payment_method,
            failure_code: r.failure_code,
            failure_reason: r.failure_reason,
            processor_reference: r.processor_reference,
            ledger_posted: r.ledger_posted,
            tax_minor: r.tax_minor,
            create_time: r.create_time,
            update_time: r.update_time,
        })
    }
}

/// A stored idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyRow {
    /// Fingerprint of the request that first used the key.
    pub fingerprint: String,
    /// [`KEY_STARTED`] or [`KEY_FINISHED`].
    pub state: String,
    /// The payment it produced, once finished.
    pub payment_id: Option<String>,
    /// Microseconds since the epoch.
    pub update_time: i64,
}

/// A refund applied to a payment.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RefundRow {
    /// The refunds service's id.
    pub refund_id: String,
    /// The payment.
    pub payment_id: String,
    /// ISO 4217 code (the payment's).
    pub currency: String,
    /// Amount given back, minor units.
    pub amount_minor: i64,
    /// [`REFUND_PENDING`] or [`REFUND_COMPLETED`].
    pub state: String,
    /// Why, for the books.
    pub reason: String,
    /// Processor reference of the refund; empty while pending.
    pub processor_reference: String,
    /// Whether the refund's ledger transaction is recorded.
    pub ledger_posted: bool,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
}

/// How reserving a refund's amount ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved, and the refund recorded as pending.
    Reserved,
    /// The payment is not refundable for this amount (unknown, failed, or not enough left).
    Refused,
    /// A refund with this id exists already; nothing changed.
    Duplicate,
}

/// The payments service's tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Claims `key` of `customer_id` for a request with `fingerprint`; `false` when the key exists already.
    pub async fn claim_key(&self, customer_id: &str, key: &str, fingerprint: &str, now: i64) -> Result<bool, Error> {
        let inserted = with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO idempotency_keys (customer_id, idempotency_key, fingerprint, state, payment_id, \
                 create_time, update_time) VALUES ($1, $2, $3, $4, NULL, $5, $5)",
            )
            .bind(customer_id)
            .bind(key)
            .bind(fingerprint)
            .bind(KEY_STARTED)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        });
        Ok(platform::db::inserted(inserted)?)
    }

    /// The stored key, if any.
    pub async fn key(&self, customer_id: &str, key: &str) -> Result<Option<KeyRow>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, KeyRow>(
                "SELECT fingerprint, state, payment_id, update_time FROM idempotency_keys \
                 WHERE customer_id = $1 AND idempotency_key = $2",
            )
            .bind(customer_id)
            .bind(key)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Takes over a started key whose request has not progressed since `seen_update_time` (it crashed);
    /// `true` when this caller now owns it.
    pub async fn take_over_key(
        &self,
        customer_id: &str,
        key: &str,
        seen_update_time: i64,
        now: i64,
    ) -> Result<bool, Error> {
        let affected = with_db!(&self.db, pool => {
            sqlx::query(
                "UPDATE idempotency_keys SET update_time = $1 WHERE customer_id = $2 AND idempotency_key = $3 \
                 AND state = $4 AND update_time = $5",
            )
            .bind(now)
            .bind(customer_id)
            .bind(key)
            .bind(KEY_STARTED)
            .bind(seen_update_time)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(affected == 1)
    }

    /// Forgets a started key whose request ended without a result to replay (e.g. an unknown payment method),
    /// so the client may retry with it.
    pub async fn release_key(&self, customer_id: &str, key: &str) -> Result<(), Error> {
        with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM idempotency_keys WHERE customer_id = $1 AND idempotency_key = $2 AND state = $3")
                .bind(customer_id)
                .bind(key)
                .bind(KEY_STARTED)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Deletes idempotency keys created before `before` (microseconds); returns how many.
    pub async fn delete_keys_before(&self, before: i64) -> Result<u64, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM idempotency_keys WHERE create_time < $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// Stores a payment, its event and, under the customer's `key`, the result to replay — all or nothing. On
    /// PostgreSQL that is one statement (data-modifying CTEs: one round trip instead of five).
    pub async fn insert_payment(&self, p: &PaymentRow, key: &str, event: &NewEvent) -> Result<(), Error> {
        let pool = match &self.db {
            Db::Sqlite(pool) => pool,
            Db::Postgres(pool) => {
                let query =
                    bind_payment(sqlx::query(INSERT_PAYMENT_WITH_EVENT_SQL.as_str()), p).bind(KEY_FINISHED).bind(key);
                events::OutboxEntry::new(crate::NAME, event).bind(query).execute(pool).await?;
                return Ok(());
            }
        };
        let mut tx = pool.begin_write().await?;
        let work: Result<(), Error> = async {
            bind_payment(sqlx::query(INSERT_PAYMENT_SQL.as_str()), p).execute(&mut *tx).await?;
            events::enqueue(&mut *tx, crate::NAME, event).await?;
            sqlx::query(
                "UPDATE idempotency_keys SET state = $1, payment_id = $2, update_time = $3 \
                 WHERE customer_id = $4 AND idempotency_key = $5",
            )
            .bind(KEY_FINISHED)
            .bind(&p.id)
            .bind(p.update_time)
            .bind(&p.customer_id)
            .bind(key)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }
        .await;
        finish(tx, work).await
    }

    /// The payment `id`, if it exists.
    pub async fn payment(&self, id: &str) -> Result<Option<PaymentRow>, Error> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1");
        let row = with_db!(&self.db, pool => sqlx::query_as::<_, RawPayment>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?);
        row.map(PaymentRow::try_from).transpose()
    }

    /// Payments `filter` selects, newest first (ids are UUIDv7), after id `filter.after`; at most `filter.limit`.
    pub async fn payments(&self, filter: &PaymentFilter) -> Result<Vec<PaymentRow>, Error> {
        let mut sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE 1 = 1");
        let values = platform::db::and_given(
            &mut sql,
            &[
                ("customer_id =", filter.customer_id.as_deref()),
                ("order_id =", filter.order_id.as_deref()),
                ("status =", filter.status.map(Status::as_str)),
                ("id <", filter.after.as_deref()),
            ],
        );
        let n = values.len();
        sql.push_str(&format!(" AND create_time >= ${} AND create_time < ${}", n + 1, n + 2));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 3));
        let rows = with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, RawPayment>(sqlx::AssertSqlSafe(sql));
            for value in &values {
                query = query.bind(*value);
            }
            query.bind(filter.period.0).bind(filter.period.1).bind(filter.limit).fetch_all(pool).await?
        });
        rows.into_iter().map(PaymentRow::try_from).collect()
    }

    /// Notes that the capture of payment `id` is in the ledger.
    pub async fn mark_capture_posted(&self, id: &str) -> Result<(), Error> {
        with_db!(&self.db, pool => {
            sqlx::query("UPDATE payments SET ledger_posted = TRUE WHERE id = $1").bind(id).execute(pool).await?.rows_affected()
        });
        Ok(())
    }

    /// Captured payments (refunded ones included) whose capture is not in the ledger yet, oldest first.
    pub async fn unposted_captures(&self, limit: i64) -> Result<Vec<PaymentRow>, Error> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE ledger_posted = FALSE AND status <> 'FAILED' \
             ORDER BY create_time, id LIMIT $1"
        );
        let rows = with_db!(&self.db, pool => sqlx::query_as::<_, RawPayment>(sqlx::AssertSqlSafe(sql)).bind(limit).fetch_all(pool).await?);
        rows.into_iter().map(PaymentRow::try_from).collect()
    }

    /// The refund `refund_id`, if it was applied (or is being applied).
    pub async fn refund(&self, refund_id: &str) -> Result<Option<RefundRow>, Error> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds_applied WHERE refund_id = $1");
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, RefundRow>(sqlx::AssertSqlSafe(sql)).bind(refund_id).fetch_optional(pool).await?
        }))
    }

    /// Reserves `r.amount_minor` of payment `r.payment_id` for refund `r` and records it as pending: a
    /// conditional update first (the payment is refundable and the total stays within the captured amount),
    /// then the refund row (its primary key refuses a second refund with the same id).
    pub async fn reserve_refund(&self, r: &RefundRow) -> Result<Reservation, Error> {
        let result: Result<Reservation, Error> = with_db!(&self.db, pool => {
            async {
                let mut tx = pool.begin_write().await?;
                let reserved = sqlx::query(
                    "UPDATE payments SET refunded_minor = refunded_minor + $1, update_time = $2 \
                     WHERE id = $3 AND currency = $4 AND status IN ('CAPTURED', 'PARTIALLY_REFUNDED') \
                     AND refunded_minor + $1 <= amount_minor",
                )
                .bind(r.amount_minor)
                .bind(r.create_time)
                .bind(&r.payment_id)
                .bind(&r.currency)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if reserved != 1 {
                    tx.rollback().await?;
                    return Ok(Reservation::Refused);
                }
                let sql = format!(
                    "INSERT INTO refunds_applied ({REFUND_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                );
                let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&r.refund_id)
                    .bind(&r.payment_id)
                    .bind(&r.currency)
                    .bind(r.amount_minor)
                    .bind(REFUND_PENDING)
                    .bind(&r.reason)
                    .bind("")
                    .bind(false)
                    .bind(r.create_time)
                    .bind(r.create_time)
                    .execute(&mut *tx)
                    .await;
                match inserted {
                    Ok(_) => {
                        tx.commit().await?;
                        Ok(Reservation::Reserved)
                    }
                    Err(e) => {
                        // Rolling back also gives the reserved amount back.
                        tx.rollback().await?;
                        if is_unique_violation(&e) { Ok(Reservation::Duplicate) } else { Err(e.into()) }
                    }
                }
            }
            .await
        });
        result
    }

    /// Completes pending refund `refund_id` with the processor's `reference`: the refund row first (only a
    /// pending one: `false` when another request completed it already), then the payment's status from its
    /// completed refunds, then the event `event(payment after, completed total)`, in one transaction.
    pub async fn complete_refund(
        &self,
        refund_id: &str,
        reference: &str,
        now: i64,
        event: impl FnOnce(&PaymentRow, i64) -> NewEvent + Send,
    ) -> Result<bool, Error> {
        let payment_sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1");
        let result: Result<bool, Error> = with_db!(&self.db, pool => {
            async {
                let mut tx = pool.begin_write().await?;
                let work: Result<bool, Error> = async {
                    let completed = sqlx::query(
                        "UPDATE refunds_applied SET state = $1, processor_reference = $2, update_time = $3 \
                         WHERE refund_id = $4 AND state = $5",
                    )
                    .bind(REFUND_COMPLETED)
                    .bind(reference)
                    .bind(now)
                    .bind(refund_id)
                    .bind(REFUND_PENDING)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if completed != 1 {
                        return Ok(false);
                    }
                    let payment_id: String =
                        sqlx::query_scalar("SELECT payment_id FROM refunds_applied WHERE refund_id = $1")
                            .bind(refund_id)
                            .fetch_one(&mut *tx)
                            .await?;
                    let total: i64 = sqlx::query_scalar(
                        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM refunds_applied \
                         WHERE payment_id = $1 AND state = $2",
                    )
                    .bind(&payment_id)
                    .bind(REFUND_COMPLETED)
                    .fetch_one(&mut *tx)
                    .await?;
                    let before = sqlx::query_as::<_, RawPayment>(sqlx::AssertSqlSafe(payment_sql))
                        .bind(&payment_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    let status = Status::after_refunds(total, before.amount_minor);
                    sqlx::query("UPDATE payments SET status = $1, update_time = $2 WHERE id = $3")
                        .bind(status.as_str())
                        .bind(now)
                        .bind(&payment_id)
                        .execute(&mut *tx)
                        .await?;
                    let mut after = PaymentRow::try_from(before)?;
                    after.status = status;
                    after.update_time = now;
                    events::enqueue(&mut *tx, crate::NAME, &event(&after, total)).await?;
                    Ok(true)
                }
                .await;
                finish(tx, work).await
            }
            .await
        });
        result
    }

    /// Undoes pending refund `refund_id` (the processor refused it): deletes it and gives its reserved amount
    /// back to the payment. Does nothing when it is not pending any more.
    pub async fn cancel_refund(&self, refund_id: &str, now: i64) -> Result<(), Error> {
        let result: Result<(), Error> = with_db!(&self.db, pool => {
            async {
                let mut tx = pool.begin_write().await?;
                let work: Result<(), Error> = async {
                    let row: Option<(String, i64)> = sqlx::query_as(
                        "DELETE FROM refunds_applied WHERE refund_id = $1 AND state = $2 \
                         RETURNING payment_id, amount_minor",
                    )
                    .bind(refund_id)
                    .bind(REFUND_PENDING)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some((payment_id, amount)) = row {
                        sqlx::query(
                            "UPDATE payments SET refunded_minor = refunded_minor - $1, update_time = $2 WHERE id = $3",
                        )
                        .bind(amount)
                        .bind(now)
                        .bind(&payment_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Ok(())
                }
                .await;
                finish(tx, work).await
            }
            .await
        });
        result
    }

    /// Notes that refund `refund_id` is in the ledger.
    pub async fn mark_refund_posted(&self, refund_id: &str) -> Result<(), Error> {
        with_db!(&self.db, pool => {
            sqlx::query("UPDATE refunds_applied SET ledger_posted = TRUE WHERE refund_id = $1")
                .bind(refund_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Completed refunds not in the ledger yet, oldest first.
    pub async fn unposted_refunds(&self, limit: i64) -> Result<Vec<RefundRow>, Error> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds_applied WHERE ledger_posted = FALSE AND state = $1 \
             ORDER BY create_time, refund_id LIMIT $2"
        );
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, RefundRow>(sqlx::AssertSqlSafe(sql)).bind(REFUND_COMPLETED).bind(limit).fetch_all(pool).await?
        }))
    }

    /// What is wrong with the books of this service, in words: captures or completed refunds that are not
    /// in the ledger, payments refunded beyond their amount or whose refunded amount disagrees with their
    /// refunds.
    /// Unposted captures and refunds changed at or after `in_flight_since` (µs) are still being posted and
    /// not reported.
    pub async fn audit(&self, in_flight_since: i64) -> Result<Vec<String>, Error> {
        let unposted: Vec<(String, String)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, status FROM payments WHERE ledger_posted = FALSE AND status <> 'FAILED' \
                 AND update_time < $1 ORDER BY id",
            )
            .bind(in_flight_since)
            .fetch_all(pool)
            .await?
        });
        let unposted_refunds: Vec<(String, String)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT refund_id, payment_id FROM refunds_applied WHERE ledger_posted = FALSE AND state = $1 \
                 AND update_time < $2 ORDER BY refund_id",
            )
            .bind(REFUND_COMPLETED)
            .bind(in_flight_since)
            .fetch_all(pool)
            .await?
        });
        let over: Vec<(String, i64, i64, i64)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT p.id, p.amount_minor, p.refunded_minor, \
                 CAST(COALESCE(SUM(r.amount_minor), 0) AS BIGINT) FROM payments p \
                 LEFT JOIN refunds_applied r ON r.payment_id = p.id \
                 GROUP BY p.id, p.amount_minor, p.refunded_minor \
                 HAVING p.refunded_minor > p.amount_minor OR p.refunded_minor <> COALESCE(SUM(r.amount_minor), 0) \
                 ORDER BY p.id",
            )
            .fetch_all(pool)
            .await?
        });
        let mut problems = Vec::new();
        for (id, status) in unposted {
            problems.push(format!("payment {id} ({status}) is captured but its ledger transaction is not posted"));
        }
        for (refund_id, payment_id) in unposted_refunds {
            problems.push(format!(
                "refund {refund_id} of payment {payment_id} is completed but its ledger transaction is not posted"
            ));
        }
        for (id, amount, refunded, sum) in over {
            if refunded > amount {
                problems.push(format!("payment {id} has {refunded} refunded of {amount} captured"));
            }
            if refunded != sum {
                problems.push(format!("payment {id} has {refunded} refunded but its refunds sum to {sum}"));
            }
        }
        Ok(problems)
    }
}

/// A captured payment as the cross-service audit checks it against its order.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CapturedPayment {
    /// The payment.
    pub id: String,
    /// The order it paid.
    pub order_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// What was captured, in minor units.
    pub amount_minor: i64,
    /// The tax it included (0: none), booked as owed.
    pub tax_minor: i64,
}

/// A refund the payments service made (completed), for an audit.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CompletedRefund {
    /// The refund's id, as the refunds or the orders service named it.
    pub refund_id: String,
    /// The payment refunded.
    pub payment_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// What it gave back, in minor units.
    pub amount_minor: i64,
}

impl Store {
    /// Every completed refund, by its id.
    pub async fn completed_refunds(&self) -> Result<std::collections::HashMap<String, CompletedRefund>, Error> {
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, CompletedRefund>(
                "SELECT refund_id, payment_id, currency, amount_minor FROM refunds_applied WHERE state = $1",
            )
            .bind(REFUND_COMPLETED)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|r| (r.refund_id.clone(), r)).collect())
    }

    /// Every payment that was captured (captured, partly or fully refunded since), by id.
    pub async fn captured(&self) -> Result<std::collections::HashMap<String, CapturedPayment>, Error> {
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, CapturedPayment>(
                "SELECT id, order_id, currency, amount_minor, tax_minor FROM payments \
                 WHERE status IN ('CAPTURED', 'PARTIALLY_REFUNDED', 'REFUNDED')",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(|p| (p.id.clone(), p)).collect())
    }
}
