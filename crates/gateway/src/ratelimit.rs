//! Rate limits at the edge, per identity and route, with GCRA (the generic cell rate algorithm).
//!
//! **The algorithm.** A budget ([`Quota`]) is a steady rate (one request per *emission interval* `T =
//! period / count`) and a burst `B`. Each bucket stores one number, the *theoretical arrival time* (TAT): when
//! the bucket would be full again. A request at `now` is allowed iff `max(TAT, now) + T - B·T <= now`; an
//! allowed request moves TAT to `max(TAT, now) + T`. This is exactly a token bucket of `B` tokens refilled
//! every `T`, with one stored number instead of a counter and a timestamp. From TAT follow the headers:
//! remaining = `(now + B·T - TAT) / T`, reset (seconds until the bucket is full) = `TAT - now`, and for a
//! refused request retry-after = `max(TAT, now) + T - B·T - now`.
//!
//! **Identities.** An API key (by its SHA-256, once the key has been seen valid), else the `sub` of a valid
//! bearer token, else the client IP (the TCP peer, or the right-most untrusted `X-Forwarded-For` hop when the
//! peer is a trusted proxy).
//!
//! **Buckets.** A route with a budget of its own (`POST /v1/auth/login`) has a bucket per identity; every
//! other route shares the identity's `default` bucket.
//!
//! **Storage.** In memory ([`MemoryStore`]: sharded maps, full buckets forgotten, bounded size), or in Redis
//! when `MERCATO_REDIS_URL` is set, so every gateway replica draws on one budget: the same GCRA step as a Lua
//! script on the Redis clock (`EVALSHA`, `EVAL` when the script is not loaded), one key per bucket expiring
//! when the bucket is full again. When Redis fails or is slower than [`REDIS_TIMEOUT`], the replica limits
//! with its own memory (`mercato_ratelimit_fallback_total`, `mercato_ratelimit_redis_up` 0, a warning at most
//! once a minute) and tries Redis again a second later.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use platform::config::{IpNet, Quota, RateLimits};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The longest a rate-limit decision waits for Redis before the local limiter decides.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// How long the local limiter decides alone after Redis failed, before Redis is tried again.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Least time between two warnings about an unavailable Redis.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Shards of the in-memory store (each its own lock).
const SHARDS: usize = 16;
/// Buckets a shard holds before it forgets full ones.
const SWEEP_AT: usize = 1024;
/// Most buckets a shard holds; beyond that it forgets the half closest to full.
const MAX_PER_SHARD: usize = 16 * 1024;
/// The bucket of routes without a budget of their own.
const DEFAULT_BUCKET: &str = "default";

/// The GCRA step in Redis: `KEYS[1]` the bucket, `ARGV[1]` the emission interval and `ARGV[2]` the burst, in
/// microseconds and requests. Returns `{allowed, remaining, retry_after_us, reset_us}`; the TAT is stored as
/// microseconds on the Redis clock, so replicas with skewed clocks agree.
const GCRA_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then tat = math.max(tonumber(stored), now) end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', ttl_ms))
return {1, math.floor((now + burst * interval - new_tat) / interval), 0, new_tat - now}
";

/// The outcome of one rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The burst of the budget: requests allowed back to back.
    pub limit: u32,
    /// Requests still allowed right now.
    pub remaining: u32,
    /// For a refused request, how long until one is allowed.
    pub retry_after: Duration,
    /// How long until the bucket is full again.
    pub reset: Duration,
}

impl Decision {
    /// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (whole seconds, rounded up; IETF
    /// draft style), plus `Retry-After` on a refusal.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        // Names made once, not parsed from strings on every answer.
        const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
        const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
        const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
        let mut headers = vec![
            (LIMIT, HeaderValue::from(self.limit)),
            (REMAINING, HeaderValue::from(self.remaining)),
            (RESET, HeaderValue::from(ceil_secs(self.reset))),
        ];
        if !self.allowed {
            headers.push((http::header::RETRY_AFTER, HeaderValue::from(ceil_secs(self.retry_after).max(1))));
        }
        headers
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000).try_into().unwrap_or(u64::MAX)
}

