//! The gateway on worker threads of its own (`gateway::workers`): connections go to every worker, a rate-limit
//! budget stays one budget across them, and a stop lets requests in flight finish. (The other test files serve
//! their gateways on workers too, TLS included.)
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

/// A client whose every request is a connection of its own, so that connections are handed to the workers in turn.
/// Made before a test starts its clock: building one loads the system's root certificates (tens of ms).
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client")
}

/// `GET /v1/products/{id}` with `client`.
async fn get_product(client: reqwest::Client, addr: SocketAddr, id: usize) -> reqwest::Response {
    client.get(format!("http://{addr}/v1/products/p-{id}")).send().await.expect("answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_are_all_served_and_a_stop_waits_for_requests_in_flight() {
    let delay = Duration::from_millis(400);
    let catalog = support::serve_catalog(support::StandInCatalog { name: "Green tea", delay }).await;
    let (addr, shutdown, server) =
        support::serve_gateway(support::settings(&[("MERCATO_CATALOG_URL", &catalog)])).await;

    let clients: Vec<_> = (0..16).map(|_| fresh_client()).collect();
    let requests: Vec<_> =
        clients.into_iter().enumerate().map(|(id, client)| tokio::spawn(get_product(client, addr, id))).collect();
    // Stop while the catalog still holds every one of them.
    tokio::time::sleep(delay / 2).await;
    shutdown.cancel();
    for (id, request) in requests.into_iter().enumerate() {
        let response = request.await.expect("task");
        assert_eq!(response.status(), 200, "request {id}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!((body["id"].as_str(), body["name"].as_str()), (Some(format!("p-{id}").as_str()), Some("Green tea")));
    }
    let stopped = tokio::time::timeout(Duration::from_secs(5), server).await.expect("every worker stops");
    stopped.expect("task").expect("served without error");
    let after = reqwest::Client::new().get(format!("http://{addr}/healthz")).send().await;
    assert!(after.is_err(), "a worker still accepts connections after the stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_is_shared_by_every_worker() {
    let catalog = support::serve_catalog(support::StandInCatalog { name: "Black tea", delay: Duration::ZERO }).await;
    let settings = support::settings(&[
        ("MERCATO_CATALOG_URL", &catalog),
        ("MERCATO_RATE_LIMITS", "GET /v1/products/{id}=5/min:5"),
    ]);
    let (addr, shutdown, server) = support::serve_gateway(settings).await;

    let requests: Vec<_> = (0..12).map(|id| tokio::spawn(get_product(fresh_client(), addr, id))).collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.expect("task").status().as_u16());
    }
    statuses.sort_unstable();
    let expected: Vec<u16> = [200; 5].into_iter().chain([429; 7]).collect();
    assert_eq!(statuses, expected, "one client's budget of 5, whichever worker answered");
    shutdown.cancel();
    server.await.expect("task").expect("served without error");
}
