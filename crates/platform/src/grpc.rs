//! The gRPC server every service runs: its own routes plus the standard health service and reflection, the
//! access check of [`AuthLayer`], per-RPC metrics and a log span carrying the request id, and graceful
//! shutdown. Also the client side: lazily connected channels with timeouts.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint, Server};
use tracing::Instrument;

use crate::auth::{AuthLayer, TokenVerifier};
use crate::descriptors::{AccessPolicy, DescriptorError};
use crate::telemetry::REQUEST_ID_HEADER;

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
}

/// A service ready to be served: its routes and the full names of its gRPC services.
#[derive(Debug)]
pub struct GrpcService {
    /// The service's tonic routes.
    pub routes: Routes,
    /// Full names of the gRPC services in `routes`, e.g. `mercato.catalog.v1.CatalogService`.
    pub names: Vec<&'static str>,
}

/// Serves `service` on `listener` until `shutdown` is cancelled, then lets in-flight calls finish.
pub async fn serve(
    service: GrpcService,
    listener: TcpListener,
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
    let incoming = TcpListenerStream::new(listener);
    let stopping = shutdown.clone();
    Server::builder()
        .layer(layers)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            stopping.cancelled().await;
            // Tell load balancers first, then stop accepting.
            for name in &service.names {
                health_reporter.set_service_status(*name, tonic_health::ServingStatus::NotServing).await;
            }
        })
        .await?;
    Ok(())
}

/// A channel to `url` that connects on first use and reconnects as needed.
pub fn channel(url: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Tower layer recording `grpc_server_requests_total` and `grpc_server_request_duration_seconds` per
/// method and status code, and running each call inside a span with its request id.
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
        let span = tracing::info_span!("grpc", method = %path, request_id = %request_id);
        Box::pin(
            async move {
                let started = Instant::now();
                let result = inner.call(request).await;
                // Unary errors travel as trailers-only responses, so the code is in the headers; a missing
                // grpc-status header means the call succeeded (its OK comes in the trailers).
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map(|c| format!("{:?}", tonic::Code::from(c)))
                        .unwrap_or_else(|| "Ok".to_owned()),
                    Err(_) => "Transport".to_owned(),
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
