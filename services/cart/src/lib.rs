//! The cart service of Mercato: one cart per customer, priced at the catalog's current prices.
//!
//! - [`domain`]: the rules, free of I/O.
//! - [`store`]: all SQL, the same on SQLite and PostgreSQL.
//! - [`catalog`]: what the cart asks the catalog service, over gRPC.
//! - [`grpc`]: `mercato.cart.v1.CartService` on top of them.
//! - [`wishlist`], [`wishlist_store`], [`wishlist_grpc`]: the customers' wishlists (`WishlistService`): the rules,
//!   the SQL, the wire.
//! - [`error`]: the crate's one error type and its mapping to gRPC statuses.

pub mod catalog;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod store;
pub mod wishlist;
pub mod wishlist_grpc;
pub mod wishlist_store;

use std::sync::Arc;

use api::mercato::cart::v1::cart_service_server::CartServiceServer;
use api::mercato::cart::v1::wishlist_service_server::WishlistServiceServer;
use platform::Settings;
use platform::auth::TokenVerifier;
use platform::db::Db;
use platform::events::{EventBus, InboxPruner, Relay};
use platform::grpc::Channel;
use platform::grpc::GrpcService;
use tokio_util::sync::CancellationToken;

pub use error::Error;
pub use grpc::CartApi;

/// The service's name: its database, its settings and its logs go by it.
pub const NAME: &str = "cart";

/// The cart's schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the cart as configured: opens its database, trusts the auth service's keys, prices carts with the
/// catalog at `MERCATO_CATALOG_URL`, and serves on `listener` until `shutdown` is cancelled.
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
    let catalog = platform::grpc::service_channel(&settings, "catalog")?;
    let result = serve(listener, db.clone(), verifier, catalog, bus, shutdown).await;
    db.close().await;
    result
}

/// Migrates `db`, then serves the cart on `listener` with tokens checked by `verifier` and prices from the
/// catalog behind `catalog`, publishing its events on `bus` and pruning its inbox, until `shutdown` is cancelled.
/// (Consuming `order.confirmed` and `user.deleted` is subscribed by [`run`], or by the caller:
/// [`events::subscribe`].)
pub async fn serve(
    listener: impl Into<platform::grpc::Listener>,
    db: Db,
    verifier: Arc<TokenVerifier>,
    catalog: Channel,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let listener = listener.into();
    tracing::info!(backend = db.backend(), addr = ?listener.local_addr().ok(), tls = listener.is_tls(), "cart serving");
    let relay = Relay::new(NAME, db.clone(), bus);
    let pruner = InboxPruner::new(NAME, db.clone());
    // The relay and the pruner stop with the server; rows the relay did not publish stay in the outbox for the
    // next start.
    let wishlists = wishlist_grpc::WishlistApi::new(db.clone(), catalog.clone());
    let service = GrpcService::new(CartServiceServer::new(CartApi::new(db, catalog, relay.handle())))
        .with(WishlistServiceServer::new(wishlists))
        .background(|stop| relay.run(stop))
        .background(|stop| pruner.run(stop));
    Ok(platform::grpc::serve(service, listener, verifier, shutdown).await?)
}

/// Applies the cart's pending migrations to the configured database.
pub async fn migrate(settings: &Settings) -> Result<(), Error> {
    let db = Db::open(settings, NAME).await?;
    let result = db.migrate(&MIGRATOR, NAME).await;
    db.close().await;
    Ok(result?)
}
