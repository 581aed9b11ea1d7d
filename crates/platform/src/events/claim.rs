//! Which relay publishes an outbox, which rows it publishes next, marking them sent, and deleting them once
//! they are past their retention.
//!
//! A service may run several replicas, each with a relay on the same outbox; one of them publishes at a time,
//! the leader. On PostgreSQL the leader is the relay that holds the outbox's leader lock, a session advisory
//! lock on a connection of the relay's own ([`Leadership`]); the others try for the lock once per poll interval
//! and publish nothing meanwhile. SQLite is one process's file, so its one relay leads.
//!
//! The leader reads the oldest unsent rows, publishes them in that order and marks the confirmed ones sent: two
//! statements per round that finds work, one for a round that finds none, and no transaction. Relays used to
//! share an outbox (each claimed subjects under advisory transaction locks, then their rows `FOR UPDATE SKIP
//! LOCKED`): six round trips per round, and a transaction held open while the broker confirmed.
//!
//! Order: one publisher reading oldest first sends each subject's events in order. The lock lives as long as the
//! leader's session: a relay that stops, or whose connection breaks, loses it (the server ends the session), and
//! the next leader publishes every row not marked sent, the last leader's unconfirmed batch included. What a
//! consumer can see is therefore an event twice (its inbox drops the second), never an event before an older one
//! of its subject: each publisher sends them oldest first.
//!
//! The lock is per database, and each service has its own.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool};

use crate::db::Db;
use crate::with_db;

/// The advisory lock whose holder publishes the outbox: two keys, the first a namespace of the relay's own
/// ("outb"), apart from single-key advisory locks such as the migrator's.
const LEADER_LOCK: (i32, i32) = (0x6f75_7462, 0);

/// One unsent outbox row.
#[derive(sqlx::FromRow)]
pub(super) struct OutboxRow {
    pub(super) id: String,
    pub(super) source: String,
    pub(super) event_type: String,
    pub(super) subject: String,
    pub(super) payload: String,
    pub(super) traceparent: String,
    pub(super) create_time: i64,
}

/// Whether a PostgreSQL relay leads its outbox, and the connection that holds the lock when it does.
#[derive(Default)]
pub(super) struct Leadership {
    connection: Option<PgConnection>,
    leading: bool,
    /// When a follower may try for the lock again.
    next_try: Option<Instant>,
    /// The backlog a follower saw when it last tried for the lock (unsent rows, oldest `create_time`), not
    /// yet reported: every replica reports the outbox's depth and age, the leader's from its rounds.
    pub(super) backlog: Option<(i64, Option<i64>)>,
}

impl Leadership {
    /// The connection to publish on when this relay leads, taking the lock first if it is free; None while
    /// another relay leads (tried at most once per `retry`, so that wakes do not turn into queries).
    pub(super) async fn lead(
        &mut self,
        pool: &PgPool,
        retry: Duration,
    ) -> Result<Option<&mut PgConnection>, sqlx::Error> {
        if !self.leading {
            if self.next_try.is_some_and(|next| Instant::now() < next) {
                return Ok(None);
            }
            self.next_try = Some(Instant::now() + retry);
            let connection = match &mut self.connection {
                Some(connection) => connection,
                None => {
                    let options = pool.connect_options();
                    let mut connection = PgConnection::connect_with(&options).await?;
                    crate::db::limit_session(&mut connection, &options).await?;
                    self.connection.insert(connection)
                }
            };
            let tried = sqlx::query_as::<_, (bool, i64, Option<i64>)>(
                "SELECT pg_try_advisory_lock($1, $2), \
                 (SELECT COUNT(*) FROM outbox WHERE sent_time IS NULL), \
                 (SELECT MIN(create_time) FROM outbox WHERE sent_time IS NULL)",
            )
            .bind(LEADER_LOCK.0)
            .bind(LEADER_LOCK.1)
            .fetch_one(&mut *connection)
            .await;
            match tried {
                Ok((locked, depth, oldest)) => {
                    self.leading = locked;
                    self.backlog = (!locked).then_some((depth, oldest));
                }
                Err(e) => {
                    self.lose();
                    return Err(e);
                }
            }
            if !self.leading {
                return Ok(None);
            }
        }
        Ok(self.connection.as_mut())
    }

