//! The harness of the cart's tests, shared by the scenario files (cart.rs, wishlist.rs): the cart over real gRPC
//! on a port-0 listener against a stand-in catalog on another, tokens, helpers for the calls most scenarios make,
//! and [`on_both_engines!`], which runs each scenario (an async fn taking a `Db`) on SQLite and, when
//! `MERCATO_TEST_DATABASE_URL` is set, PostgreSQL.
//!
//! A service never depends on another service's crate, so the catalog here is a small in-memory stand-in
//! served over real gRPC on its own port. It behaves as the real catalog does for anonymous callers:
//! GetProduct hides inactive products (NOT_FOUND), GetInventory reports any product it knows. The real
//! end-to-end path is covered by the workspace's tests/.

// Each scenario file uses some of the helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use api::catalog::catalog_service_server::{CatalogService, CatalogServiceServer};
use api::catalog::{
    AdjustInventoryRequest, AdjustInventoryResponse, CommitStockRequest, CommitStockResponse, CreateProductRequest,
    CreateProductResponse, GetInventoryRequest, GetInventoryResponse, GetProductRequest, GetProductResponse, Inventory,
    ListProductsRequest, ListProductsResponse, Product, ReleaseStockRequest, ReleaseStockResponse, ReserveStockRequest,
    ReserveStockResponse, UpdateProductRequest, UpdateProductResponse,
};
use api::common::Money;
use api::mercato::cart::v1::CartItemAdded;
use api::mercato::cart::v1::cart_service_client::CartServiceClient;
use api::mercato::cart::v1::wishlist_service_client::WishlistServiceClient;
use api::mercato::cart::v1::{
    AddItemRequest, Cart, CartItem, ClearCartRequest, GetCartRequest, RemoveItemRequest, UpdateItemRequest,
};
use cart::store::Store;
use platform::db::Db;
use platform::events::{EventBus, EventEnvelope, InProcessBus};
use platform::testkit::TestIssuer;
#[allow(unused_imports)]
pub use platform::testkit::error_reason as reason;
#[allow(unused_imports)]
pub use platform::testkit::violated_fields as bad_fields;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

// ---------------------------------------------------------------------------------------------------------
// The stand-in catalog.

/// Products (with the units available) by id.
#[derive(Clone, Default)]
pub struct FakeCatalog {
    pub products: Arc<Mutex<HashMap<String, (Product, i32)>>>,
}

impl FakeCatalog {
    pub fn put(&self, id: &str, sku: &str, name: &str, currency: &str, cents: i64, stock: i32) {
        let product = Product {
            id: id.into(),
            sku: sku.into(),
            name: name.into(),
            price: Some(Money { currency: currency.into(), amount_minor: cents }),
            category: "test".into(),
            active: true,
            ..Product::default()
        };
        self.products.lock().expect("lock").insert(id.into(), (product, stock));
    }

    pub fn change(&self, id: &str, f: impl FnOnce(&mut Product, &mut i32)) {
        let mut products = self.products.lock().expect("lock");
        let (product, stock) = products.get_mut(id).expect("known product");
        f(product, stock);
    }

    pub fn delete(&self, id: &str) {
        self.products.lock().expect("lock").remove(id);
    }
}

#[tonic::async_trait]
impl CatalogService for FakeCatalog {
    async fn get_product(&self, request: Request<GetProductRequest>) -> Result<Response<GetProductResponse>, Status> {
        let id = request.into_inner().id;
        match self.products.lock().expect("lock").get(&id) {
            // Like the real catalog: inactive products do not exist for anonymous callers.
            Some((product, _)) if product.active => {
                Ok(Response::new(GetProductResponse { product: Some(product.clone()) }))
            }
            _ => Err(Status::not_found(format!("product {id} not found"))),
        }
    }

    async fn get_inventory(
        &self,
        request: Request<GetInventoryRequest>,
    ) -> Result<Response<GetInventoryResponse>, Status> {
        let product_id = request.into_inner().product_id;
        match self.products.lock().expect("lock").get(&product_id) {
            Some((_, stock)) => Ok(Response::new(GetInventoryResponse {
                inventory: Some(Inventory { product_id, on_hand: *stock, reserved: 0, available: *stock }),
            })),
            None => Err(Status::not_found(format!("product {product_id} not found"))),
        }
    }

