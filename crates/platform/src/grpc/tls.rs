//! TLS between services (`MERCATO_GRPC_TLS_CERT`, `MERCATO_GRPC_TLS_KEY`, `MERCATO_GRPC_TLS_CA`): mutual TLS.
//! Servers present the process's certificate and hear only callers whose certificate the CA signed; clients
//! check the server's certificate against the CA and the host name of the service's URL, and present the
//! process's certificate in turn. Tokens still travel with every call: TLS keeps them (and the data) from
//! anyone on the network between two services, and the CA keeps out callers that are not Mercato's.
//!
//! The certificate and key are read again when their files change (`ReloadingIdentity`): cert-manager renews
//! them in place, and new connections show the new certificate without a restart. The CA is read at start.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::config::GrpcTlsFiles;
use crate::tls::{ReloadingIdentity, TlsError, certificates, provider};

const CERT: &str = "MERCATO_GRPC_TLS_CERT";
const KEY: &str = "MERCATO_GRPC_TLS_KEY";
const CA: &str = "MERCATO_GRPC_TLS_CA";

/// How long a caller may take over its TLS handshake before the server drops the connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes under way at once on one server; further connections wait in the listen queue meanwhile.
const CONCURRENT_HANDSHAKES: usize = 64;

/// The server side of `files`: the process's certificate (kept current), and the CA its callers' certificates
/// must be signed by. ALPN says HTTP/2, the only protocol gRPC speaks.
pub(super) fn acceptor(files: &GrpcTlsFiles) -> Result<TlsAcceptor, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(files)?), provider())
        .build()
        .map_err(|e| TlsError(format!("{CA}: {} cannot verify callers: {e}", files.ca.display())))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(ReloadingIdentity::load(&files.identity, CERT, KEY)?));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The client side of `files`: servers are trusted when the CA signed their certificate for the host called;
/// the process's own certificate (kept current) answers theirs.
pub(super) fn client_config(files: &GrpcTlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?
        .with_root_certificates(root_store(files)?)
        .with_client_cert_resolver(Arc::new(ReloadingIdentity::load(&files.identity, CERT, KEY)?));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The connections of `incoming` once their TLS handshakes are done. Handshakes run side by side (up to
/// [`CONCURRENT_HANDSHAKES`]), each bounded by [`HANDSHAKE_TIMEOUT`], so a slow or failing caller holds up no
/// other; a failed one is logged and dropped. Polled by the server itself: nothing outlives it.
pub(super) fn handshaken<S>(incoming: S, acceptor: TlsAcceptor) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>>
where
    S: Stream<Item = io::Result<TcpStream>>,
{
    incoming
        .map(move |accepted| {
            let acceptor = acceptor.clone();
            async move {
                let tcp = match accepted {
                    Ok(tcp) => tcp,
                    Err(e) => return Some(Err(e)),
                };
                let peer = tcp.peer_addr().ok();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => Some(Ok(tls)),
                    Ok(Err(error)) => {
                        tracing::debug!(?peer, %error, "gRPC TLS handshake failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(?peer, "gRPC TLS handshake timed out");
                        None
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENT_HANDSHAKES)
        .filter_map(std::future::ready)
}

fn root_store(files: &GrpcTlsFiles) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(&files.ca, CA)? {
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("{CA}: {} holds a certificate that is no CA's: {e}", files.ca.display())))?;
    }
    Ok(roots)
}
