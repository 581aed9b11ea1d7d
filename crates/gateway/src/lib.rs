//! The HTTP/JSON edge of Mercato.
//!
//! Every route comes from a `google.api.http` annotation in `proto/` ([`routes`]); a request is matched
//! against the route table, checked at the edge against the method's access rule (token verified against
//! the auth service's keys), turned into the gRPC request message ([`transcode`]), sent to the owning service
//! with the caller's token and request id, and its answer turned back into JSON. Errors of every kind share
//! one JSON body ([`error`]). Before any of that, the caller's rate limit is checked ([`ratelimit`]).
//!
//! One service, [`Edge`], observes every request and sends those of a transcoded route straight to their call;
//! the rest (probes, documents, unknown paths) go to an axum router ([`edge`]). It answers HTTP/1.1 and HTTP/2: cleartext HTTP/2 with prior knowledge (h2c) on a plain
//! listener, HTTP/2 negotiated by ALPN when the gateway terminates TLS itself ([`tls`]). `GET /docs` is a page
//! for browsing the OpenAPI document, served with all its assets by the gateway ([`docs`]). On its own (`mercato
//! serve gateway`) it runs on worker threads of its own, each serving its connections start to end ([`workers`]).
//!
//! Every request runs in a server span named `<METHOD> <route template>` that continues the caller's trace
//! when it sends a W3C `traceparent`; the answer carries the span's own `traceparent`, which a user can quote
//! in a support ticket, and calls to services carry it on in their metadata.

pub mod api_keys;
pub mod docs;
pub mod edge;
pub mod error;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod template;
pub mod tls;
pub mod transcode;
pub mod upstream;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::mercato::options::v1::AccessRule;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use platform::Settings;
use platform::auth::{Claims, TokenVerifier};
use platform::config::IpNet;
use platform::telemetry::REQUEST_ID_HEADER;
use platform::trace_context::{TRACEPARENT, TRACESTATE};
use prost_reflect::DescriptorPool;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::api_keys::ApiKeyResolver;
pub use crate::edge::{Edge, MakeEdge};
use crate::error::ApiError;
use crate::ratelimit::{Decision, RateLimiter};
use crate::routes::{Lookup, RouteError, RouteTable};
use crate::upstream::Upstreams;

/// The content type of server-streaming answers: one JSON object per line.
pub const NDJSON: &str = "application/x-ndjson";

