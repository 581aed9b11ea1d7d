//! The auth service of Mercato: accounts, sign-in, refresh-token rotation with reuse detection, and the
//! Ed25519 keys that sign access tokens (published as JWKS).
//!
//! - [`api_keys`]: API keys' format and rules, pure; [`key_store`]: their SQL.
//! - [`domain`]: the rules (validation, refresh tokens, claims), pure; [`staff`]: the roles and the scopes each
//!   grants, and the rules of account administration, pure.
//! - [`passwords`]: Argon2id hashing off the async runtime.
//! - [`keys`]: signing keys, their stored and JWK forms, signing.
//! - [`store`]: all SQL, for SQLite and PostgreSQL; [`password_store`]: password changes and resets;
//!   [`session_store`]: a user's sessions, and the ended ones, whose access tokens verifiers refuse;
//!   [`account_store`]: listing accounts, setting roles, disabling; [`token_store`]: the tokens mailed to an
//!   account's address (password resets, email verifications); [`verification_store`]: email verification;
//!   [`email_change_store`]: moving an account to another address.
//! - [`grpc`]: the `AuthService` handlers.
//! - [`events`]: what it publishes through the outbox (`user.registered`, `user.email_verification_requested`,
//!   `user.email_verified`, `user.email_change_requested`, `user.email_changed`, `user.password_reset_requested`, `user.password_changed`, `user.deleted`, ...).
//! - [`error`]: the crate's error and its gRPC status.

pub mod account_store;
pub mod api_keys;
pub mod domain;
pub mod email_change_store;
pub mod error;
pub mod events;
pub mod grpc;
pub mod key_store;
pub mod keys;
pub mod password_store;
pub mod passwords;
pub mod session_store;
pub mod staff;
pub mod store;
pub mod token_store;
pub mod verification_store;

use std::sync::Arc;

use api::auth::auth_service_server::AuthServiceServer;
use futures::future::BoxFuture;
use platform::auth::{EndedSession, RevocationSource, StaticKeySource, TokenVerifier};
use platform::events::{EventBus, Relay};
use platform::grpc::GrpcService;
use platform::{Db, Settings};
use token_store::MAILED_TOKEN_TABLES;
use tokio_util::sync::CancellationToken;

pub use error::Error;

use keys::{Keyring, SigningKey};
use passwords::Hasher;
use store::{Store, UserRow};

/// The service's name: its database is `auth` (`mercato_auth` on a shared PostgreSQL server).
pub const NAME: &str = "auth";

/// The service's embedded migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Display name of the first administrator created from the settings.
pub const ADMIN_DISPLAY_NAME: &str = "Administrator";

/// Opens the service's database as `settings` say and serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: platform::grpc::Listener,
    settings: Settings,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let db = Db::open(&settings, NAME).await?;
    serve(listener, db, &settings, bus, shutdown).await
}

/// Serves the auth service over `db` on `listener` until `shutdown` is cancelled: migrates, loads (or on the
/// first start creates) the signing key, creates the first administrator from the settings if absent, then
/// answers gRPC calls, verifying access tokens against its own keys. Its events go through the outbox to `bus`.
pub async fn serve(
    listener: impl Into<platform::grpc::Listener>,
    db: Db,
    settings: &Settings,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let store = Store::new(db);
    let keys = Arc::new(load_or_create_keys(&store).await?);
    let hasher = Hasher::new().await?;
    ensure_admin(&store, &hasher, settings).await?;

    let verifier = Arc::new(
        TokenVerifier::new(Arc::new(StaticKeySource(keys.jwks.clone())))
            .with_revocations(Arc::new(StoredRevocations(store.clone())), platform::auth::REVOCATION_POLL),
    );
    let listener = listener.into();
    tracing::info!(kid = %keys.active.kid(), addr = ?listener.local_addr().ok(), tls = listener.is_tls(), "auth service ready");
    let relay = Relay::new(NAME, store.db().clone(), bus);
    let pruned = store.clone();
    let api = grpc::Service::new(store, keys, hasher, relay.handle(), settings.service_secrets.clone());
    // The relay and the pruner stop with the server; rows the relay did not publish stay in the outbox for the
    // next start.
    let service = GrpcService::new(AuthServiceServer::new(api))
        .background(|stop| relay.run(stop))
        .background(move |stop| prune_expired_tokens(pruned, stop));
    Ok(platform::grpc::serve(service, listener, verifier, shutdown).await?)
}

/// The auth service's own verifier reads the ended sessions from its database, as others read them from it.
struct StoredRevocations(Store);

impl RevocationSource for StoredRevocations {
    fn ended_since(&self, since: i64) -> BoxFuture<'_, Result<Vec<EndedSession>, String>> {
        Box::pin(async move {
            let rows = self.0.revoked_sessions(since, None, i64::MAX).await.map_err(|e| e.to_string())?;
            Ok(rows
                .into_iter()
                .map(|r| EndedSession { session_id: r.session_id, revoke_time: r.revoke_time })
                .collect())
        })
    }
}

