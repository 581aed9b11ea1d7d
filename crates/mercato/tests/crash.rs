//! The checkout saga, and the refund of a received return, survive the process dying between any two steps. `mercato up` (SQLite) is started with
//! a fail point armed (`FAILPOINTS`, compiled into this test build only: see `orders::saga`) that aborts the
//! whole process at that instant — no graceful shutdown, no flush, as `kill -9` would. Started again on the same
//! data, the platform must finish or compensate the order on its own, the idempotency key must find it, the
//! stock and the payment must agree with its outcome, and `mercato audit` must find the books sound.

#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use serde_json::{Value, json};
use support::{data_dir, mercato, start_up, terminate, wait_ready};

const ADMIN: (&str, &str) = ("admin@crash.test", "admin-password-1");
const CUSTOMER: (&str, &str) = ("ada@crash.test", "customer-pass-1");
const KEY: &str = "crash-checkout-1";
/// Units on hand before the checkout, and units bought.
const STOCK: i64 = 5;
const BOUGHT: i64 = 2;

/// Where a run keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// SQLite files in the data dir.
    Sqlite,
    /// Fresh databases, one per service, on `MERCATO_TEST_DATABASE_URL`.
    Postgres,
}

/// SQLite always; PostgreSQL too when `MERCATO_TEST_DATABASE_URL` is set (required under `CI=true`).
fn engines() -> Vec<Engine> {
    match std::env::var("MERCATO_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => vec![Engine::Sqlite, Engine::Postgres],
        _ if platform::testkit::in_ci() => panic!("CI=true but MERCATO_TEST_DATABASE_URL is not set"),
        _ => vec![Engine::Sqlite],
    }
}

/// The settings of one platform's storage: nothing for SQLite (the data dir), a database URL per service for
/// PostgreSQL (named after `run`, so each run starts empty and both starts of a run share the data).
fn storage(engine: Engine, run: &str) -> Vec<(String, String)> {
    let Engine::Postgres = engine else { return Vec::new() };
    let server = std::env::var("MERCATO_TEST_DATABASE_URL").unwrap_or_default();
    platform::config::SERVICE_PORTS
        .iter()
        .map(|(service, _)| {
            let upper = service.to_ascii_uppercase();
            (format!("MERCATO_{upper}_DATABASE_URL"), format!("{server}/mercato_test_crash_{run}_{service}"))
        })
        .collect()
}

fn settings(storage: &[(String, String)], failpoint: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("MERCATO_ADMIN_EMAIL".to_owned(), ADMIN.0.to_owned()),
        ("MERCATO_ADMIN_PASSWORD".to_owned(), ADMIN.1.to_owned()),
        ("MERCATO_RATE_LIMITS".to_owned(), "off".to_owned()),
    ];
    env.extend_from_slice(storage);
    if let Some(point) = failpoint {
        env.push(("FAILPOINTS".to_owned(), format!("{point}=return")));
    }
    env
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(base: String) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        Self { base, http }
    }

    /// Sends a request; `Err` when no answer came (the process died under it).
    async fn try_send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    async fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        self.try_send(method, path, token, None, body).await.expect("an answer")
    }

    async fn login(&self, (email, password): (&str, &str)) -> String {
        let (status, body) =
            self.send("POST", "/v1/auth/login", None, Some(json!({"email": email, "password": password}))).await;
        assert_eq!(status, 200, "login: {body}");
        body["accessToken"].as_str().expect("token").to_owned()
    }

    async fn inventory(&self, product: &str) -> Value {
        self.send("GET", &format!("/v1/products/{product}/inventory"), None, None).await.1
    }
}

/// A shop before the crash: the admin's token, a product (`sku`, 12.00) with [`STOCK`] units, and the customer's
/// token.
async fn open_shop(api: &Api, sku: &str, category: &str) -> (String, String, String) {
    let admin = api.login(ADMIN).await;
    let product = json!({"sku": sku, "name": sku, "description": sku, "category": category,
                         "price": {"currency": "EUR", "amountMinor": "1200"}, "active": true});
    let (status, made) = api.send("POST", "/v1/products", Some(&admin), Some(product)).await;
    assert_eq!(status, 201, "{made}");
    let product = made["id"].as_str().expect("product id").to_owned();
    let adjust = json!({"delta": STOCK});
    api.send("POST", &format!("/v1/products/{product}/inventory:adjust"), Some(&admin), Some(adjust)).await;
    let register = json!({"email": CUSTOMER.0, "password": CUSTOMER.1, "displayName": "Ada"});
    assert_eq!(api.send("POST", "/v1/auth/register", None, Some(register)).await.0, 201);
    let customer = api.login(CUSTOMER).await;
    (admin, product, customer)
}

