//! The gateway's HTTP service, [`Edge`]: every request is observed here (request id, server span, metrics),
//! and a request for a transcoded route goes straight to its call, under CORS and compression. Probes, the
//! OpenAPI document, `/docs` and paths without a route go to the axum router.
//!
//! Why not one axum router for everything: axum routes each request through boxed, cloned service stacks —
//! the router's route, `from_fn`'s `Next`, the handler's service — each allocating and moving the request's
//! large future (bench/gateway.md). The transcoded routes are matched by the gateway's own route table
//! anyway, so here a request costs one boxed future for the edge and one for its call.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use futures::future::BoxFuture;
use http::HeaderValue;
use platform::telemetry::REQUEST_ID_HEADER;
use platform::trace_context;
use tower::util::Either;
use tower::{Layer, Service, ServiceExt};
use tower_http::compression::predicate::{And, DefaultPredicate, NotForContentType, Predicate};
use tower_http::compression::{Compression, CompressionLayer};
use tower_http::cors::{Cors, CorsLayer};
use tracing::Instrument;

use crate::Gateway;

/// `x-request-id`, as a header name made once.
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);

/// A request method as a metrics label: the standard ones without allocating.
fn method_label(method: &http::Method) -> metrics::SharedString {
    use http::Method;
    let standard: &'static str = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => return method.to_string().into(),
    };
    standard.into()
}

/// What the gateway compresses: what tower-http would, except streamed lines (a compressor holds back bytes
/// until it has enough; lines must go out as they come).
type Compressible = And<DefaultPredicate, NotForContentType>;

/// The compression layer of every answer.
pub(crate) fn compression() -> CompressionLayer<Compressible> {
    CompressionLayer::new()
        .gzip(true)
        .br(true)
        .compress_when(DefaultPredicate::new().and(NotForContentType::const_new(crate::NDJSON)))
}

/// A transcoded route's call under compression, and under CORS when origins are configured.
type Transcoded = Either<Cors<Compression<Transcode, Compressible>>, Compression<Transcode, Compressible>>;

/// The gateway as one HTTP service: serve it with [`Edge::into_make_service`] (which gives each connection's
/// requests their peer address), or call it directly in tests (with [`Edge::with_peer`]). Cheap to clone.
#[derive(Clone)]
pub struct Edge {
    /// Shared by every connection's and request's copy: hyper's glue clones the service per request.
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
}

struct Shared {
    gateway: Arc<Gateway>,
    transcoded: Transcoded,
    router: Router,
}

impl Edge {
    pub(crate) fn new(gateway: Gateway, router: Router, cors: Option<CorsLayer>) -> Self {
        let gateway = Arc::new(gateway);
        let calls = compression().layer(Transcode(Arc::clone(&gateway)));
        let transcoded = match cors {
            Some(cors) => Either::Left(cors.layer(calls)),
            None => Either::Right(calls),
        };
        Self { shared: Arc::new(Shared { gateway, transcoded, router }), peer: None }
    }

    /// The same service, telling every request that it came from `peer` (rate limits per client IP).
    pub fn with_peer(mut self, peer: SocketAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// A service that makes each accepted connection's [`Edge`], knowing the connection's peer.
    pub fn into_make_service(self) -> MakeEdge {
        MakeEdge(self)
    }

    /// Request id in and out, the request's server span (for every log line and for the trace; its
    /// `traceparent` goes back to the client), and per-route metrics around the request's answer.
    async fn observe(self, mut request: Request) -> Response {
        let shared = &self.shared;
        // The caller's id when it is usable, else a new one; one header value serves the request and the answer.
        let given = request
            .headers()
            .get(&X_REQUEST_ID)
            .filter(|v| v.to_str().is_ok_and(|id| !id.is_empty() && id.len() <= 128))
            .cloned();
        let request_id_value = match given {
            Some(value) => Some(value),
            None => {
                let mut buffer = uuid::Uuid::encode_buffer();
                let made = HeaderValue::from_str(uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buffer)).ok();
                if let Some(value) = &made {
                    request.headers_mut().insert(X_REQUEST_ID, value.clone());
                }
                made
            }
        };
        let request_id = request_id_value.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default();
        let method = request.method().clone();
        let (route_name, matched) = shared.gateway.route_name(&method, request.uri().path());
        let template = route_name.as_deref().and_then(|name| name.split_once(' ')).map(|(_, template)| template);
        // Without a matching route the name is the method alone: paths would make every name unique.
        let name = route_name.clone().unwrap_or_else(|| method.to_string());
        let span = tracing::info_span!(
            "http",
            %method,
            path = %request.uri().path(),
            request_id = %request_id,
            "otel.name" = %name,
            "otel.kind" = "server",
            "otel.status_code" = tracing::field::Empty,
            "http.request.method" = %method,
            "http.route" = template,
            "url.path" = %request.uri().path(),
            "http.response.status_code" = tracing::field::Empty,
        );
        trace_context::adopt_parent(&span, request.headers());
        let started = Instant::now();
        let answered = match matched {
            Some(matched) => {
                request.extensions_mut().insert(matched);
                let call = shared.transcoded.clone().oneshot(request);
                call.instrument(span.clone()).await.map(|response| response.map(Body::new))
            }
            None => shared.router.clone().oneshot(request).instrument(span.clone()).await,
        };
        let mut response = match answered {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let elapsed = started.elapsed().as_secs_f64();
        // The route that answered (transcoded, a probe, a document); "unmatched" for a path no route has.
        let route = route_name.unwrap_or_else(|| "unmatched".to_owned());
        let status = response.status().as_u16().to_string();
        span.record("http.response.status_code", response.status().as_u16());
        if response.status().is_server_error() {
            span.record("otel.status_code", "error");
        }
        metrics::counter!("http_server_requests_total", "method" => method_label(&method), "route" => route.clone(), "status" => status.clone()).increment(1);
        metrics::histogram!("http_server_request_duration_seconds", "method" => method_label(&method), "route" => route.clone()).record(elapsed);
        span.in_scope(|| tracing::info!(%status, %route, elapsed_ms = elapsed * 1000.0, "request served"));
        if let Some(value) = request_id_value {
            response.headers_mut().insert(X_REQUEST_ID, value);
        }
        trace_context::inject(&span, response.headers_mut());
        response
    }
}

impl Service<Request> for Edge {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every part is always ready: the transcoded call, the router, and the services behind them, whose
        // channels wait inside the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let edge = self.clone();
        Box::pin(async move { Ok(edge.observe(request).await) })
    }
}

/// Makes each accepted connection's [`Edge`] (see [`Edge::into_make_service`]).
#[derive(Clone)]
pub struct MakeEdge(Edge);

impl<L> Service<IncomingStream<'_, L>> for MakeEdge
where
    L: Listener<Addr = SocketAddr>,
{
    type Response = Edge;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Edge, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'_, L>) -> Self::Future {
        std::future::ready(Ok(self.0.clone().with_peer(*stream.remote_addr())))
    }
}

/// The call of a matched transcoded route ([`MatchedRoute`] in the request's extensions, put there by
/// [`Edge`]).
#[derive(Clone)]
pub(crate) struct Transcode(Arc<Gateway>);

impl Service<Request> for Transcode {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let gateway = Arc::clone(&self.0);
        Box::pin(async move { Ok(crate::serve_route(&gateway, request).await) })
    }
}
