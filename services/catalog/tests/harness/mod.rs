//! The harness of the catalog's tests, shared by the scenario files (catalog.rs, reviews.rs): the catalog over
//! real gRPC on a port-0 listener with the events it publishes collected, tokens for each kind of caller,
//! helpers for the calls most scenarios make, and [`on_both_engines!`], which runs each scenario (an async fn
//! taking a `Db`) on SQLite and, when `MERCATO_TEST_DATABASE_URL` is set, PostgreSQL.

// Each scenario file uses some of the helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use api::catalog::catalog_service_client::CatalogServiceClient;
use api::catalog::review_service_client::ReviewServiceClient;
use api::catalog::stock_alert_service_client::StockAlertServiceClient;
use api::catalog::{
    AdjustInventoryRequest, CommitStockRequest, CreateProductRequest, GetInventoryRequest, GetProductRequest,
    Inventory, ListProductsRequest, ListProductsResponse, Product, ProductUpdated, ReleaseStockRequest,
    ReserveStockRequest, StockItem,
};
use api::common::Money;
use platform::config::ReviewModeration;
use platform::db::Db;
use platform::events::{EventBus, EventEnvelope, InProcessBus};
use platform::testkit::TestIssuer;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Status};

mod reviews;

// Only the review scenarios use these.
#[allow(unused_imports)]
pub use platform::testkit::error_reason as reason;
#[allow(unused_imports)]
pub use platform::testkit::violated_fields as bad_fields;
#[allow(unused_imports)]
pub use reviews::*;

pub type Client = CatalogServiceClient<Channel>;

/// An event as the catalog published it: type, subject and encoded payload.
pub type Published = (String, String, Vec<u8>);

/// The catalog running in-process on a port-0 listener.
pub struct Server {
    pub client: Client,
    /// Every event the catalog published, in order.
    pub published: Arc<std::sync::Mutex<Vec<Published>>>,
    pub issuer: Arc<TestIssuer>,
    pub db: Db,
    /// Where the images' bytes are kept (removed with the server).
    pub blob_dir: platform::testkit::TempDir,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), catalog::Error>>,
    /// The bus the catalog consumes from (a test publishes `order.cancelled` on it).
    pub bus: Arc<InProcessBus>,
    /// A client of the reviews (`ReviewService`), on the same connection.
    pub reviews: ReviewServiceClient<Channel>,
    /// A client of the back-in-stock alerts (`StockAlertService`), on the same connection.
    pub alerts: StockAlertServiceClient<Channel>,
}

impl Server {
    /// The catalog on `db`, publishing reviews as they are written (the default).
    pub async fn start(db: Db) -> Self {
        Self::start_with(db, ReviewModeration::Off).await
    }

