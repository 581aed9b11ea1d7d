//! All SQL of the refunds service. Every statement is written once, in the subset SQLite and PostgreSQL
//! share, and run on whichever pool the [`Db`] holds through `with_db!`.
//!
//! Every transaction writes first, so that on SQLite it takes the write lock up front and on PostgreSQL the
//! row lock that serialises concurrent requests is the first thing it takes:
//! - a refund reserves its amount with one conditional
//!   `UPDATE payment_refund_totals SET refunded_minor = refunded_minor + $1 ... AND refunded_minor + $1 <=
//!   captured_minor` as the first statement of the transaction that inserts it, so concurrent refunds never
//!   take a payment's total beyond its captured amount (the unique idempotency key in the same transaction
//!   makes a concurrent duplicate roll its reservation back);
//! - completing or failing a refund starts with the conditional `UPDATE` of its status (only a pending one
//!   changes, so its event is written once and a failure gives its amount back once).

use platform::db::finish;
use platform::db::{BeginWrite, Db, is_unique_violation};
use platform::events::{self, NewEvent};
use platform::with_db;

use crate::domain::Status;
use crate::error::Error;

const REFUND_COLUMNS: &str = "id, payment_id, currency, amount_minor, reason, status, failure_reason, requester, \
     idempotency_key, fingerprint, lease_until, create_time, update_time";

/// Which refunds a listing of every refund (ListRefunds) reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundFilter {
    /// Only those in this state.
    pub status: Option<Status>,
    /// Only those older than this refund (the last of the previous page).
    pub before: Option<String>,
    /// Only those asked for in this period (microseconds, start inclusive, end exclusive).
    pub period: (i64, i64),
    /// At most this many.
    pub limit: i64,
}

/// A stored refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRow {
    /// UUIDv7 (36 characters): the refund id the payments service knows it by.
    pub id: String,
    /// The payment refunded.
    pub payment_id: String,
    /// ISO 4217 code (the payment's).
    pub currency: String,
    /// Amount, minor units.
    pub amount_minor: i64,
    /// Why, as requested.
    pub reason: String,
    /// State.
    pub status: Status,
    /// Why the payments service refused it; empty unless failed.
    pub failure_reason: String,
    /// Who asked for it (the subject of the caller's token): the scope of its idempotency key.
    pub requester: String,
    /// The idempotency key it was created under.
    pub idempotency_key: String,
    /// Fingerprint of the request that created it.
    pub fingerprint: String,
    /// Until when (microseconds) a worker holds it while asking the payments service; 0 when none does.
    pub lease_until: i64,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
}

#[derive(sqlx::FromRow)]
struct RawRefund {
    id: String,
    payment_id: String,
    currency: String,
    amount_minor: i64,
    reason: String,
    status: String,
    failure_reason: String,
    requester: String,
    idempotency_key: String,
    fingerprint: String,
    lease_until: i64,
    create_time: i64,
    update_time: i64,
}

impl TryFrom<RawRefund> for RefundRow {
    type Error = Error;

    fn try_from(r: RawRefund) -> Result<Self, Error> {
        let status = Status::parse(&r.status)
            .ok_or_else(|| Error::Corrupt(format!("refund {} has status {}", r.id, r.status)))?;
        Ok(Self {
            id: r.id,
            payment_id: r.payment_id,
            currency: r.currency,
            amount_minor: r.amount_minor,
            reason: r.reason,
            status,
            failure_reason: r.failure_reason,
            requester: r.requester,
            idempotency_key: r.idempotency_key,
            fingerprint: r.fingerprint,
            lease_until: r.lease_until,
            create_time: r.create_time,
            update_time: r.update_time,
        })
    }
}

/// A payment's refund totals.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TotalsRow {
    /// The payment.
    pub payment_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// What the payment captured, minor units.
    pub captured_minor: i64,
    /// What this service's pending and completed refunds of it take.
    pub refunded_minor: i64,
}

/// How reserving a refund went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved and stored as pending.
    Reserved,
    /// It would take the total beyond the captured amount (or the payment has no totals row); nothing
    /// stored.
    Exceeded,
    /// The requester's idempotency key is taken (a concurrent request with it won); nothing stored.
    DuplicateKey,
}

