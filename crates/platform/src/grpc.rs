//! The gRPC server every service runs: its own routes plus the standard health service and reflection, the
//! access check of [`AuthLayer`], per-RPC metrics and a server span (request id, trace context of the
//! caller), and graceful shutdown. Also the client side: lazily connected channels with timeouts, and
//! [`TracedChannel`], which gives every outgoing call a client span and passes its trace context on.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tracing::Instrument;

use crate::auth::{AuthLayer, TokenVerifier};
use crate::descriptors::{AccessPolicy, DescriptorError};
use crate::metrics::Readiness;
use crate::telemetry::REQUEST_ID_HEADER;
use crate::trace_context;

mod channel;
mod tls;

pub use channel::{Channel, ChannelError};

/// Starting or running a gRPC server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The contracts could not be read.
    #[error(transparent)]
    Descriptors(#[from] DescriptorError),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The files of TLS between services are unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Where a gRPC server listens: a bound TCP listener, the TLS its callers must speak (none: plain HTTP/2, the
/// default and what tests use: `TcpListener` converts into one), and the readiness it reports, if any.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    readiness: Option<Readiness>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("tcp", &self.tcp).field("tls", &self.tls.is_some()).finish()
    }
}

impl Listener {
    /// `tcp`, with the TLS between services of `settings` (mutual TLS when `MERCATO_GRPC_TLS_*` are set: the
    /// files are read and checked now).
    pub fn new(tcp: TcpListener, settings: &crate::Settings) -> Result<Self, ServeError> {
        let tls = settings.grpc_tls.as_ref().map(tls::acceptor).transpose()?;
        Ok(Self { tcp, tls, readiness: None })
    }

    /// Reports the server on `readiness` (the process's `/readyz`): ready while it takes calls, from its start
    /// (after the service's migrations) until its shutdown begins.
    pub fn reporting(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }

    /// Whether callers must speak TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Self { tcp, tls: None, readiness: None }
    }
}

/// A service ready to be served: its gRPC services, under their full names (what health and reflection
/// report), and the work that runs beside them (the outbox relay, an inbox pruner, retry loops), which
/// [`serve`] starts with the server and stops with it.
#[derive(Default)]
pub struct GrpcService {
    routes: Routes,
    names: Vec<&'static str>,
    tasks: Vec<BackgroundTask>,
}

/// What a [`GrpcService`] serves: a generated `…Server` (the service's implementation wrapped by tonic), which
/// knows its proto name.
pub trait GrpcServer:
    tower::Service<
        http::Request<tonic::body::Body>,
        Error = std::convert::Infallible,
        Response: axum::response::IntoResponse,
        Future: Send + 'static,
    > + tonic::server::NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcServer for S where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Error = std::convert::Infallible,
            Response: axum::response::IntoResponse,
            Future: Send + 'static,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A task of a [`GrpcService`], started with the token that tells it to stop.
type BackgroundTask = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

impl GrpcService {
    /// Serves `server` (a generated `…Server`), named as its proto says, e.g. `mercato.catalog.v1.CatalogService`.
    pub fn new(server: impl GrpcServer) -> Self {
        Self::default().with(server)
    }

    /// Serves `server` too, beside those already added.
    pub fn with<S: GrpcServer>(mut self, server: S) -> Self {
        self.routes = self.routes.add_service(server);
        self.names.push(S::NAME);
        self
    }

    /// Runs `task` beside the server: [`serve`] spawns it once the server is set up, with a token cancelled when
    /// `shutdown` is (or when the server fails), and waits for it to end before returning. A task stops at a
    /// point it can resume from; what it left is picked up on the next start.
    pub fn background<F, T>(mut self, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> T + Send + 'static,
        T: Future + Send + 'static,
    {
        self.tasks.push(Box::new(move |stop| {
            Box::pin(async move {
                task(stop).await;
            })
        }));
        self
    }

    /// The full names of the gRPC services served.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

impl std::fmt::Debug for GrpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcService").field("names", &self.names).field("tasks", &self.tasks.len()).finish()
    }
}