    async fn list_products(&self, _: Request<ListProductsRequest>) -> Result<Response<ListProductsResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn create_product(
        &self,
        _: Request<CreateProductRequest>,
    ) -> Result<Response<CreateProductResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn update_product(
        &self,
        _: Request<UpdateProductRequest>,
    ) -> Result<Response<UpdateProductResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn adjust_inventory(
        &self,
        _: Request<AdjustInventoryRequest>,
    ) -> Result<Response<AdjustInventoryResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn reserve_stock(&self, _: Request<ReserveStockRequest>) -> Result<Response<ReserveStockResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn release_stock(&self, _: Request<ReleaseStockRequest>) -> Result<Response<ReleaseStockResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }

    async fn commit_stock(&self, _: Request<CommitStockRequest>) -> Result<Response<CommitStockResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }
    async fn list_stock_levels(
        &self,
        _: Request<api::catalog::ListStockLevelsRequest>,
    ) -> Result<Response<api::catalog::ListStockLevelsResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }
    async fn list_categories(
        &self,
        _: Request<api::catalog::ListCategoriesRequest>,
    ) -> Result<Response<api::catalog::ListCategoriesResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }
    async fn create_category(
        &self,
        _: Request<api::catalog::CreateCategoryRequest>,
    ) -> Result<Response<api::catalog::CreateCategoryResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }
    async fn update_category(
        &self,
        _: Request<api::catalog::UpdateCategoryRequest>,
    ) -> Result<Response<api::catalog::UpdateCategoryResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }
    async fn delete_category(
        &self,
        _: Request<api::catalog::DeleteCategoryRequest>,
    ) -> Result<Response<api::catalog::DeleteCategoryResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }
    async fn add_product_image(
        &self,
        _: Request<api::catalog::AddProductImageRequest>,
    ) -> Result<Response<api::catalog::AddProductImageResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }
    async fn delete_product_image(
        &self,
        _: Request<api::catalog::DeleteProductImageRequest>,
    ) -> Result<Response<api::catalog::DeleteProductImageResponse>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }
    async fn get_product_image_content(
        &self,
        _: Request<api::catalog::GetProductImageContentRequest>,
    ) -> Result<Response<api::google::api::HttpBody>, Status> {
        Err(Status::unimplemented("not in the stand-in"))
    }
}

// ---------------------------------------------------------------------------------------------------------
// The cart, in-process on a port-0 listener, against the stand-in catalog on another.

pub const COFFEE: &str = "p-coffee";
pub const TEA: &str = "p-tea";
pub const BOOK: &str = "p-book";
pub const RETIRED: &str = "p-retired";

pub type Client = CartServiceClient<Channel>;

pub struct Server {
    pub client: Client,
    /// `cart.item_added` payloads as they were published, in order.
    pub item_added: Arc<Mutex<Vec<CartItemAdded>>>,
    pub issuer: Arc<TestIssuer>,
    pub catalog: FakeCatalog,
    pub catalog_stop: CancellationToken,
    pub catalog_task: JoinHandle<Result<(), tonic::transport::Error>>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), cart::Error>>,
    pub bus: Arc<InProcessBus>,
    /// A client of the wishlists (`WishlistService`), on the same connection.
    pub wishlist: WishlistServiceClient<Channel>,
}