/// Largest accepted request body, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Starting the gateway failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The contracts' routes are unusable.
    #[error(transparent)]
    Routes(#[from] RouteError),
    /// The contracts could not be read.
    #[error(transparent)]
    Descriptors(#[from] platform::descriptors::DescriptorError),
    /// An upstream URL is unusable.
    #[error("upstream: {0}")]
    Upstream(#[from] platform::grpc::ChannelError),
    /// The rate-limit settings are unusable.
    #[error("rate limits: {0}")]
    RateLimits(String),
    /// The TLS certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// Serving failed.
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// What every request handler shares.
#[derive(Clone)]
pub struct Gateway {
    table: Arc<RouteTable>,
    /// Shared, not cloned per request: a clone of the map of channels cost a tenth of the gateway's CPU.
    upstreams: Arc<Upstreams>,
    verifier: Arc<TokenVerifier>,
    api_keys: Arc<ApiKeyResolver>,
    /// The upstreams `/readyz` waits for; `None` means every upstream with a route.
    ready_upstreams: Option<Arc<Vec<String>>>,
    /// The OpenAPI document, rendered once at start.
    openapi: Arc<bytes::Bytes>,
    limiter: Arc<RateLimiter>,
    trusted_proxies: Arc<Vec<IpNet>>,
    /// TLS termination, when the settings name a certificate and key.
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

/// The route key of `/openapi.json` for rate limits (probes are never limited).
pub const OPENAPI_ROUTE: &str = "GET /openapi.json";

/// The route a request matched and the values its path bound, found once by [`Edge`] (which names the span
/// and the metrics after it) and handed to the call in the request's extensions.
#[derive(Debug, Clone)]
struct MatchedRoute(Arc<routes::Route>, Vec<(String, String)>);

impl Gateway {
    /// A gateway whose upstreams and key source are the services the settings point at.
    pub fn new(settings: &Settings) -> Result<Self, GatewayError> {
        let table = RouteTable::from_contracts()?;
        let upstreams = Upstreams::connect(&table.upstreams(), settings)?;
        Self::with_routes(table, upstreams, settings)
    }

    /// A gateway for the services of `pool` (contracts annotated like those in `proto/`, whose options it must
    /// include), calling them over `upstreams`. Tokens and API keys are still resolved by the auth service the
    /// settings point at.
    pub fn from_pool(pool: &DescriptorPool, upstreams: Upstreams, settings: &Settings) -> Result<Self, GatewayError> {
        Self::with_routes(RouteTable::from_pool(pool)?, upstreams, settings)
    }

    fn with_routes(table: RouteTable, upstreams: Upstreams, settings: &Settings) -> Result<Self, GatewayError> {
        let auth = platform::grpc::service_channel(settings, "auth")?;
        let mut known: Vec<String> = table.routes().iter().map(|r| r.label.clone()).collect();
        known.push(OPENAPI_ROUTE.to_owned());
        known.push(docs::DOCS_ROUTE.to_owned());
        // A built-in budget (login, register) for a route other contracts lack is no operator's typo.
        let built_in = |key: &String, quota: &platform::config::Quota| {
            platform::config::DEFAULT_ROUTE_QUOTAS.iter().any(|(route, default)| route == key && default == quota)
        };
        let unknown: Vec<&String> = settings
            .rate_limits
            .routes
            .iter()
            .filter(|(key, quota)| !known.contains(key) && !built_in(key, quota))
            .map(|(key, _)| key)
            .collect();
        if !unknown.is_empty() {
            return Err(GatewayError::RateLimits(format!(
                "MERCATO_RATE_LIMITS names no route of the gateway: {unknown:?}; route keys are \"<METHOD> <template>\" as in /openapi.json"
            )));
        }
        let limiter = RateLimiter::from_settings(settings)
            .map_err(|e| GatewayError::RateLimits(format!("MERCATO_REDIS_URL is unusable: {e}")))?;
        // Read now: a bad certificate or key stops the start, before anything listens.
        let tls = settings.gateway_tls.as_ref().map(tls::server_config).transpose()?;
        Ok(Self {
            tls,
            limiter: Arc::new(limiter),
            trusted_proxies: Arc::new(settings.trusted_proxies.clone()),
            openapi: Arc::new(openapi::render(&table)),
            table: Arc::new(table),
            upstreams: Arc::new(upstreams),
            verifier: Arc::new(TokenVerifier::from_auth_service(auth.clone())),
            api_keys: Arc::new(ApiKeyResolver::new(auth)),
            ready_upstreams: None,
        })
    }

    /// A gateway sharing this one's routes, OpenAPI document and rate limiter, with connections of its own to
    /// the services the settings point at and to auth (and so its own caches of tokens and API keys): one
    /// worker's gateway (see [`workers`]).
    pub fn with_own_connections(&self, settings: &Settings) -> Result<Self, GatewayError> {
        let auth = platform::grpc::service_channel(settings, "auth")?;
        Ok(Self {
            upstreams: Arc::new(Upstreams::connect(&self.table.upstreams(), settings)?),
            verifier: Arc::new(TokenVerifier::from_auth_service(auth.clone())),
            api_keys: Arc::new(ApiKeyResolver::new(auth)),
            ..self.clone()
        })
    }

    /// Makes `/readyz` wait only for these upstreams (those `mercato up` runs); routes to others answer 503
    /// until they exist.
    pub fn ready_when_serving(mut self, upstreams: &[&str]) -> Self {
        self.ready_upstreams = Some(Arc::new(upstreams.iter().map(|u| (*u).to_owned()).collect()));
        self
    }

    /// Limits with `limiter` instead of the one the settings describe (tests: another Redis key prefix).
    pub fn with_rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.limiter = Arc::new(limiter);
        self
    }

    /// The gateway's HTTP service (see [`edge`]): serve it with [`Edge::into_make_service`] so that rate limits
    /// see each client's address.
    pub fn service(self, settings: &Settings) -> Edge {
        let cors = cors_layer(settings);
        let router = self.clone().router(cors.clone());
        Edge::new(self, router, cors)
    }

    /// The axum router of what is not a transcoded route: probes, the OpenAPI document, `/docs`, and the 404
    /// or 405 of a path no route takes.
    fn router(self, cors: Option<tower_http::cors::CorsLayer>) -> Router {
        let mut routes: Router<Gateway> = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/openapi.json", get(openapi_limited));
        for asset in docs::ASSETS {
            routes = routes.route(
                asset.path,
                get(move |State(gateway): State<Gateway>, request: Request| docs_limited(gateway, asset, request)),
            );
        }
        let router = routes
            .fallback(|State(gateway): State<Gateway>, request: Request| async move { no_route(&gateway, &request) })
            .with_state(self)
            .layer(edge::compression());
        match cors {
            Some(cors) => router.layer(cors),
            None => router,
        }
    }

    /// The name (`<METHOD> <template>`) of the route `path` matches for `method` (probes, `/openapi.json` and
    /// `/docs` included), for span names and metrics, and the transcoded route it matched, if any.
    fn route_name(&self, method: &http::Method, path: &str) -> (Option<String>, Option<MatchedRoute>) {
        if method == http::Method::GET
            && (matches!(path, "/healthz" | "/readyz" | "/openapi.json") || docs::asset(path).is_some())
        {
            return (Some(format!("GET {path}")), None);
        }
        match self.table.lookup(method, path) {
            Lookup::Found(route, bound) => (Some(route.label.clone()), Some(MatchedRoute(route.clone(), bound))),
            _ => (None, None),
        }
    }
}

/// The CORS layer of the configured origins (none when no origin is configured).
fn cors_layer(settings: &Settings) -> Option<tower_http::cors::CorsLayer> {
    if settings.cors_origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> =
        settings.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods(tower_http::cors::Any)
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("idempotency-key"),
                header::HeaderName::from_static(api_keys::HEADER),
                header::HeaderName::from_static(REQUEST_ID_HEADER),
                header::HeaderName::from_static(TRACEPARENT),
                header::HeaderName::from_static(TRACESTATE),
            ])
            .expose_headers([
                header::HeaderName::from_static(REQUEST_ID_HEADER),
                header::HeaderName::from_static(TRACEPARENT),
            ]),
    )
}

