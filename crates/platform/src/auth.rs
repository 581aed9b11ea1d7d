//! Who is calling: access-token claims, their verification against the auth service's public keys (JWKS),
//! and the tower layer that enforces each method's access rule on every gRPC server.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use api::auth::{GetJwksRequest, Jwk, auth_service_client::AuthServiceClient};
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use tonic::Status;

use crate::descriptors::AccessPolicy;

mod revocations;

use revocations::Revocations;
pub use revocations::{
    EndedSession, GrpcRevocationSource, READ_FAILURES_METRIC, REVOCATION_MEMORY, REVOCATION_POLL, RevocationSource,
};

/// The `iss` of every access token.
pub const ISSUER: &str = "mercato-auth";
/// The `aud` of every access token.
pub const AUDIENCE: &str = "mercato";
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Shortest time between two fetches of the key set, so that tokens with made-up `kid`s cannot make a
/// service hammer the auth service.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);

/// The claims of a Mercato access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer: [`ISSUER`].
    pub iss: String,
    /// Audience: [`AUDIENCE`].
    pub aud: String,
    /// Subject: the user id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Not before, seconds since the epoch.
    pub nbf: i64,
    /// Token id.
    pub jti: String,
    /// The session the token belongs to (a sign-in and its refreshes); empty for tokens of no session (services,
    /// API keys). Once the session ends, its tokens are refused (see [`RevocationSource`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sid: String,
    /// Granted scopes, space-separated (RFC 9068).
    pub scope: String,
    /// Roles of the subject.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Whether the subject's email address was verified when the token was issued (OpenID Connect's claim):
    /// a verification shows from the next sign-in or refresh. False for services, and left out when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub email_verified: bool,
}

impl Claims {
    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }
}

/// Why a token was refused. The text is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or a header we do not accept (algorithm other than EdDSA, no `kid`).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// No trusted key has the token's `kid`.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// Signature, issuer, audience or time checks failed.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The key set could not be fetched.
    #[error("cannot verify tokens right now: key set unavailable")]
    KeysUnavailable,
    /// The token's session ended (signed out, password changed, account deleted) before the token expired.
    #[error("invalid token: its session has ended; sign in again")]
    SessionEnded,
}

impl From<TokenError> for Status {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::KeysUnavailable => Status::unavailable(e.to_string()),
            _ => Status::unauthenticated(e.to_string()),
        }
    }
}

/// Where the verifier gets the trusted public keys from.
pub trait KeySource: Send + Sync + 'static {
    /// The current key set.
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, String>>;
}

/// Fetches the key set from the auth service over gRPC (`AuthService/GetJwks`).
#[derive(Debug, Clone)]
pub struct GrpcKeySource {
    channel: crate::grpc::Channel,
}

impl GrpcKeySource {
    /// A source reading from the auth service behind `channel`.
    pub fn new(channel: crate::grpc::Channel) -> Self {
        Self { channel }
    }
}

impl KeySource for GrpcKeySource {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, String>> {
        Box::pin(async move {
            let mut client = AuthServiceClient::new(crate::grpc::TracedChannel::new(self.channel.clone()));
            let response = client.get_jwks(GetJwksRequest {}).await.map_err(|s| s.message().to_owned())?;
            Ok(response.into_inner().keys)
        })
    }
}

/// A fixed key set, for the auth service itself (it holds its own keys) and for tests.
#[derive(Debug, Clone)]
pub struct StaticKeySource(pub Vec<Jwk>);

impl KeySource for StaticKeySource {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<Jwk>, String>> {
        let keys = self.0.clone();
        Box::pin(async move { Ok(keys) })
    }
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

/// How many verified tokens a [`TokenVerifier`] remembers; when full it makes room (see `make_room`).
const VERIFIED_TOKENS_MAX: usize = 10_000;

/// Verifies access tokens: EdDSA only, issuer, audience, expiry and not-before checked. Keys are cached and
/// fetched again when a token names an unknown `kid` (at most once per [`MIN_REFETCH`]).
///
/// A token that verified is remembered (its exact text, up to [`VERIFIED_TOKENS_MAX`] of them) with its
/// claims, and the next request with it only has its times checked: a client sends the same token for
/// minutes, and an Ed25519 signature check costs more CPU than the rest of a gateway hop. Any other text — a
/// forged or tampered token — is not found and goes through the full check. Fetching the key set again
/// forgets every remembered token.
pub struct TokenVerifier {
    source: Arc<dyn KeySource>,
    cache: RwLock<KeyCache>,
    verified: std::sync::Mutex<HashMap<String, Claims>>,
    validation: Validation,
    revocations: Option<Arc<Revocations>>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier trusting the keys that `source` returns.
    pub fn new(source: Arc<dyn KeySource>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        Self {
            source,
            cache: RwLock::new(KeyCache::default()),
            verified: Default::default(),
            validation,
            revocations: None,
        }
    }

