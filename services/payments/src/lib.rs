//! The payments service of Mercato: charges and refunds at the payment processor, idempotent by key as
//! Stripe defines it, each capture and refund posted to the ledger.
//!
//! - [`domain`]: the rules (validation, fingerprints, statuses, retry timing, ledger names), pure.
//! - [`processor`]: the processor adapter trait and the built-in [`SimulatedProcessor`].
//! - [`store`]: all SQL, the same on SQLite and PostgreSQL.
//! - [`ledger`]: the ledger service as payments use it (accounts, transactions, service token).
//! - [`service`]: the use cases over all of them, and the ledger retry loop.
//! - [`events`]: what it publishes (`payment.captured`, `payment.failed`, `payment.refunded`).
//! - [`grpc`]: `mercato.payments.v1.PaymentService` on top.
//! - [`error`]: the crate's one error type and its mapping to gRPC statuses.
//!
//! Idempotency keys are kept at least 24 hours: the background loop deletes keys older than 24 hours at
//! start and every hour after. Ledger postings are never lost: a capture (or refund) is stored with
//! `ledger_posted = false`, posted right after the commit, and otherwise by the background loop at start and
//! every few seconds (RecordTransaction is idempotent by transaction id, so retries are safe).

pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod ledger;
pub mod processor;
pub mod service;
pub mod store;

use std::sync::Arc;

use api::mercato::payments::v1::payment_service_server::PaymentServiceServer;
use platform::Settings;
use platform::auth::{ServiceTokens, TokenVerifier};
use platform::db::Db;
use platform::events::{EventBus, Relay};
use platform::grpc::GrpcService;
use tokio_util::sync::CancellationToken;

pub use error::Error;
pub use grpc::PaymentsApi;
pub use ledger::{LedgerClient, StaticToken, TokenSource};
pub use processor::{PaymentProcessor, SimulatedProcessor};

/// The service's name: its database, its settings and its logs go by it.
pub const NAME: &str = "payments";

/// The payments service's schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs payments as configured: needs its client secret (`MERCATO_PAYMENTS_CLIENT_SECRET`) for the service
/// token it posts to the ledger with; opens its database, trusts the auth service's keys, charges through
/// the [`SimulatedProcessor`] (no real money moves), posts to the ledger at `MERCATO_LEDGER_URL`, publishes
/// its events to `bus`, and serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: platform::grpc::Listener,
    settings: Settings,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let auth = platform::grpc::service_channel(&settings, "auth")?;
    let tokens = ServiceTokens::from_settings(&settings, NAME, auth.clone()).ok_or_else(|| Error::Setting {
        variable: "MERCATO_PAYMENTS_CLIENT_SECRET".to_owned(),
        problem: "is not set: the payments service needs its client secret to post to the ledger".to_owned(),
    })?;
    let ledger = LedgerClient::new(platform::grpc::service_channel(&settings, "ledger")?, Arc::new(tokens));
    let verifier = Arc::new(TokenVerifier::from_auth_service(auth));
    let db = Db::open(&settings, NAME).await?;
    let processor: Arc<dyn PaymentProcessor> = Arc::new(SimulatedProcessor::new(db.clone()));
    tracing::info!("payments use the SimulatedProcessor: test tokens only, no real money moves");
    let result = serve(listener, db.clone(), verifier, processor, ledger, bus, shutdown).await;
    db.close().await;
    result
}

/// Migrates `db`, then serves payments on `listener` with tokens checked by `verifier`, charges through
/// `processor`, postings to `ledger` and events (through the outbox) to `bus`, until `shutdown` is
/// cancelled. A background task posts what the ledger is missing and deletes old idempotency keys.
pub async fn serve(
    listener: impl Into<platform::grpc::Listener>,
    db: Db,
    verifier: Arc<TokenVerifier>,
    processor: Arc<dyn PaymentProcessor>,
    ledger: LedgerClient,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let listener = listener.into();
    tracing::info!(backend = db.backend(), addr = ?listener.local_addr().ok(), tls = listener.is_tls(), "payments serving");
    let relay = Relay::new(NAME, db.clone(), bus);
    let payments = service::Payments::new(store::Store::new(db), processor, ledger, relay.handle());
    // Background work stops with the server; what it did not finish is picked up at the next start.
    let service = GrpcService::new(PaymentServiceServer::new(PaymentsApi::new(payments.clone())))
        .background(|stop| relay.run(stop))
        .background(|stop| payments.run_background(stop));
    Ok(platform::grpc::serve(service, listener, verifier, shutdown).await?)
}

/// Applies the payments service's pending migrations to the configured database.
pub async fn migrate(settings: &Settings) -> Result<(), Error> {
    let db = Db::open(settings, NAME).await?;
    let result = db.migrate(&MIGRATOR, NAME).await;
    db.close().await;
    Ok(result?)
}

/// Checks an open payments database (migrated first, so a fresh one audits clean): lists captured payments
/// and completed refunds whose ledger transaction is not posted, and payments whose refunded amount exceeds
/// the captured amount or disagrees with their refunds. Empty means consistent. Changes nothing but
/// pending migrations.
pub async fn audit(db: &Db) -> Result<Vec<String>, Error> {
    audit_settled(db, std::time::Duration::ZERO).await
}

/// [`audit`] of a live system: captures and refunds changed within the last `in_flight` may still be on
/// their way to the ledger (the retry loop posts what the first call could not) and are not reported.
pub async fn audit_settled(db: &Db, in_flight: std::time::Duration) -> Result<Vec<String>, Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let since = platform::time::now_micros() - i64::try_from(in_flight.as_micros()).unwrap_or(i64::MAX);
    store::Store::new(db.clone()).audit(since).await
}

/// Every refund made (completed), by its id: for an operator's audit, every refunded return's refund is among
/// them, of its order's payment and for its amount.
pub async fn completed_refunds(db: &Db) -> Result<std::collections::HashMap<String, store::CompletedRefund>, Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    store::Store::new(db.clone()).completed_refunds().await
}

/// Every payment that was captured (whatever was refunded since), by id: for an operator's audit, every
/// confirmed order's payment is among them, for its order and its total.
pub async fn captured_payments(db: &Db) -> Result<std::collections::HashMap<String, store::CapturedPayment>, Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    store::Store::new(db.clone()).captured().await
}