impl Server {
    pub async fn start(db: Db) -> Self {
        let catalog = FakeCatalog::default();
        catalog.put(COFFEE, "COF-1", "Coffee", "EUR", 1450, 500);
        catalog.put(TEA, "TEA-1", "Tea", "EUR", 500, 500);
        catalog.put(BOOK, "BOOK-1", "Book", "USD", 2500, 500);
        catalog.put(RETIRED, "OLD-1", "Retired", "EUR", 100, 500);
        catalog.change(RETIRED, |p, _| p.active = false);

        let catalog_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind catalog");
        let catalog_url = format!("http://{}", catalog_listener.local_addr().expect("addr"));
        let catalog_stop = CancellationToken::new();
        let stopping = catalog_stop.clone();
        let catalog_task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(CatalogServiceServer::new(catalog.clone()))
                .serve_with_incoming_shutdown(TcpListenerStream::new(catalog_listener), async move {
                    stopping.cancelled().await
                }),
        );

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = Arc::new(TestIssuer::new().expect("issuer"));
        let shutdown = CancellationToken::new();
        let channel = platform::grpc::channel(&catalog_url).expect("catalog channel");
        let bus = Arc::new(InProcessBus::new());
        let item_added = Arc::new(Mutex::new(Vec::new()));
        let recorded = item_added.clone();
        bus.subscribe(
            "test",
            &[cart::events::ITEM_ADDED],
            Arc::new(move |envelope: Arc<EventEnvelope>| {
                let recorded = recorded.clone();
                Box::pin(async move {
                    let event = CartItemAdded::decode(envelope.data.as_slice()).map_err(|e| e.to_string())?;
                    recorded.lock().expect("lock").push(event);
                    Ok(())
                })
            }),
        );
        // As `cart::run` does: the consumer on the bus.
        cart::events::subscribe(bus.as_ref(), Store::new(db.clone()));
        let task = tokio::spawn(cart::serve(listener, db, issuer.verifier(), channel, bus.clone(), shutdown.clone()));
        let url = format!("http://{addr}");
        let channel = platform::testkit::connect_when_up(&url, "cart").await;
        let (client, wishlist) = (CartServiceClient::new(channel.clone()), WishlistServiceClient::new(channel));
        Self { client, item_added, issuer, catalog, catalog_stop, catalog_task, shutdown, task, bus, wishlist }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("served cleanly");
        self.catalog_stop.cancel();
        self.catalog_task.await.expect("join").expect("catalog served cleanly");
    }

    /// A shopper's token, as auth issues it.
    pub fn customer(&self, id: &str) -> String {
        self.issuer.token(id, &["cart:write", "orders:read", "orders:write", "payment:write"], &["customer"])
    }

    /// An administrator's token: they may act for others on orders.
    pub fn admin(&self) -> String {
        self.issuer.token("admin-1", &["cart:write", "orders:admin", "catalog:write"], &["admin"])
    }

    pub async fn get(&self, token: &str) -> Result<Cart, Status> {
        let cart = self.client.clone().get_cart(with_token(GetCartRequest {}, token)).await?.into_inner().cart;
        Ok(cart.expect("a cart"))
    }

    pub async fn add(&self, token: &str, product_id: &str, quantity: i32) -> Result<Cart, Status> {
        let request = with_token(AddItemRequest { product_id: product_id.into(), quantity }, token);
        Ok(self.client.clone().add_item(request).await?.into_inner().cart.expect("a cart"))
    }

    pub async fn update(&self, token: &str, product_id: &str, quantity: i32) -> Result<Cart, Status> {
        let request = with_token(UpdateItemRequest { product_id: product_id.into(), quantity }, token);
        Ok(self.client.clone().update_item(request).await?.into_inner().cart.expect("a cart"))
    }

    pub async fn remove(&self, token: &str, product_id: &str) -> Result<Cart, Status> {
        let request = with_token(RemoveItemRequest { product_id: product_id.into() }, token);
        Ok(self.client.clone().remove_item(request).await?.into_inner().cart.expect("a cart"))
    }

    pub async fn clear(&self, token: &str, customer_id: &str) -> Result<Cart, Status> {
        let request = with_token(ClearCartRequest { customer_id: customer_id.into() }, token);
        Ok(self.client.clone().clear_cart(request).await?.into_inner().cart.expect("a cart"))
    }
}

pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    request
}

pub fn money(currency: &str, amount_minor: i64) -> Money {
    Money { currency: currency.into(), amount_minor }
}

pub fn eur(amount_minor: i64) -> Money {
    money("EUR", amount_minor)
}

/// (product id, quantity) of every line, in order.
pub fn lines(cart: &Cart) -> Vec<(&str, i32)> {
    cart.items.iter().map(|i| (i.product_id.as_str(), i.quantity)).collect()
}

pub fn item<'a>(cart: &'a Cart, product_id: &str) -> &'a CartItem {
    cart.items.iter().find(|i| i.product_id == product_id).expect("line in cart")
}

pub fn micros(cart: &Cart) -> i64 {
    let t = cart.update_time.expect("update time");
    t.seconds * 1_000_000 + i64::from(t.nanos / 1000)
}

/// `user.deleted` of account `user_id`, as auth publishes it.
pub fn account_deleted(user_id: &str) -> EventEnvelope {
    EventEnvelope {
        id: format!("{user_id}-deleted"),
        source: "auth".into(),
        r#type: "user.deleted".into(),
        subject: user_id.into(),
        data: api::mercato::auth::v1::UserDeleted { user_id: user_id.into(), ..Default::default() }.encode_to_vec(),
        ..EventEnvelope::default()
    }
}

/// Runs each scenario once on SQLite and once on PostgreSQL.
macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (db, _dir) = platform::testkit::sqlite("cart").await.expect("sqlite");
                    super::$scenario(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(db) = platform::testkit::postgres("cart").await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
}

pub(crate) use on_both_engines;