    /// This verifier, also refusing the tokens of sessions that `source` says ended, by a list asked for again
    /// every `poll_every` ([`REVOCATION_POLL`] in services) while tokens are being verified.
    pub fn with_revocations(mut self, source: Arc<dyn RevocationSource>, poll_every: Duration) -> Self {
        self.revocations = Some(Arc::new(Revocations::new(source, poll_every)));
        self
    }

    /// A verifier fetching keys, and the sessions that ended, from the auth service at `channel`.
    pub fn from_auth_service(channel: crate::grpc::Channel) -> Self {
        Self::new(Arc::new(GrpcKeySource::new(channel.clone())))
            .with_revocations(Arc::new(GrpcRevocationSource::new(channel)), REVOCATION_POLL)
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        if let Some(key) = self.cache.read().await.keys.get(kid) {
            return Ok(key.clone());
        }
        let mut cache = self.cache.write().await;
        if let Some(key) = cache.keys.get(kid) {
            return Ok(key.clone());
        }
        let recently = cache.fetched_at.is_some_and(|t| t.elapsed() < MIN_REFETCH);
        if recently {
            return Err(TokenError::UnknownKey);
        }
        let jwks = self.source.fetch().await.map_err(|e| {
            tracing::warn!(error = %e, "fetching the key set failed");
            TokenError::KeysUnavailable
        })?;
        cache.fetched_at = Some(Instant::now());
        // A key that left the set must not keep vouching for the tokens it signed.
        self.verified_tokens().clear();
        cache.keys = jwks
            .iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
            .filter_map(|k| DecodingKey::from_ed_components(&k.x).ok().map(|d| (k.kid.clone(), d)))
            .collect();
        cache.keys.get(kid).cloned().ok_or(TokenError::UnknownKey)
    }

    fn verified_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claims>> {
        self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.verify_unrevoked(token).await?;
        if let Some(revocations) = &self.revocations
            && revocations.has_ended(&claims.sid).await
        {
            return Err(TokenError::SessionEnded);
        }
        Ok(claims)
    }

    /// Verifies `token` by its signature, or by its times alone if it verified before; its session is not looked at.
    async fn verify_unrevoked(&self, token: &str) -> Result<Claims, TokenError> {
        let remembered = self.verified_tokens().get(token).cloned();
        if let Some(claims) = remembered {
            if times_valid(&claims, crate::time::now_secs()) {
                return Ok(claims);
            }
            self.verified_tokens().remove(token);
            return Err(TokenError::Invalid("ExpiredSignature".to_owned()));
        }
        let claims = self.verify_signed(token).await?;
        let mut verified = self.verified_tokens();
        if verified.len() >= VERIFIED_TOKENS_MAX {
            make_room(&mut verified, crate::time::now_secs());
        }
        verified.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    async fn verify_signed(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Malformed("algorithm must be EdDSA".to_owned()));
        }
        let kid = header.kid.ok_or_else(|| TokenError::Malformed("no kid in header".to_owned()))?;
        let key = self.key(&kid).await?;
        jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }
}

/// Makes room in a full map of remembered tokens: the expired ones go first (they would be refused anyway), and
/// when that frees less than a quarter, an arbitrary half goes too. Forgetting everything at once, as it once
/// did, made every client's next request pay for a signature check together; a token forgotten here is only
/// verified again. Trimming is O(n), at most once per quarter of the capacity inserted.
fn make_room(verified: &mut HashMap<String, Claims>, now: i64) {
    verified.retain(|_, claims| times_valid(claims, now));
    if verified.len() > VERIFIED_TOKENS_MAX * 3 / 4 {
        let mut keep = VERIFIED_TOKENS_MAX / 2;
        verified.retain(|_, _| {
            let kept = keep > 0;
            keep = keep.saturating_sub(1);
            kept
        });
    }
}

