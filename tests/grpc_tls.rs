//! The whole platform with TLS between services (`MERCATO_GRPC_TLS_*`): a checkout crosses the gateway, auth,
//! cart, catalog, orders, payments, ledger and deliveries, every hop over mutual TLS, and a caller without a
//! certificate of the platform's CA reaches no service.

use e2e::{Storage, TestPlatform};
use platform::testkit::TempDir;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::json;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// A CA and one certificate for every process of the platform (as a Kubernetes secret would hold them), for
/// 127.0.0.1, where `up` runs the services; the settings that name the three files.
fn certificates(dir: &TempDir) -> Vec<(String, String)> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca).expect("certificate");
    let files = [("tls.crt", cert.pem()), ("tls.key", key.serialize_pem()), ("ca.crt", ca.pem())];
    for (name, pem) in &files {
        std::fs::write(dir.path().join(name), pem).expect("write");
    }
    let path = |name: &str| dir.path().join(name).display().to_string();
    vec![
        ("MERCATO_GRPC_TLS_CERT".to_owned(), path("tls.crt")),
        ("MERCATO_GRPC_TLS_KEY".to_owned(), path("tls.key")),
        ("MERCATO_GRPC_TLS_CA".to_owned(), path("ca.crt")),
    ]
}

#[tokio::test]
async fn a_checkout_crosses_every_service_over_mutual_tls() {
    let dir = TempDir::new("e2e-grpc-tls").expect("temp dir");
    let tls = certificates(&dir);
    let mut extra: Vec<(&str, &str)> = tls.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    extra.push(("MERCATO_RATE_LIMITS", "off"));
    let Some(p) = TestPlatform::start_with(Storage::Sqlite, &extra).await else { return };
    assert!(p.settings.service_url("orders").starts_with("https://127.0.0.1:"), "{}", p.settings.service_url("orders"));

    let admin = p.admin_token().await;
    let customer = p.customer_token("tls@example.com").await;
    let product = json!({"sku": "TLS-1", "name": "Sealed tea", "description": "Kept private.",
        "price": {"currency": "EUR", "amountMinor": "700"}, "category": "tea", "active": true});
    let made = p.send("POST", "/v1/products", Some(&admin), Some(product)).await;
    assert_eq!(made.status, 201, "{}", made.json);
    let id = made.json["id"].as_str().expect("id").to_owned();
    let stocked =
        p.send("POST", &format!("/v1/products/{id}/inventory:adjust"), Some(&admin), Some(json!({"delta": 3}))).await;
    assert_eq!(stocked.status, 200, "{}", stocked.json);
    let added = p.send("POST", "/v1/cart/items", Some(&customer), Some(json!({"productId": id, "quantity": 2}))).await;
    assert_eq!(added.status, 200, "{}", added.json);

    let address = json!({"name": "Ada", "line1": "1 Main St", "city": "Paris", "postalCode": "75001", "country": "FR"});
    let bearer = format!("Bearer {customer}");
    let headers = [("authorization", bearer.as_str()), ("idempotency-key", "tls-checkout-1")];
    let body = json!({"shippingAddress": address, "paymentMethod": "tok_visa"});
    let placed = p.send_with("POST", "/v1/orders", &headers, Some(body)).await;
    assert_eq!(placed.status, 201, "{}", placed.json);
    assert_eq!(placed.json["status"], "ORDER_STATUS_CONFIRMED", "{}", placed.json);
    let payment_id = placed.json["paymentId"].as_str().expect("payment");
    let payment = p.send("GET", &format!("/v1/payments/{payment_id}"), Some(&customer), None).await;
    assert_eq!(payment.json["status"], "PAYMENT_STATUS_CAPTURED", "{}", payment.json);
    let order_id = placed.json["id"].as_str().expect("order");
    let shipped = p.get_until("/v1/shipments", &customer, |v| v["shipments"][0]["orderId"] == order_id).await;
    assert_eq!(shipped["shipments"][0]["status"], "SHIPMENT_STATUS_PENDING", "{shipped}");

    // No service hears a caller that does not speak TLS with a certificate of the CA.
    for (service, address) in &p.services {
        let plain = platform::grpc::channel(&format!("http://{address}")).expect("channel");
        let checked = HealthClient::new(plain).check(HealthCheckRequest { service: String::new() }).await;
        assert!(checked.is_err(), "{service} answered a plain caller");
    }
    p.stop().await;
}
