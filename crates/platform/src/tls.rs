//! TLS material from PEM files, for the gateway's HTTPS and for TLS between services: certificate chains,
//! private keys, and the crypto provider (ring, the one rustls uses everywhere in Mercato). Errors name the
//! setting and the file, so a bad file stops the program with one clear line. A served certificate follows its
//! files ([`ReloadingIdentity`]): renewed in place, it is shown from the next handshake on, without a restart.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tokio_rustls::rustls::SignatureScheme;
use tokio_rustls::rustls::client::ResolvesClientCert;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::config::TlsFiles;

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

/// A certificate chain and its key that follow their files: what a TLS server shows (the gateway's HTTPS, the
/// gRPC servers) and a client of mutual TLS shows in turn. Each handshake looks at the
/// files' modification times (two `stat`s, next to a handshake's public-key work) and reads them again when
/// they changed; files that cannot be used (a renewal half written) leave the last good pair in place, with a
/// warning, and are tried again at the next handshake.
#[derive(Debug)]
pub struct ReloadingIdentity {
    files: TlsFiles,
    /// The settings naming the two files, for errors.
    variables: (&'static str, &'static str),
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files' modification times when they were read.
    stamp: Option<(SystemTime, SystemTime)>,
}

impl ReloadingIdentity {
    /// Reads `files` (named by settings `cert_variable` and `key_variable` in errors) and checks that the key
    /// belongs to the certificate.
    pub fn load(files: &TlsFiles, cert_variable: &'static str, key_variable: &'static str) -> Result<Self, TlsError> {
        let variables = (cert_variable, key_variable);
        let stamp = stamp(files);
        let key = Arc::new(certified_key(files, variables)?);
        Ok(Self { files: files.clone(), variables, current: Mutex::new(Loaded { key, stamp }) })
    }

    /// The pair to show now.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let now = stamp(&self.files);
        if now.is_some() && now != current.stamp {
            match certified_key(&self.files, self.variables) {
                Ok(key) => {
                    *current = Loaded { key: Arc::new(key), stamp: now };
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate read again after a change");
                }
                Err(error) => tracing::warn!(%error, "changed TLS files are unusable; the last good ones stay"),
            }
        }
        current.key.clone()
    }
}

impl ResolvesServerCert for ReloadingIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingIdentity {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The modification times of the certificate and key files; `None` when either cannot be read.
fn stamp(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Some((modified(&files.cert)?, modified(&files.key)?))
}

/// The certificate chain and its key, checked to belong together.
fn certified_key(files: &TlsFiles, (cert, key): (&str, &str)) -> Result<CertifiedKey, TlsError> {
    CertifiedKey::from_der(certificates(&files.cert, cert)?, private_key(&files.key, key)?, &provider()).map_err(|e| {
        TlsError(format!("{cert} and {key}: {} with {} is unusable: {e}", files.cert.display(), files.key.display()))
    })
}

fn read(path: &Path, variable: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("{variable}: cannot read {}: {e}", path.display())))
}