/// Serves an already built gateway on `listener` (a `TcpListener`, or a worker's share of one) until `shutdown`
/// is cancelled: HTTP/1.1 and HTTP/2, over TLS when the gateway was built with a certificate.
pub async fn serve_gateway<L>(
    listener: L,
    gateway: Gateway,
    settings: &Settings,
    shutdown: CancellationToken,
) -> Result<(), GatewayError>
where
    L: axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr>,
{
    let tls = gateway.tls.clone();
    let app = gateway.service(settings).into_make_service();
    match tls {
        None => {
            // Small writes (HTTP/2 frames, streamed lines) go out at once rather than wait for a delayed ACK.
            let listener = listener.tap_io(tls::set_tcp_nodelay);
            axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?
        }
        Some(config) => {
            let listener = tls::TlsListener::new(listener, config)?.tap_io(tls::set_nodelay);
            axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?
        }
    }
    Ok(())
}

/// Ready when every upstream service answers its health check with SERVING.
async fn readyz(State(gateway): State<Gateway>) -> Response {
    let mut not_ready = Vec::new();
    let awaited = |name: &String| gateway.ready_upstreams.as_ref().is_none_or(|list| list.contains(name));
    for (name, channel) in gateway.upstreams.iter().filter(|(name, _)| awaited(name)) {
        let mut client = HealthClient::new(channel.clone());
        let check = client.check(HealthCheckRequest { service: String::new() });
        let serving = matches!(
            tokio::time::timeout(Duration::from_secs(2), check).await,
            Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
        );
        if !serving {
            not_ready.push(name.clone());
        }
    }
    not_ready.sort();
    if not_ready.is_empty() {
        (StatusCode::OK, axum::Json(serde_json::json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "not ready", "waitingFor": not_ready})),
        )
            .into_response()
    }
}

