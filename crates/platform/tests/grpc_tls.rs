//! TLS between services (`MERCATO_GRPC_TLS_*`): a gRPC server hears only callers that speak TLS with a
//! certificate its CA signed, a channel made from the same settings reaches it, and a client checks that the
//! server's certificate names the host it called. Certificates are made for each test (rcgen).

use std::path::PathBuf;
use std::sync::Arc;

use platform::Settings;
use platform::grpc::{Channel, GrpcService, Listener};
use platform::testkit::{TempDir, TestIssuer};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// A CA of its own, and a directory for the PEM files of the certificates it issues.
struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_file: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = TempDir::new(name).expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.pem()).expect("write CA");
        Self { dir, ca, ca_file }
    }

    /// A certificate for `names` (host names or IPs), for servers and clients alike; its (cert, key) files.
    fn issue(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("certificate");
        let (cert_file, key_file) =
            (self.dir.path().join(format!("{stem}.crt")), self.dir.path().join(format!("{stem}.key")));
        std::fs::write(&cert_file, cert.pem()).expect("write certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        (cert_file, key_file)
    }
}

/// Settings with TLS between services: `identity`'s files, trusting `ca`, and the auth service at `auth_url`.
fn settings(identity: &(PathBuf, PathBuf), ca: &std::path::Path, auth_url: &str) -> Settings {
    let path = |p: &std::path::Path| p.display().to_string();
    Settings::from_vars(vec![
        ("MERCATO_GRPC_TLS_CERT".to_owned(), path(&identity.0)),
        ("MERCATO_GRPC_TLS_KEY".to_owned(), path(&identity.1)),
        ("MERCATO_GRPC_TLS_CA".to_owned(), path(ca)),
        ("MERCATO_AUTH_URL".to_owned(), auth_url.to_owned()),
    ])
    .expect("settings")
}

/// A gRPC server (health and reflection only) with `settings`' TLS; its port.
async fn serve(settings: &Settings, shutdown: &CancellationToken) -> u16 {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = tcp.local_addr().expect("address").port();
    let listener = Listener::new(tcp, settings).expect("the TLS files are usable");
    assert!(listener.is_tls());
    let service = GrpcService::default();
    let verifier = Arc::new(TestIssuer::new().expect("issuer")).verifier();
    tokio::spawn(platform::grpc::serve(service, listener, verifier, shutdown.clone()));
    port
}

async fn health(channel: Channel) -> Result<i32, tonic::Status> {
    let mut client = HealthClient::new(channel);
    Ok(client.check(HealthCheckRequest { service: String::new() }).await?.into_inner().status)
}

#[tokio::test]
async fn services_with_certificates_of_one_ca_call_each_other_over_tls() {
    let pki = Pki::new("grpc-tls-ok");
    let server_identity = pki.issue("auth", &["localhost", "127.0.0.1"]);
    let shutdown = CancellationToken::new();
    let port = serve(&settings(&server_identity, &pki.ca_file, "https://localhost:1"), &shutdown).await;

    // Another process of the same platform: its own certificate, the same CA, the service's https URL.
    let caller = settings(&pki.issue("orders", &["orders"]), &pki.ca_file, &format!("https://localhost:{port}"));
    let channel = platform::grpc::service_channel(&caller, "auth").expect("channel");
    assert_eq!(health(channel).await.expect("a call over mutual TLS"), ServingStatus::Serving as i32);
    shutdown.cancel();
}

#[tokio::test]
async fn callers_without_tls_or_a_certificate_of_the_ca_are_not_heard() {
    let pki = Pki::new("grpc-tls-refused");
    let server_identity = pki.issue("auth", &["localhost", "127.0.0.1"]);
    let shutdown = CancellationToken::new();
    let port = serve(&settings(&server_identity, &pki.ca_file, "https://localhost:1"), &shutdown).await;
    let url = format!("https://127.0.0.1:{port}");

    let plain = platform::grpc::channel(&format!("http://127.0.0.1:{port}")).expect("channel");
    assert!(health(plain).await.is_err(), "a plain HTTP/2 caller was heard");

    // A certificate of another CA: the caller trusts the server, the server does not trust the caller.
    let stranger = Pki::new("grpc-tls-stranger");
    let foreign = settings(&stranger.issue("intruder", &["intruder"]), &pki.ca_file, &url);
    let refused = health(platform::grpc::service_channel(&foreign, "auth").expect("channel")).await;
    assert!(refused.is_err(), "a caller with a certificate of another CA was heard");

    // TLS without any certificate.
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).expect("root");
    let mut anonymous = tokio_rustls::rustls::ClientConfig::builder_with_provider(platform::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![b"h2".to_vec()];
    let channel = Channel::with_tls(std::slice::from_ref(&url), Some(Arc::new(anonymous))).expect("channel");
    assert!(health(channel).await.is_err(), "a caller without a certificate was heard");

    // The same server still answers a caller of its own.
    let own = settings(&pki.issue("orders", &["orders"]), &pki.ca_file, &url);
    assert!(health(platform::grpc::service_channel(&own, "auth").expect("channel")).await.is_ok());
    shutdown.cancel();
}

