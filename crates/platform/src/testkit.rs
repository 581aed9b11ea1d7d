//! Helpers for tests that run against real backends.
//!
//! PostgreSQL tests read `MERCATO_TEST_DATABASE_URL` (a server URL), and the other backends' tests settings of
//! their own ([`test_setting`]). Without one they are skipped, except under `CI=true`, where a missing setting or
//! an unreachable server fails the test: CI never skips silently.

use crate::db::{Db, DbError};

/// Whether we run in CI (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The value of test setting `variable` (a backend's URL, a tool's path) for tests that need `what`, or `None`
/// when it is unset and those tests are skipped (`how` tells a developer how to get it).
///
/// # Panics
/// Under `CI=true` when the setting is unset: CI never skips silently.
#[allow(clippy::panic)]
pub fn test_setting(variable: &str, what: &str, how: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if in_ci() => panic!("CI=true but {variable} is not set: the {what} tests cannot be skipped in CI"),
        _ => {
            eprintln!("skipped: {variable} is not set, so the {what} tests do not run ({how})");
            None
        }
    }
}

/// A fresh, uniquely named PostgreSQL database for one test, or `None` when PostgreSQL tests are skipped.
///
/// # Panics
/// Under `CI=true` when `MERCATO_TEST_DATABASE_URL` is unset or the server cannot be reached.
#[allow(clippy::panic)]
pub async fn postgres(service: &str) -> Option<Db> {
    let url = test_setting("MERCATO_TEST_DATABASE_URL", "PostgreSQL", "e.g. postgres://postgres@127.0.0.1:5432")?;
    let name = format!("mercato_test_{service}_{}", uuid::Uuid::now_v7().simple());
    match Db::open_postgres_server(&url, &name, service).await {
        Ok(db) => Some(db),
        Err(DbError::Connect { source, .. }) | Err(DbError::Url { source, .. }) => {
            panic!("MERCATO_TEST_DATABASE_URL={url} is unusable: {source}")
        }
        Err(other) => panic!("opening the test database failed: {other}"),
    }
}

/// A fresh SQLite database in a new temporary directory (removed when the returned guard drops).
pub async fn sqlite(service: &str) -> Result<(Db, TempDir), DbError> {
    let dir = TempDir::new(service).map_err(|source| DbError::DataDir { path: "temp".to_owned(), source })?;
    let mut settings = crate::Settings::from_vars(Vec::new())
        .map_err(|e| DbError::DataDir { path: "settings".to_owned(), source: std::io::Error::other(e.to_string()) })?;
    settings.data_dir = dir.path().to_path_buf();
    let db = Db::open(&settings, service).await?;
    Ok((db, dir))
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// Creates a new empty directory under the system's temporary directory.
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("mercato-{prefix}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Signs access tokens for tests the way the auth service does (EdDSA, `kid`, Mercato's issuer and
/// audience), and serves its public key as a [`KeySource`](crate::auth::KeySource).
pub struct TestIssuer {
    kid: String,
    encoding: jsonwebtoken::EncodingKey,
    jwk: api::auth::Jwk,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl TestIssuer {
    /// A new issuer with a fresh Ed25519 key.
    pub fn new() -> Result<Self, String> {
        use base64::Engine;
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let der = signing.to_pkcs8_der().map_err(|e| e.to_string())?;
        let kid = format!("test-{}", uuid::Uuid::now_v7().simple());
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
        Ok(Self {
            encoding: jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
            jwk: api::auth::Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x,
                kid: kid.clone(),
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            },
            kid,
        })
    }

    /// A verifier that trusts this issuer's key.
    pub fn verifier(self: &std::sync::Arc<Self>) -> std::sync::Arc<crate::auth::TokenVerifier> {
        std::sync::Arc::new(crate::auth::TokenVerifier::new(self.clone()))
    }

    /// A valid 15-minute token for `subject` with `scopes` and `roles` (an unverified address).
    pub fn token(&self, subject: &str, scopes: &[&str], roles: &[&str]) -> String {
        self.sign(&self.claims(subject, scopes, roles))
    }

    /// The claims of [`token`](Self::token), to change before [`sign`](Self::sign)ing them.
    pub fn claims(&self, subject: &str, scopes: &[&str], roles: &[&str]) -> crate::auth::Claims {
        let now = crate::time::now_secs();
        crate::auth::Claims {
            iss: crate::auth::ISSUER.into(),
            aud: crate::auth::AUDIENCE.into(),
            sub: subject.into(),
            exp: now + 900,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::now_v7().to_string(),
            sid: String::new(),
            scope: scopes.join(" "),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            email_verified: false,
        }
    }

    /// Signs arbitrary claims (expired, wrong audience, ...) with this issuer's key.
    pub fn sign(&self, claims: &crate::auth::Claims) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap_or_default()
    }
}

impl crate::auth::KeySource for TestIssuer {
    fn fetch(&self) -> futures::future::BoxFuture<'_, Result<Vec<api::auth::Jwk>, String>> {
        let keys = vec![self.jwk.clone()];
        Box::pin(async move { Ok(keys) })
    }
}

