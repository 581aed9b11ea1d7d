//! The refunds service of Mercato: refunds of captured payments, idempotent by key as Stripe defines it,
//! carried out by the payments service (which gives the money back at the processor and posts the reversing
//! ledger transaction).
//!
//! - [`domain`]: the rules (validation, fingerprints, statuses, which refusals are final), pure.
//! - [`store`]: all SQL, the same on SQLite and PostgreSQL.
//! - [`payments`]: the payments service as refunds use it (GetPayment, RefundPayment, service token).
//! - [`service`]: the use cases over both, and the retry loop.
//! - [`events`]: what it publishes (`refund.completed`, `refund.failed`).
//! - [`grpc`]: `mercato.refunds.v1.RefundService` on top.
//! - [`error`]: the crate's one error type and its mapping to gRPC statuses.
//!
//! The total of a payment's non-failed refunds never exceeds what it captured, also under concurrency: each
//! refund reserves its amount with one conditional update of the payment's row in `payment_refund_totals`
//! before the payments service is asked. A refund the payments service does not answer (down, timed out)
//! stays pending and is retried by the background loop at start and every few seconds; RefundPayment is
//! idempotent by refund id, so retries never give money back twice.

pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod payments;
pub mod service;
pub mod store;

use std::sync::Arc;

use api::mercato::refunds::v1::refund_service_server::RefundServiceServer;
use platform::Settings;
use platform::auth::{ServiceTokens, TokenVerifier};
use platform::db::Db;
use platform::events::{EventBus, Relay};
use platform::grpc::GrpcService;
use tokio_util::sync::CancellationToken;

pub use error::Error;
pub use grpc::RefundsApi;
pub use payments::{PaymentsClient, StaticToken, TokenSource};

/// The service's name: its database, its settings and its logs go by it.
pub const NAME: &str = "refunds";

/// The refunds service's schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs refunds as configured: needs its client secret (`MERCATO_REFUNDS_CLIENT_SECRET`) for the service
/// token it calls the payments service with; opens its database, trusts the auth service's keys, calls the
/// payments service at `MERCATO_PAYMENTS_URL`, publishes its events to `bus`, and serves on `listener` until
/// `shutdown` is cancelled.
pub async fn run(
    listener: platform::grpc::Listener,
    settings: Settings,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let auth = platform::grpc::service_channel(&settings, "auth")?;
    let tokens = ServiceTokens::from_settings(&settings, NAME, auth.clone()).ok_or_else(|| Error::Setting {
        variable: "MERCATO_REFUNDS_CLIENT_SECRET".to_owned(),
        problem: "is not set: the refunds service needs its client secret to call the payments service".to_owned(),
    })?;
    let payments = PaymentsClient::new(platform::grpc::service_channel(&settings, "payments")?, Arc::new(tokens));
    let verifier = Arc::new(TokenVerifier::from_auth_service(auth));
    let db = Db::open(&settings, NAME).await?;
    let result = serve(listener, db.clone(), verifier, payments, bus, shutdown).await;
    db.close().await;
    result
}

/// Migrates `db`, then serves refunds on `listener` with tokens checked by `verifier`, refunds carried out
/// through `payments` and events (through the outbox) to `bus`, until `shutdown` is cancelled. A background
/// task retries pending refunds at start and every `payments.retry_interval()`.
pub async fn serve(
    listener: impl Into<platform::grpc::Listener>,
    db: Db,
    verifier: Arc<TokenVerifier>,
    payments: PaymentsClient,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let listener = listener.into();
    tracing::info!(backend = db.backend(), addr = ?listener.local_addr().ok(), tls = listener.is_tls(), "refunds serving");
    let relay = Relay::new(NAME, db.clone(), bus);
    let refunds = service::Refunds::new(store::Store::new(db), payments, relay.handle());
    // Background work stops with the server; pending refunds are picked up again at the next start.
    let service = GrpcService::new(RefundServiceServer::new(RefundsApi::new(refunds.clone())))
        .background(|stop| relay.run(stop))
        .background(|stop| refunds.run_background(stop));
    Ok(platform::grpc::serve(service, listener, verifier, shutdown).await?)
}

/// Applies the refunds service's pending migrations to the configured database.
pub async fn migrate(settings: &Settings) -> Result<(), Error> {
    let db = Db::open(settings, NAME).await?;
    let result = db.migrate(&MIGRATOR, NAME).await;
    db.close().await;
    Ok(result?)
}

/// Checks an open refunds database (migrated first, so a fresh one audits clean): lists payments whose
/// refunded total exceeds their captured amount or disagrees with the sum of their non-failed refunds, and
/// refunds pending for more than 15 minutes. Empty means consistent. Changes nothing but pending migrations.
pub async fn audit(db: &Db) -> Result<Vec<String>, Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let stuck_before =
        platform::time::now_micros().saturating_sub(i64::try_from(domain::STUCK_AFTER.as_micros()).unwrap_or(i64::MAX));
    store::Store::new(db.clone()).audit(stuck_before).await
}
