//! The analytics service of Mercato: reports for a shop's owner (sales per day, week or month, top products,
//! a summary with refund rates and the cart funnel), computed from the events the other services publish.
//!
//! Every consumed event is kept in `event_log` in the transaction that applies it (with its id in the
//! inbox), so the aggregates can be rebuilt from the history at any time.
//!
//! - [`domain`]: the rules, free of I/O: dates, periods, what an event adds, the figures of a report.
//! - [`events`]: what it consumes, decoded into domain facts.
//! - [`totals`]: what a batch of events adds up to, per aggregate row (pure, like `domain`).
//! - [`store`]: all SQL, the same on SQLite and PostgreSQL.
//! - [`grpc`]: `mercato.analytics.v1.AnalyticsService` on top of them.
//! - [`error`]: the crate's one error type and its mapping to gRPC statuses.

pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod store;
pub mod totals;

use std::sync::Arc;

use api::mercato::analytics::v1::analytics_service_server::AnalyticsServiceServer;
use platform::Settings;
use platform::auth::TokenVerifier;
use platform::db::Db;
use platform::events::{EventBus, InboxPruner};
use platform::grpc::GrpcService;
use tokio_util::sync::CancellationToken;

pub use error::Error;
pub use grpc::AnalyticsApi;

/// The service's name: its database, its settings and its logs go by it.
pub const NAME: &str = "analytics";

/// The analytics schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs analytics as configured: opens its database, subscribes its consumers on `bus`, trusts the auth
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

/// Migrates `db`, then serves the reports on `listener` with tokens checked by `verifier` until `shutdown` is
/// cancelled, pruning its inbox meanwhile. Consuming events is separate: see [`events::subscribe`].
pub async fn serve(
    listener: impl Into<platform::grpc::Listener>,
    db: Db,
    verifier: Arc<TokenVerifier>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let listener = listener.into();
    tracing::info!(backend = db.backend(), addr = ?listener.local_addr().ok(), tls = listener.is_tls(), "analytics serving");
    let pruner = InboxPruner::new(NAME, db.clone());
    let service =
        GrpcService::new(AnalyticsServiceServer::new(AnalyticsApi::new(db))).background(|stop| pruner.run(stop));
    Ok(platform::grpc::serve(service, listener, verifier, shutdown).await?)
}

/// Applies the pending analytics migrations to the configured database.
pub async fn migrate(settings: &Settings) -> Result<(), Error> {
    let db = Db::open(settings, NAME).await?;
    let result = db.migrate(&MIGRATOR, NAME).await;
    db.close().await;
    Ok(result?)
}