    /// Gives the connection up after it failed: the lock may have gone with its session, so the next round
    /// starts over on a new connection.
    pub(super) fn lose(&mut self) {
        self.connection = None;
        self.leading = false;
        self.next_try = None;
    }

    /// Ends the session, and with it the lock, so another relay can lead at once.
    pub(super) async fn step_down(&mut self) {
        self.leading = false;
        if let Some(connection) = self.connection.take() {
            let _ = connection.close().await;
        }
    }
}

/// The oldest `limit` unsent rows, oldest first (the same SQL on both engines).
pub(super) async fn unsent_rows<'e, E, DB>(executor: E, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> OutboxRow: sqlx::FromRow<'r, DB::Row>,
{
    sqlx::query_as(
        "SELECT id, source, event_type, subject, payload, traceparent, create_time FROM outbox \
         WHERE sent_time IS NULL ORDER BY create_time, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// Marks the rows `ids` sent, in one statement (the same SQL on both engines).
pub(super) async fn mark_sent<'e, E, DB>(executor: E, ids: &[String]) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!("UPDATE outbox SET sent_time = $1 WHERE id IN ({})", crate::db::placeholders(2, ids.len()));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(crate::time::now_micros());
    for id in ids {
        query = query.bind(id.clone());
    }
    query.execute(executor).await.map(|_| ())
}

/// What is left unsent after a round that saw `seen` — the oldest unsent rows as `(id, create_time)`, all of
/// them unless `batch_full` — and published `published`: how many rows wait and the `create_time` of the
/// oldest. None when the round did not see every unsent row ([`backlog`] then counts them). Rows written or
/// published by others during the round show in the next round, as they would in a count made a moment later.
pub(super) fn left_after<'a>(
    seen: impl IntoIterator<Item = (&'a str, i64)>,
    batch_full: bool,
    published: &[String],
) -> Option<(i64, Option<i64>)> {
    if batch_full {
        return None;
    }
    let left: Vec<i64> = seen
        .into_iter()
        .filter(|(id, _)| !published.iter().any(|p| p == id))
        .map(|(_, create_time)| create_time)
        .collect();
    Some((left.len() as i64, left.into_iter().min()))
}

/// Deletes at most `limit` rows sent before `before` (µs since the epoch); returns how many it deleted. The rows
/// are found by a scan (no index holds sent rows), which meets the oldest first: the table is appended to.
pub(super) async fn delete_sent(db: &Db, before: i64, limit: i64) -> Result<u64, sqlx::Error> {
    let deleted = with_db!(db, pool => {
        sqlx::query("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_time < $1 LIMIT $2)")
            .bind(before)
            .bind(limit)
            .execute(pool)
            .await?
            .rows_affected()
    });
    Ok(deleted)
}

/// How many rows wait to be published, and the `create_time` of the oldest of them.
pub(super) async fn backlog(db: &Db) -> Result<(i64, Option<i64>), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_as("SELECT COUNT(*), MIN(create_time) FROM outbox WHERE sent_time IS NULL")
            .fetch_one(pool)
            .await
    })
}

#[cfg(test)]
mod tests {
    use super::left_after;

    #[test]
    fn what_is_left_after_a_round_is_what_it_saw_minus_what_it_published() {
        let seen = [("a", 10), ("b", 20), ("c", 5)];
        assert_eq!(left_after(seen, false, &[]), Some((3, Some(5))));
        assert_eq!(left_after(seen, false, &["c".to_owned()]), Some((2, Some(10))));
        assert_eq!(left_after(seen, false, &["a".to_owned(), "b".to_owned(), "c".to_owned()]), Some((0, None)));
        assert_eq!(left_after([], false, &[]), Some((0, None)));
        // A full batch may hide older rows' neighbours: only a count knows.
        assert_eq!(left_after(seen, true, &[]), None);
    }
}