/// `product`'s inventory once `settled` says so (events restock it: a moment later), or as it is after 10 s.
async fn stock_when(api: &Api, product: &str, settled: impl Fn(&Value) -> bool) -> Value {
    let mut stock = Value::Null;
    for _ in 0..100 {
        stock = api.inventory(product).await;
        if settled(&stock) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stock
}

/// Starts the platform on `dir` and `storage`, with `failpoint` armed when given, and waits until it is ready.
async fn start(
    dir: &std::path::Path,
    storage: &[(String, String)],
    failpoint: Option<&str>,
) -> (std::process::Child, Api) {
    let (child, base) = start_up(dir, &[], &borrowed(&settings(storage, failpoint)));
    wait_ready(&base).await;
    (child, Api::new(base))
}

/// Waits for the platform to abort at its fail point (as `kill -9` would stop it), starts it again on the same data
/// with none armed, and logs the customer in: the new process, its API and the customer's token.
async fn restart_after_abort(
    child: &mut std::process::Child,
    dir: &std::path::Path,
    storage: &[(String, String)],
    case: &str,
) -> (std::process::Child, Api, String) {
    let died = support::exited_within(child, Duration::from_secs(30));
    assert_eq!(died.signal(), Some(6), "{case}: the process should have aborted there, but {died}");
    let (child, api) = start(dir, storage, None).await;
    let customer = api.login(CUSTOMER).await;
    (child, api, customer)
}

/// Stops the platform gracefully and checks that `mercato audit` finds the books of `dir` and `storage` sound;
/// then removes `dir`.
fn stop_and_audit(child: &mut std::process::Child, dir: &std::path::Path, storage: Vec<(String, String)>, case: &str) {
    let (code, _) = terminate(child);
    assert_eq!(code, Some(0));
    let audit = mercato().arg("audit").env("MERCATO_DATA_DIR", dir).envs(storage).output().expect("runs");
    assert!(
        audit.status.success(),
        "{case}: the audit found violations:\n{}{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn order_body(product: &str, payment_method: &str) -> Value {
    json!({
        "items": [{"productId": product, "quantity": BOUGHT}],
        "shippingAddress": {"name": "Ada", "line1": "1 Main St", "line2": "", "city": "Paris", "region": "",
                            "postalCode": "75001", "country": "FR"},
        "paymentMethod": payment_method,
    })
}

/// What the customer does before the crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Checks out; the crash cuts the checkout.
    Checkout,
    /// Checks out (confirmed), then cancels; the crash cuts the cancellation.
    Cancel,
}

/// Kills the platform at `failpoint` during `action` (paying with `payment_method`), starts it again, and
/// checks that the order ends `expected` with stock, payment and books to match.
async fn crash_then_resume(failpoint: &str, action: Action, payment_method: &str, expected: &str) {
    for engine in engines() {
        crash_then_resume_on(engine, failpoint, action, payment_method, expected).await;
    }
}

async fn crash_then_resume_on(engine: Engine, failpoint: &str, action: Action, payment_method: &str, expected: &str) {
    let dir = data_dir("crash");
    let run = uuid::Uuid::now_v7().simple().to_string();
    let storage = storage(engine, &run[run.len() - 16..]);
    let case = format!("{failpoint} on {engine:?}");
    let (mut child, api) = start(&dir, &storage, Some(failpoint)).await;

    let (_, product, customer) = open_shop(&api, "CRASH-1", "coffee").await;

    let body = order_body(&product, payment_method);
    let placed = api.try_send("POST", "/v1/orders", Some(&customer), Some(KEY), Some(body.clone())).await;
    if action == Action::Cancel {
        let (status, order) = placed.expect("the checkout answered");
        assert_eq!((status, order["status"].as_str()), (201, Some("ORDER_STATUS_CONFIRMED")), "{order}");
        let id = order["id"].as_str().expect("order id");
        let cancelled =
            api.try_send("POST", &format!("/v1/orders/{id}:cancel"), Some(&customer), None, Some(json!({}))).await;
        assert!(cancelled.is_err(), "{case}: the cancellation got an answer: {cancelled:?}");
    } else {
        assert!(placed.is_err(), "{case}: the checkout got an answer: {placed:?}");
    }
    // Started again on the same data, with no fail point.
    let (mut child, api, customer) = restart_after_abort(&mut child, &dir, &storage, &case).await;
    let mut order = Value::Null;
    for _ in 0..300 {
        let (_, mine) = api.send("GET", "/v1/orders", Some(&customer), None).await;
        let orders = mine["orders"].as_array().cloned().unwrap_or_default();
        assert!(orders.len() <= 1, "{case}: one checkout, one order: {mine}");
        if let Some(found) = orders.first()
            && found["status"] == expected
        {
            order = found.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(order["status"], expected, "{case}: the order never got there");
    let id = order["id"].as_str().expect("order id").to_owned();

    // The key still names that order: a retried checkout changes nothing.
    let (status, replayed) =
        api.try_send("POST", "/v1/orders", Some(&customer), Some(KEY), Some(body)).await.expect("answer");
    assert!(status == 200 || status == 201, "{case}: replay answered {status}: {replayed}");
    assert_eq!(replayed["id"], id.as_str(), "{case}: the replay found another order");

    // Stock and payment agree with the outcome (a cancellation restocks through order.cancelled, a moment later).
    let (on_hand, payment_status) = match expected {
        "ORDER_STATUS_CONFIRMED" => (STOCK - BOUGHT, Some("PAYMENT_STATUS_CAPTURED")),
        "ORDER_STATUS_CANCELLED" => (STOCK, Some("PAYMENT_STATUS_REFUNDED")),
        _ => (STOCK, None),
    };
    let stock = stock_when(&api, &product, |s| s["available"] == on_hand && s["reserved"] == 0).await;
    assert_eq!((stock["available"].as_i64(), stock["reserved"].as_i64()), (Some(on_hand), Some(0)), "{case}: {stock}");
    if let Some(want) = payment_status {
        let payment_id = order["paymentId"].as_str().expect("payment id");
        let (_, payment) = api.send("GET", &format!("/v1/payments/{payment_id}"), Some(&customer), None).await;
        assert_eq!(payment["status"], want, "{case}: {payment}");
    } else {
        assert_eq!(order["failureReason"], "Your card was declined.", "{case}: {order}");
    }
    stop_and_audit(&mut child, &dir, storage, &case);
}

const CONFIRMED: &str = "ORDER_STATUS_CONFIRMED";

#[tokio::test]
async fn killed_after_a_remote_call_answered_the_checkout_still_confirms() {
    for step in ["reserve", "pay", "commit"] {
        crash_then_resume(&format!("orders::{step}::answered"), Action::Checkout, "tok_visa", CONFIRMED).await;
    }
}

#[tokio::test]
async fn killed_after_a_step_was_stored_the_checkout_still_confirms() {
    for step in ["reserve", "pay", "commit"] {
        crash_then_resume(&format!("orders::{step}::stored"), Action::Checkout, "tok_visa", CONFIRMED).await;
    }
}

#[tokio::test]
async fn killed_while_compensating_or_cancelling_the_order_still_ends_right() {
    let failed = "ORDER_STATUS_FAILED";
    crash_then_resume("orders::pay::answered", Action::Checkout, "tok_chargeDeclined", failed).await;
    crash_then_resume("orders::release::answered", Action::Checkout, "tok_chargeDeclined", failed).await;
    // Killed once the shipment was cancelled and before the refund; then once the refund was made.
    crash_then_resume("orders::cancel_shipment::answered", Action::Cancel, "tok_visa", "ORDER_STATUS_CANCELLED").await;
    crash_then_resume("orders::cancel::answered", Action::Cancel, "tok_visa", "ORDER_STATUS_CANCELLED").await;
}

/// Kills the platform at `failpoint` while staff receive a returned unit (the receipt stored, or the refund made
/// and not yet recorded), starts it again, and checks that the return ends refunded once, the unit is back in
/// stock, and the books are sound.
async fn crash_while_refunding_a_return(failpoint: &str) {
    for engine in engines() {
        let dir = data_dir("crash-return");
        let run = uuid::Uuid::now_v7().simple().to_string();
        let storage = storage(engine, &run[run.len() - 16..]);
        let case = format!("{failpoint} on {engine:?}");
        let (mut child, api) = start(&dir, &storage, Some(failpoint)).await;

        let (admin, product, customer) = open_shop(&api, "CRASH-2", "kitchen").await;
        let body = order_body(&product, "tok_visa");
        let (status, order) =
            api.try_send("POST", "/v1/orders", Some(&customer), Some(KEY), Some(body)).await.expect("answer");
        assert_eq!((status, order["status"].as_str()), (201, Some("ORDER_STATUS_CONFIRMED")), "{order}");
        let id = order["id"].as_str().expect("order id").to_owned();

        // Delivered; one cup goes back (its share: 12.00 of 24.00), approved, then received.
        let mut shipment = Value::Null;
        for _ in 0..100 {
            let (_, listed) = api.send("GET", &format!("/v1/shipments?orderId={id}"), Some(&admin), None).await;
            shipment = listed["shipments"][0]["id"].clone();
            if shipment.is_string() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let shipment = shipment.as_str().expect("a shipment").to_owned();
        let dispatch = json!({"carrier": "DHL", "trackingNumber": "1"});
        api.send("POST", &format!("/v1/shipments/{shipment}:dispatch"), Some(&admin), Some(dispatch)).await;
        let delivered = json!({"status": "SHIPMENT_STATUS_DELIVERED", "carrierEventId": "d-1"});
        api.send("POST", &format!("/v1/shipments/{shipment}/events"), Some(&admin), Some(delivered)).await;
        let ask = json!({"items": [{"productId": product, "quantity": 1}]});
        let mut asked = (0, Value::Null);
        for _ in 0..100 {
            asked = api.send("POST", &format!("/v1/orders/{id}/returns"), Some(&customer), Some(ask.clone())).await;
            if asked.0 == 201 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(asked.0, 201, "{case}: {}", asked.1);
        let path = format!("/v1/returns/{}", asked.1["id"].as_str().expect("return id"));
        assert_eq!(api.send("POST", &format!("{path}:approve"), Some(&admin), Some(json!({}))).await.0, 200);
        let received =
            api.try_send("POST", &format!("{path}:receive"), Some(&admin), None, Some(json!({"restock": true}))).await;
        assert!(received.is_err(), "{case}: the receipt got an answer: {received:?}");
        // Started again: the refund is made (or recorded) on its own, once.
        let (mut child, api, customer) = restart_after_abort(&mut child, &dir, &storage, &case).await;
        let mut seen = Value::Null;
        for _ in 0..300 {
            seen = api.send("GET", &path, Some(&customer), None).await.1;
            if seen["status"] == "RETURN_STATUS_REFUNDED" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen["status"], "RETURN_STATUS_REFUNDED", "{case}: {seen}");
        assert_eq!(seen["refund"]["amountMinor"], "1200", "{case}: {seen}");
        let payment_id = order["paymentId"].as_str().expect("payment id");
        let (_, payment) = api.send("GET", &format!("/v1/payments/{payment_id}"), Some(&customer), None).await;
        assert_eq!(payment["refundedAmount"]["amountMinor"], "1200", "{case}: refunded once: {payment}");
        let stock = stock_when(&api, &product, |s| s["available"] == STOCK - BOUGHT + 1).await;
        assert_eq!(stock["available"], STOCK - BOUGHT + 1, "{case}: the cup is back: {stock}");
        stop_and_audit(&mut child, &dir, storage, &case);
    }
}

#[tokio::test]
async fn killed_while_refunding_a_return_the_refund_is_still_made_once() {
    crash_while_refunding_a_return("orders::return::received").await;
    crash_while_refunding_a_return("orders::return::refunded").await;
}