    /// The catalog on `db`, holding reviews for staff when `moderation` says so.
    pub async fn start_with(db: Db, moderation: ReviewModeration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = Arc::new(TestIssuer::new().expect("issuer"));
        let shutdown = CancellationToken::new();
        let bus = Arc::new(InProcessBus::new());
        let published = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = published.clone();
        let types = [
            catalog::events::PRODUCT_CREATED,
            catalog::events::PRODUCT_UPDATED,
            catalog::events::INVENTORY_ADJUSTED,
            catalog::events::INVENTORY_LOW,
            catalog::events::STOCK_ALERT_TRIGGERED,
            catalog::events::REVIEW_SUBMITTED,
        ];
        bus.subscribe(
            "test",
            &types,
            Arc::new(move |envelope: Arc<EventEnvelope>| {
                let sink = sink.clone();
                Box::pin(async move {
                    let seen = (envelope.r#type.clone(), envelope.subject.clone(), envelope.data.clone());
                    sink.lock().expect("lock").push(seen);
                    Ok(())
                })
            }),
        );
        let blob_dir = platform::testkit::TempDir::new("catalog-blobs").expect("temp dir");
        let blobs = platform::blob::Blobs::in_directory(blob_dir.path()).expect("blobs");
        // The consumer of order.cancelled, as `catalog::run` subscribes it (used once serve has migrated).
        catalog::events::subscribe(bus.as_ref(), catalog::store::Store::new(db.clone()));
        let verifier = issuer.verifier();
        let task = tokio::spawn(catalog::serve(
            listener,
            db.clone(),
            blobs,
            verifier,
            bus.clone(),
            moderation,
            shutdown.clone(),
        ));
        let url = format!("http://{addr}");
        let channel = platform::testkit::connect_when_up(&url, "catalog").await;
        let (client, reviews) = (CatalogServiceClient::new(channel.clone()), ReviewServiceClient::new(channel.clone()));
        let alerts = StockAlertServiceClient::new(channel);
        Self { client, published, issuer, db, blob_dir, shutdown, task, bus, reviews, alerts }
    }

    /// A staff token with every catalog scope.
    pub fn admin(&self) -> String {
        self.issuer.token("admin-1", &["catalog:write", "inventory:write", "inventory:reserve"], &["admin"])
    }

    /// A shopper's token: no catalog scopes.
    pub fn customer(&self) -> String {
        self.issuer.token("customer-1", &["cart:write"], &["customer"])
    }

    /// The orders service's token: it reserves stock.
    pub fn orders(&self) -> String {
        self.issuer.token("svc-orders", &["inventory:reserve"], &["service"])
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("served cleanly");
    }

    /// The payloads of the `kind` events the catalog published so far, in order.
    pub fn published_of<M: Message + Default>(&self, kind: &str) -> Vec<M> {
        let published = self.published.lock().expect("lock").clone();
        published
            .iter()
            .filter(|(published_kind, _, _)| published_kind == kind)
            .map(|(_, _, data)| M::decode(data.as_slice()).expect("payload"))
            .collect()
    }

    /// The payloads of the `kind` events published, once there are at least `count` (the relay publishes a moment
    /// after the write), waiting up to `within`; fewer when that passes.
    pub async fn published_at_least<M: Message + Default>(&self, kind: &str, count: usize, within: Duration) -> Vec<M> {
        let started = std::time::Instant::now();
        loop {
            let found = self.published_of::<M>(kind);
            if found.len() >= count || started.elapsed() >= within {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The products announced by `product.updated` so far, once there are at least `count` (waiting up to two
    /// seconds for the relay).
    pub async fn announced(&self, count: usize) -> Vec<Product> {
        let updates: Vec<ProductUpdated> =
            self.published_at_least(catalog::events::PRODUCT_UPDATED, count, Duration::from_secs(2)).await;
        updates.into_iter().map(|update| update.product.expect("product")).collect()
    }

    pub async fn create(&self, product: Product) -> Product {
        let request = with_token(CreateProductRequest { product: Some(product) }, &self.admin());
        self.client.clone().create_product(request).await.expect("create").into_inner().product.expect("product")
    }

    pub async fn inventory(&self, product_id: &str) -> Inventory {
        let request = Request::new(GetInventoryRequest { product_id: product_id.into() });
        self.client.clone().get_inventory(request).await.expect("inventory").into_inner().inventory.expect("inv")
    }

    pub async fn adjust(&self, product_id: &str, delta: i32) -> Result<Inventory, Status> {
        let request = with_token(
            AdjustInventoryRequest { product_id: product_id.into(), delta, reason: "test".into() },
            &self.admin(),
        );
        Ok(self.client.clone().adjust_inventory(request).await?.into_inner().inventory.unwrap_or_default())
    }

    pub async fn reserve(&self, reservation_id: &str, items: &[(&str, i32)]) -> Result<i32, Status> {
        let items = items.iter().map(|(p, q)| StockItem { product_id: (*p).into(), quantity: *q }).collect();
        let request = with_token(ReserveStockRequest { reservation_id: reservation_id.into(), items }, &self.orders());
        Ok(self.client.clone().reserve_stock(request).await?.into_inner().status)
    }

    pub async fn release(&self, reservation_id: &str) -> Result<i32, Status> {
        let request = with_token(ReleaseStockRequest { reservation_id: reservation_id.into() }, &self.orders());
        Ok(self.client.clone().release_stock(request).await?.into_inner().status)
    }

    pub async fn commit(&self, reservation_id: &str) -> Result<i32, Status> {
        let request = with_token(CommitStockRequest { reservation_id: reservation_id.into() }, &self.orders());
        Ok(self.client.clone().commit_stock(request).await?.into_inner().status)
    }

    pub async fn list(
        &self,
        request: ListProductsRequest,
        token: Option<&str>,
    ) -> Result<ListProductsResponse, Status> {
        let request = match token {
            Some(t) => with_token(request, t),
            None => Request::new(request),
        };
        Ok(self.client.clone().list_products(request).await?.into_inner())
    }

    pub async fn get(&self, id: &str, token: Option<&str>) -> Result<Product, Status> {
        let request = GetProductRequest { id: id.into() };
        let request = match token {
            Some(t) => with_token(request, t),
            None => Request::new(request),
        };
        Ok(self.client.clone().get_product(request).await?.into_inner().product.unwrap_or_default())
    }
}

pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    request
}

pub fn product(sku: &str, name: &str, category: &str, cents: i64) -> Product {
    Product {
        sku: sku.into(),
        name: name.into(),
        description: format!("{name}, described."),
        price: Some(Money { currency: "EUR".into(), amount_minor: cents }),
        category: category.into(),
        active: true,
        ..Product::default()
    }
}

pub fn stock(inv: &Inventory) -> (i32, i32, i32) {
    (inv.on_hand, inv.reserved, inv.available)
}

macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (db, _dir) = platform::testkit::sqlite("catalog").await.expect("sqlite");
                    super::$scenario(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(db) = platform::testkit::postgres("catalog").await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
}
pub(crate) use on_both_engines;
