//! Which outbox rows a relay publishes next, and marking them sent.
//!
//! SQLite is one process's file, so its relay reads the oldest unsent rows. On PostgreSQL several replicas of
//! a service run a relay each on the same outbox, and a relay claims what it publishes, inside the
//! transaction that later marks the rows sent:
//!
//! 0. Before any transaction, it reads the oldest unsent rows ([`candidates`]): when there are none the round
//!    ends there, without a transaction (most rounds of a relay woken after each commit find little or nothing).
//! 1. It takes `pg_try_advisory_xact_lock(OUTBOX_LOCK_CLASS, hashtext(subject))` for the subjects of the
//!    oldest unsent rows (those a batch needs, in one statement), skipping subjects another relay holds, and
//!    tries further subjects only while the batch is short. A subject (an aggregate) is thereby
//!    published by at most one relay at a time, so its events reach the broker in order: locking rows alone
//!    is not enough, because a relay skipping an older row that another relay has locked would publish the
//!    newer rows of the same subject next to it, and they could overtake it.
//! 2. It then locks the oldest unsent rows of those subjects `FOR UPDATE SKIP LOCKED`, so two relays never
//!    publish the same row; with the subject locks held no other relay locks these rows, so nothing of a
//!    claimed subject is skipped. This statement runs after the subject locks were granted, hence with a
//!    snapshot that sees every row the previous holder marked sent (PostgreSQL makes a commit visible before
//!    it releases the committing transaction's locks).
//!
//! The locks end with the transaction. A hash collision only makes two subjects share a lock.

use sqlx::{PgConnection, SqlitePool};

use crate::db::Db;
use crate::with_db;

/// The first key of the relay's advisory locks, a namespace of their own ("outb"), apart from single-key
/// advisory locks such as the migrator's.
const OUTBOX_LOCK_CLASS: i32 = 0x6f75_7462;

/// How many batches' worth of the oldest unsent rows a PostgreSQL relay looks at for subjects to claim.
const CANDIDATE_WINDOW: i64 = 4;

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

/// One of the oldest unsent rows: what a PostgreSQL relay may claim, and what is left when it is done.
#[derive(sqlx::FromRow)]
pub(super) struct Candidate {
    pub(super) id: String,
    pub(super) subject: String,
    pub(super) create_time: i64,
}

/// The oldest `limit` unsent rows, oldest first (PostgreSQL, outside the claiming transaction: only a hint of
/// what to claim).
pub(super) async fn candidates(pool: &sqlx::PgPool, limit: i64) -> Result<Vec<Candidate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, subject, create_time FROM outbox WHERE sent_time IS NULL ORDER BY create_time, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The window of [`candidates`] a relay reads for a batch of `limit` rows.
pub(super) fn candidate_window(limit: i64) -> i64 {
    limit.saturating_mul(CANDIDATE_WINDOW)
}

/// The oldest `limit` unsent rows, oldest first (SQLite: one relay per outbox).
pub(super) async fn unsent_rows(pool: &SqlitePool, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, source, event_type, subject, payload, traceparent, create_time FROM outbox \
         WHERE sent_time IS NULL ORDER BY create_time, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Claims up to `limit` unsent rows in `tx` (PostgreSQL), oldest first, among the subjects of `oldest` (read
/// by [`candidates`] with a window wider than a batch, so that a relay finds subjects beyond those another
/// relay holds right now); see the module documentation.
pub(super) async fn claim_rows(
    tx: &mut PgConnection,
    oldest: &[Candidate],
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    // The subjects in order, with how many of these rows each has.
    let mut candidates: Vec<(&str, i64)> = Vec::new();
    for row in oldest {
        match candidates.iter_mut().find(|(candidate, _)| *candidate == row.subject) {
            Some((_, rows)) => *rows += 1,
            None => candidates.push((&row.subject, 1)),
        }
    }
    // Lock only as many subjects as a batch needs, so that the subjects left over stay free for the other
    // relays: the fewest that could fill it, in one statement; more only if some were held by another relay.
    let mut subjects: Vec<String> = Vec::new();
    let mut covered = 0;
    let mut next = 0;
    while covered < limit && next < candidates.len() {
        let mut wanted: Vec<&str> = Vec::new();
        let mut would_cover = covered;
        while next < candidates.len() && would_cover < limit {
            wanted.push(candidates[next].0);
            would_cover += candidates[next].1;
            next += 1;
        }
        let locked: Vec<String> = sqlx::query_scalar(
            "SELECT subject FROM unnest($2::text[]) WITH ORDINALITY AS wanted (subject, position) \
             WHERE pg_try_advisory_xact_lock($1, hashtext(subject)) ORDER BY position",
        )
        .bind(OUTBOX_LOCK_CLASS)
        .bind(&wanted)
        .fetch_all(&mut *tx)
        .await?;
        for subject in locked {
            covered += candidates.iter().find(|(candidate, _)| *candidate == subject).map_or(0, |(_, rows)| *rows);
            subjects.push(subject);
        }
    }
    if subjects.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT id, source, event_type, subject, payload, traceparent, create_time FROM outbox \
         WHERE sent_time IS NULL AND subject = ANY($2) ORDER BY create_time, id LIMIT $1 \
         FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .bind(&subjects)
    .fetch_all(&mut *tx)
    .await
}

/// Marks the rows `ids` sent, in one statement (the same SQL on both engines).
pub(super) async fn mark_sent<'e, E, DB>(executor: E, ids: &[String]) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!("UPDATE outbox SET sent_time = $1 WHERE id IN ({})", crate::db::placeholders(2, ids.len()));
    let mut query = sqlx::query(&sql).bind(crate::time::now_micros());
    for id in ids {
        query = query.bind(id.clone());
    }
    query.execute(executor).await.map(|_| ())
}

/// What is left unsent after a round that saw `seen` — the oldest unsent rows as `(id, create_time)`, all of
/// them unless `window_full` — and published `published`: how many rows wait and the `create_time` of the
/// oldest. None when the round did not see every unsent row ([`backlog`] then counts them). Rows written or
/// published by others during the round show in the next round, as they would in a count made a moment later.
pub(super) fn left_after<'a>(
    seen: impl IntoIterator<Item = (&'a str, i64)>,
    window_full: bool,
    published: &[String],
) -> Option<(i64, Option<i64>)> {
    if window_full {
        return None;
    }
    let left: Vec<i64> = seen
        .into_iter()
        .filter(|(id, _)| !published.iter().any(|p| p == id))
        .map(|(_, create_time)| create_time)
        .collect();
    Some((left.len() as i64, left.into_iter().min()))
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
        // A full window may hide older rows' neighbours: only a count knows.
        assert_eq!(left_after(seen, true, &[]), None);
    }
}