/// An outage of the machine's RabbitMQ for the broker-restart tests: [`begin`](Self::begin) stops the broker
/// application (`rabbitmqctl stop_app`); dropping the guard starts it again and waits until it answers
/// (`start_app`, then `await_startup`), so a failing test never leaves the broker down for the tests after it.
#[derive(Debug)]
pub struct BrokerOutage(());

impl BrokerOutage {
    /// Stops the broker; `None` when `rabbitmqctl stop_app` failed (not installed, or not allowed).
    pub fn begin() -> Option<Self> {
        rabbitmqctl("stop_app").then_some(Self(()))
    }
}

impl Drop for BrokerOutage {
    fn drop(&mut self) {
        for _ in 0..5 {
            if rabbitmqctl("start_app") {
                // start_app returns before every queue is back: the tests after this need a broker that answers
                // declarations, not one still starting.
                rabbitmqctl("await_startup");
                return;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        eprintln!("could not restart RabbitMQ: run `rabbitmqctl start_app`");
    }
}

fn rabbitmqctl(command: &str) -> bool {
    std::process::Command::new("rabbitmqctl").arg(command).output().is_ok_and(|o| o.status.success())
}

/// A channel to the gRPC server a test just started at `url` (`http://127.0.0.1:<port>`), once it accepts
/// connections: tried every 50 ms for 5 seconds, then the test fails naming `service` and the last error.
pub async fn connect_when_up(url: &str, service: &str) -> tonic::transport::Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned()).expect("a server URL");
    let mut attempt = 0;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(e) if attempt < 100 => {
                attempt += 1;
                eprintln!("{service} not up yet: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{service} did not come up at {url}: {e}"),
        }
    }
}

/// The fields named by the `google.rpc.BadRequest` detail of `status`, in order: what a test asserts of a refusal.
/// Panics (the test fails) unless `status` is INVALID_ARGUMENT with such a detail.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use prost::Message;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let details = crate::error::decode_details(status).expect("the status carries details");
    let any = details.details.iter().find(|d| d.type_url.ends_with("google.rpc.BadRequest")).expect("BadRequest");
    let bad = api::google::rpc::BadRequest::decode(any.value.as_slice()).expect("a BadRequest detail decodes");
    bad.field_violations.into_iter().map(|v| v.field).collect()
}

/// The reason of the `google.rpc.ErrorInfo` detail of `status` (`INSUFFICIENT_STOCK`, say). Panics (the test
/// fails) unless it carries one.
pub fn error_reason(status: &tonic::Status) -> String {
    use prost::Message;
    let details = crate::error::decode_details(status).expect("the status carries details");
    let any = details.details.iter().find(|d| d.type_url.ends_with("google.rpc.ErrorInfo")).expect("ErrorInfo");
    api::google::rpc::ErrorInfo::decode(any.value.as_slice()).expect("an ErrorInfo detail decodes").reason
}
