//! The support service of Mercato: tickets, their conversations between customers and agents and the files
//! attached to them, the FAQ, and the contact form for people without an account.
//!
//! - [`domain`]: the states and who moves them, validation (tickets, attachments, the FAQ), free of I/O.
//! - [`store`]: all SQL, the same on SQLite and PostgreSQL.
//! - [`events`]: `ticket.*` out (it consumes nothing).
//! - [`grpc`]: `mercato.support.v1.SupportService` on top of them.
//! - [`error`]: the crate's one error type and its mapping to gRPC statuses.

pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod store;

use std::collections::HashSet;
use std::sync::Arc;

use api::mercato::support::v1::support_service_server::SupportServiceServer;
use platform::Settings;
use platform::auth::TokenVerifier;
use platform::blob::Blobs;
use platform::db::Db;
use platform::events::{EventBus, Relay};
use platform::grpc::GrpcService;
use tokio_util::sync::CancellationToken;

pub use error::Error;
pub use grpc::SupportApi;

/// The service's name: its database, its settings and its logs go by it.
pub const NAME: &str = "support";

/// The support service's schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the support service as configured: opens its database and its blob store (attachments), trusts the auth service's keys, and serves on
/// `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: platform::grpc::Listener,
    settings: Settings,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let db = Db::open(&settings, NAME).await?;
    let verifier = Arc::new(TokenVerifier::from_auth_service(platform::grpc::service_channel(&settings, "auth")?));
    let blobs = Blobs::open(&settings, NAME)?;
    let result = serve(listener, db.clone(), blobs, verifier, bus, shutdown).await;
    db.close().await;
    result
}

/// Migrates `db`, then serves the support service on `listener` with tokens checked by `verifier`, attachments'
/// bytes in `blobs` (orphans swept hourly), publishing its events on `bus`, until `shutdown` is cancelled.
pub async fn serve(
    listener: impl Into<platform::grpc::Listener>,
    db: Db,
    blobs: Blobs,
    verifier: Arc<TokenVerifier>,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    prepare(&db).await?;
    let listener = listener.into();
    tracing::info!(backend = db.backend(), blobs = blobs.backend(), addr = ?listener.local_addr().ok(), tls = listener.is_tls(), "support serving");
    let relay = Relay::new(NAME, db.clone(), bus);
    let api = SupportApi::new(db.clone(), blobs.clone(), relay.handle());
    // The relay and the sweeper stop with the server; rows the relay did not publish stay in the outbox for the
    // next start.
    let service = GrpcService::new(SupportServiceServer::new(api))
        .background(|stop| relay.run(stop))
        .background(|stop| platform::blob::sweep_hourly(blobs, "tickets", stop, move || attachment_keys(db.clone())));
    Ok(platform::grpc::serve(service, listener, verifier, shutdown).await?)
}

/// The blob keys of every attachment row: what the blob store may keep.
async fn attachment_keys(db: Db) -> Result<HashSet<String>, Error> {
    let ids = store::Store::new(db).attachment_ids().await?;
    Ok(ids.iter().map(|(ticket_id, id)| domain::attachments::blob_key(ticket_id, id)).collect())
}

/// Deletes the attachment bytes written before `written_before` (microseconds since the epoch) that no
/// attachment row names (left by a crash between writing the bytes and the row, or between deleting the row
/// and the bytes). Returns how many went. `serve` does this hourly.
pub async fn sweep_orphan_attachments(db: &Db, blobs: &Blobs, written_before: i64) -> Result<usize, Error> {
    let keys = attachment_keys(db.clone()).await?;
    Ok(blobs.sweep_orphans("tickets", written_before, |key| keys.contains(key)).await?)
}

/// Applies the support service's pending migrations to the configured database.
pub async fn migrate(settings: &Settings) -> Result<(), Error> {
    let db = Db::open(settings, NAME).await?;
    let result = prepare(&db).await;
    db.close().await;
    result
}

/// Applies pending migrations to `db`, then fills what a migration left for the service to compute (the
/// case-folded keys of FAQ entries stored before 0005).
async fn prepare(db: &Db) -> Result<(), Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let filled = store::Store::new(db.clone()).fill_missing_faq_case_keys().await?;
    if filled > 0 {
        tracing::info!(entries = filled, "case-folded keys written for FAQ entries stored before they existed");
    }
    Ok(())
}
