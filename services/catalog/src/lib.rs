//! The catalog service of Mercato: products, prices and stock, with reservations that never oversell.
//!
//! - [`domain`]: the rules, free of I/O.
//! - [`store`]: all SQL, the same on SQLite and PostgreSQL.
//! - [`grpc`]: `mercato.catalog.v1.CatalogService` on top of both, `ReviewService` ([`grpc::reviews`]):
//!   customers' reviews of what they bought, and `StockAlertService` ([`grpc::alerts`]): back-in-stock alerts,
//!   told by [`sweep_stock_alerts`].
//! - [`events`]: what it publishes, and what it consumes (orders, to restock a cancelled one and to know who
//!   bought what; deleted accounts, to erase their reviews, purchases and alerts).
//! - [`error`]: the crate's one error type and its mapping to gRPC statuses.

pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
mod seed;
pub mod store;

use std::collections::HashSet;
use std::sync::Arc;

use api::catalog::catalog_service_server::CatalogServiceServer;
use api::catalog::review_service_server::ReviewServiceServer;
use api::catalog::stock_alert_service_server::StockAlertServiceServer;
use platform::Settings;
use platform::auth::TokenVerifier;
use platform::blob::Blobs;
use platform::db::Db;
use platform::events::{EventBus, InboxPruner, Relay};
use platform::grpc::GrpcService;
use tokio_util::sync::CancellationToken;

pub use error::Error;
pub use grpc::CatalogApi;

/// The service's name: its database, its settings and its logs go by it.
pub const NAME: &str = "catalog";

/// The catalog's schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the catalog as configured: opens its database and its blob store (product images), trusts the auth
/// service's keys, and serves on `listener` until `shutdown` is cancelled. Its consumers (see [`events`])
/// subscribe on `bus`.
pub async fn run(
    listener: platform::grpc::Listener,
    settings: Settings,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let db = Db::open(&settings, NAME).await?;
    prepare(&db).await?;
    events::subscribe(bus.as_ref(), store::Store::new(db.clone()));
    let verifier = Arc::new(TokenVerifier::from_auth_service(platform::grpc::service_channel(&settings, "auth")?));
    let blobs = Blobs::open(&settings, NAME)?;
    let result = serve(listener, db.clone(), blobs, verifier, bus, settings.review_moderation, shutdown).await;
    db.close().await;
    result
}

/// Migrates `db`, then serves the catalog on `listener` with tokens checked by `verifier`, product images'
/// bytes in `blobs` (orphans swept hourly), publishing its events on `bus`, customers' reviews as they are written
/// or held for staff (`moderation`), pruning its inbox and telling the customers waiting for products back in
/// stock ([`sweep_stock_alerts`]), until `shutdown` is cancelled.
pub async fn serve(
    listener: impl Into<platform::grpc::Listener>,
    db: Db,
    blobs: Blobs,
    verifier: Arc<TokenVerifier>,
    bus: Arc<dyn EventBus>,
    moderation: platform::config::ReviewModeration,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    prepare(&db).await?;
    let listener = listener.into();
    tracing::info!(backend = db.backend(), blobs = blobs.backend(), addr = ?listener.local_addr().ok(), tls = listener.is_tls(), "catalog serving");
    let relay = Relay::new(NAME, db.clone(), bus);
    let pruner = InboxPruner::new(NAME, db.clone());
    let api = CatalogApi::new(db.clone(), blobs.clone(), relay.handle());
    let reviews = grpc::reviews::ReviewsApi::new(db.clone(), moderation, relay.handle());
    let alerts = grpc::alerts::StockAlertsApi::new(db.clone());
    let (alert_store, alert_relay) = (store::Store::new(db.clone()), relay.handle());
    // The relay, the pruner and the sweeps (stock alerts, orphan images) stop with the server; rows the relay did
    // not publish stay in the outbox for the next start.
    let service = GrpcService::new(CatalogServiceServer::new(api))
        .with(ReviewServiceServer::new(reviews))
        .with(StockAlertServiceServer::new(alerts))
        .background(|stop| relay.run(stop))
        .background(|stop| pruner.run(stop))
        .background(|stop| sweep_stock_alerts(alert_store, alert_relay, stop))
        .background(|stop| platform::blob::sweep_hourly(blobs, "products", stop, move || image_keys(db.clone())));
    Ok(platform::grpc::serve(service, listener, verifier, shutdown).await?)
}

