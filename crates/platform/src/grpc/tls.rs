//! TLS between services (`MERCATO_GRPC_TLS_CERT`, `MERCATO_GRPC_TLS_KEY`, `MERCATO_GRPC_TLS_CA`): mutual TLS.
//! Servers present the process's certificate and hear only callers whose certificate the CA signed; clients
//! check the server's certificate against the CA and the host name of the service's URL, and present the
//! process's certificate in turn. Tokens still travel with every call: TLS keeps them (and the data) from
//! anyone on the network between two services, and the CA keeps out callers that are not Mercato's.
//!
//! The files are read when a server or channel is made, at start; a renewed certificate is taken up by the next
//! start of the process.

use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::GrpcTlsFiles;
use crate::tls::{TlsError, certificates, private_key, provider};

const CERT: &str = "MERCATO_GRPC_TLS_CERT";
const KEY: &str = "MERCATO_GRPC_TLS_KEY";
const CA: &str = "MERCATO_GRPC_TLS_CA";

/// How long a caller may take over its TLS handshake before the server drops the connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of `files`: its certificate, and the CA its callers' certificates must be signed by.
pub(super) fn server_config(files: &GrpcTlsFiles) -> Result<ServerTlsConfig, TlsError> {
    // Built once with rustls here for errors that name the settings; tonic builds its own from the same PEM.
    let roots = Arc::new(root_store(files)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError(format!("{CA}: {} cannot verify callers: {e}", files.ca.display())))?;
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(files)?, private_key(&files.identity.key, KEY)?)
        .map_err(|e| unusable_identity(files, &e))?;
    let pem = |path: &std::path::Path, variable: &str| {
        std::fs::read(path).map_err(|e| TlsError(format!("{variable}: cannot read {}: {e}", path.display())))
    };
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(pem(&files.identity.cert, CERT)?, pem(&files.identity.key, KEY)?))
        .client_ca_root(Certificate::from_pem(pem(&files.ca, CA)?))
        .timeout(HANDSHAKE_TIMEOUT))
}

/// The client side of `files`: servers are trusted when the CA signed their certificate for the host called;
/// the process's own certificate answers theirs. ALPN says HTTP/2, the only protocol gRPC speaks.
pub(super) fn client_config(files: &GrpcTlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?
        .with_root_certificates(root_store(files)?)
        .with_client_auth_cert(chain(files)?, private_key(&files.identity.key, KEY)?)
        .map_err(|e| unusable_identity(files, &e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn chain(files: &GrpcTlsFiles) -> Result<Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>, TlsError> {
    certificates(&files.identity.cert, CERT)
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

fn unusable_identity(files: &GrpcTlsFiles, error: &dyn std::fmt::Display) -> TlsError {
    TlsError(format!(
        "{CERT} and {KEY}: {} with {} is unusable: {error}",
        files.identity.cert.display(),
        files.identity.key.display()
    ))
}
