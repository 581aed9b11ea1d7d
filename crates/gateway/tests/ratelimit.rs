//! Rate limits through the gateway's router: a budget shared by two gateways through a real Redis
//! (`MERCATO_TEST_REDIS_URL`; skipped when unset, except under `CI=true`), and local limits when Redis is
//! unreachable. No service runs: allowed calls to a service answer 503, which is fine, since a refused request
//! never reaches one.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use gateway::ratelimit::RateLimiter;
use gateway::{Edge, Gateway};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use platform::Settings;
use serde_json::Value;
use tower::ServiceExt;

/// Budgets small enough to exhaust in a test: 3 requests then one a minute; logins 2 then one a minute.
const LIMITS: &str = "default=1/min:3,POST /v1/auth/login=1/min:2";

fn settings() -> Settings {
    let mut vars = vec![("MERCATO_RATE_LIMITS".to_owned(), LIMITS.to_owned())];
    // Every service is somewhere nothing listens.
    for (service, _) in platform::config::SERVICE_PORTS {
        vars.push((format!("MERCATO_{}_URL", service.to_uppercase()), "http://127.0.0.1:1".to_owned()));
    }
    Settings::from_vars(vars).expect("settings")
}

/// The Redis URL of the tests, or `None` when they are skipped (never under `CI=true`).
fn test_redis_url() -> Option<String> {
    platform::testkit::test_setting("MERCATO_TEST_REDIS_URL", "Redis", "e.g. redis://127.0.0.1:6379")
}

fn router(settings: &Settings, limiter: RateLimiter, client: &str) -> Edge {
    let peer: SocketAddr = client.parse().expect("address");
    Gateway::new(settings).expect("gateway").with_rate_limiter(limiter).service(settings).with_peer(peer)
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    json: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<u64> {
        self.headers.get(name).map(|v| v.to_str().expect("ascii").parse().expect("a number"))
    }
}