/// Answers a request for a transcoded route, matched already by [`Edge`], which put the match in the request's
/// extensions.
async fn serve_route(gateway: &Gateway, mut request: Request) -> Response {
    let Some(MatchedRoute(route, bound)) = request.extensions_mut().remove::<MatchedRoute>() else {
        return no_route(gateway, &request);
    };
    // Before any service is called: refused floods cost no upstream work.
    let (bearer, decision) = admit(gateway, &route.label, request.headers(), peer(&request)).await;
    let decision = match decision {
        Ok(decision) => decision,
        Err(refused) => return refused,
    };
    let mut response = match call(gateway, &route, &bound, request, bearer).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    add_rate_limit_headers(&mut response, decision.as_ref());
    response
}

/// The 405 (with `Allow`) of a path that routes take only with other methods, else the 404 of a path no route
/// takes.
fn no_route(gateway: &Gateway, request: &Request) -> Response {
    match gateway.table.lookup(request.method(), request.uri().path()) {
        Lookup::WrongMethod(allowed) => {
            let allow = allowed.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", ");
            ApiError::http(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unimplemented,
                format!("{} is not allowed here", request.method()),
            )
            .with_header(header::ALLOW, &allow)
            .into_response()
        }
        // A route matching here would have been matched by `Edge` already.
        Lookup::Found(..) | Lookup::NotFound => {
            let path = request.uri().path();
            ApiError::http(StatusCode::NOT_FOUND, Code::NotFound, format!("no route for {path}")).into_response()
        }
    }
}

/// `/openapi.json`, under the default budget.
async fn openapi_limited(State(gateway): State<Gateway>, request: Request) -> Response {
    let decision = match admit(&gateway, OPENAPI_ROUTE, request.headers(), peer(&request)).await.1 {
        Ok(decision) => decision,
        Err(refused) => return refused,
    };
    let mut response = openapi::handler(State(gateway)).await;
    add_rate_limit_headers(&mut response, decision.as_ref());
    response
}

/// The page at `/docs` and its assets, under the budget of [`docs::DOCS_ROUTE`].
async fn docs_limited(gateway: Gateway, asset: &'static docs::Asset, request: Request) -> Response {
    match admit(&gateway, docs::DOCS_ROUTE, request.headers(), peer(&request)).await.1 {
        Err(refused) => refused,
        Ok(decision) => {
            let mut response = asset.response();
            add_rate_limit_headers(&mut response, decision.as_ref());
            response
        }
    }
}

/// Verifies the request's bearer token, once, and charges its caller's budget for `route`. Returns the
/// verification (`None` without an `Authorization` header; the edge check reads its scopes) and the decision
/// (`None` when limits are off) or the 429 answer.
/// (Headers and peer rather than the request, whose body is not `Sync`: the future stays `Send`.)
async fn admit(
    gateway: &Gateway,
    route: &str,
    headers: &http::HeaderMap,
    peer: Option<SocketAddr>,
) -> (Option<Result<Claims, tonic::Status>>, Result<Option<Decision>, Response>) {
    let bearer = verify_bearer(gateway, headers).await;
    let caller = bearer.as_ref().and_then(|verified| verified.as_ref().ok());
    let decision = rate_limit(gateway, route, headers, peer, caller).await;
    (bearer, decision)
}

/// Charges the caller's budget for `route`: the decision (`None` when limits are off), or the 429 answer.
/// `caller` is the request's verified bearer token, if it sent a valid one.
async fn rate_limit(
    gateway: &Gateway,
    route: &str,
    headers: &http::HeaderMap,
    peer: Option<SocketAddr>,
    caller: Option<&Claims>,
) -> Result<Option<Decision>, Response> {
    let identity = rate_limit_identity(gateway, headers, peer, caller).await;
    let Some(decision) = gateway.limiter.check(route, &identity).await else { return Ok(None) };
    if decision.allowed {
        return Ok(Some(decision));
    }
    metrics::counter!("mercato_ratelimit_rejected_total", "route" => route.to_owned()).increment(1);
    let retry = decision.retry_after.as_secs_f64();
    let mut error = ApiError::http(
        StatusCode::TOO_MANY_REQUESTS,
        Code::ResourceExhausted,
        format!("too many requests; retry in {:.0} s", retry.ceil().max(1.0)),
    );
    error.details.push(serde_json::json!({
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": format!("{:.3}s", retry),
    }));
    let mut response = error.into_response();
    add_rate_limit_headers(&mut response, Some(&decision));
    Err(response)
}

