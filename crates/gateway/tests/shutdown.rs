//! Graceful shutdown: a request in flight when the stop signal comes is answered, and the gateway stops
//! accepting new connections. The service behind it is a stand-in catalog that takes its time.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use api::catalog::catalog_service_server::{CatalogService, CatalogServiceServer};
use api::catalog::*;
use platform::Settings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// How long the stand-in catalog takes to answer GetProduct.
const SLOW: Duration = Duration::from_millis(1200);

struct SlowCatalog;

#[tonic::async_trait]
impl CatalogService for SlowCatalog {
    async fn get_product(&self, request: Request<GetProductRequest>) -> Result<Response<GetProductResponse>, Status> {
        tokio::time::sleep(SLOW).await;
        let product = Product { id: request.into_inner().id, name: "Slow tea".into(), ..Default::default() };
        Ok(Response::new(GetProductResponse { product: Some(product) }))
    }
    async fn list_products(&self, _: Request<ListProductsRequest>) -> Result<Response<ListProductsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn create_product(
        &self,
        _: Request<CreateProductRequest>,
    ) -> Result<Response<CreateProductResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn update_product(
        &self,
        _: Request<UpdateProductRequest>,
    ) -> Result<Response<UpdateProductResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn get_inventory(&self, _: Request<GetInventoryRequest>) -> Result<Response<GetInventoryResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn adjust_inventory(
        &self,
        _: Request<AdjustInventoryRequest>,
    ) -> Result<Response<AdjustInventoryResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn reserve_stock(&self, _: Request<ReserveStockRequest>) -> Result<Response<ReserveStockResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn release_stock(&self, _: Request<ReleaseStockRequest>) -> Result<Response<ReleaseStockResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn commit_stock(&self, _: Request<CommitStockRequest>) -> Result<Response<CommitStockResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_is_answered_and_new_ones_are_refused() {
    let catalog = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let catalog_addr = catalog.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CatalogServiceServer::new(SlowCatalog))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(catalog)),
    );

    let settings = Settings::from_vars(vec![
        ("MERCATO_CATALOG_URL".to_owned(), format!("http://{catalog_addr}")),
        ("MERCATO_AUTH_URL".to_owned(), "http://127.0.0.1:1".to_owned()),
        ("MERCATO_RATE_LIMITS".to_owned(), "off".to_owned()),
    ])
    .expect("settings");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let server = tokio::spawn(async move { gateway::serve(listener, &settings, stop).await });

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