/// How often the back-in-stock alerts are looked at: a customer hears of a product within seconds of its units
/// being available (by a restock, a cancelled order or a released hold alike), and no stock change pays for it.
pub const STOCK_ALERT_SWEEP: std::time::Duration = std::time::Duration::from_secs(2);
/// Most alerts one sweep tells (the rest wait for the next).
const STOCK_ALERT_BATCH: i64 = 500;

/// Tells the customers waiting for products that are back in stock, every [`STOCK_ALERT_SWEEP`], until `shutdown`:
/// their alerts go and `stock_alert.triggered` is published for each (notifications mails them).
pub async fn sweep_stock_alerts(
    store: store::Store,
    relay: platform::events::RelayHandle,
    shutdown: CancellationToken,
) {
    platform::shutdown::every(STOCK_ALERT_SWEEP, &shutdown, || async {
        match store.trigger_stock_alerts(STOCK_ALERT_BATCH).await {
            Ok(0) => {}
            Ok(told) => {
                relay.wake();
                tracing::info!(told, "back-in-stock alerts triggered");
            }
            Err(error) => tracing::warn!(%error, "triggering back-in-stock alerts failed; trying again"),
        }
    })
    .await;
}

/// The blob keys of every image row: what the blob store may keep.
async fn image_keys(db: Db) -> Result<HashSet<String>, Error> {
    let ids = store::Store::new(db).image_ids().await?;
    Ok(ids.iter().map(|(product_id, id)| domain::images::blob_key(product_id, id)).collect())
}

/// Deletes the image bytes written before `written_before` (microseconds since the epoch) that no image row
/// names: what a crash between writing the bytes and the row, or between deleting the row and the bytes, left
/// behind. Returns how many went. `serve` does this hourly.
pub async fn sweep_orphan_images(db: &Db, blobs: &Blobs, written_before: i64) -> Result<usize, Error> {
    let keys = image_keys(db.clone()).await?;
    Ok(blobs.sweep_orphans("products", written_before, |key| keys.contains(key)).await?)
}

/// Applies the catalog's pending migrations to the configured database.
pub async fn migrate(settings: &Settings) -> Result<(), Error> {
    let db = Db::open(settings, NAME).await?;
    let result = prepare(&db).await;
    db.close().await;
    result
}

/// Applies pending migrations to `db`, then fills what a migration left for the service to compute (the
/// case-folded keys of products stored before 0008).
async fn prepare(db: &Db) -> Result<(), Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let filled = store::Store::new(db.clone()).fill_missing_case_keys().await?;
    if filled > 0 {
        tracing::info!(products = filled, "case-folded keys written for products stored before they existed");
    }
    Ok(())
}

/// Fills an empty catalog with demo products (coffee, tea, books, kitchen, games, stationery) and their
/// stock; returns how many were inserted, 0 when the catalog already had products.
pub async fn seed_demo(settings: &Settings) -> Result<usize, Error> {
    let db = Db::open(settings, NAME).await?;
    let result = seed_demo_into(&db).await;
    db.close().await;
    result
}

/// [`seed_demo`] on an open database (migrated first).
pub async fn seed_demo_into(db: &Db) -> Result<usize, Error> {
    prepare(db).await?;
    seed::insert_demo(&store::Store::new(db.clone())).await
}

/// Records that `customer_id` bought `product_ids` with order `order_id` (cancelled since, when `cancelled`), as
/// `order.confirmed` and `order.cancelled` do: for orders placed before the catalog kept its buyers
/// (`mercato backfill-purchases`). A purchase known already stays as it is.
pub async fn record_purchase(
    db: &Db,
    customer_id: &str,
    order_id: &str,
    product_ids: &[String],
    cancelled: bool,
) -> Result<(), Error> {
    let now = platform::time::now_micros();
    store::Store::new(db.clone()).record_purchase(customer_id, order_id, product_ids, cancelled, now).await
}

/// The ids of the reservations whose stock was sold (committed): for an operator's audit, every confirmed
/// order's id is among them.
pub async fn committed_reservations(db: &Db) -> Result<std::collections::HashSet<String>, Error> {
    prepare(db).await?;
    store::Store::new(db.clone()).committed_reservations().await
}
