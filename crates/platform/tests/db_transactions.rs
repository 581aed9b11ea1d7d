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
