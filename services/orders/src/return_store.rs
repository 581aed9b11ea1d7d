//! The SQL of returns: asking for one (its order's returns written one at a time, under the lock of the order's
//! delivery row), staff's decisions and the receipt (each a compare-and-set on the status, with its event in the
//! same transaction), the refund's outcome, and reading them.

use platform::db::{BeginWrite, finish};
use platform::events::{NewEvent, enqueue};
use platform::with_db;

use crate::domain::Cursor;
use crate::error::Error;
use crate::returns::{self, Earlier, Return, ReturnLine, ReturnPolicy, ReturnStatus};
use crate::store::{Order, Store, corrupt};

const COLUMNS: &str = "id, order_id, customer_id, status, reason, currency, refund_minor, reject_reason, restocked, \
     refund_id, refund_failure, create_time, update_time";

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    order_id: String,
    customer_id: String,
    status: String,
    reason: String,
    currency: String,
    refund_minor: i64,
    reject_reason: String,
    restocked: bool,
    refund_id: String,
    refund_failure: String,
    create_time: i64,
    update_time: i64,
}

#[derive(sqlx::FromRow)]
struct LineRow {
    return_id: String,
    product_id: String,
    quantity: i64,
}

impl Row {
    fn into_return(self, lines: &[LineRow]) -> Result<Return, Error> {
        Ok(Return {
            status: ReturnStatus::parse(&self.status).ok_or_else(|| corrupt("return status", &self.status))?,
            lines: lines
                .iter()
                .filter(|l| l.return_id == self.id)
                .map(|l| ReturnLine { product_id: l.product_id.clone(), quantity: l.quantity })
                .collect(),
            id: self.id,
            order_id: self.order_id,
            customer_id: self.customer_id,
            reason: self.reason,
            currency: self.currency,
            refund_minor: self.refund_minor,
            reject_reason: self.reject_reason,
            restocked: self.restocked,
            refund_id: self.refund_id,
            refund_failure: self.refund_failure,
            create_time: self.create_time,
            update_time: self.update_time,
        })
    }
}

/// The filters and page of a listing of returns.
#[derive(Debug, Clone, Default)]
pub struct ReturnQuery {
    /// Only this customer's, when set.
    pub customer_id: Option<String>,
    /// Only this order's, when set.
    pub order_id: Option<String>,
    /// Only those in this state, when set.
    pub status: Option<ReturnStatus>,
    /// Start after this return (its create time and id).
    pub after: Option<Cursor>,
    /// At most this many rows.
    pub limit: i64,
}

/// A return to write: what the customer asked for, checked against the order.
#[derive(Debug, Clone)]
pub struct NewReturn {
    /// Its id (UUIDv7).
    pub id: String,
    /// The lines, each a product of the order.
    pub lines: Vec<ReturnLine>,
    /// The customer's words.
    pub reason: String,
}

/// Reads rows of `returns` with `sql` (its binds given by `bind`) and their lines, in the rows' order.
macro_rules! fetch_returns {
    ($executor:expr, $sql:expr, |$query:ident| $bind:expr) => {{
        let $query = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe($sql));
        let rows: Vec<Row> = $bind.fetch_all(&mut *$executor).await?;
        let lines: Vec<LineRow> = if rows.is_empty() {
            Vec::new()
        } else {
            let sql = format!(
                "SELECT return_id, product_id, quantity FROM return_lines WHERE return_id IN ({}) \
                 ORDER BY return_id, line_no",
                (1..=rows.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
            );
            let mut query = sqlx::query_as::<_, LineRow>(sqlx::AssertSqlSafe(sql));
            for row in &rows {
                query = query.bind(row.id.clone());
            }
            query.fetch_all(&mut *$executor).await?
        };
        rows.into_iter().map(|row| row.into_return(&lines)).collect::<Result<Vec<Return>, Error>>()?
    }};
}

