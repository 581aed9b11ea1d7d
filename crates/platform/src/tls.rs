//! TLS material from PEM files, for the gateway's HTTPS and for TLS between services: certificate chains,
//! private keys, and the crypto provider (ring, the one rustls uses everywhere in Mercato). Errors name the
//! setting and the file, so a bad file stops the program with one clear line.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS file is unusable; the message names the setting and the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The certificates in the PEM file at `path` (setting `variable`), in file order; at least one.
pub fn certificates(path: &Path, variable: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, variable)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{variable}: {} is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{variable}: {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path` (setting `variable`): PKCS#8, PKCS#1 or SEC1.
pub fn private_key(path: &Path, variable: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, variable)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        TlsError(format!(
            "{variable}: {} holds no usable private key (expected a PEM PKCS#8, PKCS#1 or SEC1 key): {e}",
            path.display()
        ))
    })
}

/// The crypto provider of every TLS configuration Mercato builds: ring, which rustls already uses here for
/// outgoing mail and HTTP (one provider in the binary, and no process-wide default to install).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

fn read(path: &Path, variable: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("{variable}: cannot read {}: {e}", path.display())))
}
