//! The consumer side of exactly-once effects: an event id is recorded in the same transaction as the effect.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::Db;

/// Applies a consumer's effect of one event exactly once: in one write transaction of `$db` (a
/// [`Db`](crate::db::Db)), records that `$consumer` handles `$event_id` ([`first_delivery`]: the write that takes
/// SQLite's lock, and the one that decides "once"), then runs `$body` with the transaction as `$tx`, and commits.
/// Evaluates to `Ok(true)`, or to `Ok(false)` without running `$body` for an event handled before; an error
/// (`?` in `$body` converts into the enclosing function's error type) rolls everything back.
///
/// ```ignore
/// platform::once_per_event!(&self.db, CONSUMER, event_id, |tx| {
///     sqlx::query("DELETE FROM carts WHERE customer_id = $1").bind(customer_id).execute(&mut *tx).await?;
/// })
/// ```
#[macro_export]
macro_rules! once_per_event {
    ($db:expr, $consumer:expr, $event_id:expr, |$tx:ident| $body:block) => {
        $crate::with_db!($db, pool => {
            let mut $tx = $crate::db::BeginWrite::begin_write(pool).await?;
            let result = async {
                if !$crate::events::first_delivery(&mut *$tx, $consumer, $event_id).await? {
                    return Ok(false);
                }
                $body
                Ok(true)
            }
            .await;
            $crate::db::finish($tx, result).await
        })
    };
}

/// Records that `consumer` handles `event_id`, through `executor` (the transaction of the effect). Returns
/// `false` when it was handled before: the caller then skips the effect and commits nothing new.
pub async fn first_delivery<'e, E, DB>(executor: E, consumer: &str, event_id: &str) -> Result<bool, sqlx::Error>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> String: sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    // ON CONFLICT DO NOTHING rather than catching the unique violation: on PostgreSQL an error would abort
    // the caller's transaction.
    // RETURNING tells whether a row went in, the same way on both engines.
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO inbox (consumer, event_id, handle_time) VALUES ($1, $2, $3) \
         ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
    )
    .bind(consumer.to_owned())
    .bind(event_id.to_owned())
    .bind(crate::time::now_micros())
    .fetch_optional(executor)
    .await?;
    Ok(inserted.is_some())
}

/// Records that `consumer` handles each of `event_ids` in one statement, on `connection` (in the transaction
/// of their effects: pass `&mut *tx`). Returns the ids not handled before; an id given twice counts once. One
/// parameter per id: keep batches far below SQLite's limit of 32766.
pub async fn first_deliveries<C, DB>(
    connection: &mut C,
    consumer: &str,
    event_ids: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> String: sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    // Distinct ids: PostgreSQL refuses a statement whose rows conflict with each other.
    let ids: std::collections::BTreeSet<&str> = event_ids.iter().copied().collect();
    if ids.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    // `$1` the consumer and `$2` the time in every row, then one id each; RETURNING names the ids that went
    // in: those not handled before.
    let rows: Vec<String> = (0..ids.len()).map(|i| format!("($1, ${}, $2)", i + 3)).collect();
    let sql = format!(
        "INSERT INTO inbox (consumer, event_id, handle_time) VALUES {} \
         ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
        rows.join(", ")
    );
    let mut insert = sqlx::query_scalar::<DB, String>(sqlx::AssertSqlSafe(sql))
        .bind(consumer.to_owned())
        .bind(crate::time::now_micros());
    for id in ids {
        insert = insert.bind(id.to_owned());
    }
    let new = insert.fetch_all(connection).await?;
    Ok(new.into_iter().collect())
}

/// How long a consumer remembers the events it handled. A redelivery comes within minutes (a relay that
/// republishes what it could not mark sent, a broker that requeues an unacknowledged delivery), and a dead
/// letter was never in the inbox (its row commits with the effect), so a month is far longer than any
/// duplicate can arrive after its first delivery; without a limit every inbox would grow with every event.
pub const HANDLED_EVENT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the pruner deletes the inbox rows past their retention (and once when it starts).
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// Rows deleted per statement, so that no statement holds many row locks or runs long; the next batch follows
/// at once while batches come back full.
const PRUNE_BATCH: i64 = 1000;

/// Deletes the inbox rows of one service's consumers once their events were handled longer than the retention
/// ago: when it starts, then hourly. Every replica may run one; they delete the same old rows.
#[derive(Debug, Clone)]
pub struct InboxPruner {
    service: &'static str,
    db: Db,
    retention: Duration,
}

impl InboxPruner {
    /// A pruner of `service`'s inbox in `db`, keeping [`HANDLED_EVENT_RETENTION`].
    pub fn new(service: &'static str, db: Db) -> Self {
        Self { service, db, retention: HANDLED_EVENT_RETENTION }
    }

    /// Keeps handled events for `retention` instead of [`HANDLED_EVENT_RETENTION`].
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Prunes when it starts and every hour until `shutdown` is cancelled. A failure is logged and tried again
    /// at the next hour: the inbox only grows meanwhile.
    pub async fn run(self, shutdown: CancellationToken) {
        crate::shutdown::every(PRUNE_INTERVAL, &shutdown, || async {
            if let Err(error) = self.prune().await {
                tracing::warn!(service = self.service, %error, "deleting handled events past their retention failed");
            }
        })
        .await;
    }

    /// Deletes every inbox row handled longer than the retention ago, a batch per statement; returns how many,
    /// also counted in `mercato_inbox_pruned_total{service}`.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let retention = i64::try_from(self.retention.as_micros()).unwrap_or(i64::MAX);
        let before = crate::time::now_micros().saturating_sub(retention);
        // By row value: a plain `IN` of one column cannot name a two-column key, and both engines take it.
        const DELETE: &str = "DELETE FROM inbox WHERE (consumer, event_id) IN \
                              (SELECT consumer, event_id FROM inbox WHERE handle_time < $1 LIMIT $2)";
        let pruned = crate::db::delete_in_batches(&self.db, DELETE, before, PRUNE_BATCH).await?;
        metrics::counter!("mercato_inbox_pruned_total", "service" => self.service).increment(pruned);
        Ok(pruned)
    }
}