/// Whether a remembered token's `exp` and `nbf` still hold at `now` (seconds), with the verifier's leeway.
fn times_valid(claims: &Claims, now: i64) -> bool {
    let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(i64::MAX);
    claims.exp >= now.saturating_sub(leeway) && claims.nbf <= now.saturating_add(leeway)
}

/// This service's own access token, from the auth service's client-credentials grant, cached until a minute
/// before it expires. Attach it to calls that need a scope the end user does not have (reserving stock,
/// recording ledger transactions, ...).
pub struct ServiceTokens {
    client_id: String,
    secret: String,
    channel: crate::grpc::Channel,
    cache: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for ServiceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceTokens").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

/// Renew a cached service token when less than this is left of its life.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

impl ServiceTokens {
    /// Tokens for service `client_id`, proven with `secret`, from the auth service behind `channel`.
    pub fn new(client_id: &str, secret: &str, channel: crate::grpc::Channel) -> Self {
        Self { client_id: client_id.to_owned(), secret: secret.to_owned(), channel, cache: Default::default() }
    }

    /// Tokens for `service` with its secret from the settings; `None` when the settings have no secret for it.
    pub fn from_settings(settings: &crate::Settings, service: &str, channel: crate::grpc::Channel) -> Option<Self> {
        settings.service_secrets.get(service).map(|secret| Self::new(service, secret, channel))
    }

    /// A valid access token for this service.
    pub async fn token(&self) -> Result<String, Status> {
        let mut cache = self.cache.lock().await;
        if let Some((token, renew_at)) = cache.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let mut client = AuthServiceClient::new(crate::grpc::TracedChannel::new(self.channel.clone()));
        let request = api::auth::IssueServiceTokenRequest {
            client_id: self.client_id.clone(),
            client_secret: self.secret.clone(),
        };
        let response = client.issue_service_token(request).await?.into_inner();
        let lifetime = Duration::from_secs(u64::try_from(response.expires_in).unwrap_or(0));
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE);
        *cache = Some((response.access_token.clone(), renew_at));
        Ok(response.access_token)
    }

    /// `message` as a request carrying this service's token.
    pub async fn request<T>(&self, message: T) -> Result<tonic::Request<T>, Status> {
        let token = self.token().await?;
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {token}").parse().map_err(|_| Status::internal("unusable service token"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// Where a client's access token comes from: [`ServiceTokens`] in production, [`StaticToken`] in tests.
#[tonic::async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// A valid access token.
    async fn token(&self) -> Result<String, Status>;
}

#[tonic::async_trait]
impl TokenSource for ServiceTokens {
    async fn token(&self) -> Result<String, Status> {
        ServiceTokens::token(self).await
    }
}

/// A fixed token (tests, or a token minted elsewhere).
#[derive(Clone)]
pub struct StaticToken(pub String);

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(..)")
    }
}

#[tonic::async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<String, Status> {
        Ok(self.0.clone())
    }
}

/// A fresh random secret (32 bytes, base64url): for service client secrets made up by `mercato up`.
pub fn generate_secret() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The bearer token of an `authorization` header value, if it is one.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The verified caller of a gRPC request, as the [`AuthLayer`] left it.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Claims, Status> {
    request.extensions().get::<Claims>().ok_or_else(|| Status::unauthenticated("this method needs an access token"))
}

/// The verified caller of a gRPC request, if any (for methods open to anonymous callers).
pub fn optional_caller<T>(request: &tonic::Request<T>) -> Option<&Claims> {
    request.extensions().get::<Claims>()
}