/// The TCP peer, which [`Edge`] puts in every request it knows the peer of.
fn peer(request: &Request) -> Option<SocketAddr> {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

fn add_rate_limit_headers(response: &mut Response, decision: Option<&Decision>) {
    for (name, value) in decision.map(Decision::headers).unwrap_or_default() {
        response.headers_mut().insert(name, value);
    }
}

/// Whom a request is charged to: a known API key (hashed), else a valid bearer token's subject, else the
/// client IP.
async fn rate_limit_identity(
    gateway: &Gateway,
    headers: &http::HeaderMap,
    peer: Option<SocketAddr>,
    caller: Option<&Claims>,
) -> String {
    use sha2::{Digest, Sha256};
    if let Some(key) = headers.get(api_keys::HEADER).and_then(|v| v.to_str().ok())
        && gateway.api_keys.is_known(key).await
    {
        let digest = Sha256::digest(key.as_bytes());
        return format!("key:{}", digest.iter().take(16).map(|b| format!("{b:02x}")).collect::<String>());
    }
    if let Some(claims) = caller {
        return format!("user:{}", claims.sub);
    }
    match ratelimit::client_ip(peer, headers, &gateway.trusted_proxies) {
        Some(ip) => format!("ip:{ip}"),
        None => "ip:unknown".to_owned(),
    }
}

/// Calls `route`'s method for `request`, whose `Authorization` header (if any) verified as `bearer`.
async fn call(
    gateway: &Gateway,
    route: &routes::Route,
    bound: &[(String, String)],
    request: Request,
    bearer: Option<Result<Claims, tonic::Status>>,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let authorization = caller_authorization(gateway, &parts.headers).await?;
    let authorization = authorization.as_deref();
    let refused = |status: tonic::Status| ApiError::from_status(&status);
    let token_refused = |status: tonic::Status| ApiError::from_status(&status).for_refused_token();
    let claims = match (bearer, authorization) {
        (Some(verified), _) => Some(verified.map_err(token_refused)?),
        // No Authorization header but an authorization: the token an API key exchanged for.
        (None, Some(exchanged)) => {
            Some(verify_authorization(&gateway.verifier, exchanged).await.map_err(token_refused)?)
        }
        (None, None) => None,
    };
    // The edge check: refused callers never reach a service, and the service checks again.
    authorize_at_edge(&route.access, claims.as_ref()).map_err(refused)?;

    let (body, form) = read_body(body, &parts.headers, route.accepts_form).await?;
    let body = if form { transcode::Body::Form(&body) } else { transcode::Body::Json(&body) };
    let message = transcode::build_request(route, bound, parts.uri.query(), body)?;

    let mut grpc_request = tonic::Request::new(transcode::encode(&message));
    // The service learns the deadline (grpc-timeout); the gateway enforces it too, whatever the service does.
    grpc_request.metadata_mut().insert("grpc-timeout", route.grpc_timeout.clone());
    let deadline = tokio::time::Instant::now() + route.timeout;
    let metadata = grpc_request.metadata_mut();
    if let Some(value) = authorization.and_then(|v| v.parse().ok()) {
        metadata.insert("authorization", value);
    }
    if let Some(value) = parts.headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
    {
        metadata.insert(REQUEST_ID_HEADER, value);
    }
    if let Some(value) = parts.headers.get("idempotency-key").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
    {
        metadata.insert("idempotency-key", value);
    }
    if route.grpc.is_server_streaming() {
        return stream_lines(gateway, route, &route.grpc_path, grpc_request, deadline).await;
    }
    let bytes =
        tokio::time::timeout_at(deadline, gateway.upstreams.unary(&route.upstream, &route.grpc_path, grpc_request))
            .await
            .map_err(|_| deadline_exceeded(route))?
            .map_err(|status| {
                let error = upstream_error(&status, route, deadline);
                // A service refusing the token the edge let through (its session ended meanwhile, say): a plain
                // UNAUTHENTICATED, without the reason a refused login or refresh token carries.
                let token_refused = authorization.is_some() && status.details().is_empty();
                if token_refused { error.for_refused_token() } else { error }
            })?;
    if route.raw_body {
        return raw_body(route, &bytes, parts.headers.get(header::IF_NONE_MATCH));
    }
    let json = transcode::render_response(route, &bytes)?;
    let mut response = Response::new(Body::from(json));
    *response.status_mut() = route.success;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Answers with the bytes of a `google.api.HttpBody` as they are, under its Content-Type (or
/// application/octet-stream when it names none usable), with the headers its `HttpBodyHeaders` extension asks
/// for. `nosniff`: browsers take the type as given. A request whose `If-None-Match` names the ETag gets 304
/// without the bytes.
fn raw_body(route: &routes::Route, bytes: &[u8], if_none_match: Option<&HeaderValue>) -> Result<Response, ApiError> {
    let body = <api::google::api::HttpBody as prost::Message>::decode(bytes)
        .map_err(|_| ApiError::new(tonic::Code::Internal, "internal error"))?;
    let content_type = HeaderValue::from_str(&body.content_type)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let asked = platform::media::http_body_headers(&body);
    let etag = HeaderValue::from_str(&asked.etag).ok().filter(|v| !v.is_empty());
    let not_modified = etag.as_ref().is_some_and(|etag| if_none_match.is_some_and(|v| etag_matches(v, etag)));
    let mut response = if not_modified {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = http::StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Body::from(body.data));
        *response.status_mut() = route.success;
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    for (name, value) in [
        (header::CACHE_CONTROL, asked.cache_control.as_str()),
        (header::CONTENT_DISPOSITION, asked.content_disposition.as_str()),
    ] {
        if let Some(value) = HeaderValue::from_str(value).ok().filter(|v| !v.is_empty()) {
            headers.insert(name, value);
        }
    }
    if let Some(etag) = etag {
        headers.insert(header::ETAG, etag);
    }
    Ok(response)
}

/// Whether an `If-None-Match` header names `etag` (or is `*`): a comma-separated list of entity tags, compared
/// weakly as RFC 9110 says for this header (`W/"x"` matches `"x"`).
fn etag_matches(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let (Ok(list), Ok(etag)) = (if_none_match.to_str(), etag.to_str()) else { return false };
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    list.split(',').any(|tag| tag.trim() == "*" || opaque(tag) == opaque(etag))
}

/// Answers a server-streaming call as newline-delimited JSON, each message flushed as it arrives. The status
/// line is sent with the first byte, so an error mid-stream ends the stream with a last line holding the
/// standard error body.
async fn stream_lines(
    gateway: &Gateway,
    route: &routes::Route,
    method_path: &str,
    request: tonic::Request<bytes::Bytes>,
    deadline: tokio::time::Instant,
) -> Result<Response, ApiError> {
    let messages =
        tokio::time::timeout_at(deadline, gateway.upstreams.server_streaming(&route.upstream, method_path, request))
            .await
            .map_err(|_| deadline_exceeded(route))?
            .map_err(|status| upstream_error(&status, route, deadline))?;
    let success = route.success;
    let route = Arc::new(route.clone());
    let lines = futures::stream::unfold(Some(messages), move |messages| {
        let route = Arc::clone(&route);
        async move {
            let mut messages = messages?;
            let (mut line, rest) = match tokio::time::timeout_at(deadline, messages.message()).await {
                Ok(Ok(Some(bytes))) => match transcode::render_response(&route, &bytes) {
                    Ok(json) => (json, Some(messages)),
                    Err(error) => (error.body().to_string().into_bytes(), None),
                },
                Ok(Ok(None)) => return None,
                Ok(Err(status)) => (upstream_error(&status, &route, deadline).body().to_string().into_bytes(), None),
                Err(_) => (deadline_exceeded(&route).body().to_string().into_bytes(), None),
            };
            line.push(b'\n');
            Some((Ok::<_, std::convert::Infallible>(bytes::Bytes::from(line)), rest))
        }
    });
    let mut response = Response::new(Body::from_stream(lines));
    *response.status_mut() = success;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(response)
}

/// The 504 of a call that outlived its route's timeout.
fn deadline_exceeded(route: &routes::Route) -> ApiError {
    ApiError::new(Code::DeadlineExceeded, format!("the service did not answer within {} ms", route.timeout.as_millis()))
}

/// The HTTP form of a failed call. A service that enforces the deadline itself cancels the call (tonic
/// answers CANCELLED): past the deadline, that is the 504 of the deadline, not a client's cancellation.
fn upstream_error(status: &tonic::Status, route: &routes::Route, deadline: tokio::time::Instant) -> ApiError {
    if status.code() == Code::Cancelled && tokio::time::Instant::now() >= deadline {
        return deadline_exceeded(route);
    }
    let path_fields: Vec<&str> = route.template.field_paths().collect();
    ApiError::from_status(status).in_client_names(&route.grpc.input(), &path_fields)
}

/// The claims of an `Authorization` value: 401 unless it is `Bearer <token>` with a valid token.
async fn verify_authorization(verifier: &TokenVerifier, value: &str) -> Result<Claims, tonic::Status> {
    let token = platform::auth::bearer_token(value)
        .ok_or_else(|| tonic::Status::unauthenticated("authorization must be `Bearer <token>`"))?;
    Ok(verifier.verify(token).await?)
}

/// The request's `Authorization` header verified (`None` when it sends none).
async fn verify_bearer(gateway: &Gateway, headers: &http::HeaderMap) -> Option<Result<Claims, tonic::Status>> {
    let value = headers.get(header::AUTHORIZATION)?;
    Some(match value.to_str() {
        Ok(value) => verify_authorization(&gateway.verifier, value).await,
        Err(_) => Err(tonic::Status::unauthenticated("authorization must be `Bearer <token>`")),
    })
}

/// The edge check of a route's access rule: 401 without a valid identity, 403 without a scope it needs. The
/// rule is the route's own (from the gateway's contracts), and services check it again on their side.
fn authorize_at_edge(rule: &AccessRule, claims: Option<&Claims>) -> Result<(), tonic::Status> {
    match claims {
        None if rule.allow_anonymous => Ok(()),
        None => Err(tonic::Status::unauthenticated("this method needs an access token")),
        Some(claims) => match rule.scopes.iter().find(|scope| !claims.has_scope(scope)) {
            Some(missing) => Err(tonic::Status::permission_denied(format!("this method needs the scope {missing}"))),
            None => Ok(()),
        },
    }
}

/// The caller's `authorization` value: the header as sent, or the bearer token an `X-API-Key` exchanges for.
async fn caller_authorization(gateway: &Gateway, headers: &http::HeaderMap) -> Result<Option<String>, ApiError> {
    let bearer = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or_default().to_owned());
    let Some(key) = headers.get(api_keys::HEADER) else { return Ok(bearer) };
    if bearer.is_some() {
        return Err(ApiError::bad_field("X-API-Key", "send either an API key or an Authorization header, not both"));
    }
    let key = key.to_str().map_err(|_| ApiError::bad_field("X-API-Key", "is not a valid header value"))?;
    let token = gateway.api_keys.token_for(key).await.map_err(|status| ApiError::from_status(&status))?;
    Ok(Some(format!("Bearer {token}")))
}

/// The request's body, and whether it is a form (`accepts_form`: the route takes one besides JSON).
async fn read_body(
    body: Body,
    headers: &http::HeaderMap,
    accepts_form: bool,
) -> Result<(bytes::Bytes, bool), ApiError> {
    let declared_too_big = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES);
    let too_big = || {
        ApiError::http(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::InvalidArgument,
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    if declared_too_big {
        return Err(too_big());
    }
    let collected = Limited::new(body, MAX_BODY_BYTES).collect().await.map_err(|e| {
        if e.downcast_ref::<LengthLimitError>().is_some() {
            too_big()
        } else {
            ApiError::http(StatusCode::BAD_REQUEST, Code::InvalidArgument, "could not read the request body")
        }
    })?;
    let bytes = collected.to_bytes();
    if bytes.is_empty() {
        return Ok((bytes, false));
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    match media_type {
        json if json.eq_ignore_ascii_case("application/json") => Ok((bytes, false)),
        form if accepts_form && form.eq_ignore_ascii_case(FORM) => Ok((bytes, true)),
        _ => Err(ApiError::http(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidArgument,
            if accepts_form {
                "request bodies must be application/json or application/x-www-form-urlencoded"
            } else {
                "request bodies must be application/json"
            },
        )),
    }
}

/// The media type of an HTML form's body.
const FORM: &str = "application/x-www-form-urlencoded";