fn micros(d: Duration) -> u64 {
    d.as_micros().try_into().unwrap_or(u64::MAX)
}

/// One GCRA step for a bucket whose theoretical arrival time is `tat` (`None` for a full bucket), at `now`,
/// both in microseconds on one clock. Returns the decision and, when allowed, the new TAT to store.
pub fn gcra(tat: Option<u64>, now: u64, quota: &Quota) -> (Decision, Option<u64>) {
    let interval = micros(quota.emission_interval()).max(1);
    let tolerance = interval.saturating_mul(u64::from(quota.burst));
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(interval);
    let allow_at = new_tat.saturating_sub(tolerance);
    if now < allow_at {
        let decision = Decision {
            allowed: false,
            limit: quota.burst,
            remaining: 0,
            retry_after: Duration::from_micros(allow_at - now),
            reset: Duration::from_micros(tat - now),
        };
        return (decision, None);
    }
    let remaining = (now.saturating_add(tolerance) - new_tat) / interval;
    let decision = Decision {
        allowed: true,
        limit: quota.burst,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        retry_after: Duration::ZERO,
        reset: Duration::from_micros(new_tat - now),
    };
    (decision, Some(new_tat))
}

/// Buckets in memory: sharded maps of TATs. A bucket whose TAT has passed is full, the same as no bucket, so
/// it is forgotten when its shard grows; a shard flooded with active buckets forgets the half closest to full.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
}

#[derive(Debug)]
struct Shard {
    buckets: HashMap<String, u64>,
    sweep_at: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard { buckets: HashMap::new(), sweep_at: SWEEP_AT })).collect();
        Self { shards, hasher: RandomState::new() }
    }

    /// Checks and, when allowed, charges the bucket `key` at `now` (microseconds on the caller's clock).
    pub fn check(&self, key: &str, quota: &Quota, now: u64) -> Decision {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        let Some(shard) = self.shards.get(index) else { return gcra(None, now, quota).0 };
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let (decision, new_tat) = gcra(shard.buckets.get(key).copied(), now, quota);
        if let Some(new_tat) = new_tat {
            if let Some(tat) = shard.buckets.get_mut(key) {
                *tat = new_tat;
            } else {
                shard.make_room(now);
                shard.buckets.insert(key.to_owned(), new_tat);
            }
        }
        decision
    }

    /// Buckets held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).buckets.len()).sum()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shard {
    fn make_room(&mut self, now: u64) {
        if self.buckets.len() < self.sweep_at {
            return;
        }
        self.buckets.retain(|_, tat| *tat > now);
        if self.buckets.len() >= MAX_PER_SHARD {
            let mut tats: Vec<u64> = self.buckets.values().copied().collect();
            let middle = tats.len() / 2;
            let median = *tats.select_nth_unstable(middle).1;
            self.buckets.retain(|_, tat| *tat > median);
        }
        self.sweep_at = (self.buckets.len() * 2).clamp(SWEEP_AT, MAX_PER_SHARD);
    }
}

/// The gateway's limiter: budgets, the in-memory store, and Redis when configured.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    local: MemoryStore,
    redis: Option<RedisStore>,
    epoch: Instant,
}

impl RateLimiter {
    /// A limiter keeping its buckets in this process.
    pub fn in_memory(limits: RateLimits) -> Self {
        Self { limits, local: MemoryStore::new(), redis: None, epoch: Instant::now() }
    }

    /// A limiter sharing its buckets through Redis at `url` under keys starting with `key_prefix`, with the
    /// in-memory store as fallback. Connects on first use.
    pub fn with_redis(limits: RateLimits, url: &str, key_prefix: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let redis = RedisStore {
            client,
            connection: Mutex::new(None),
            script: redis::Script::new(GCRA_LUA),
            prefix: format!("{key_prefix}ratelimit:"),
            timeout: REDIS_TIMEOUT,
            health: Mutex::new(RedisHealth::default()),
        };
        Ok(Self { redis: Some(redis), ..Self::in_memory(limits) })
    }

