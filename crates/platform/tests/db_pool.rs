//! The pools hand out connections without a round trip to the server when they were used a moment ago, and still
//! replace one the server dropped while it sat idle.

use std::time::Duration;

use platform::db::{CHECK_IF_IDLE_FOR, Db};

/// The server ends a pooled connection (a restart, an idle timeout, an operator): the next statement, a while
/// later, runs on a new connection instead of failing.
#[tokio::test]
async fn a_connection_the_server_dropped_while_idle_is_replaced_before_use() {
    let Some(Db::Postgres(pool)) = platform::testkit::postgres("pool_idle_check").await else { return };
    let Some(Db::Postgres(admin)) = platform::testkit::postgres("pool_idle_check_admin").await else { return };
    // Every connection the pool holds (all taken at once, so each is a different one), ended by the server.
    let mut held = Vec::new();
    for _ in 0..pool.size().max(1) {
        held.push(pool.acquire().await.expect("connection"));
    }
    let mut pids: Vec<i32> = Vec::new();
    for connection in &mut held {
        pids.push(sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut **connection).await.expect("pid"));
    }
    drop(held);
    for pid in &pids {
        let ended: bool =
            sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&admin).await.expect("terminate");
        assert!(ended, "backend {pid} was not ended");
    }
    tokio::time::sleep(CHECK_IF_IDLE_FOR + Duration::from_millis(200)).await;

    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&pool).await.expect("a new connection");
    assert!(!pids.contains(&pid), "ran on an ended connection {pid}");
    pool.close().await;
    admin.close().await;
}
