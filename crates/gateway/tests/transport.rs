//! How clients reach the gateway: HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on a plain listener; with
//! `MERCATO_GATEWAY_TLS_CERT`/`_KEY`, TLS with HTTP/2 or HTTP/1.1 chosen by ALPN. Certificates are made at test
//! time (rcgen); the service behind the gateway is a stand-in catalog over real gRPC.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use platform::Settings;
use platform::testkit::TempDir;
use reqwest::Version;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Serves a stand-in catalog answering "Green tea" after `delay`; its URL.
async fn catalog(delay: Duration) -> String {
    support::serve_catalog(support::StandInCatalog { name: "Green tea", delay }).await
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written to `dir`: (certificate PEM, cert path,
/// key path).
fn certificate(dir: &TempDir) -> (String, String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("a certificate");
    let cert = made.cert.pem();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, &cert).expect("write cert");
    std::fs::write(&key_path, made.signing_key.serialize_pem()).expect("write key");
    (cert, cert_path.display().to_string(), key_path.display().to_string())
}

/// The shared test settings with the catalog at `catalog`, then `extra`.
fn settings(catalog: &str, extra: &[(&str, &str)]) -> Settings {
    let mut vars = vec![("MERCATO_CATALOG_URL", catalog)];
    vars.extend_from_slice(extra);
    support::settings(&vars)
}

/// A client that trusts only `cert` and finds `localhost` at `addr`.
fn tls_client(cert: &str, addr: SocketAddr) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).expect("pem"))
        .resolve("localhost", addr)
}

async fn product_name(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["id"], "p-1");
    body["name"].as_str().expect("a name").to_owned()
}

#[tokio::test]
async fn the_plain_listener_speaks_http1_and_http2_with_prior_knowledge() {
    let (addr, _stop, _server) = support::serve_gateway(settings(&catalog(Duration::ZERO).await, &[])).await;
    let url = format!("http://{addr}/v1/products/p-1");

    let h2c = reqwest::Client::builder().http2_prior_knowledge().build().expect("client");
    let response = h2c.get(&url).send().await.expect("an HTTP/2 answer");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(product_name(response).await, "Green tea");
    // Requests share the connection; the gateway's own routes answer too.
    let openapi = h2c.get(format!("http://{addr}/openapi.json")).send().await.expect("sent");
    assert_eq!((openapi.version(), openapi.status().as_u16()), (Version::HTTP_2, 200));

    let http1 = reqwest::Client::builder().http1_only().build().expect("client");
    let response = http1.get(&url).send().await.expect("an HTTP/1.1 answer");
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(product_name(response).await, "Green tea");
}

#[tokio::test]
async fn tls_negotiates_http2_or_http1_and_refuses_plain_http() {
    let dir = TempDir::new("gateway-tls").expect("temp dir");
    let (cert, cert_path, key_path) = certificate(&dir);
    let settings = settings(
        &catalog(Duration::ZERO).await,
        &[("MERCATO_GATEWAY_TLS_CERT", &cert_path), ("MERCATO_GATEWAY_TLS_KEY", &key_path)],
    );
    let (addr, _stop, _server) = support::serve_gateway(settings).await;
    let url = format!("https://localhost:{}/v1/products/p-1", addr.port());

    // A client that stalls in its handshake, and one that speaks plain HTTP, hold up no one else.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    let plain = reqwest::Client::new().get(format!("http://{addr}/healthz")).send().await;
    assert!(plain.is_err(), "plain HTTP on the TLS port was answered: {plain:?}");

    let h2 = tls_client(&cert, addr).build().expect("client");
    let response = h2.get(&url).send().await.expect("an HTTP/2 answer over TLS");
    assert_eq!(response.version(), Version::HTTP_2, "ALPN chose h2");
    assert_eq!(product_name(response).await, "Green tea");

    let http1 = tls_client(&cert, addr).http1_only().build().expect("client");
    let response = http1.get(&url).send().await.expect("an HTTP/1.1 answer over TLS");
    assert_eq!(response.version(), Version::HTTP_11, "ALPN chose http/1.1");
    assert_eq!(product_name(response).await, "Green tea");

    // The certificate is the one configured: a client that does not trust it refuses the gateway.
    let untrusting = reqwest::Client::builder().resolve("localhost", addr).build().expect("client");
    assert!(untrusting.get(&url).send().await.is_err());

    // The stalled client is still waiting: neither answered nor closed (a closed socket reads at once).
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(200), stalled.read(&mut byte)).await;
    assert!(read.is_err(), "the stalled handshake was answered or closed: {read:?}");
}