/// A return whose refund was made, with what an audit checks against the payments service.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RefundedReturn {
    /// The return.
    pub id: String,
    /// Its order's payment.
    pub payment_id: String,
    /// The refund at the payments service.
    pub refund_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// What it gave back.
    pub refund_minor: i64,
}

impl Store {
    /// Returns received before `stuck_before` whose refund is neither made nor refused (the payments service has
    /// been unreachable since), in words.
    pub async fn audit_returns(&self, stuck_before: i64) -> Result<Vec<String>, Error> {
        let stuck = with_db!(self.db(), pool => {
            sqlx::query_as::<_, (String, String)>(
                "SELECT id, order_id FROM returns WHERE status = 'received' AND refund_failure = '' \
                 AND update_time < $1 ORDER BY update_time, id",
            )
            .bind(stuck_before)
            .fetch_all(pool)
            .await?
        });
        Ok(stuck
            .into_iter()
            .map(|(id, order_id)| format!("return {id} of order {order_id} was received but its refund is not made"))
            .collect())
    }

    /// Every return whose refund was made (a refund id: something was given back), for an audit.
    pub async fn refunded_returns(&self) -> Result<Vec<RefundedReturn>, Error> {
        Ok(with_db!(self.db(), pool => {
            sqlx::query_as::<_, RefundedReturn>(
                "SELECT r.id, o.payment_id, r.refund_id, r.currency, r.refund_minor FROM returns r \
                 JOIN orders o ON o.id = r.order_id WHERE r.status = 'refunded' AND r.refund_id <> '' ORDER BY r.id",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// Records that order `order_id` was delivered at `deliver_time` (the carrier's first delivery counts);
    /// answers whether this was news.
    pub async fn record_delivery(&self, order_id: &str, deliver_time: i64) -> Result<bool, Error> {
        let done = with_db!(self.db(), pool => {
            sqlx::query(
                "INSERT INTO order_deliveries (order_id, deliver_time) VALUES ($1, $2) ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(order_id)
            .bind(deliver_time)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }

    /// Writes the return `new` of `order` at `now`, REQUESTED, with its `return.requested`, when the order was
    /// delivered within the policy's window and its earlier returns leave the units asked for; its refund is
    /// [`returns::refund_of`] them, on the policy's terms for shipping.
    pub async fn create_return(
        &self,
        order: &Order,
        new: NewReturn,
        policy: &ReturnPolicy,
        now: i64,
    ) -> Result<Return, Error> {
        let window_days = policy.window_days;
        let select = format!("SELECT {COLUMNS} FROM returns WHERE order_id = $1");
        let insert = format!("INSERT INTO returns ({COLUMNS}) VALUES ({})", platform::db::values_for(COLUMNS));
        with_db!(self.db(), pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<Return, Error> = async {
                // Locks the order's delivery row: another return of the order waits here until this one is written.
                let delivered: Option<i64> = sqlx::query_scalar(
                    "UPDATE order_deliveries SET deliver_time = deliver_time WHERE order_id = $1 RETURNING deliver_time",
                )
                .bind(&order.id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(deliver_time) = delivered else {
                    return Err(Error::FailedPrecondition {
                        reason: returns::ORDER_NOT_DELIVERED,
                        message: format!("order {} has not been delivered yet", order.id),
                    });
                };
                if !returns::window_open(deliver_time, window_days, now) {
                    return Err(Error::FailedPrecondition {
                        reason: returns::RETURN_WINDOW_CLOSED,
                        message: format!("the {window_days} days to return order {} have passed", order.id),
                    });
                }
                let earlier = fetch_returns!(tx, select, |query| query.bind(&order.id));
                let kept = policy.kept_shipping(order.shipping_minor);
                let refund_minor =
                    returns::refund_of(&new.lines, &order.lines, order.total.amount_minor, kept, &Earlier::of(&earlier))
                        .map_err(Error::InvalidArgument)?;
                let written = Return {
                    id: new.id,
                    order_id: order.id.clone(),
                    customer_id: order.customer_id.clone(),
                    status: ReturnStatus::Requested,
                    lines: new.lines,
                    reason: new.reason,
                    currency: order.total.currency.clone(),
                    refund_minor,
                    reject_reason: String::new(),
                    restocked: false,
                    refund_id: String::new(),
                    refund_failure: String::new(),
                    create_time: now,
                    update_time: now,
                };
                sqlx::query(sqlx::AssertSqlSafe(insert))
                    .bind(&written.id)
                    .bind(&written.order_id)
                    .bind(&written.customer_id)
                    .bind(written.status.as_str())
                    .bind(&written.reason)
                    .bind(&written.currency)
                    .bind(written.refund_minor)
                    .bind(&written.reject_reason)
                    .bind(written.restocked)
                    .bind(&written.refund_id)
                    .bind(&written.refund_failure)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                for (line_no, line) in written.lines.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO return_lines (return_id, line_no, product_id, quantity) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&written.id)
                    .bind(i64::try_from(line_no).unwrap_or(i64::MAX))
                    .bind(&line.product_id)
                    .bind(line.quantity)
                    .execute(&mut *tx)
                    .await?;
                }
                enqueue(&mut *tx, crate::NAME, &crate::events::return_requested(&written, order)).await?;
                Ok(written)
            }
            .await;
            finish(tx, result).await
        })
        .inspect(|_| count_move(ReturnStatus::Requested))
    }

    /// Moves return `id` to `to` as staff decided ([`returns::decide`]) at `now`, with `change` applied to it and
    /// the event `event` makes of it written in the same transaction; answers it as it ends (unchanged when it
    /// was there already). None when there is no such return.
    pub async fn move_return(
        &self,
        id: &str,
        to: ReturnStatus,
        now: i64,
        change: impl FnOnce(&mut Return),
        event: impl FnOnce(&Return) -> NewEvent,
    ) -> Result<Option<Return>, Error> {
        let select = format!("SELECT {COLUMNS} FROM returns WHERE id = $1");
        // The return as it ends, and whether this call moved it.
        let (found, moved) = with_db!(self.db(), pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<(Option<Return>, bool), Error> = async {
                let Some(mut found) = fetch_returns!(tx, select, |query| query.bind(id)).pop() else {
                    return Ok((None, false));
                };
                if !returns::decide(found.status, to)? {
                    return Ok((Some(found), false));
                }
                let from = found.status;
                change(&mut found);
                found.status = to;
                found.update_time = now;
                let moved = sqlx::query(
                    "UPDATE returns SET status = $3, reject_reason = $4, restocked = $5, refund_minor = $6, \
                     update_time = $7 WHERE id = $1 AND status = $2",
                )
                .bind(id)
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(&found.reject_reason)
                .bind(found.restocked)
                .bind(found.refund_minor)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if moved != 1 {
                    return Err(Error::Aborted(format!("return {id} changed meanwhile; try again")));
                }
                enqueue(&mut *tx, crate::NAME, &event(&found)).await?;
                Ok((Some(found), true))
            }
            .await;
            finish(tx, result).await
        })?;
        if moved {
            count_move(to);
        }
        Ok(found)
    }

    /// Records the refund of RECEIVED return `received` (`refund_id`, what it gave back) at `now`: it is REFUNDED,
    /// with its `return.refunded` (written once, by whoever records it first).
    pub async fn return_refunded(
        &self,
        received: &Return,
        refund_id: &str,
        refunded_minor: i64,
        now: i64,
    ) -> Result<(), Error> {
        let refunded = Return {
            status: ReturnStatus::Refunded,
            refund_id: refund_id.to_owned(),
            refund_minor: refunded_minor,
            refund_failure: String::new(),
            update_time: now,
            ..received.clone()
        };
        let moved = with_db!(self.db(), pool => {
            let mut tx = pool.begin_write().await?;
            let result: Result<bool, Error> = async {
                let moved = sqlx::query(
                    "UPDATE returns SET status = 'refunded', refund_id = $2, refund_minor = $3, refund_failure = '', \
                     update_time = $4 WHERE id = $1 AND status = 'received'",
                )
                .bind(&refunded.id)
                .bind(refund_id)
                .bind(refunded_minor)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if moved == 1 && refunded_minor > 0 {
                    enqueue(&mut *tx, crate::NAME, &crate::events::return_refunded(&refunded, refund_id)).await?;
                }
                Ok(moved == 1)
            }
            .await;
            finish(tx, result).await
        })?;
        if moved {
            count_move(ReturnStatus::Refunded);
        }
        Ok(())
    }

    /// Records why the payments service refused the refund of RECEIVED return `id` (at `now`): it is not retried
    /// in the background until staff receive it again.
    pub async fn return_refund_refused(&self, id: &str, failure: &str, now: i64) -> Result<(), Error> {
        with_db!(self.db(), pool => {
            sqlx::query(
                "UPDATE returns SET refund_failure = $2, update_time = $3 WHERE id = $1 AND status = 'received'",
            )
            .bind(id)
            .bind(failure)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The RECEIVED returns whose refund is due again: not refused, last tried before `before`.
    pub async fn returns_to_refund(&self, before: i64) -> Result<Vec<String>, Error> {
        Ok(with_db!(self.db(), pool => {
            sqlx::query_scalar(
                "SELECT id FROM returns WHERE status = 'received' AND refund_failure = '' AND update_time < $1 \
                 ORDER BY update_time, id",
            )
            .bind(before)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The return `id`, if there is one.
    pub async fn return_by_id(&self, id: &str) -> Result<Option<Return>, Error> {
        let select = format!("SELECT {COLUMNS} FROM returns WHERE id = $1");
        Ok(with_db!(self.db(), pool => {
            let mut conn = pool.acquire().await?;
            fetch_returns!(conn, select, |query| query.bind(id)).pop()
        }))
    }

    /// Returns, newest first, after the cursor, filtered as asked.
    pub async fn returns(&self, q: &ReturnQuery) -> Result<Vec<Return>, Error> {
        let mut sql = format!("SELECT {COLUMNS} FROM returns WHERE TRUE");
        let mut texts = Vec::new();
        let mut text = |value: &str, column: &str, sql: &mut String| {
            texts.push(value.to_owned());
            sql.push_str(&format!(" AND {column} = ${}", texts.len()));
        };
        if let Some(customer) = &q.customer_id {
            text(customer, "customer_id", &mut sql);
        }
        if let Some(order) = &q.order_id {
            text(order, "order_id", &mut sql);
        }
        if let Some(status) = q.status {
            text(status.as_str(), "status", &mut sql);
        }
        if let Some(after) = &q.after {
            texts.push(after.id.clone());
            // The cursor's time is bound last, after the limit.
            let (id, time) = (texts.len(), texts.len() + 2);
            sql.push_str(&format!(" AND (create_time < ${time} OR (create_time = ${time} AND id < ${id}))"));
        }
        sql.push_str(&format!(" ORDER BY create_time DESC, id DESC LIMIT ${}", texts.len() + 1));
        Ok(with_db!(self.db(), pool => {
            let mut conn = pool.acquire().await?;
            fetch_returns!(conn, sql, |query| {
                let mut query = query;
                for value in &texts {
                    query = query.bind(value.as_str());
                }
                query = query.bind(q.limit);
                if let Some(after) = &q.after {
                    query = query.bind(after.key);
                }
                query
            })
        }))
    }
}

/// Counts a return's move to `to`, once it is committed (`mercato_returns_total{status}`, the status as stored):
/// how many customers ask, and what becomes of their returns.
fn count_move(to: ReturnStatus) {
    metrics::counter!("mercato_returns_total", "status" => to.as_str()).increment(1);
}
