//! Transactions survive their callers being cancelled: a connection never goes back to the pool inside a
//! transaction that nobody will end (where the next borrower's writes would silently vanish). sqlx 0.8's
//! `Pool::begin` did exactly that (sqlx issue #4393; it once lost a checkout's saga move here), and 0.9.1 fixed it:
//! this keeps the fix checked with every upgrade.

use std::time::Duration;

use futures::FutureExt;
use platform::db::Db;
use sqlx::postgres::PgPoolOptions;

/// A transaction start given up after its `BEGIN` reached the server, but before the answer was read.
#[tokio::test]
async fn a_transaction_start_cancelled_midway_leaves_the_connection_clean() {
    let Some(Db::Postgres(observer)) = platform::testkit::postgres("begin_cancelled").await else { return };
    // One connection, so the next statement surely runs on the one whose transaction start was cancelled.
    let options = (*observer.connect_options()).clone();
    let one = PgPoolOptions::new().max_connections(1).connect_with(options).await.expect("pool");
    sqlx::query("CREATE TABLE marks (id BIGINT)").execute(&observer).await.expect("table");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&one).await.expect("pid");
    let state = || async {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_optional(&observer)
            .await
            .expect("activity");
        state.unwrap_or_default()
    };

    // Poll the start one step at a time and stop as soon as the server is inside the transaction: then drop it.
    // (When the answer happened to be read in the step that sent `BEGIN`, the start completed: try again.)
    let mut cancelled_inside = false;
    for attempt in 1..=20_i64 {
        #[allow(clippy::disallowed_methods)] // sqlx's own begin is what this checks.
        let mut begin = Box::pin(one.begin());
        'polls: for _ in 0..100 {
            if (&mut begin).now_or_never().is_some() {
                break;
            }
            for _ in 0..50 {
                if state().await == "idle in transaction" {
                    cancelled_inside = true;
                    break 'polls;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        drop(begin);

        // A statement outside any transaction commits on its own, visibly to every other connection.
        sqlx::query("INSERT INTO marks VALUES ($1)").bind(attempt).execute(&one).await.expect("insert");
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM marks").fetch_one(&observer).await.expect("count");
        assert_eq!(seen, attempt, "the insert ran inside a transaction left open by the cancelled start");
        if cancelled_inside {
            break;
        }
    }
    assert!(cancelled_inside, "the start was never caught inside the transaction: the test did not test it");
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
