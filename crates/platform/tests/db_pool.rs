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

/// Every session a service opens carries the limits that keep a stuck transaction from holding its row locks
/// for ever (see `SESSION_LIMITS`), and a limit the database URL sets itself is kept.
#[tokio::test]
async fn sessions_start_with_the_lock_limits_unless_the_url_sets_them() {
    let Some(db) = platform::testkit::postgres("session_limits").await else { return };
    let Db::Postgres(pool) = &db else { unreachable!("postgres() opens PostgreSQL") };
    let show = |name: &'static str| async move {
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(pool)
            .await
            .expect("show")
    };
    assert_eq!(show("idle_in_transaction_session_timeout").await, "1min");
    assert_eq!(show("lock_timeout").await, "30s");

    // An operator's own value, in the URL's options, wins over the default.
    let url = std::env::var("MERCATO_TEST_DATABASE_URL").expect("set when postgres() returned a database");
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}options=-c%20lock_timeout%3D5s");
    let name = format!("mercato_test_session_limits_{}", uuid::Uuid::now_v7().simple());
    let own = Db::open_postgres_server(&url, &name, "session_limits").await.expect("open with options");
    let Db::Postgres(own_pool) = &own else { unreachable!("a PostgreSQL URL") };
    let lock: String = sqlx::query_scalar("SHOW lock_timeout").fetch_one(own_pool).await.expect("show");
    let idle: String =
        sqlx::query_scalar("SHOW idle_in_transaction_session_timeout").fetch_one(own_pool).await.expect("show");
    assert_eq!((lock.as_str(), idle.as_str()), ("5s", "1min"));
    own.close().await;
    db.close().await;
}