    /// The limiter the settings describe: Redis (keys under `mercato:`) when `MERCATO_REDIS_URL` is set.
    pub fn from_settings(settings: &platform::Settings) -> Result<Self, redis::RedisError> {
        match &settings.redis_url {
            Some(url) => Self::with_redis(settings.rate_limits.clone(), url, "mercato:"),
            None => Ok(Self::in_memory(settings.rate_limits.clone())),
        }
    }

    /// Waits up to `timeout` (instead of [`REDIS_TIMEOUT`]) for Redis before deciding locally.
    pub fn with_redis_timeout(mut self, timeout: Duration) -> Self {
        if let Some(redis) = &mut self.redis {
            redis.timeout = timeout;
        }
        self
    }

    /// The budgets.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Checks and charges the bucket of `identity` for `route` (a route key, `"<METHOD> <template>"`);
    /// `None` when limits are off.
    pub async fn check(&self, route: &str, identity: &str) -> Option<Decision> {
        if !self.limits.enabled {
            return None;
        }
        let (bucket, quota) = match self.limits.routes.get(route) {
            Some(quota) => (route, *quota),
            None => (DEFAULT_BUCKET, self.limits.default),
        };
        let key = format!("{bucket}|{identity}");
        if let Some(redis) = &self.redis {
            if let Some(decision) = redis.check(&key, &quota).await {
                return Some(decision);
            }
            metrics::counter!("mercato_ratelimit_fallback_total").increment(1);
        }
        Some(self.local.check(&key, &quota, micros(self.epoch.elapsed())))
    }
}

/// Buckets in Redis, with a breaker: after a failure, Redis is left alone for [`REDIS_RETRY_AFTER`].
#[derive(Debug)]
struct RedisStore {
    client: redis::Client,
    /// Made on first use (inside the runtime) and dropped after a failure, so a retry reconnects afresh.
    connection: Mutex<Option<ConnectionManager>>,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    health: Mutex<RedisHealth>,
}

#[derive(Debug, Default)]
struct RedisHealth {
    /// `None` before the first answer or failure.
    up: Option<bool>,
    /// While Redis is failing: when to try it again.
    retry_at: Option<Instant>,
    warned_at: Option<Instant>,
}

impl RedisStore {
    async fn check(&self, key: &str, quota: &Quota) -> Option<Decision> {
        let retry_at = self.health.lock().unwrap_or_else(PoisonError::into_inner).retry_at;
        if retry_at.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        let mut connection = match self.connection() {
            Ok(connection) => connection,
            Err(error) => {
                self.failed(&error.to_string());
                return None;
            }
        };
        let mut invocation = self.script.prepare_invoke();
        invocation.key(format!("{}{key}", self.prefix)).arg(micros(quota.emission_interval()).max(1)).arg(quota.burst);
        let answer =
            tokio::time::timeout(self.timeout, invocation.invoke_async::<(i64, i64, i64, i64)>(&mut connection));
        match answer.await {
            Ok(Ok((allowed, remaining, retry_after, reset))) => {
                self.succeeded();
                let duration = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
                Some(Decision {
                    allowed: allowed == 1,
                    limit: quota.burst,
                    remaining: u32::try_from(remaining).unwrap_or(0),
                    retry_after: duration(retry_after),
                    reset: duration(reset),
                })
            }
            Ok(Err(error)) => {
                self.failed(&error.to_string());
                None
            }
            Err(_) => {
                self.failed(&format!("no answer within {} ms", self.timeout.as_millis()));
                None
            }
        }
    }

    fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        let mut slot = self.connection.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10));
        let connection = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    fn failed(&self, error: &str) {
        *self.connection.lock().unwrap_or_else(PoisonError::into_inner) = None;
        let now = Instant::now();
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        health.retry_at = Some(now + REDIS_RETRY_AFTER);
        let warn = health.up != Some(false) || health.warned_at.is_none_or(|at| now >= at + WARN_EVERY);
        health.up = Some(false);
        metrics::gauge!("mercato_ratelimit_redis_up").set(0.0);
        if warn {
            health.warned_at = Some(now);
            tracing::warn!(%error, "Redis for rate limits is unavailable; limiting with this replica's memory until it answers");
        }
    }

    fn succeeded(&self) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if health.up != Some(true) {
            if health.up == Some(false) {
                tracing::info!("Redis for rate limits answers again; budgets are shared again");
            }
            health.up = Some(true);
            health.retry_at = None;
            metrics::gauge!("mercato_ratelimit_redis_up").set(1.0);
        }
    }
}

/// The client's IP: the TCP `peer`, unless the peer is a trusted proxy; then the right-most
/// `X-Forwarded-For` entry that is not a trusted proxy (or the left-most entry when all are trusted; an
/// entry that is not an IP stops the walk at the hop before it).
pub fn client_ip(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let mut client = peer?.ip().to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(client) {
        return Some(client);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.into_iter().rev() {
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

/// An `X-Forwarded-For` entry: an IP, possibly with a port (`1.2.3.4:80`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip())).map(|ip| ip.to_canonical())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    fn quota(count: u32, secs: u64, burst: u32) -> Quota {
        Quota::new(count, Duration::from_secs(secs), burst)
    }

    #[test]
    fn a_full_bucket_allows_the_burst_then_refuses() {
        let store = MemoryStore::new();
        let q = quota(1, 1, 3);
        let t0 = 1000 * SEC;
        let remaining: Vec<u32> = (0..3).map(|_| store.check("k", &q, t0)).map(|d| d.remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = store.check("k", &q, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        assert_eq!(refused.reset, Duration::from_secs(3));
        // A refusal costs nothing: the bucket is unchanged.
        assert_eq!(store.check("k", &q, t0).retry_after, Duration::from_secs(1));
        // Other keys have their own bucket.
        assert!(store.check("other", &q, t0).allowed);
    }

    #[test]
    fn the_steady_rate_is_the_emission_interval() {
        let store = MemoryStore::new();
        let q = quota(10, 1, 1); // one request every 100 ms, no burst beyond one
        let mut now = 5 * SEC;
        assert!(store.check("k", &q, now).allowed);
        assert!(!store.check("k", &q, now + 99_999).allowed);
        for _ in 0..50 {
            now += 100_000;
            let d = store.check("k", &q, now);
            assert!(d.allowed && d.remaining == 0, "{d:?}");
        }
        let early = store.check("k", &q, now + 40_000);
        assert!(!early.allowed);
        assert_eq!(early.retry_after, Duration::from_millis(60));
    }

    #[test]
    fn the_budget_refills_over_time() {
        let store = MemoryStore::new();
        let q = quota(5, 60, 5); // the login default: 5 a minute, bursts of 5
        let t0 = 10 * SEC;
        for _ in 0..5 {
            assert!(store.check("k", &q, t0).allowed);
        }
        let refused = store.check("k", &q, t0 + 6 * SEC);
        assert_eq!((refused.allowed, refused.retry_after), (false, Duration::from_secs(6)));
        assert_eq!(refused.reset, Duration::from_secs(54));
        let again = store.check("k", &q, t0 + 12 * SEC);
        assert!(again.allowed);
        assert_eq!(again.remaining, 0);
        // Quiet for a minute: the whole burst is back.
        let rested = store.check("k", &q, t0 + 72 * SEC);
        assert_eq!((rested.allowed, rested.remaining), (true, 4));
        assert_eq!(rested.reset, Duration::from_secs(12));
    }

    #[test]
    fn headers_round_up_and_retry_after_only_on_refusal() {
        let q = quota(1, 1, 2);
        let (allowed, tat) = gcra(None, 0, &q);
        let names: Vec<_> = allowed.headers().iter().map(|(n, v)| format!("{n}={}", v.to_str().unwrap())).collect();
        assert_eq!(names, ["ratelimit-limit=2", "ratelimit-remaining=1", "ratelimit-reset=1"]);
        let (_, tat) = gcra(tat, 300_000, &q);
        let (refused, none) = gcra(tat, 400_000, &q);
        assert!(none.is_none());
        let headers: HashMap<_, _> = refused.headers().into_iter().map(|(n, v)| (n.to_string(), v)).collect();
        assert_eq!(headers["retry-after"], "1"); // 0.6 s rounds up
        assert_eq!(headers["ratelimit-reset"], "2"); // 1.6 s rounds up
        assert_eq!(headers["ratelimit-remaining"], "0");
    }

    #[test]
    fn full_buckets_are_forgotten_and_the_store_stays_bounded() {
        let store = MemoryStore::new();
        let q = quota(1, 1, 1);
        for i in 0..(SHARDS * SWEEP_AT * 2) {
            store.check(&format!("ip:{i}"), &q, 0);
        }
        // An hour later every bucket is full; new ones make the old ones go.
        for i in 0..(SHARDS * SWEEP_AT * 2) {
            store.check(&format!("later:{i}"), &q, 3600 * SEC);
        }
        assert!(store.len() <= SHARDS * SWEEP_AT * 3, "{}", store.len());
        // A flood of live buckets never exceeds the cap.
        for i in 0..(SHARDS * MAX_PER_SHARD * 2) {
            store.check(&format!("flood:{i}"), &q, 7200 * SEC);
        }
        assert!(store.len() <= SHARDS * MAX_PER_SHARD, "{}", store.len());
    }

    #[tokio::test]
    async fn routes_with_a_budget_have_their_own_bucket() {
        let mut limits = RateLimits { default: quota(1, 60, 2), ..RateLimits::default() };
        limits.routes.insert("POST /v1/auth/login".to_owned(), quota(1, 60, 1));
        let limiter = RateLimiter::in_memory(limits);
        let login = |id| limiter.check("POST /v1/auth/login", id);
        assert!(login("ip:1").await.is_some_and(|d| d.allowed));
        assert!(login("ip:1").await.is_some_and(|d| !d.allowed));
        assert!(login("ip:2").await.is_some_and(|d| d.allowed));
        // Other routes share the default bucket, untouched by logins.
        assert!(limiter.check("GET /v1/products", "ip:1").await.is_some_and(|d| d.allowed && d.remaining == 1));
        assert!(limiter.check("GET /v1/cart", "ip:1").await.is_some_and(|d| d.allowed && d.remaining == 0));
        assert!(limiter.check("GET /v1/cart", "ip:1").await.is_some_and(|d| !d.allowed));

        let off = RateLimiter::in_memory(RateLimits { enabled: false, ..RateLimits::default() });
        assert!(off.check("POST /v1/auth/login", "ip:1").await.is_none());
    }

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_says_otherwise() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 203.0.113.9"));
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.7"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Nobody trusted: the header is ignored.
        assert_eq!(client_ip(Some(peer), &headers, &[]), Some(ip("10.0.0.5")));
        // The proxies are trusted: the right-most untrusted hop; the spoofed left-most entry is ignored.
        let trusted = ["10.0.0.0/8".parse::<IpNet>().unwrap()];
        assert_eq!(client_ip(Some(peer), &headers, &trusted), Some(ip("203.0.113.9")));
        // A direct client whose peer is not trusted cannot claim another address.
        let direct: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        assert_eq!(client_ip(Some(direct), &headers, &trusted), Some(ip("198.51.100.1")));
        // Garbage stops the walk at the last hop that was believable.
        let mut bad = HeaderMap::new();
        bad.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, not-an-ip, 10.0.0.8"));
        assert_eq!(client_ip(Some(peer), &bad, &trusted), Some(ip("10.0.0.8")));
        // Ports and IPv4-mapped peers.
        let mut ported = HeaderMap::new();
        ported.insert("x-forwarded-for", HeaderValue::from_static("[2001:db8::1]:443"));
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:1".parse().unwrap();
        assert_eq!(client_ip(Some(mapped), &ported, &trusted), Some(ip("2001:db8::1")));
        assert_eq!(client_ip(None, &headers, &trusted), None);
    }
}