/// gRPC paths that are open to everyone: health checks and reflection.
pub fn is_exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Checks a request against its method's rule. `Ok(None)` is an anonymous caller that is allowed.
pub async fn authorize(
    verifier: &TokenVerifier,
    policy: &AccessPolicy,
    path: &str,
    authorization: Option<&str>,
) -> Result<Option<Claims>, Status> {
    let rule = policy.rule(path);
    let claims = match authorization {
        None => None,
        Some(value) => {
            let token =
                bearer_token(value).ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
            Some(verifier.verify(token).await?)
        }
    };
    match &claims {
        None if rule.allow_anonymous => Ok(None),
        None => Err(Status::unauthenticated("this method needs an access token")),
        Some(c) => {
            if let Some(missing) = rule.scopes.iter().find(|s| !c.has_scope(s)) {
                return Err(Status::permission_denied(format!("this method needs the scope {missing}")));
            }
            Ok(claims)
        }
    }
}

/// Tower layer that enforces the access rule of every gRPC method and hands the verified [`Claims`] to the
/// handler through the request extensions (read them with [`caller`]).
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<TokenVerifier>,
    policy: Arc<AccessPolicy>,
}

impl AuthLayer {
    /// A layer checking tokens with `verifier` against `policy`.
    pub fn new(verifier: Arc<TokenVerifier>, policy: Arc<AccessPolicy>) -> Self {
        Self { verifier, policy }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, verifier: self.verifier.clone(), policy: self.policy.clone() }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: Arc<TokenVerifier>,
    policy: Arc<AccessPolicy>,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready yet; keep the ready one for this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            if !is_exempt(&path) {
                let authorization = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                match authorize(&verifier, &policy, &path, authorization).await {
                    Ok(Some(claims)) => {
                        request.extensions_mut().insert(claims);
                    }
                    Ok(None) => {}
                    Err(status) => return Ok(status.into_http()),
                }
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestIssuer;
    use base64::Engine;

    fn issuer() -> Arc<TestIssuer> {
        Arc::new(TestIssuer::new().expect("key"))
    }

    fn claims(issuer_name: &str, audience: &str, exp_offset: i64) -> Claims {
        let now = crate::time::now_secs();
        Claims {
            iss: issuer_name.into(),
            aud: audience.into(),
            sub: "user-1".into(),
            exp: now + exp_offset,
            iat: now,
            nbf: now,
            jti: "j".into(),
            sid: "session-1".into(),
            scope: "catalog:write cart:write".into(),
            roles: vec!["admin".into()],
            email_verified: false,
        }
    }

    #[test]
    fn a_full_token_memory_forgets_expired_tokens_first_then_half() {
        let now = crate::time::now_secs();
        let remembered = |expired: usize| -> HashMap<String, Claims> {
            (0..VERIFIED_TOKENS_MAX)
                .map(|n| {
                    let offset = if n < expired { -3600 } else { 3600 };
                    (format!("token-{n}"), claims(ISSUER, AUDIENCE, offset))
                })
                .collect()
        };
        let mut mostly_expired = remembered(6_000);
        make_room(&mut mostly_expired, now);
        assert_eq!(mostly_expired.len(), 4_000, "every expired token went, every valid one stayed");
        assert!(mostly_expired.values().all(|c| times_valid(c, now)));

        let mut all_valid = remembered(0);
        make_room(&mut all_valid, now);
        assert_eq!(all_valid.len(), VERIFIED_TOKENS_MAX / 2, "half is forgotten, not everything");
    }

    #[tokio::test]
    async fn a_valid_token_yields_its_claims() {
        let issuer = issuer();
        let verifier = issuer.verifier();
        let claims = verifier.verify(&issuer.token("u1", &["catalog:write"], &["admin"])).await.expect("valid");
        assert_eq!(claims.sub, "u1");
        assert!(claims.has_scope("catalog:write") && !claims.has_scope("catalog"));
    }

    #[tokio::test]
    async fn a_remembered_token_still_expires() {
        let issuer = issuer();
        let verifier = issuer.verifier();
        // Valid for one more second, thanks to the leeway; remembered by the first check.
        let token = issuer.sign(&claims(ISSUER, AUDIENCE, -(LEEWAY_SECS as i64) + 1));
        assert_eq!(verifier.verify(&token).await.expect("valid within the leeway").sub, "user-1");
        assert_eq!(verifier.verify(&token).await.expect("remembered").sub, "user-1");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(verifier.verify(&token).await.is_err(), "an expired token was accepted from memory");
    }

    #[test]
    fn remembered_claims_are_checked_against_the_clock() {
        let now = 1_000_000;
        let at = |exp_offset: i64, nbf_offset: i64| Claims {
            exp: now + exp_offset,
            nbf: now + nbf_offset,
            ..claims(ISSUER, AUDIENCE, 0)
        };
        let leeway = LEEWAY_SECS as i64;
        assert!(times_valid(&at(600, 0), now));
        assert!(times_valid(&at(-leeway, 0), now), "expired, within the leeway");
        assert!(!times_valid(&at(-leeway - 1, 0), now), "expired past the leeway");
        assert!(times_valid(&at(600, leeway), now), "not yet valid, within the leeway");
        assert!(!times_valid(&at(600, leeway + 1), now), "not yet valid past the leeway");
    }

    #[tokio::test]
    async fn forged_and_stale_tokens_are_refused() {
        let issuer = issuer();
        let verifier = issuer.verifier();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let good = issuer.token("u1", &["catalog:write"], &[]);
        let parts: Vec<&str> = good.split('.').collect();

        let expired = issuer.sign(&claims(ISSUER, AUDIENCE, -3600));
        let wrong_aud = issuer.sign(&claims(ISSUER, "someone-else", 600));
        let wrong_iss = issuer.sign(&claims("evil", AUDIENCE, 600));
        let none_alg = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
        let hs256 = format!("{}.{}.{}", b64.encode(r#"{"alg":"HS256","typ":"JWT","kid":"x"}"#), parts[1], parts[2]);
        let mut payload =
            serde_json::from_slice::<serde_json::Value>(&b64.decode(parts[1]).expect("b64")).expect("json");
        payload["scope"] = "everything".into();
        let tampered = format!("{}.{}.{}", parts[0], b64.encode(payload.to_string()), parts[2]);
        let other_key_same_kid = {
            let other = TestIssuer::new().expect("key");
            let forged = other.token("u1", &["catalog:write"], &[]);
            let forged_parts: Vec<&str> = forged.split('.').collect();
            format!("{}.{}.{}", parts[0], forged_parts[1], forged_parts[2])
        };
        // The genuine token verified (and remembered) first: its forged variants must still be refused.
        verifier.verify(&good).await.expect("the genuine token");

        for (name, token) in [
            ("expired", expired),
            ("wrong audience", wrong_aud),
            ("wrong issuer", wrong_iss),
            ("alg none", none_alg),
            ("HS256", hs256),
            ("tampered payload", tampered),
            ("another key with the same kid", other_key_same_kid),
            ("garbage", "not.a.jwt".to_owned()),
        ] {
            assert!(verifier.verify(&token).await.is_err(), "{name} token was accepted");
        }
    }

    /// Ended sessions as a test ends them; remembers the `since` of every poll, and fails while `down`.
    #[derive(Default)]
    struct EndedSessions {
        ended: std::sync::Mutex<Vec<EndedSession>>,
        polls: std::sync::Mutex<Vec<i64>>,
        down: std::sync::atomic::AtomicBool,
    }

    impl EndedSessions {
        fn end(&self, session_id: &str) {
            let ended = EndedSession { session_id: session_id.into(), revoke_time: crate::time::now_micros() };
            self.ended.lock().expect("lock").push(ended);
        }
    }

    impl RevocationSource for EndedSessions {
        fn ended_since(&self, since: i64) -> BoxFuture<'_, Result<Vec<EndedSession>, String>> {
            self.polls.lock().expect("lock").push(since);
            let ended = self.ended.lock().expect("lock").iter().filter(|s| s.revoke_time >= since).cloned().collect();
            let down = self.down.load(std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move { if down { Err("auth is away".to_owned()) } else { Ok(ended) } })
        }
    }

    fn in_session(issuer: &TestIssuer, sid: &str) -> String {
        issuer.sign(&Claims { sid: sid.into(), ..claims(ISSUER, AUDIENCE, 600) })
    }

    #[tokio::test]
    async fn tokens_of_an_ended_session_are_refused_even_when_remembered() {
        let issuer = issuer();
        let sessions = Arc::new(EndedSessions::default());
        let poll_every = Duration::from_millis(50);
        let verifier = TokenVerifier::new(issuer.clone()).with_revocations(sessions.clone(), poll_every);
        let (ending, staying) = (in_session(&issuer, "s1"), in_session(&issuer, "s2"));
        let sessionless = issuer.token("u1", &["cart:write"], &[]);
        verifier.verify(&ending).await.expect("verified, and remembered, before its session ends");

        sessions.end("s1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while verifier.verify(&ending).await.is_ok() {
            assert!(Instant::now() < deadline, "the ended session's token is still honoured");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(verifier.verify(&ending).await, Err(TokenError::SessionEnded));
        assert_eq!(verifier.verify(&staying).await.expect("another session").sid, "s2");
        assert!(verifier.verify(&sessionless).await.is_ok(), "tokens of no session are not looked up");

        // The first poll looked back an hour; the polls after one that saw an ending read on from it, with a few
        // seconds' overlap.
        let newest = sessions.ended.lock().expect("lock")[0].revoke_time;
        let polls = || sessions.polls.lock().expect("lock").clone();
        assert!(polls()[0] < newest - 3_000_000_000, "{:?}", polls());
        while !polls().contains(&(newest - 5_000_000)) {
            assert!(Instant::now() < deadline, "no poll read on from the newest ending: {:?}", polls());
            verifier.verify(&staying).await.expect("valid");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn after_a_quiet_spell_the_first_token_waits_for_a_fresh_list() {
        let issuer = issuer();
        let sessions = Arc::new(EndedSessions::default());
        let poll_every = Duration::from_millis(200);
        let verifier = TokenVerifier::new(issuer.clone()).with_revocations(sessions.clone(), poll_every);
        let token = in_session(&issuer, "s1");
        verifier.verify(&token).await.expect("its session is live");
        sessions.end("s1");
        tokio::time::sleep(poll_every + Duration::from_millis(50)).await;
        assert_eq!(verifier.verify(&token).await, Err(TokenError::SessionEnded), "not let through once");
    }

    #[tokio::test]
    async fn a_new_verifier_refuses_ended_sessions_from_its_first_token() {
        let issuer = issuer();
        let sessions = Arc::new(EndedSessions::default());
        sessions.end("s1");
        let verifier = TokenVerifier::new(issuer.clone()).with_revocations(sessions, REVOCATION_POLL);
        assert_eq!(verifier.verify(&in_session(&issuer, "s1")).await, Err(TokenError::SessionEnded));
    }

    #[tokio::test]
    async fn tokens_are_still_verified_while_the_ended_sessions_cannot_be_read_and_the_failures_are_counted() {
        let issuer = issuer();
        let sessions = Arc::new(EndedSessions::default());
        sessions.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let verifier = TokenVerifier::new(issuer.clone()).with_revocations(sessions, REVOCATION_POLL);
        let failures = || {
            let rendered = crate::metrics::handle().render();
            let line = rendered.lines().find(|l| l.starts_with(READ_FAILURES_METRIC)).map(str::to_owned);
            line.and_then(|l| l.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok())).unwrap_or(0.0)
        };
        let before = failures();
        assert!(verifier.verify(&in_session(&issuer, "s1")).await.is_ok());
        assert!(failures() >= before + 1.0, "a failed read is counted for the alert");
    }

    #[tokio::test]
    async fn access_rules_give_401_and_403() {
        let issuer = issuer();
        let verifier = issuer.verifier();
        let policy = AccessPolicy::from_contracts().expect("contracts");
        let create = "/mercato.catalog.v1.CatalogService/CreateProduct";
        let anonymous = authorize(&verifier, &policy, create, None).await.expect_err("anonymous");
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
        let customer = format!("Bearer {}", issuer.token("u1", &["cart:write"], &["customer"]));
        let denied = authorize(&verifier, &policy, create, Some(&customer)).await.expect_err("no scope");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let admin = format!("Bearer {}", issuer.token("u2", &["catalog:write"], &["admin"]));
        let ok = authorize(&verifier, &policy, create, Some(&admin)).await.expect("allowed");
        assert_eq!(ok.map(|c| c.sub), Some("u2".to_owned()));
        let list = "/mercato.catalog.v1.CatalogService/ListProducts";
        assert!(authorize(&verifier, &policy, list, None).await.expect("public").is_none());
        let bad = authorize(&verifier, &policy, list, Some("Bearer nope")).await.expect_err("bad token");
        assert_eq!(bad.code(), tonic::Code::Unauthenticated);
    }
}