#[tokio::test]
async fn a_certificate_renewed_in_place_is_served_without_a_restart() {
    let dir = TempDir::new("gateway-tls").expect("temp dir");
    let (first, cert_path, key_path) = certificate(&dir);
    let settings = settings(
        &catalog(Duration::ZERO).await,
        &[("MERCATO_GATEWAY_TLS_CERT", &cert_path), ("MERCATO_GATEWAY_TLS_KEY", &key_path)],
    );
    let (addr, _stop, _server) = support::serve_gateway(settings).await;
    let url = format!("https://localhost:{}/v1/products/p-1", addr.port());
    let get = |cert: &str| tls_client(cert, addr).build().expect("client").get(&url).send();
    assert_eq!(product_name(get(&first).await.expect("the first certificate")).await, "Green tea");

    // The renewal overwrites both files: new connections meet the new certificate, trusted or not.
    let renewed_dir = TempDir::new("gateway-tls-renewed").expect("temp dir");
    let (renewed, new_cert, new_key) = certificate(&renewed_dir);
    std::fs::copy(new_cert, &cert_path).expect("certificate renewed");
    std::fs::copy(new_key, &key_path).expect("key renewed");
    assert!(get(&first).await.is_err(), "the old certificate is still served");
    assert_eq!(product_name(get(&renewed).await.expect("the renewed certificate")).await, "Green tea");
}

#[tokio::test]
async fn over_tls_a_request_in_flight_at_shutdown_is_answered_and_the_port_closes() {
    let dir = TempDir::new("gateway-tls").expect("temp dir");
    let (cert, cert_path, key_path) = certificate(&dir);
    let settings = settings(
        &catalog(Duration::from_millis(1200)).await,
        &[("MERCATO_GATEWAY_TLS_CERT", &cert_path), ("MERCATO_GATEWAY_TLS_KEY", &key_path)],
    );
    let (addr, shutdown, server) = support::serve_gateway(settings).await;
    let client = tls_client(&cert, addr).build().expect("client");
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.get(format!("https://localhost:{}/v1/products/p-1", addr.port())).send().await }
    });
    // Let the request reach the slow catalog, then ask the gateway to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();

    let response = in_flight.await.expect("task").expect("the request in flight was answered");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(product_name(response).await, "Green tea");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("stops in time")
        .expect("task")
        .expect("served without error");
    assert!(TcpStream::connect(addr).await.is_err(), "the TLS port still accepts connections after shutdown");
}

#[tokio::test]
async fn unusable_tls_files_stop_the_start_with_the_setting_and_the_file() {
    let dir = TempDir::new("gateway-tls").expect("temp dir");
    let (_, cert_path, key_path) = certificate(&dir);
    let other_dir = TempDir::new("gateway-tls-other").expect("temp dir");
    let (_, other_cert, _) = certificate(&other_dir);
    let missing = dir.path().join("missing.pem").display().to_string();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").expect("write");
    let garbage = garbage.display().to_string();

    for (cert, key, expected) in [
        (missing.as_str(), key_path.as_str(), format!("MERCATO_GATEWAY_TLS_CERT: cannot read {missing}")),
        (cert_path.as_str(), missing.as_str(), format!("MERCATO_GATEWAY_TLS_KEY: cannot read {missing}")),
        (garbage.as_str(), key_path.as_str(), format!("MERCATO_GATEWAY_TLS_CERT: {garbage} holds no certificate")),
        (
            cert_path.as_str(),
            garbage.as_str(),
            format!("MERCATO_GATEWAY_TLS_KEY: {garbage} holds no usable private key"),
        ),
        // Swapped: neither file holds what its setting names.
        (key_path.as_str(), cert_path.as_str(), "MERCATO_GATEWAY_TLS_CERT".to_owned()),
        // The key of another certificate.
        (other_cert.as_str(), key_path.as_str(), "is unusable".to_owned()),
    ] {
        let settings =
            settings("http://127.0.0.1:1", &[("MERCATO_GATEWAY_TLS_CERT", cert), ("MERCATO_GATEWAY_TLS_KEY", key)]);
        let error = match gateway::Gateway::new(&settings) {
            Ok(_) => panic!("the gateway started with cert {cert} and key {key}"),
            Err(error) => error.to_string(),
        };
        assert!(error.starts_with("TLS: "), "{error}");
        assert!(error.contains(&expected), "{error} does not contain {expected}");
    }
}