async fn send(router: &Edge, method: &str, path: &str) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    let body = if method == "POST" {
        request = request.header("content-type", "application/json");
        Body::from(r#"{"email": "someone@example.com", "password": "guess-1234"}"#)
    } else {
        Body::empty()
    };
    let response = router.clone().oneshot(request.body(body).expect("request")).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    Reply { status: parts.status, headers: parts.headers, json: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

/// A refusal: 429 with the JSON error body, `Retry-After`, and headers consistent with it.
fn assert_refused(reply: &Reply, limit: u64) {
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{reply:?}");
    assert_eq!(reply.json["error"]["code"], 429);
    assert_eq!(reply.json["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(reply.json["error"]["details"][0]["@type"], "type.googleapis.com/google.rpc.RetryInfo");
    let retry_after = reply.header("retry-after").expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "one request a minute: {retry_after}");
    assert_eq!(reply.header("ratelimit-limit"), Some(limit));
    assert_eq!(reply.header("ratelimit-remaining"), Some(0));
    let reset = reply.header("ratelimit-reset").expect("RateLimit-Reset");
    assert!(reset >= retry_after && reset <= limit * 60, "reset {reset}, retry after {retry_after}");
}

/// An allowed request with `remaining` requests left.
fn assert_allowed(reply: &Reply, limit: u64, remaining: u64) {
    assert_ne!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{reply:?}");
    assert_eq!(reply.header("ratelimit-limit"), Some(limit), "{reply:?}");
    assert_eq!(reply.header("ratelimit-remaining"), Some(remaining), "{reply:?}");
    let reset = reply.header("ratelimit-reset").expect("RateLimit-Reset");
    assert!(reset >= 1 && reset <= limit * 60, "{reset}");
    assert!(reply.headers.get("retry-after").is_none());
}

#[tokio::test]
async fn two_gateways_share_one_budget_through_redis() {
    let Some(url) = test_redis_url() else { return };
    let settings = settings();
    let prefix = format!("mercato-test-{}:", uuid::Uuid::now_v7().simple());
    let limiter = || {
        RateLimiter::with_redis(settings.rate_limits.clone(), &url, &prefix)
            .expect("redis url")
            .with_redis_timeout(Duration::from_secs(2))
    };
    let client = "203.0.113.7:40000";
    let (a, b) = (router(&settings, limiter(), client), router(&settings, limiter(), client));

    // The default budget (3) is drawn from alternately; each gateway alone would allow 3.
    for (i, gateway) in [&a, &b, &a].into_iter().enumerate() {
        let reply = send(gateway, "GET", "/openapi.json").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_allowed(&reply, 3, 2 - i as u64);
    }
    assert_refused(&send(&b, "GET", "/openapi.json").await, 3);
    assert_refused(&send(&a, "GET", "/openapi.json").await, 3);
    // Transcoded routes without a budget of their own share the same default bucket.
    assert_refused(&send(&b, "GET", "/v1/products").await, 3);

    // Logins have their own, stricter bucket, checked before auth is asked (auth is down here: 503).
    let first = send(&a, "POST", "/v1/auth/login").await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE, "{first:?}");
    assert_allowed(&first, 2, 1);
    assert_allowed(&send(&b, "POST", "/v1/auth/login").await, 2, 0);
    assert_refused(&send(&a, "POST", "/v1/auth/login").await, 2);
    assert_refused(&send(&b, "POST", "/v1/auth/login").await, 2);

    // Another client has a budget of its own; probes are never limited.
    let other = router(&settings, limiter(), "198.51.100.4:1");
    assert_allowed(&send(&other, "GET", "/openapi.json").await, 3, 2);
    for _ in 0..10 {
        let reply = send(&a, "GET", "/healthz").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.headers.get("ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn an_unreachable_redis_falls_back_to_local_limits() {
    let settings = settings();
    let limiter = RateLimiter::with_redis(settings.rate_limits.clone(), "redis://127.0.0.1:1", "mercato-test:")
        .expect("redis url");
    let gateway = Gateway::new(&settings).expect("gateway").with_rate_limiter(limiter);
    let client = |addr: &str| gateway.clone().service(&settings).with_peer(addr.parse::<SocketAddr>().unwrap());
    let (a, b) = (client("192.0.2.1:1"), client("192.0.2.2:1"));
    for remaining in [2, 1, 0] {
        let reply = send(&a, "GET", "/openapi.json").await;
        assert_eq!(reply.status, StatusCode::OK, "the gateway keeps serving without Redis");
        assert_allowed(&reply, 3, remaining);
    }
    assert_refused(&send(&a, "GET", "/openapi.json").await, 3);
    // Local limits are still per client.
    assert_allowed(&send(&b, "GET", "/openapi.json").await, 3, 2);
}

#[tokio::test]
async fn without_redis_limits_are_in_memory_and_can_be_turned_off() {
    let settings = settings();
    let a = router(&settings, RateLimiter::from_settings(&settings).expect("limiter"), "192.0.2.9:1");
    assert_allowed(&send(&a, "POST", "/v1/auth/login").await, 2, 1);
    assert_allowed(&send(&a, "POST", "/v1/auth/login").await, 2, 0);
    assert_refused(&send(&a, "POST", "/v1/auth/login").await, 2);

    let mut off = settings.rate_limits.clone();
    off.enabled = false;
    let unlimited = router(&settings, RateLimiter::in_memory(off), "192.0.2.9:1");
    for _ in 0..5 {
        let reply = send(&unlimited, "POST", "/v1/auth/login").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(reply.headers.get("ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn rate_limits_must_name_real_routes() {
    let mut vars = vec![("MERCATO_RATE_LIMITS".to_owned(), "POST /v1/auth/logn=1/s".to_owned())];
    vars.push(("MERCATO_AUTH_URL".to_owned(), "http://127.0.0.1:1".to_owned()));
    let settings = Settings::from_vars(vars).expect("syntactically valid");
    let Err(error) = Gateway::new(&settings) else { panic!("a misspelt route must stop the gateway") };
    let text = error.to_string();
    assert!(text.contains("MERCATO_RATE_LIMITS") && text.contains("POST /v1/auth/logn"), "{text}");
}
