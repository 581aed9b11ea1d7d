//! The deliveries service of Mercato: a shipment for every confirmed order, dispatched by staff and tracked
//! through the carrier's events until it is delivered or returned.
//!
//! - [`domain`]: the states and how they move, validation, free of I/O.
//! - [`store`]: all SQL, the same on SQLite and PostgreSQL.
//! - [`events`]: `order.confirmed` and `order.cancelled` in, `shipment.*` out.
//! - [`grpc`]: `mercato.deliveries.v1.DeliveryService` on top of them.
//! - [`error`]: the crate's one error type and its mapping to gRPC statuses.

pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod store;

use std::sync::Arc;

use api::mercato::deliveries::v1::delivery_service_server::DeliveryServiceServer;
use platform::Settings;
use platform::auth::TokenVerifier;
use platform::db::Db;
use platform::events::{EventBus, InboxPruner, Relay};
use platform::grpc::GrpcService;
use tokio_util::sync::CancellationToken;

pub use error::Error;
pub use grpc::DeliveryApi;

/// The service's name: its database, its settings and its logs go by it.
pub const NAME: &str = "deliveries";

/// The deliveries service's schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the deliveries service as configured: opens its database, consumes the orders' events, trusts the
/// auth service's keys, and serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: platform::grpc::Listener,
    settings: Settings,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let db = Db::open(&settings, NAME).await?;
    db.migrate(&MIGRATOR, NAME).await?;
    events::subscribe(bus.as_ref(), store::Store::new(db.clone()));
    let verifier = Arc::new(TokenVerifier::from_auth_service(platform::grpc::service_channel(&settings, "auth")?));
    let result = serve(listener, db.clone(), verifier, bus, shutdown).await;
    db.close().await;
    result
}

/// Migrates `db`, then serves the deliveries service on `listener` with tokens checked by `verifier`,
/// publishing its events on `bus` and pruning its inbox, until `shutdown` is cancelled. (The consumer of the
/// orders' events is subscribed by [`run`], or by the caller: [`events::subscribe`].)
pub async fn serve(
    listener: impl Into<platform::grpc::Listener>,
    db: Db,
    verifier: Arc<TokenVerifier>,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let listener = listener.into();
    tracing::info!(backend = db.backend(), addr = ?listener.local_addr().ok(), tls = listener.is_tls(), "deliveries serving");
    let relay = Relay::new(NAME, db.clone(), bus);
    let pruner = InboxPruner::new(NAME, db.clone());
    // The relay and the pruner stop with the server; rows the relay did not publish stay in the outbox for the
    // next start.
    let service = GrpcService::new(DeliveryServiceServer::new(DeliveryApi::new(db, relay.handle())))
        .background(|stop| relay.run(stop))
        .background(|stop| pruner.run(stop));
    Ok(platform::grpc::serve(service, listener, verifier, shutdown).await?)
}

/// The ids of every order that has a shipment, whatever became of it: for an operator's audit, which checks
/// that every confirmed order was handed to deliveries.
pub async fn orders_with_shipments(db: &Db) -> Result<std::collections::HashSet<String>, Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    store::Store::new(db.clone()).order_ids().await
}

/// Every delivered order (migrated first) with when its shipment was delivered (microseconds), by order id: what
/// the orders service learns from `shipment.delivered`, for `mercato backfill-deliveries`.
pub async fn delivered_orders(db: &Db) -> Result<Vec<(String, i64)>, Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    store::Store::new(db.clone()).deliveries().await
}

/// Applies the deliveries service's pending migrations to the configured database.
pub async fn migrate(settings: &Settings) -> Result<(), Error> {
    let db = Db::open(settings, NAME).await?;
    let result = db.migrate(&MIGRATOR, NAME).await;
    db.close().await;
    Ok(result?)
}