/// The refunds service's tables.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The refund `id`, if it exists.
    pub async fn refund(&self, id: &str) -> Result<Option<RefundRow>, Error> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1");
        let row = with_db!(&self.db, pool => sqlx::query_as::<_, RawRefund>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?);
        row.map(RefundRow::try_from).transpose()
    }

    /// The refund `requester` created under idempotency `key`, if any.
    pub async fn refund_by_key(&self, requester: &str, key: &str) -> Result<Option<RefundRow>, Error> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE requester = $1 AND idempotency_key = $2");
        let row = with_db!(&self.db, pool => {
            sqlx::query_as::<_, RawRefund>(sqlx::AssertSqlSafe(sql)).bind(requester).bind(key).fetch_optional(pool).await?
        });
        row.map(RefundRow::try_from).transpose()
    }

    /// Up to `limit` refunds of `payment_id` with ids after `after` (empty: from the first), oldest first.
    pub async fn list(&self, payment_id: &str, after: &str, limit: i64) -> Result<Vec<RefundRow>, Error> {
        let sql =
            format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1 AND id > $2 ORDER BY id LIMIT $3");
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, RawRefund>(sqlx::AssertSqlSafe(sql)).bind(payment_id).bind(after).bind(limit).fetch_all(pool).await?
        });
        rows.into_iter().map(RefundRow::try_from).collect()
    }

    /// Refunds `filter` selects, newest first (ids are UUIDv7), older than refund `filter.before`; at most
    /// `filter.limit`.
    pub async fn list_all(&self, filter: &RefundFilter) -> Result<Vec<RefundRow>, Error> {
        let mut sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE 1 = 1");
        let values = platform::db::and_given(
            &mut sql,
            &[("status =", filter.status.map(Status::as_str)), ("id <", filter.before.as_deref())],
        );
        let n = values.len();
        sql.push_str(&format!(" AND create_time >= ${} AND create_time < ${}", n + 1, n + 2));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 3));
        let rows = with_db!(&self.db, pool => {
            let mut query = sqlx::query_as::<_, RawRefund>(sqlx::AssertSqlSafe(sql));
            for value in &values {
                query = query.bind(*value);
            }
            query.bind(filter.period.0).bind(filter.period.1).bind(filter.limit).fetch_all(pool).await?
        });
        rows.into_iter().map(RefundRow::try_from).collect()
    }

    /// Records what payment `payment_id` captured, unless it is recorded already.
    pub async fn ensure_totals(&self, payment_id: &str, currency: &str, captured: i64, now: i64) -> Result<(), Error> {
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO payment_refund_totals (payment_id, currency, captured_minor, refunded_minor, update_time) \
                 VALUES ($1, $2, $3, 0, $4) ON CONFLICT (payment_id) DO NOTHING",
            )
            .bind(payment_id)
            .bind(currency)
            .bind(captured)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The refund totals of payment `payment_id`, if recorded.
    pub async fn totals(&self, payment_id: &str) -> Result<Option<TotalsRow>, Error> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as::<_, TotalsRow>(
                "SELECT payment_id, currency, captured_minor, refunded_minor FROM payment_refund_totals \
                 WHERE payment_id = $1",
            )
            .bind(payment_id)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Reserves `r.amount_minor` of its payment and stores `r` (pending, leased), all or nothing: the
    /// conditional update of the payment's totals first, then the refund, whose unique idempotency key
    /// refuses a concurrent duplicate (rolling the reservation back).
    pub async fn reserve(&self, r: &RefundRow) -> Result<Reservation, Error> {
        let sql = format!(
            "INSERT INTO refunds ({REFUND_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        );
        let result: Result<Reservation, Error> = with_db!(&self.db, pool => {
            async {
                let mut tx = pool.begin_write().await?;
                let reserved = sqlx::query(
                    "UPDATE payment_refund_totals SET refunded_minor = refunded_minor + $1, update_time = $3 \
                     WHERE payment_id = $2 AND refunded_minor + $1 <= captured_minor",
                )
                .bind(r.amount_minor)
                .bind(&r.payment_id)
                .bind(r.create_time)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if reserved != 1 {
                    tx.rollback().await?;
                    return Ok(Reservation::Exceeded);
                }
                let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&r.id)
                    .bind(&r.payment_id)
                    .bind(&r.currency)
                    .bind(r.amount_minor)
                    .bind(&r.reason)
                    .bind(r.status.as_str())
                    .bind(&r.failure_reason)
                    .bind(&r.requester)
                    .bind(&r.idempotency_key)
                    .bind(&r.fingerprint)
                    .bind(r.lease_until)
                    .bind(r.create_time)
                    .bind(r.update_time)
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
                        if is_unique_violation(&e) { Ok(Reservation::DuplicateKey) } else { Err(e.into()) }
                    }
                }
            }
            .await
        });
        result
    }

    /// Takes pending refund `id` for a worker until `until` unless another worker holds it; `true` when
    /// taken.
    pub async fn claim(&self, id: &str, now: i64, until: i64) -> Result<bool, Error> {
        let claimed = with_db!(&self.db, pool => {
            sqlx::query("UPDATE refunds SET lease_until = $1 WHERE id = $2 AND status = $3 AND lease_until < $4")
                .bind(until)
                .bind(id)
                .bind(Status::Pending.as_str())
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(claimed == 1)
    }

    /// Lets pending refund `id` go, for the next retry pass to take.
    pub async fn release(&self, id: &str) -> Result<(), Error> {
        with_db!(&self.db, pool => {
            sqlx::query("UPDATE refunds SET lease_until = 0 WHERE id = $1 AND status = $2")
                .bind(id)
                .bind(Status::Pending.as_str())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Marks pending refund `id` completed and writes `event`, in one transaction; `false` (nothing written)
    /// when it was not pending any more.
    pub async fn complete(&self, id: &str, now: i64, event: &NewEvent) -> Result<bool, Error> {
        let result: Result<bool, Error> = with_db!(&self.db, pool => {
            async {
                let mut tx = pool.begin_write().await?;
                let work: Result<bool, Error> = async {
                    let changed = sqlx::query(
                        "UPDATE refunds SET status = $1, lease_until = 0, update_time = $2 WHERE id = $3 AND status = $4",
                    )
                    .bind(Status::Completed.as_str())
                    .bind(now)
                    .bind(id)
                    .bind(Status::Pending.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if changed != 1 {
                        return Ok(false);
                    }
                    events::enqueue(&mut *tx, crate::NAME, event).await?;
                    Ok(true)
                }
                .await;
                finish(tx, work).await
            }
            .await
        });
        result
    }

    /// Marks pending refund `r` failed for `failure_reason`, gives its amount back to its payment's total and
    /// writes `event`, in one transaction; `false` (nothing written) when it was not pending any more.
    pub async fn fail(&self, r: &RefundRow, failure_reason: &str, now: i64, event: &NewEvent) -> Result<bool, Error> {
        let result: Result<bool, Error> = with_db!(&self.db, pool => {
            async {
                let mut tx = pool.begin_write().await?;
                let work: Result<bool, Error> = async {
                    let changed = sqlx::query(
                        "UPDATE refunds SET status = $1, failure_reason = $2, lease_until = 0, update_time = $3 \
                         WHERE id = $4 AND status = $5",
                    )
                    .bind(Status::Failed.as_str())
                    .bind(failure_reason)
                    .bind(now)
                    .bind(&r.id)
                    .bind(Status::Pending.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if changed != 1 {
                        return Ok(false);
                    }
                    sqlx::query(
                        "UPDATE payment_refund_totals SET refunded_minor = refunded_minor - $1, update_time = $2 \
                         WHERE payment_id = $3",
                    )
                    .bind(r.amount_minor)
                    .bind(now)
                    .bind(&r.payment_id)
                    .execute(&mut *tx)
                    .await?;
                    events::enqueue(&mut *tx, crate::NAME, event).await?;
                    Ok(true)
                }
                .await;
                finish(tx, work).await
            }
            .await
        });
        result
    }

    /// Pending refunds no worker holds at `now`, oldest first.
    pub async fn due(&self, now: i64, limit: i64) -> Result<Vec<RefundRow>, Error> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE status = $1 AND lease_until < $2 \
             ORDER BY create_time, id LIMIT $3"
        );
        let rows = with_db!(&self.db, pool => {
            sqlx::query_as::<_, RawRefund>(sqlx::AssertSqlSafe(sql))
                .bind(Status::Pending.as_str())
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(RefundRow::try_from).collect()
    }

    /// What is wrong with this service's books, in words: payments refunded beyond what they captured,
    /// totals that disagree with the sum of their non-failed refunds (or refunds without totals), and
    /// refunds pending since before `stuck_before` (microseconds).
    pub async fn audit(&self, stuck_before: i64) -> Result<Vec<String>, Error> {
        let failed = Status::Failed.as_str();
        let totals: Vec<(String, i64, i64, i64)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT t.payment_id, t.captured_minor, t.refunded_minor, \
                 CAST(COALESCE(SUM(r.amount_minor), 0) AS BIGINT) FROM payment_refund_totals t \
                 LEFT JOIN refunds r ON r.payment_id = t.payment_id AND r.status <> $1 \
                 GROUP BY t.payment_id, t.captured_minor, t.refunded_minor \
                 HAVING t.refunded_minor > t.captured_minor OR t.refunded_minor <> COALESCE(SUM(r.amount_minor), 0) \
                 ORDER BY t.payment_id",
            )
            .bind(failed)
            .fetch_all(pool)
            .await?
        });
        let orphans: Vec<(String,)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT DISTINCT r.payment_id FROM refunds r \
                 LEFT JOIN payment_refund_totals t ON t.payment_id = r.payment_id \
                 WHERE t.payment_id IS NULL ORDER BY r.payment_id",
            )
            .fetch_all(pool)
            .await?
        });
        let stuck: Vec<(String, String)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, payment_id FROM refunds WHERE status = $1 AND create_time < $2 ORDER BY create_time, id",
            )
            .bind(Status::Pending.as_str())
            .bind(stuck_before)
            .fetch_all(pool)
            .await?
        });
        let mut problems = Vec::new();
        for (payment_id, captured, refunded, sum) in totals {
            if refunded > captured {
                problems.push(format!("payment {payment_id} has {refunded} refunded of {captured} captured"));
            }
            if refunded != sum {
                problems.push(format!(
                    "payment {payment_id} has {refunded} refunded but its non-failed refunds sum to {sum}"
                ));
            }
        }
        for (payment_id,) in orphans {
            problems.push(format!("payment {payment_id} has refunds but no refund totals"));
        }
        for (id, payment_id) in stuck {
            problems.push(format!("refund {id} of payment {payment_id} has been pending for more than 15 minutes"));
        }
        Ok(problems)
    }
}
