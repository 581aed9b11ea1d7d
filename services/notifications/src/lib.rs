//! The notifications service of Mercato: emails (SMTP) and signed webhooks caused by other services' events,
//! with retries and a delivery log.
//!
//! - [`domain`]: the rules, free of I/O (locales, money, the SMTP URL, signatures, backoff, paging).
//! - [`templates`]: the embedded email templates per event type and locale (minijinja).
//! - [`events`]: the consumer (event → notifications, exactly once) and the events it publishes.
//! - [`dispatch`]: the task sending due notifications, with exponential backoff.
//! - [`channels`]: SMTP (lettre) or the log, and webhooks (reqwest).
//! - [`store`]: all SQL, the same on SQLite and PostgreSQL.
//! - [`subscriptions`]: the event types webhook endpoints subscribe to, kept in memory for the consumer.
//! - [`grpc`]: the handlers of `mercato.notifications.v1.NotificationService`.
//! - [`dead_letters`]: `mercato.notifications.v1.DeadLetterService`, the administrators' view of every
//!   consumer's dead letters on the broker.
//! - [`error`]: the crate's one error type and its mapping to gRPC statuses.
//!
//! Without `MERCATO_SMTP_URL` emails are not sent: the dispatcher writes them to the log and marks them
//! LOGGED, so the delivery log never claims a mail went out when none did.

pub mod channels;
pub mod dead_letters;
pub mod dispatch;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod store;
pub mod subscriptions;
pub mod templates;

use std::sync::Arc;
use std::time::Duration;

use api::mercato::notifications::v1::dead_letter_service_server::DeadLetterServiceServer;
use api::mercato::notifications::v1::notification_service_server::NotificationServiceServer;
use platform::Settings;
use platform::auth::TokenVerifier;
use platform::db::Db;
use platform::events::{EventBus, InboxPruner, Relay};
use platform::grpc::GrpcService;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use channels::Mailer;
pub use dead_letters::DeadLettersApi;
pub use dispatch::DispatchOptions;
pub use error::Error;
pub use grpc::NotificationsApi;

/// The service's name: its database, its settings and its logs go by it.
pub const NAME: &str = "notifications";

/// The service's schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the service as configured: opens its database, trusts the auth service's keys, sends mail through
/// `MERCATO_SMTP_URL` as `MERCATO_MAIL_FROM` (or logs it when unset), tells `MERCATO_SUPPORT_EMAIL` of new
/// tickets, consumes and publishes on `bus`, and
/// serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: platform::grpc::Listener,
    settings: Settings,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mailer = Mailer::from_settings(settings.smtp_url.as_deref(), &settings.mail_from)?;
    let db = Db::open(&settings, NAME).await?;
    let verifier = Arc::new(TokenVerifier::from_auth_service(platform::grpc::service_channel(&settings, "auth")?));
    let options = DispatchOptions {
        support_inbox: settings.support_email.clone(),
        storefront_url: settings.storefront_url.clone(),
        public_api_url: settings.public_api_url.clone(),
        return_address: settings.return_address.clone(),
        retention: settings.notification_retention,
        ..DispatchOptions::default()
    };
    let result = serve(listener, db.clone(), verifier, bus, mailer, options, shutdown).await;
    db.close().await;
    result
}

/// Migrates `db`, subscribes the consumer on `bus`, starts the dispatcher (sending through `mailer`, paced
/// by `options`), the outbox relay and the inbox's pruner, and serves on `listener` with tokens checked by `verifier` until
/// `shutdown` is cancelled; the three stop with the server.
pub async fn serve(
    listener: impl Into<platform::grpc::Listener>,
    db: Db,
    verifier: Arc<TokenVerifier>,
    bus: Arc<dyn EventBus>,
    mailer: Mailer,
    options: DispatchOptions,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let templates = templates::Templates::load()?
        .with_storefront(options.storefront_url.clone())
        .with_public_api(options.public_api_url.clone())
        .with_return_address(options.return_address.clone());
    let templates = Arc::new(templates);
    let webhooks = channels::Webhooks::new(options.webhook_timeout, options.allow_private_networks)?;
    let store = store::Store::new(db.clone());
    let wake = Arc::new(Notify::new());
    // Unknown (every event goes to the database) until the background task's first read, which it makes at once.
    let subscriptions = Arc::new(subscriptions::Subscriptions::default());
    events::Consumer::new(store.clone(), templates, wake.clone())
        .with_support_inbox(options.support_inbox.as_deref())
        .with_subscriptions(subscriptions.clone())
        .subscribe(bus.as_ref());
    let listener = listener.into();
    tracing::info!(backend = db.backend(), addr = ?listener.local_addr().ok(), tls = listener.is_tls(), mailer = ?mailer, "notifications serving");

    let bus_for_admin = bus.clone();
    let pruner = InboxPruner::new(NAME, db.clone());
    let relay = Relay::new(NAME, db, bus);
    let retention = options.retention;
    let dispatcher = dispatch::Dispatcher::new(store.clone(), mailer, webhooks, options, wake, relay.handle());
    let api = NotificationsApi::new(store.clone(), subscriptions.clone());
    let subscriptions_store = store.clone();
    let service = GrpcService::new(NotificationServiceServer::new(api))
        .with(DeadLetterServiceServer::new(DeadLettersApi::new(bus_for_admin)))
        .background(move |stop| async move { subscriptions.run(subscriptions_store, stop).await })
        .background(|stop| relay.run(stop))
        .background(|stop| dispatcher.run(stop))
        .background(|stop| pruner.run(stop))
        .background(move |stop| forget_old_notifications(store, retention, stop));
    Ok(platform::grpc::serve(service, listener, verifier, shutdown).await?)
}

/// Deletes the notifications done with that were made longer than `retention` ago (`None`: none) when the
/// service starts and hourly after, until `shutdown` is cancelled. A failure is logged and tried again at the next
/// hour.
async fn forget_old_notifications(store: store::Store, retention: Option<Duration>, shutdown: CancellationToken) {
    const EVERY: Duration = Duration::from_secs(3600);
    let Some(retention) = retention else { return };
    let retention_micros = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
    platform::shutdown::every(EVERY, &shutdown, || async {
        let before = platform::time::now_micros().saturating_sub(retention_micros);
        match store.delete_finished_before(before).await {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(deleted, retention_days = retention.as_secs() / 86_400, "deleted old notifications")
            }
            Err(error) => tracing::warn!(%error, "deleting old notifications failed"),
        }
    })
    .await;
}

/// Applies the service's pending migrations to the configured database.
pub async fn migrate(settings: &Settings) -> Result<(), Error> {
    let db = Db::open(settings, NAME).await?;
    let result = db.migrate(&MIGRATOR, NAME).await;
    db.close().await;
    Ok(result?)
}
