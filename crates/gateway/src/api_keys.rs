//! `X-API-Key` at the edge: a key is exchanged at the auth service for a short-lived access token of its
//! owner, with the key's scopes, and the request goes on as if it carried that token. Tokens are reused for
//! at most [`REUSE_FOR`], so revoking a key takes effect within seconds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use api::auth::ExchangeApiKeyRequest;
use api::auth::auth_service_client::AuthServiceClient;
use platform::grpc::Channel;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tonic::Status;

/// The header that carries an API key.
pub const HEADER: &str = "x-api-key";
/// Longest reuse of an exchanged token: the delay before a revocation is seen.
pub const REUSE_FOR: Duration = Duration::from_secs(5);
/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

/// Exchanges API keys for access tokens, with a short cache.
#[derive(Debug)]
pub struct ApiKeyResolver {
    auth: Channel,
    cache: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

impl ApiKeyResolver {
    /// A resolver asking the auth service behind `auth`.
    pub fn new(auth: Channel) -> Self {
        Self { auth, cache: Mutex::new(HashMap::new()) }
    }

    /// Whether `key` was exchanged successfully before (its token may have expired since): the rate limiter
    /// counts only such keys as identities, so made-up keys do not buy fresh budgets.
    pub async fn is_known(&self, key: &str) -> bool {
        let id: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.cache.lock().await.contains_key(&id)
    }

    /// An access token for `key`, or UNAUTHENTICATED for an unknown, expired or revoked key.
    pub async fn token_for(&self, key: &str) -> Result<String, Status> {
        // Keyed by a hash so the cache holds no secrets.
        let id: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if let Some((token, until)) = self.cache.lock().await.get(&id)
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let mut client = AuthServiceClient::new(platform::grpc::TracedChannel::new(self.auth.clone()));
        let response = client.exchange_api_key(ExchangeApiKeyRequest { api_key: key.to_owned() }).await?.into_inner();
        let lifetime = Duration::from_secs(u64::try_from(response.expires_in).unwrap_or(0));
        let until = Instant::now() + REUSE_FOR.min(lifetime);
        let mut cache = self.cache.lock().await;
        if cache.len() >= SWEEP_AT {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
        }
        cache.insert(id, (response.access_token.clone(), until));
        Ok(response.access_token)
    }
}
