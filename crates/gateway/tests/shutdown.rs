//! Graceful shutdown: a request in flight when the stop signal comes is answered, and the gateway stops
//! accepting new connections. The service behind it is a stand-in catalog that takes its time.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

/// How long the stand-in catalog takes to answer GetProduct.
const SLOW: Duration = Duration::from_millis(1200);

#[tokio::test]
async fn a_request_in_flight_at_shutdown_is_answered_and_new_ones_are_refused() {
    let catalog = support::serve_catalog(support::StandInCatalog { name: "Slow tea", delay: SLOW }).await;
    let (addr, shutdown, server) =
        support::serve_gateway(support::settings(&[("MERCATO_CATALOG_URL", &catalog)])).await;

    let client = reqwest::Client::new();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.get(format!("http://{addr}/v1/products/p-1")).send().await }
    });
    // Let the request reach the slow catalog, then ask the gateway to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    shutdown.cancel();

    let response = in_flight.await.expect("task").expect("the request in flight was answered");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["name"], "Slow tea");

    let stopped = tokio::time::timeout(Duration::from_secs(5), server).await.expect("stops in time");
    stopped.expect("task").expect("served without error");
    assert!(asked.elapsed() < Duration::from_secs(5));
    let after = reqwest::Client::new().get(format!("http://{addr}/healthz")).send().await;
    assert!(after.is_err(), "the gateway still accepts connections after shutdown");
}
