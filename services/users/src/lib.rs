//! The users service of Mercato: customers' profiles (made from `user.registered`) and address books.
//!
//! - [`domain`]: what each field may hold and how an update mask applies, free of I/O.
//! - [`store`]: all SQL, the same on SQLite and PostgreSQL.
//! - [`events`]: `user.registered` in.
//! - [`grpc`]: `mercato.users.v1.UserService` on top of them.
//! - [`error`]: the crate's one error type and its mapping to gRPC statuses.

pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod store;

use std::sync::Arc;

use api::mercato::users::v1::user_service_server::UserServiceServer;
use platform::Settings;
use platform::auth::TokenVerifier;
use platform::db::Db;
use platform::events::{EventBus, InboxPruner};
use platform::grpc::GrpcService;
use tokio_util::sync::CancellationToken;

pub use error::Error;
pub use grpc::UserApi;

/// The service's name: its database, its settings and its logs go by it.
pub const NAME: &str = "users";

/// The users service's schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the users service as configured: opens its database, consumes `user.registered`, trusts the auth
/// service's keys, and serves on `listener` until `shutdown` is cancelled.
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
    let result = serve(listener, db.clone(), verifier, shutdown).await;
    db.close().await;
    result
}

/// Migrates `db`, then serves the users service on `listener` with tokens checked by `verifier`, pruning its
/// inbox, until `shutdown` is cancelled. (The consumer of `user.registered` is subscribed by [`run`], or by the
/// caller: [`events::subscribe`].)
pub async fn serve(
    listener: impl Into<platform::grpc::Listener>,
    db: Db,
    verifier: Arc<TokenVerifier>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let listener = listener.into();
    tracing::info!(backend = db.backend(), addr = ?listener.local_addr().ok(), tls = listener.is_tls(), "users serving");
    let pruner = InboxPruner::new(NAME, db.clone());
    let service = GrpcService::new(UserServiceServer::new(UserApi::new(db))).background(|stop| pruner.run(stop));
    Ok(platform::grpc::serve(service, listener, verifier, shutdown).await?)
}

/// Applies the users service's pending migrations to the configured database.
pub async fn migrate(settings: &Settings) -> Result<(), Error> {
    let db = Db::open(settings, NAME).await?;
    let result = db.migrate(&MIGRATOR, NAME).await;
    db.close().await;
    Ok(result?)
}
