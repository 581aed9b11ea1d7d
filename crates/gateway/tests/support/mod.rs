//! What the gateway's tests share: settings, a gateway served on a free port, and a stand-in catalog over
//! real gRPC (GetProduct answers a product of a given name after a given delay; every other method is
//! UNIMPLEMENTED).

#![allow(dead_code, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use api::catalog::catalog_service_server::{CatalogService, CatalogServiceServer};
use api::catalog::*;
use gateway::GatewayError;
use platform::Settings;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Gateway settings with auth unreachable (these tests verify no token) and rate limits off, then `extra`
/// (which wins over both).
pub fn settings(extra: &[(&str, &str)]) -> Settings {
    let mut vars = vec![
        ("MERCATO_AUTH_URL".to_owned(), "http://127.0.0.1:1".to_owned()),
        ("MERCATO_RATE_LIMITS".to_owned(), "off".to_owned()),
    ];
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Settings::from_vars(vars).expect("settings")
}

/// Worker threads of the gateways these tests serve: more than one, as on any machine with several cores.
pub const WORKERS: usize = 2;

/// Serves a gateway with `settings` on a free port, on [`WORKERS`] worker threads as `mercato serve gateway`
/// does: its address, what stops it, and its task.
pub async fn serve_gateway(
    settings: Settings,
) -> (SocketAddr, CancellationToken, JoinHandle<Result<(), GatewayError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let server =
        tokio::spawn(async move { gateway::workers::serve_on_workers(listener, &settings, WORKERS, stop).await });
    (addr, shutdown, server)
}

/// A catalog whose GetProduct answers a product named `name` after `delay`.
pub struct StandInCatalog {
    /// The name of every product it returns.
    pub name: &'static str,
    /// How long GetProduct takes.
    pub delay: Duration,
}

/// Serves `catalog` on a free port; its URL.
pub async fn serve_catalog(catalog: StandInCatalog) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CatalogServiceServer::new(catalog))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

fn not_here<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in this test"))
}

#[tonic::async_trait]
impl CatalogService for StandInCatalog {
    async fn get_product(&self, request: Request<GetProductRequest>) -> Result<Response<GetProductResponse>, Status> {
        tokio::time::sleep(self.delay).await;
        let product = Product { id: request.into_inner().id, name: self.name.into(), ..Default::default() };
        Ok(Response::new(GetProductResponse { product: Some(product) }))
    }
    async fn list_products(&self, _: Request<ListProductsRequest>) -> Result<Response<ListProductsResponse>, Status> {
        not_here()
    }
    async fn create_product(
        &self,
        _: Request<CreateProductRequest>,
    ) -> Result<Response<CreateProductResponse>, Status> {
        not_here()
    }
    async fn update_product(
        &self,
        _: Request<UpdateProductRequest>,
    ) -> Result<Response<UpdateProductResponse>, Status> {
        not_here()
    }
    async fn get_inventory(&self, _: Request<GetInventoryRequest>) -> Result<Response<GetInventoryResponse>, Status> {
        not_here()
    }
    async fn adjust_inventory(
        &self,
        _: Request<AdjustInventoryRequest>,
    ) -> Result<Response<AdjustInventoryResponse>, Status> {
        not_here()
    }
    async fn reserve_stock(&self, _: Request<ReserveStockRequest>) -> Result<Response<ReserveStockResponse>, Status> {
        not_here()
    }
    async fn release_stock(&self, _: Request<ReleaseStockRequest>) -> Result<Response<ReleaseStockResponse>, Status> {
        not_here()
    }
    async fn commit_stock(&self, _: Request<CommitStockRequest>) -> Result<Response<CommitStockResponse>, Status> {
        not_here()
    }
    async fn list_stock_levels(
        &self,
        _: Request<api::catalog::ListStockLevelsRequest>,
    ) -> Result<Response<api::catalog::ListStockLevelsResponse>, Status> {
        not_here()
    }
    async fn list_categories(
        &self,
        _: Request<api::catalog::ListCategoriesRequest>,
    ) -> Result<Response<api::catalog::ListCategoriesResponse>, Status> {
        not_here()
    }
    async fn create_category(
        &self,
        _: Request<api::catalog::CreateCategoryRequest>,
    ) -> Result<Response<api::catalog::CreateCategoryResponse>, Status> {
        not_here()
    }
    async fn update_category(
        &self,
        _: Request<api::catalog::UpdateCategoryRequest>,
    ) -> Result<Response<api::catalog::UpdateCategoryResponse>, Status> {
        not_here()
    }
    async fn delete_category(
        &self,
        _: Request<api::catalog::DeleteCategoryRequest>,
    ) -> Result<Response<api::catalog::DeleteCategoryResponse>, Status> {
        not_here()
    }
    async fn add_product_image(
        &self,
        _: Request<api::catalog::AddProductImageRequest>,
    ) -> Result<Response<api::catalog::AddProductImageResponse>, Status> {
        not_here()
    }
    async fn delete_product_image(
        &self,
        _: Request<api::catalog::DeleteProductImageRequest>,
    ) -> Result<Response<api::catalog::DeleteProductImageResponse>, Status> {
        not_here()
    }
    async fn get_product_image_content(
        &self,
        _: Request<api::catalog::GetProductImageContentRequest>,
    ) -> Result<Response<api::google::api::HttpBody>, Status> {
        not_here()
    }
}
