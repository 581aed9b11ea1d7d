//! What an operator sees of the databases in `/metrics`: connection failures counted per service (the alert
//! rules page on them) and each pool's open and idle connections.

use platform::db::{Db, DbError};

#[tokio::test]
async fn connection_failures_are_counted_and_pools_reported() {
    let metrics = platform::metrics::handle();

    // Nothing listens on port 1: opening fails with a connection error, counted for the service.
    let refused = Db::open_postgres_server("postgres://postgres@127.0.0.1:1", "mercato_nowhere", "nowhere").await;
    assert!(matches!(refused, Err(DbError::Connect { ref service, .. }) if service == "nowhere"), "{refused:?}");
    let refused = Db::open_postgres_server("postgres://postgres@127.0.0.1:1", "mercato_nowhere", "nowhere").await;
    assert!(refused.is_err());
    let rendered = metrics.render();
    assert!(rendered.contains("mercato_db_connection_errors_total{service=\"nowhere\"} 2"), "{rendered}");

    // An open database reports its pool.
    let (db, _dir) = platform::testkit::sqlite("pooled").await.expect("sqlite");
    let mut rendered = String::new();
    for _ in 0..50 {
        rendered = metrics.render();
        if rendered.contains("mercato_db_pool_connections{service=\"pooled\",state=\"open\"}") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(rendered.contains("mercato_db_pool_connections{service=\"pooled\",state=\"open\"}"), "{rendered}");
    assert!(rendered.contains("mercato_db_pool_connections{service=\"pooled\",state=\"idle\"}"), "{rendered}");
    db.close().await;
}
