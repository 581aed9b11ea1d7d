//! The ledger service of Mercato: double-entry bookkeeping. Accounts in one currency each, and append-only
//! journal transactions whose postings sum to zero per currency; every account's balance is the sum of its
//! postings, kept in the same database transaction as they are written, and [`audit`] proves it.
//!
//! Sign convention: amounts are signed minor units, positive = debit, negative = credit; a balance is the
//! raw signed sum of an account's postings (asset and expense accounts normally positive; liability,
//! revenue and equity accounts normally negative).
//!
//! - [`domain`]: the rules, free of I/O.
//! - [`store`]: all SQL, the same on SQLite and PostgreSQL.
//! - [`grpc`]: `mercato.ledger.v1.LedgerService` on top of both.
//! - [`error`]: the crate's one error type and its mapping to gRPC statuses.

pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod store;

use std::sync::Arc;

use api::mercato::ledger::v1::ledger_service_server::LedgerServiceServer;
use platform::Settings;
use platform::auth::TokenVerifier;
use platform::db::Db;
use platform::events::{EventBus, Relay};
use platform::grpc::GrpcService;
use tokio_util::sync::CancellationToken;

pub use error::Error;
pub use grpc::LedgerApi;

/// The service's name: its database, its settings and its logs go by it.
pub const NAME: &str = "ledger";

/// The ledger's schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the ledger as configured: opens its database, trusts the auth service's keys, and serves on
/// `listener`, publishing its events on `bus`, until `shutdown` is cancelled.
pub async fn run(
    listener: platform::grpc::Listener,
    settings: Settings,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let db = Db::open(&settings, NAME).await?;
    let verifier = Arc::new(TokenVerifier::from_auth_service(platform::grpc::service_channel(&settings, "auth")?));
    let result = serve(listener, db.clone(), verifier, bus, shutdown).await;
    db.close().await;
    result
}

/// Migrates `db`, then serves the ledger on `listener` with tokens checked by `verifier`, publishing its
/// events on `bus`, until `shutdown` is cancelled.
pub async fn serve(
    listener: impl Into<platform::grpc::Listener>,
    db: Db,
    verifier: Arc<TokenVerifier>,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let listener = listener.into();
    tracing::info!(backend = db.backend(), addr = ?listener.local_addr().ok(), tls = listener.is_tls(), "ledger serving");
    let relay = Relay::new(NAME, db.clone(), bus);
    // The relay stops with the server; rows it did not publish stay in the outbox for the next start.
    let service = GrpcService::new(LedgerServiceServer::new(LedgerApi::new(db, relay.handle())))
        .background(|stop| relay.run(stop));
    Ok(platform::grpc::serve(service, listener, verifier, shutdown).await?)
}

/// Applies the ledger's pending migrations to the configured database.
pub async fn migrate(settings: &Settings) -> Result<(), Error> {
    let db = Db::open(settings, NAME).await?;
    let result = db.migrate(&MIGRATOR, NAME).await;
    db.close().await;
    Ok(result?)
}

/// Checks the books of an open ledger database (migrated first, so a fresh database audits clean): every
/// account's balance must equal the sum of its postings, every stored running balance the sum so far, every
/// posting must be in its account's currency, and every transaction must have at least two postings summing
/// to zero per currency. Returns the violations in words; empty means the books balance. Changes nothing
/// but pending migrations.
pub async fn audit(db: &Db) -> Result<Vec<String>, Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    store::Store::new(db.clone()).audit().await
}