/// Deletes the refresh, password-reset and email-verification tokens past their retention (a week after expiry,
/// [`domain::EXPIRED_REFRESH_TOKEN_RETENTION_MICROS`]) when the service starts and hourly after, until `shutdown` is
/// cancelled. Every replica may run it: they delete the same rows. A failure is logged and tried again at the next
/// hour; the tables only grow meanwhile.
async fn prune_expired_tokens(store: Store, shutdown: CancellationToken) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
    platform::shutdown::every(EVERY, &shutdown, || async {
        let before = platform::time::now_micros().saturating_sub(domain::EXPIRED_REFRESH_TOKEN_RETENTION_MICROS);
        match store.delete_expired_refresh_tokens(before).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted refresh tokens expired over a week ago"),
            Err(error) => tracing::warn!(%error, "deleting expired refresh tokens failed"),
        }
        for table in MAILED_TOKEN_TABLES {
            match store.delete_expired_tokens(table, before).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, table, "deleted mailed tokens expired over a week ago"),
                Err(error) => tracing::warn!(%error, table, "deleting expired mailed tokens failed"),
            }
        }
        let ended_before = platform::time::now_micros().saturating_sub(domain::REVOKED_SESSION_RETENTION_MICROS);
        match store.delete_old_revoked_sessions(ended_before).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "forgot sessions that ended over a day ago"),
            Err(error) => tracing::warn!(%error, "forgetting ended sessions failed"),
        }
    })
    .await;
}

/// Applies the service's migrations to the database the settings name, then closes it.
pub async fn migrate(settings: &Settings) -> Result<(), Error> {
    let db = Db::open(settings, NAME).await?;
    let result = db.migrate(&MIGRATOR, NAME).await;
    db.close().await;
    Ok(result?)
}

/// The stored signing keys; on the very first start, a new key, generated and stored. When two replicas race
/// on an empty database both keys are kept and published, and both replicas sign with the older one.
async fn load_or_create_keys(store: &Store) -> Result<Keyring, Error> {
    if let Some(ring) = Keyring::from_stored(&store.signing_keys().await?)? {
        return Ok(ring);
    }
    let key = SigningKey::generate()?;
    store.insert_signing_key(&key.to_stored(platform::time::now_micros())?).await?;
    tracing::info!(kid = %key.kid(), "generated a new signing key");
    Keyring::from_stored(&store.signing_keys().await?)?
        .ok_or_else(|| Error::Key("the signing key just stored cannot be read back".to_owned()))
}

/// Creates the administrator named by `MERCATO_ADMIN_EMAIL` / `MERCATO_ADMIN_PASSWORD` unless an account
/// with that email exists (an existing account is left as it is).
async fn ensure_admin(store: &Store, hasher: &Hasher, settings: &Settings) -> Result<(), Error> {
    let (Some(email), Some(password)) = (&settings.admin_email, &settings.admin_password) else {
        return Ok(());
    };
    let email = domain::normalize_email(email);
    if let Some(problem) = domain::email_problem(&email) {
        return Err(Error::Setting { variable: "MERCATO_ADMIN_EMAIL", problem: problem.to_owned() });
    }
    if let Some(problem) = domain::password_problem(password) {
        return Err(Error::Setting { variable: "MERCATO_ADMIN_PASSWORD", problem: problem.to_owned() });
    }
    if let Some(existing) = store.user_by_email(&email).await? {
        if !domain::parse_roles(&existing.roles).iter().any(|r| r == domain::ROLE_ADMIN) {
            tracing::warn!(user_id = %existing.id, "MERCATO_ADMIN_EMAIL names an existing account without the admin role; left unchanged");
        }
        return Ok(());
    }
    let now = platform::time::now_micros();
    let admin = UserRow {
        id: uuid::Uuid::now_v7().to_string(),
        email,
        password_hash: hasher.hash(password.clone()).await?,
        display_name: ADMIN_DISPLAY_NAME.to_owned(),
        roles: domain::format_roles(&[domain::ROLE_CUSTOMER, domain::ROLE_ADMIN]),
        locale: domain::DEFAULT_LOCALE.to_owned(),
        create_time: now,
        disable_time: None,
        // The operator chose the address: it needs no proof by mail.
        email_verify_time: Some(now),
    };
    match store.insert_user(&admin, &events::user_registered(&admin), None).await {
        Ok(()) => {
            tracing::info!(user_id = %admin.id, "created the first administrator");
            Ok(())
        }
        // Another replica created it between our check and our insert.
        Err(Error::EmailTaken) => Ok(()),
        Err(e) => Err(e),
    }
}