/// Serves `service` on `listener` until `shutdown` is cancelled, then lets in-flight calls finish.
pub async fn serve(
    service: GrpcService,
    listener: impl Into<Listener>,
    verifier: Arc<TokenVerifier>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let policy = Arc::new(AccessPolicy::from_contracts()?);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let mut reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    for name in &service.names {
        health_reporter.set_service_status(*name, tonic_health::ServingStatus::Serving).await;
        reflection = reflection.with_service_name(*name);
    }
    let reflection = reflection.build_v1()?;

    let routes = service.routes.add_service(health_service).add_service(reflection);
    let layers = tower::ServiceBuilder::new().layer(ObserveLayer).layer(AuthLayer::new(verifier, policy));
    let Listener { tcp, tls, readiness } = listener.into();
    let incoming = accept_with_nodelay(tcp);
    let stopping = shutdown.clone();
    let signal = async move {
        if let Some(readiness) = &readiness {
            readiness.set(true);
        }
        stopping.cancelled().await;
        // Tell load balancers first, then stop accepting.
        if let Some(readiness) = &readiness {
            readiness.set(false);
        }
        for name in &service.names {
            health_reporter.set_service_status(*name, tonic_health::ServingStatus::NotServing).await;
        }
    };
    let router = Server::builder().layer(layers).add_routes(routes);
    let background = shutdown.child_token();
    let tasks: Vec<_> = service.tasks.into_iter().map(|task| tokio::spawn(task(background.clone()))).collect();
    let served = match tls {
        Some(acceptor) => router.serve_with_incoming_shutdown(tls::handshaken(incoming, acceptor), signal).await,
        None => router.serve_with_incoming_shutdown(incoming, signal).await,
    };
    // Cancelled already when `shutdown` was; not yet if the server failed.
    background.cancel();
    futures::future::join_all(tasks).await;
    Ok(served?)
}

/// The connections `listener` accepts, with TCP_NODELAY set: small writes go out at once. Without it a response
/// written in two pieces can wait for the peer's delayed ACK (Nagle's algorithm), tens of milliseconds per call;
/// tonic sets it only on sockets it accepts itself.
fn accept_with_nodelay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted
            && let Err(error) = stream.set_nodelay(true)
        {
            tracing::warn!(%error, "could not set TCP_NODELAY on a gRPC connection");
        }
        accepted
    })
}

/// A channel to `url` that connects on first use and reconnects as needed.
pub fn channel(url: &str) -> Result<Channel, ChannelError> {
    Channel::new(&[url.to_owned()])
}

/// A channel to `service` as `settings` say: balanced over its URLs (`MERCATO_<SERVICE>_URL`), over mutual TLS
/// when `MERCATO_GRPC_TLS_*` are set (the files are read and checked now). What services and the gateway call
/// each other with.
pub fn service_channel(settings: &crate::Settings, service: &str) -> Result<Channel, ChannelError> {
    let tls = settings.grpc_tls.as_ref().map(tls::client_config).transpose()?;
    Channel::with_tls(&settings.service_url_list(service), tls)
}

/// A client channel whose every call runs in a client span (`<package.Service>/<Method>`, the `rpc.*`
/// attributes) and carries that span's `traceparent` in its metadata, so the callee's server span is its
/// child. Wrap the channel once where a generated client is built: `FooClient::new(TracedChannel::new(ch))`.
#[derive(Debug, Clone)]
pub struct TracedChannel {
    inner: Channel,
}

impl TracedChannel {
    /// Traces the calls made over `channel`.
    pub fn new(channel: Channel) -> Self {
        Self { inner: channel }
    }
}

impl From<Channel> for TracedChannel {
    fn from(channel: Channel) -> Self {
        Self::new(channel)
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for TracedChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::Status;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let path = request.uri().path();
        let (service, method) = split_path(path);
        let span = tracing::info_span!(
            "grpc client",
            // `<service>/<method>`, as the path has it.
            "otel.name" = path.trim_start_matches('/'),
            "otel.kind" = "client",
            "otel.status_code" = tracing::field::Empty,
            "rpc.system" = "grpc",
            "rpc.service" = %service,
            "rpc.method" = %method,
            "rpc.grpc.status_code" = tracing::field::Empty,
        );
        trace_context::inject(&span, request.headers_mut());
        let call = tower::Service::call(&mut self.inner, request);
        let recorder = span.clone();
        Box::pin(
            async move {
                let result = call.await;
                // A unary error is a trailers-only response (status in the headers); a success sends its OK in
                // the trailers, after this point.
                let code = match &result {
                    Ok(response) => status_in_headers(response.headers()).unwrap_or(tonic::Code::Ok),
                    Err(status) => status.code(),
                };
                record_status(&recorder, code, false);
                result
            }
            .instrument(span),
        )
    }
}

/// `/<package.Service>/<Method>` split into its service and method (the whole path as the service when it is
/// not of that shape).
fn split_path(path: &str) -> (&str, &str) {
    path.trim_start_matches('/').split_once('/').unwrap_or((path, ""))
}

/// The gRPC status in response headers (present in a trailers-only response, that is an error).
fn status_in_headers(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok()).map(tonic::Code::from)
}

/// Records `code` on a gRPC span; the span status is an error when the code says the server failed (on the
/// server side) or the call failed at all (on the client side), as OpenTelemetry's gRPC conventions say.
fn record_status(span: &tracing::Span, code: tonic::Code, server: bool) {
    span.record("rpc.grpc.status_code", code as i32);
    let server_fault = matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    );
    if (server && server_fault) || (!server && code != tonic::Code::Ok) {
        span.record("otel.status_code", "error");
    }
}

