//! Transactions survive their callers being cancelled: a connection never goes back to the pool inside a
//! transaction that nobody will end (where the next borrower's writes would silently vanish). sqlx 0.8's
//! `Pool::begin` did exactly that (sqlx issue #4393; it once lost a checkout's saga move here), and 0.9.1 fixed it:
//! this keeps the fix checked with every upgrade.

use std::time::Duration;

use platform::db::Db;
use sqlx::postgres::PgPoolOptions;

/// A transaction start given up after its `BEGIN` ran on the server, but before the answer was read.
///
/// The start's statement is `BEGIN` followed by a wait for a lock the test holds, so the start is surely cancelled
/// at that point (catching the moment by polling a plain `BEGIN`, as this once did, failed under load: the answer
/// was read in the poll that sent it). `Pool::begin` and `begin_with` share sqlx's transaction manager.
#[tokio::test]
async fn a_transaction_start_cancelled_midway_leaves_the_connection_clean() {
    let Some(Db::Postgres(observer)) = platform::testkit::postgres("begin_cancelled").await else { return };
    // One connection, so the next statement surely runs on the one whose transaction start was cancelled.
    let options = (*observer.connect_options()).clone();
    let one = PgPoolOptions::new().max_connections(1).connect_with(options).await.expect("pool");
    sqlx::query("CREATE TABLE marks (id BIGINT)").execute(&observer).await.expect("table");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&one).await.expect("pid");
    let mut holder = observer.acquire().await.expect("holder");
    sqlx::query("SELECT pg_advisory_lock(4393)").execute(&mut *holder).await.expect("lock");

    let start = tokio::spawn({
        let one = one.clone();
        async move { one.begin_with("BEGIN; SELECT pg_advisory_xact_lock(4393)").await.map(drop) }
    });
    let waiting = || async {
        let waiting: Option<bool> = sqlx::query_scalar(
            "SELECT wait_event_type = 'Lock' AND wait_event = 'advisory' FROM pg_stat_activity WHERE pid = $1",
        )
        .bind(pid)
        .fetch_optional(&observer)
        .await
        .expect("activity");
        waiting.unwrap_or(false)
    };
    let mut inside = false;
    for _ in 0..1000 {
        if waiting().await {
            inside = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(inside, "the start's statement was not waiting for the lock after ten seconds");
    start.abort();
    assert!(start.await.expect_err("cancelled").is_cancelled(), "the start finished though the lock was held");
    sqlx::query("SELECT pg_advisory_unlock(4393)").execute(&mut *holder).await.expect("unlock");
    drop(holder);

    // A statement outside any transaction commits on its own, visibly to every other connection.
    sqlx::query("INSERT INTO marks VALUES (1)").execute(&one).await.expect("insert");
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM marks").fetch_one(&observer).await.expect("count");
    assert_eq!(seen, 1, "the insert ran inside a transaction left open by the cancelled start");
    one.close().await;
    observer.close().await;
}

/// On SQLite, a transaction that reads before it writes still writes when another connection wants to write
/// meanwhile (the outbox relay marking events sent, say): it holds the write lock from its start, so the other
/// writer waits for it. With a deferred `BEGIN` the other write went first and this one failed with SQLITE_BUSY.
#[tokio::test]
async fn a_sqlite_transaction_that_reads_first_writes_even_when_another_connection_writes_meanwhile() {
    use platform::db::BeginWrite;

    let (db, _dir) = platform::testkit::sqlite("read_then_write").await.expect("sqlite");
    let Db::Sqlite(pool) = db else { panic!("testkit::sqlite opens SQLite") };
    sqlx::query("CREATE TABLE counters (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .expect("table");
    sqlx::query("INSERT INTO counters VALUES (1, 0), (2, 0)").execute(&pool).await.expect("rows");

    let mut tx = pool.begin_write().await.expect("begin");
    let read: i64 = sqlx::query_scalar("SELECT n FROM counters WHERE id = 1").fetch_one(&mut *tx).await.expect("read");
    let mut other = tokio::spawn({
        let pool = pool.clone();
        async move { sqlx::query("UPDATE counters SET n = n + 1 WHERE id = 2").execute(&pool).await.map(drop) }
    });
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut other).await;
    assert!(waited.is_err(), "the other writer should wait for the transaction, but it wrote: {waited:?}");
    sqlx::query("UPDATE counters SET n = $1 WHERE id = 1")
        .bind(read + 1)
        .execute(&mut *tx)
        .await
        .expect("the write after the read");
    tx.commit().await.expect("commit");
    other.await.expect("the other writer's task").expect("the other write, after the transaction");

    let counters: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, n FROM counters ORDER BY id").fetch_all(&pool).await.expect("counters");
    assert_eq!(counters, [(1, 1), (2, 1)]);
    pool.close().await;
}

/// Two transactions that take two rows in opposite orders deadlock; PostgreSQL breaks the deadlock by aborting one
/// of them (40P01). Under `retry_conflicts` the aborted one runs again once the other has committed, so both
/// changes land and neither caller sees the error.
#[tokio::test]
async fn a_transaction_aborted_to_break_a_deadlock_runs_again() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use platform::db::{BeginWrite, retry_conflicts};
    use tokio::sync::Barrier;

    let Some(Db::Postgres(pool)) = platform::testkit::postgres("deadlock_retried").await else { return };
    sqlx::query("CREATE TABLE counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .expect("table");
    sqlx::query("INSERT INTO counters VALUES (1, 0), (2, 0)").execute(&pool).await.expect("rows");

    // Both first attempts hold their first row before either asks for its second: a deadlock for sure.
    let both_hold_one = Arc::new(Barrier::new(2));
    let attempts = Arc::new(AtomicU32::new(0));
    let increment_in_order = |first: i64, second: i64| {
        let (pool, both_hold_one, attempts) = (pool.clone(), both_hold_one.clone(), attempts.clone());
        tokio::spawn(async move {
            let mut first_attempt = true;
            retry_conflicts("deadlock_test", || {
                let (pool, both_hold_one, attempts) = (pool.clone(), both_hold_one.clone(), attempts.clone());
                let wait_for_the_other = std::mem::replace(&mut first_attempt, false);
                async move {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    let mut tx = pool.begin_write().await?;
                    for (step, id) in [first, second].into_iter().enumerate() {
                        sqlx::query("UPDATE counters SET n = n + 1 WHERE id = $1").bind(id).execute(&mut *tx).await?;
                        if step == 0 && wait_for_the_other {
                            both_hold_one.wait().await;
                        }
                    }
                    tx.commit().await
                }
            })
            .await
        })
    };
    let one_then_two = increment_in_order(1, 2);
    let two_then_one = increment_in_order(2, 1);
    one_then_two.await.expect("task").expect("the first transaction lands");
    two_then_one.await.expect("task").expect("the second transaction lands");

    assert_eq!(attempts.load(Ordering::SeqCst), 3, "one of the two was aborted and ran again");
    let counters: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, n FROM counters ORDER BY id").fetch_all(&pool).await.expect("counters");
    assert_eq!(counters, [(1, 2), (2, 2)], "each transaction's changes landed once");
    pool.close().await;
}

/// Which errors are conflicts: the database's deadlock and serialization failures, also inside a service's own
/// error type; not other database errors. A client is told to try a conflict again (ABORTED, reason CONFLICT),
/// and nothing but "internal error" of the others.
#[tokio::test]
async fn conflicts_are_told_from_other_errors_through_a_services_error_type() {
    use platform::db::is_conflict;

    #[derive(Debug, thiserror::Error)]
    enum ServiceError {
        #[error("database: {0}")]
        Database(#[from] sqlx::Error),
    }

    let Some(Db::Postgres(pool)) = platform::testkit::postgres("conflicts_told").await else { return };
    let raised = |code: &'static str| {
        let pool = pool.clone();
        async move {
            let sql = format!("DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{code}'; END $$");
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect_err("raises")
        }
    };
    for (code, conflict) in [("40P01", true), ("40001", true), ("23505", false), ("57014", false)] {
        let error = raised(code).await;
        assert_eq!(is_conflict(&error), conflict, "{code} as it is");
        let error = ServiceError::from(raised(code).await);
        assert_eq!(is_conflict(&error), conflict, "{code} in a service's error");
        // What a client is told: try again, or nothing of the database's words.
        let status = platform::error::internal(&error);
        if conflict {
            assert_eq!(status.code(), tonic::Code::Aborted, "{code}");
            let details = platform::error::decode_details(&status).expect("details");
            let info = details.details.iter().find(|d| d.type_url.ends_with("ErrorInfo")).expect("an ErrorInfo");
            let info = <api::google::rpc::ErrorInfo as prost::Message>::decode(info.value.as_slice()).expect("decodes");
            assert_eq!(info.reason, "CONFLICT");
        } else {
            assert_eq!((status.code(), status.message()), (tonic::Code::Internal, "internal error"), "{code}");
        }
    }
    assert!(!is_conflict(&sqlx::Error::PoolTimedOut), "not a database's answer");
    pool.close().await;
}