#[tokio::test]
async fn a_caller_checks_that_the_server_certificate_names_the_host_it_called() {
    let pki = Pki::new("grpc-tls-name");
    let server_identity = pki.issue("auth", &["auth.mercato.svc"]);
    let shutdown = CancellationToken::new();
    let port = serve(&settings(&server_identity, &pki.ca_file, "https://localhost:1"), &shutdown).await;

    let caller = settings(&pki.issue("orders", &["orders"]), &pki.ca_file, &format!("https://127.0.0.1:{port}"));
    let status = health(platform::grpc::service_channel(&caller, "auth").expect("channel")).await;
    let error = status.expect_err("a certificate for another name was accepted");
    assert!(error.message().contains("TLS handshake failed"), "{error:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn unusable_files_stop_the_start_with_the_setting_named() {
    let pki = Pki::new("grpc-tls-files");
    let (cert, key) = pki.issue("auth", &["localhost"]);
    let missing = (pki.dir.path().join("nothing.crt"), key.clone());
    let tcp = || async { TcpListener::bind("127.0.0.1:0").await.expect("bind") };

    let error = Listener::new(tcp().await, &settings(&missing, &pki.ca_file, "https://a:1")).expect_err("no file");
    assert!(error.to_string().starts_with("MERCATO_GRPC_TLS_CERT: cannot read"), "{error}");
    let error = Listener::new(tcp().await, &settings(&(key.clone(), key.clone()), &pki.ca_file, "https://a:1"))
        .expect_err("a key as the certificate");
    assert!(error.to_string().starts_with("MERCATO_GRPC_TLS_CERT:"), "{error}");
    let (_, other_key) = pki.issue("other", &["localhost"]);
    let error = Listener::new(tcp().await, &settings(&(cert.clone(), other_key), &pki.ca_file, "https://a:1"))
        .expect_err("a key of another certificate");
    assert!(error.to_string().starts_with("MERCATO_GRPC_TLS_CERT and MERCATO_GRPC_TLS_KEY:"), "{error}");
    let client = platform::grpc::service_channel(&settings(&(cert, key), &cert_as_ca(&pki), "https://a:1"), "auth");
    let error = client.expect_err("a CA file without a certificate");
    assert!(error.to_string().starts_with("MERCATO_GRPC_TLS_CA:"), "{error}");
}

/// A file named like a CA bundle that holds only a private key.
fn cert_as_ca(pki: &Pki) -> PathBuf {
    let path = pki.dir.path().join("not-a-ca.pem");
    std::fs::write(&path, KeyPair::generate().expect("key").serialize_pem()).expect("write");
    path
}

/// What Kubernetes probes when TLS keeps its gRPC probe out: the process's readiness follows the server, ready
/// while it takes calls and not once its shutdown begins.
#[tokio::test]
async fn a_tls_server_reports_its_readiness_for_http_probes() {
    let pki = Pki::new("grpc-tls-ready");
    let identity = pki.issue("users", &["localhost"]);
    let settings = settings(&identity, &pki.ca_file, "https://localhost:1");
    let readiness = platform::metrics::Readiness::new();
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let listener = Listener::new(tcp, &settings).expect("listener").reporting(readiness.clone());
    assert!(!readiness.is_ready(), "ready before serving");
    let service = GrpcService::default();
    let verifier = Arc::new(TestIssuer::new().expect("issuer")).verifier();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(platform::grpc::serve(service, listener, verifier, shutdown.clone()));
    for _ in 0..100 {
        if readiness.is_ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(readiness.is_ready(), "not ready while serving");
    shutdown.cancel();
    server.await.expect("join").expect("served");
    assert!(!readiness.is_ready(), "still ready after the shutdown");
}

/// cert-manager renews the certificate in place: new connections get the new one without a restart, and files
/// caught half written leave the last good pair in place.
#[tokio::test]
async fn a_renewed_certificate_reaches_new_callers_without_a_restart() {
    let pki = Pki::new("grpc-tls-renewal");
    let (cert, key) = pki.issue("auth", &["localhost"]);
    let shutdown = CancellationToken::new();
    let port = serve(&settings(&(cert.clone(), key.clone()), &pki.ca_file, "https://localhost:1"), &shutdown).await;
    let caller = settings(&pki.issue("orders", &["orders"]), &pki.ca_file, &format!("https://localhost:{port}"));
    let call = || async { health(platform::grpc::service_channel(&caller, "auth").expect("channel")).await };
    call().await.expect("the first certificate");

    // Renewed for another name: a new caller of `localhost` now meets a certificate that does not name it.
    let renew = |(new_cert, new_key): (PathBuf, PathBuf)| {
        std::fs::copy(new_cert, &cert).expect("certificate renewed");
        std::fs::copy(new_key, &key).expect("key renewed");
    };
    renew(pki.issue("elsewhere", &["elsewhere.test"]));
    let refused = call().await.expect_err("the renewed certificate names another host");
    assert!(refused.message().contains("TLS handshake failed"), "{refused:?}");

    // Renewed for the right name again; then a key written without its certificate changes nothing.
    renew(pki.issue("auth-2", &["localhost"]));
    call().await.expect("the third certificate");
    std::fs::write(&key, KeyPair::generate().expect("key").serialize_pem()).expect("a key alone");
    call().await.expect("the last good pair, while the files disagree");
    shutdown.cancel();
}