/// Tower layer recording `grpc_server_requests_total` and `grpc_server_request_duration_seconds` per
/// method and status code, and running each call inside a server span with its request id, whose parent is
/// the caller's span when the request carries a `traceparent`.
#[derive(Debug, Clone, Copy)]
pub struct ObserveLayer;

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner }
    }
}

/// The service made by [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        let request_id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let (service, method) = split_path(&path);
        let span = tracing::info_span!(
            "grpc",
            method = %path,
            request_id = %request_id,
            // `<service>/<method>`, as the path has it.
            "otel.name" = path.trim_start_matches('/'),
            "otel.kind" = "server",
            "otel.status_code" = tracing::field::Empty,
            "rpc.system" = "grpc",
            "rpc.service" = %service,
            "rpc.method" = %method,
            "rpc.grpc.status_code" = tracing::field::Empty,
        );
        trace_context::adopt_parent(&span, request.headers());
        let recorder = span.clone();
        Box::pin(
            async move {
                let started = Instant::now();
                let result = inner.call(request).await;
                // Unary errors travel as trailers-only responses, so the code is in the headers; a missing
                // grpc-status header means the call succeeded (its OK comes in the trailers).
                let code = match &result {
                    Ok(response) => {
                        let code = status_in_headers(response.headers()).unwrap_or(tonic::Code::Ok);
                        record_status(&recorder, code, true);
                        format!("{code:?}")
                    }
                    Err(_) => {
                        record_status(&recorder, tonic::Code::Unknown, true);
                        "Transport".to_owned()
                    }
                };
                let elapsed = started.elapsed().as_secs_f64();
                let labels = [("method", path), ("code", code.clone())];
                metrics::counter!("grpc_server_requests_total", &labels).increment(1);
                metrics::histogram!("grpc_server_request_duration_seconds", &labels[..1]).record(elapsed);
                if code != "Ok" {
                    tracing::info!(code = %code, elapsed_ms = elapsed * 1000.0, "call failed");
                } else {
                    tracing::debug!(elapsed_ms = elapsed * 1000.0, "call served");
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use tokio_stream::StreamExt;
    use tokio_util::sync::CancellationToken;

    use super::GrpcService;
    use crate::testkit::TestIssuer;

    /// A gRPC service without methods.
    #[derive(Clone)]
    struct Nothing;

    impl tonic::server::NamedService for Nothing {
        const NAME: &'static str = "mercato.test.v1.Nothing";
    }

    impl tower::Service<http::Request<tonic::body::Body>> for Nothing {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
            std::future::ready(Ok(tonic::Status::unimplemented("nothing here").into_http()))
        }
    }

    /// A service's background work (its outbox relay, say) runs while it serves, is told to stop at shutdown,
    /// and has ended when `serve` returns: a caller that closes the database next never pulls it from under it.
    #[tokio::test]
    async fn background_tasks_run_while_serving_and_end_before_serve_returns() {
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let finished = Arc::new(AtomicBool::new(false));
        let finished_by_task = finished.clone();
        let service = GrpcService::new(Nothing).background(move |stop: CancellationToken| async move {
            let _ = started_tx.send(());
            stop.cancelled().await;
            // Winding down takes a moment (a batch to finish); serve must wait for it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            finished_by_task.store(true, Ordering::SeqCst);
        });
        assert_eq!(service.names(), ["mercato.test.v1.Nothing"]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let verifier = Arc::new(TestIssuer::new().expect("issuer")).verifier();
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(super::serve(service, listener, verifier, shutdown.clone()));
        tokio::time::timeout(Duration::from_secs(10), started).await.expect("the task starts").expect("started");
        assert!(!serving.is_finished() && !finished.load(Ordering::SeqCst), "both run until shutdown");
        shutdown.cancel();
        let served = tokio::time::timeout(Duration::from_secs(10), serving).await.expect("serve returns");
        served.expect("joined").expect("served");
        assert!(finished.load(Ordering::SeqCst), "serve returned before its background task ended");
    }

    /// A checkout alone took 56 ms instead of 12 while accepted gRPC connections lacked TCP_NODELAY.
    #[tokio::test]
    async fn accepted_grpc_connections_send_small_writes_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mut incoming = Box::pin(super::accept_with_nodelay(listener));
        let _client = tokio::net::TcpStream::connect(address).await.expect("connect");
        let accepted = incoming.next().await.expect("a connection").expect("accepted");
        assert!(accepted.nodelay().expect("the option"), "TCP_NODELAY is not set on the accepted connection");
    }
}
