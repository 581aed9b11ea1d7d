//! The HTTP API as a client sees it: the blueprint's auth, catalog and inventory routes through the gateway,
//! on SQLite and on PostgreSQL.

use base64::prelude::{BASE64_STANDARD, Engine as _};
use e2e::{Reply, Storage, TestPlatform};
use serde_json::{Value, json};

fn product(sku: &str, name: &str, category: &str, amount: &str) -> Value {
    json!({
        "sku": sku,
        "name": name,
        "description": format!("{name}, freshly made"),
        "price": {"currency": "EUR", "amountMinor": amount},
        "category": category,
        "active": true
    })
}

async fn shopping_flow(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let customer = p.customer_token("shopper@example.com").await;

    // Who am I.
    let me = p.send("GET", "/v1/auth/me", Some(&customer), None).await;
    assert_eq!(me.status, 200, "{}", me.json);
    assert_eq!(me.json["email"], "shopper@example.com");
    assert_eq!(me.json["roles"], json!(["customer"]));

    // An admin creates a product: 201 with the proto3 JSON shape of the blueprint.
    let created = p.send("POST", "/v1/products", Some(&admin), Some(product("TEA-1", "Green tea", "tea", "450"))).await;
    assert_eq!(created.status, 201, "{}", created.json);
    let id = created.json["id"].as_str().expect("id").to_owned();
    assert_eq!(created.json["price"], json!({"currency": "EUR", "amountMinor": "450"}));
    assert!(created.json["createTime"].as_str().is_some_and(|t| t.ends_with('Z')));

    // Stock starts at zero; an admin adds some.
    let inventory = p.send("GET", &format!("/v1/products/{id}/inventory"), None, None).await;
    assert_eq!(inventory.json, json!({"productId": id, "onHand": 0, "reserved": 0, "available": 0}));
    let adjusted = p
        .send(
            "POST",
            &format!("/v1/products/{id}/inventory:adjust"),
            Some(&admin),
            Some(json!({"delta": 12, "reason": "restock"})),
        )
        .await;
    assert_eq!(adjusted.status, 200, "{}", adjusted.json);
    assert_eq!(adjusted.json["available"], 12);

    // Anyone can browse.
    let listed = p.send("GET", "/v1/products?category=tea&pageSize=10", None, None).await;
    assert_eq!(listed.status, 200, "{}", listed.json);
    assert_eq!(listed.json["products"][0]["id"], id.as_str());
    let fetched = p.send("GET", &format!("/v1/products/{id}"), None, None).await;
    assert_eq!(fetched.json["name"], "Green tea");

    // PATCH changes only what the body names.
    let patched = p.send("PATCH", &format!("/v1/products/{id}"), Some(&admin), Some(json!({"name": "Sencha"}))).await;
    assert_eq!(patched.status, 200, "{}", patched.json);
    assert_eq!((patched.json["name"].as_str(), patched.json["category"].as_str()), (Some("Sencha"), Some("tea")));

    // Refusals, each with the one JSON error body.
    let anonymous = p.send("POST", "/v1/products", None, Some(product("X-1", "X", "tea", "1"))).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json["error"]["status"], "UNAUTHENTICATED");
    assert!(anonymous.headers.get("www-authenticate").is_some());
    let forbidden = p.send("POST", "/v1/products", Some(&customer), Some(product("X-1", "X", "tea", "1"))).await;
    assert_eq!(forbidden.status, 403);
    assert!(forbidden.json["error"]["message"].as_str().is_some_and(|m| m.contains("catalog:write")));
    let duplicate = p.send("POST", "/v1/products", Some(&admin), Some(product("TEA-1", "Again", "tea", "1"))).await;
    assert_eq!(duplicate.status, 409, "{}", duplicate.json);
    let missing = p.send("GET", "/v1/products/no-such-product", None, None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json["error"]["code"], 404);
    let bad_token = p.send("GET", "/v1/auth/me", Some("not-a-token"), None).await;
    assert_eq!(bad_token.status, 401);
    let oversold = p
        .send(
            "POST",
            &format!("/v1/products/{id}/inventory:adjust"),
            Some(&admin),
            Some(json!({"delta": -13, "reason": "loss"})),
        )
        .await;
    assert_eq!(oversold.status, 400, "{}", oversold.json);

    p.stop().await;
}

#[tokio::test]
async fn shopping_flow_on_sqlite() {
    shopping_flow(Storage::Sqlite).await;
}

#[tokio::test]
async fn shopping_flow_on_postgres() {
    shopping_flow(Storage::Postgres).await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error() {
    let Some(p) = TestPlatform::start(Storage::Sqlite).await else { return };
    let admin = p.admin_token().await;

    // Malformed JSON.
    let r = p.send_raw("POST", "/v1/auth/login", "application/json", b"{\"email\":".to_vec()).await;
    assert_eq!(r.status, 400, "{}", r.json);
    assert_eq!(r.json["error"]["status"], "INVALID_ARGUMENT");
    // Unknown field, named.
    let r = p.send("POST", "/v1/auth/login", None, Some(json!({"email": "a@b.co", "pasword": "x"}))).await;
    assert_eq!(r.status, 400);
    assert!(r.json["error"]["message"].as_str().is_some_and(|m| m.contains("pasword")), "{}", r.json);
    // Wrong type, field named with its path.
    let r = p
        .send(
            "POST",
            "/v1/products",
            Some(&admin),
            Some(json!({"sku": "A", "price": {"currency": "EUR", "amountMinor": true}})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json["error"]["details"][0]["fieldViolations"][0]["field"], "product.price.amountMinor", "{}", r.json);
    // Missing required fields: the service names each.
    let r = p.send("POST", "/v1/auth/register", None, Some(json!({"email": "", "password": ""}))).await;
    assert_eq!(r.status, 400);
    let fields: Vec<&str> = r.json["error"]["details"][0]["fieldViolations"]
        .as_array()
        .map(|v| v.iter().filter_map(|f| f["field"].as_str()).collect())
        .unwrap_or_default();
    assert!(fields.contains(&"email") && fields.contains(&"password") && fields.contains(&"displayName"), "{}", r.json);
    // Unknown query parameter, named.
    let r = p.send("GET", "/v1/products?colour=red", None, None).await;
    assert_eq!(r.status, 400);
    assert!(r.json["error"]["message"].as_str().is_some_and(|m| m.contains("colour")));
    // Oversize body.
    let r = p.send_raw("POST", "/v1/auth/login", "application/json", vec![b' '; 2 * 1024 * 1024]).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json["error"]["code"], 413);
    // Not JSON.
    let r = p.send_raw("POST", "/v1/auth/login", "text/plain", b"hello".to_vec()).await;
    assert_eq!(r.status, 415);
    // No such route, and a known path with the wrong method.
    let r = p.send("GET", "/v1/nothing-here", None, None).await;
    assert_eq!((r.status, r.json["error"]["status"].as_str()), (404, Some("NOT_FOUND")));
    let r = p.send("DELETE", "/v1/products", None, None).await;
    assert_eq!(r.status, 405);
    assert!(r.headers.get("allow").is_some_and(|v| v.to_str().unwrap_or("").contains("GET")));
    p.stop().await;
}

#[tokio::test]
async fn edge_endpoints_ids_and_metrics() {
    let Some(p) = TestPlatform::start(Storage::Sqlite).await else { return };
    for path in ["/healthz", "/readyz"] {
        assert_eq!(p.send("GET", path, None, None).await.status, 200, "{path}");
    }
    let jwks = p.send("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(jwks.status, 200);
    let key = &jwks.json["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );

    // A request id given is echoed; one not given is made up.
    let given =
        p.http.get(format!("{}/v1/products", p.base)).header("x-request-id", "req-42").send().await.expect("sent");
    assert_eq!(given.headers().get("x-request-id").and_then(|v| v.to_str().ok()), Some("req-42"));
    let made = p.send("GET", "/v1/products", None, None).await;
    assert!(made.headers.get("x-request-id").is_some_and(|v| !v.is_empty()));

    // The metrics count requests per route and per RPC; the gateway's own routes by name, not as unmatched.
    assert_eq!(p.send("GET", "/healthz", None, None).await.status, 200);
    let metrics = p.metrics_text().await;
    assert!(metrics.contains("http_server_requests_total{method=\"GET\",route=\"GET /healthz\",status=\"200\"}"));
    assert!(
        metrics.contains("http_server_requests_total{method=\"GET\",route=\"GET /v1/products\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "grpc_server_requests_total{method=\"/mercato.catalog.v1.CatalogService/ListProducts\",code=\"Ok\"}"
    ));
    assert!(metrics.contains("http_server_request_duration_seconds_bucket"));
    p.stop().await;
}

#[tokio::test]
async fn products_page_through_the_gateway() {
    let Some(p) = TestPlatform::start(Storage::Sqlite).await else { return };
    let admin = p.admin_token().await;
    for i in 0..7 {
        let r = p
            .send(
                "POST",
                "/v1/products",
                Some(&admin),
                Some(product(&format!("B-{i}"), &format!("Book {i}"), "books", &format!("{}", 1000 + 100 * i))),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let r = p.send("GET", &format!("/v1/products?pageSize=3&pageToken={token}"), None, None).await;
        assert_eq!(r.status, 200, "{}", r.json);
        for product in r.json["products"].as_array().into_iter().flatten() {
            seen.push(product["sku"].as_str().unwrap_or_default().to_owned());
        }
        token = r.json["nextPageToken"].as_str().unwrap_or_default().to_owned();
        if token.is_empty() {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, (0..7).map(|i| format!("B-{i}")).collect::<Vec<_>>());
    let r = p.send("GET", "/v1/products?query=book%205", None, None).await;
    assert_eq!(r.json["products"].as_array().map(Vec::len), Some(1), "{}", r.json);
    // The dearest first, within a price range.
    let r = p.send("GET", "/v1/products?orderBy=price%20desc&minPriceMinor=1200&maxPriceMinor=1400", None, None).await;
    let skus: Vec<&str> = r.json["products"]
        .as_array()
        .map(|all| all.iter().filter_map(|p| p["sku"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(skus, ["B-4", "B-3", "B-2"], "{}", r.json);
    let r = p.send("GET", "/v1/products?orderBy=cheapest", None, None).await;
    assert_eq!(r.status, 400, "{}", r.json);
    assert_eq!(r.json["error"]["details"][0]["fieldViolations"][0]["field"], "orderBy", "{}", r.json);

    // Categories: the ones products name, then described by an editor.
    let categories = p.send("GET", "/v1/categories", None, None).await;
    assert_eq!(
        categories.json["categories"],
        json!([{"slug": "books", "name": "books", "description": "", "position": 0, "productCount": 7, "described": false}]),
        "{}",
        categories.json
    );
    let described = json!({"slug": "books", "name": "Books", "description": "To read.", "position": 1});
    let made = p.send("POST", "/v1/categories", Some(&admin), Some(described)).await;
    assert_eq!((made.status, &made.json["described"]), (201, &json!(true)), "{}", made.json);
    let renamed = p.send("PATCH", "/v1/categories/books", Some(&admin), Some(json!({"name": "Books & more"}))).await;
    assert_eq!((renamed.status, &renamed.json["description"]), (200, &json!("To read.")), "{}", renamed.json);
    let categories = p.send("GET", "/v1/categories", None, None).await;
    assert_eq!(categories.json["categories"][0]["name"], "Books & more", "{}", categories.json);
    assert_eq!(p.send("DELETE", "/v1/categories/books", None, None).await.status, 401);
    assert_eq!(p.send("DELETE", "/v1/categories/books", Some(&admin), None).await.status, 200);
    p.stop().await;
}

async fn ledger_books(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let customer = p.customer_token("bookkeeper@example.com").await;
    let cash = json!({"code": "assets:cash:eur", "name": "Cash", "type": "ACCOUNT_TYPE_ASSET", "currency": "EUR"});
    let created = p.send("POST", "/v1/ledger/accounts", Some(&admin), Some(cash.clone())).await;
    assert_eq!(created.status, 201, "{}", created.json);
    assert_eq!(created.json["balance"], json!({"currency": "EUR", "amountMinor": "0"}));
    let id = created.json["id"].as_str().expect("id").to_owned();
    // Idempotent by code.
    let again = p.send("POST", "/v1/ledger/accounts", Some(&admin), Some(cash)).await;
    assert_eq!((again.status, again.json["id"].as_str()), (201, Some(id.as_str())), "{}", again.json);
    let listed = p.send("GET", "/v1/ledger/accounts?currency=EUR", Some(&admin), None).await;
    assert_eq!(listed.json["accounts"][0]["code"], "assets:cash:eur", "{}", listed.json);
    let entries = p.send("GET", &format!("/v1/ledger/accounts/{id}/entries"), Some(&admin), None).await;
    assert_eq!(entries.status, 200, "{}", entries.json);

    // A manual entry: the owner pays 100.00 EUR in. Resent, it is the same entry; its id with other content is
    // refused; a correction reverses it, once.
    let equity = json!({"code": "equity:owner:eur", "name": "Owner", "type": "ACCOUNT_TYPE_EQUITY", "currency": "EUR"});
    let equity = p.send("POST", "/v1/ledger/accounts", Some(&admin), Some(equity)).await;
    let equity_id = equity.json["id"].as_str().expect("equity id").to_owned();
    let posting = |account: &str, amount: &str| json!({"accountId": account, "amount": {"currency": "EUR", "amountMinor": amount}});
    let entry = |tx_id: &str, cash: &str, owner: &str, reverses: &str| {
        json!({"transactionId": tx_id, "description": "owner's capital", "reversesTransactionId": reverses,
               "postings": [posting(&id, cash), posting(&equity_id, owner)]})
    };
    let paid_in =
        p.send("POST", "/v1/ledger/transactions", Some(&admin), Some(entry("capital-1", "10000", "-10000", ""))).await;
    assert_eq!(paid_in.status, 201, "{}", paid_in.json);
    assert_eq!(paid_in.json["id"], "capital-1", "{}", paid_in.json);
    let resent =
        p.send("POST", "/v1/ledger/transactions", Some(&admin), Some(entry("capital-1", "10000", "-10000", ""))).await;
    assert_eq!((resent.status, &resent.json), (201, &paid_in.json), "the same entry, posted once");
    let reused =
        p.send("POST", "/v1/ledger/transactions", Some(&admin), Some(entry("capital-1", "5000", "-5000", ""))).await;
    assert_eq!(reused.status, 409, "{}", reused.json);
    let balance = |account: &str| {
        let path = format!("/v1/ledger/accounts/{account}");
        let (p, admin) = (&p, &admin);
        async move { p.send("GET", &path, Some(admin), None).await.json["balance"]["amountMinor"].clone() }
    };
    assert_eq!((balance(&id).await, balance(&equity_id).await), (json!("10000"), json!("-10000")));
    let reversal = entry("capital-1:reversal", "-10000", "10000", "capital-1");
    let reversed = p.send("POST", "/v1/ledger/transactions", Some(&admin), Some(reversal)).await;
    assert_eq!(reversed.status, 201, "{}", reversed.json);
    assert_eq!((balance(&id).await, balance(&equity_id).await), (json!("0"), json!("0")));
    let journal = p.send("GET", "/v1/ledger/transactions?pageSize=2", Some(&admin), None).await;
    let listed: Vec<&str> =
        journal.json["transactions"].as_array().into_iter().flatten().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(listed, ["capital-1:reversal", "capital-1"], "the journal, newest first: {}", journal.json);
    let long_ago = "/v1/ledger/transactions?startTime=2000-01-01T00:00:00Z&endTime=2000-02-01T00:00:00Z";
    let january_2000 = p.send("GET", long_ago, Some(&admin), None).await;
    assert_eq!((january_2000.status, &january_2000.json["transactions"]), (200, &json!([])), "{}", january_2000.json);
    let twice = entry("capital-1:reversal-2", "-10000", "10000", "capital-1");
    let twice = p.send("POST", "/v1/ledger/transactions", Some(&admin), Some(twice)).await;
    assert_eq!(twice.status, 400, "a transaction is reversed once: {}", twice.json);
    assert_eq!(twice.json["error"]["details"][0]["reason"], "TRANSACTION_ALREADY_REVERSED", "{}", twice.json);
    let unbalanced =
        p.send("POST", "/v1/ledger/transactions", Some(&admin), Some(entry("capital-2", "10000", "-9999", ""))).await;
    assert_eq!(unbalanced.status, 400, "{}", unbalanced.json);
    let by_customer =
        p.send("POST", "/v1/ledger/transactions", Some(&customer), Some(entry("capital-3", "1", "-1", ""))).await;
    assert_eq!(by_customer.status, 403, "{}", by_customer.json);

    // The books are for staff only.
    assert_eq!(p.send("GET", "/v1/ledger/accounts", Some(&customer), None).await.status, 403);
    assert_eq!(p.send("GET", "/v1/ledger/accounts", None, None).await.status, 401);
    assert_eq!(p.send("GET", "/v1/ledger/transactions/none", Some(&admin), None).await.status, 404);
    p.stop().await;
}

#[tokio::test]
async fn ledger_books_on_sqlite() {
    ledger_books(Storage::Sqlite).await;
}

#[tokio::test]
async fn ledger_books_on_postgres() {
    ledger_books(Storage::Postgres).await;
}

#[tokio::test]
async fn a_cart_priced_by_the_real_catalog() {
    let Some(p) = TestPlatform::start(Storage::Sqlite).await else { return };
    let admin = p.admin_token().await;
    let alice = p.customer_token("alice@example.com").await;
    let bob = p.customer_token("bob@example.com").await;
    let made = p.send("POST", "/v1/products", Some(&admin), Some(product("MUG-1", "Mug", "kitchen", "1250"))).await;
    let mug = made.json["id"].as_str().expect("id").to_owned();
    let r =
        p.send("POST", &format!("/v1/products/{mug}/inventory:adjust"), Some(&admin), Some(json!({"delta": 10}))).await;
    assert_eq!(r.status, 200, "{}", r.json);

    let added = p.send("POST", "/v1/cart/items", Some(&alice), Some(json!({"productId": mug, "quantity": 2}))).await;
    assert_eq!(added.status, 200, "{}", added.json);
    let again = p.send("POST", "/v1/cart/items", Some(&alice), Some(json!({"productId": mug, "quantity": 1}))).await;
    assert_eq!(again.json["items"][0]["quantity"], 3, "{}", again.json);
    assert_eq!(again.json["totals"], json!([{"currency": "EUR", "amountMinor": "3750"}]));

    // A price change shows on the next read.
    p.send(
        "PATCH",
        &format!("/v1/products/{mug}"),
        Some(&admin),
        Some(json!({"price": {"currency": "EUR", "amountMinor": "1000"}})),
    )
    .await;
    let cart = p.send("GET", "/v1/cart", Some(&alice), None).await;
    assert_eq!(cart.json["totals"], json!([{"currency": "EUR", "amountMinor": "3000"}]), "{}", cart.json);

    // Bob's cart is his own, and empty; bad quantities are named.
    let bobs = p.send("GET", "/v1/cart", Some(&bob), None).await;
    assert_eq!(bobs.json["items"], json!([]), "{}", bobs.json);
    let r = p.send("PATCH", &format!("/v1/cart/items/{mug}"), Some(&alice), Some(json!({"quantity": 100}))).await;
    assert_eq!(r.status, 400);
    assert!(r.json["error"]["message"].as_str().is_some_and(|m| m.contains("quantity")), "{}", r.json);
    let r = p.send("DELETE", &format!("/v1/cart/items/{mug}"), Some(&alice), None).await;
    assert_eq!((r.status, r.json["items"].clone()), (200, json!([])));
    assert_eq!(p.send("GET", "/v1/cart", None, None).await.status, 401);
    p.stop().await;
}

#[tokio::test]
async fn api_keys_work_at_the_edge_until_revoked() {
    let Some(p) = TestPlatform::start(Storage::Sqlite).await else { return };
    let admin = p.admin_token().await;
    let made = p.send("POST", "/v1/products", Some(&admin), Some(product("KEY-1", "Key", "tools", "100"))).await;
    let id = made.json["id"].as_str().expect("id").to_owned();
    let created = p
        .send(
            "POST",
            "/v1/auth/api-keys",
            Some(&admin),
            Some(json!({"name": "warehouse", "scopes": ["inventory:write"]})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.json);
    let secret = created.json["secret"].as_str().expect("secret").to_owned();
    let key_id = created.json["apiKey"]["id"].as_str().expect("key id").to_owned();

    let adjust = format!("/v1/products/{id}/inventory:adjust");
    let with_key = p.send_with("POST", &adjust, &[("x-api-key", &secret)], Some(json!({"delta": 3}))).await;
    assert_eq!(with_key.status, 200, "{}", with_key.json);
    // The key grants only its scopes.
    let beyond =
        p.send_with("POST", "/v1/products", &[("x-api-key", &secret)], Some(product("KEY-2", "K", "tools", "1"))).await;
    assert_eq!(beyond.status, 403, "{}", beyond.json);
    let bogus = p.send_with("POST", &adjust, &[("x-api-key", "mk_bogus")], Some(json!({"delta": 1}))).await;
    assert_eq!(bogus.status, 401);

    // Revoked, it stops working within seconds.
    let revoked = p.send("POST", &format!("/v1/auth/api-keys/{key_id}:revoke"), Some(&admin), Some(json!({}))).await;
    assert_eq!((revoked.status, revoked.json["revoked"].as_bool()), (200, Some(true)), "{}", revoked.json);
    let mut status = 0;
    for _ in 0..100 {
        status = p.send_with("POST", &adjust, &[("x-api-key", &secret)], Some(json!({"delta": 1}))).await.status;
        if status == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401, "a revoked key still works after 10 s");
    p.stop().await;
}

async fn payments_post_to_the_books(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let customer = p.customer_token("payer@example.com").await;
    let pay = |key: &'static str, method: &'static str, amount: &'static str| {
        let body = json!({"orderId": "order-1", "amount": {"currency": "EUR", "amountMinor": amount}, "paymentMethod": method});
        (key, body)
    };
    let (key, body) = pay("pay-1", "tok_visa", "2599");
    let bearer = format!("Bearer {customer}");
    let headers = [("authorization", bearer.as_str()), ("idempotency-key", key)];
    let paid = p.send_with("POST", "/v1/payments", &headers, Some(body.clone())).await;
    assert_eq!(paid.status, 201, "{}", paid.json);
    assert_eq!(paid.json["status"], "PAYMENT_STATUS_CAPTURED");
    let id = paid.json["id"].as_str().expect("id").to_owned();
    // A retry with the same key replays; the same key with another body is refused.
    let replay = p.send_with("POST", "/v1/payments", &headers, Some(body)).await;
    assert_eq!(replay.json["id"], id.as_str());
    let (_, other) = pay("pay-1", "tok_visa", "1");
    let reused = p.send_with("POST", "/v1/payments", &headers, Some(other)).await;
    assert_eq!(reused.status, 400, "{}", reused.json);

    // A decline is a payment that failed, with a reason a customer can read.
    let (key, body) = pay("pay-2", "tok_chargeDeclined", "500");
    let declined = p
        .send_with("POST", "/v1/payments", &[("authorization", bearer.as_str()), ("idempotency-key", key)], Some(body))
        .await;
    assert_eq!(declined.json["status"], "PAYMENT_STATUS_FAILED", "{}", declined.json);
    assert_eq!(declined.json["failureReason"], "Your card was declined.");

    // The capture is in the real ledger, balanced.
    let mut posted = Value::Null;
    for _ in 0..100 {
        let r = p.send("GET", &format!("/v1/ledger/transactions/payment:{id}:capture"), Some(&admin), None).await;
        if r.status == 200 {
            posted = r.json;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let postings = posted["postings"].as_array().cloned().unwrap_or_default();
    assert_eq!(postings.len(), 2, "{posted}");
    let sum: i64 = postings.iter().filter_map(|p| p["amount"]["amountMinor"].as_str()?.parse::<i64>().ok()).sum();
    assert_eq!(sum, 0);

    // Refunds: 60% once, never more than was captured.
    let refund = |key: &'static str| {
        let body = json!({"paymentId": id, "amount": {"currency": "EUR", "amountMinor": "1559"}, "reason": "damaged"});
        (key, body)
    };
    let admin_bearer = format!("Bearer {admin}");
    let (key, body) = refund("refund-1");
    let refunded = p
        .send_with(
            "POST",
            "/v1/refunds",
            &[("authorization", admin_bearer.as_str()), ("idempotency-key", key)],
            Some(body),
        )
        .await;
    assert_eq!(refunded.status, 201, "{}", refunded.json);
    assert_eq!(refunded.json["status"], "REFUND_STATUS_COMPLETED", "{}", refunded.json);
    let (key, body) = refund("refund-2");
    let too_much = p
        .send_with(
            "POST",
            "/v1/refunds",
            &[("authorization", admin_bearer.as_str()), ("idempotency-key", key)],
            Some(body),
        )
        .await;
    assert_eq!(too_much.status, 400, "{}", too_much.json);
    let listed = p.send("GET", &format!("/v1/payments/{id}/refunds"), Some(&admin), None).await;
    assert_eq!(listed.json["refunds"].as_array().map(Vec::len), Some(1), "{}", listed.json);
    let customer_refund = p
        .send_with(
            "POST",
            "/v1/refunds",
            &headers,
            Some(json!({"paymentId": id, "amount": {"currency": "EUR", "amountMinor": "1"}})),
        )
        .await;
    assert_eq!(customer_refund.status, 403, "customers cannot refund themselves");

    // Another customer cannot see it.
    let other = p.customer_token("other@example.com").await;
    assert_eq!(p.send("GET", &format!("/v1/payments/{id}"), Some(&other), None).await.status, 404);
    assert_eq!(p.send("GET", &format!("/v1/payments/{id}"), Some(&customer), None).await.status, 200);
    p.stop().await;
}

#[tokio::test]
async fn payments_post_to_the_books_on_sqlite() {
    payments_post_to_the_books(Storage::Sqlite).await;
}

#[tokio::test]
async fn payments_post_to_the_books_on_postgres() {
    payments_post_to_the_books(Storage::Postgres).await;
}

async fn checkout(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let customer = p.customer_token("checkout@example.com").await;
    let made = p.send("POST", "/v1/products", Some(&admin), Some(product("BEAN-1", "Beans", "coffee", "1200"))).await;
    let beans = made.json["id"].as_str().expect("id").to_owned();
    p.send("POST", &format!("/v1/products/{beans}/inventory:adjust"), Some(&admin), Some(json!({"delta": 5}))).await;
    p.send("POST", "/v1/cart/items", Some(&customer), Some(json!({"productId": beans, "quantity": 2}))).await;

    let address = json!({"name": "Ada", "line1": "1 Main St", "line2": "", "city": "Paris", "region": "", "postalCode": "75001", "country": "FR"});
    let bearer = format!("Bearer {customer}");
    let order = |key: &'static str, method: &'static str| {
        let body = json!({"shippingAddress": address, "paymentMethod": method});
        (key, body)
    };
    // A bad address is refused naming its fields as the client spelled them, and nothing is ordered.
    let mut unposted = address.clone();
    unposted["postalCode"] = json!("");
    let body = json!({"shippingAddress": unposted, "paymentMethod": "tok_visa"});
    let headers = [("authorization", bearer.as_str()), ("idempotency-key", "checkout-0")];
    let refused = p.send_with("POST", "/v1/orders", &headers, Some(body)).await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert_eq!(refused.json["error"]["details"][0]["fieldViolations"][0]["field"], "shippingAddress.postalCode");
    assert_eq!(refused.json["error"]["message"], "shippingAddress.postalCode: is required", "{}", refused.json);
    let (key, body) = order("checkout-1", "tok_visa");
    let placed = p
        .send_with("POST", "/v1/orders", &[("authorization", bearer.as_str()), ("idempotency-key", key)], Some(body))
        .await;
    assert_eq!(placed.status, 201, "{}", placed.json);
    assert_eq!(placed.json["status"], "ORDER_STATUS_CONFIRMED", "{}", placed.json);
    assert_eq!(placed.json["total"], json!({"currency": "EUR", "amountMinor": "2400"}));
    let payment_id = placed.json["paymentId"].as_str().expect("payment").to_owned();

    // Stock was sold, the cart emptied, the payment captured and booked.
    let stock = p.send("GET", &format!("/v1/products/{beans}/inventory"), None, None).await;
    assert_eq!(stock.json, json!({"productId": beans, "onHand": 3, "reserved": 0, "available": 3}));
    let cart = p.send("GET", "/v1/cart", Some(&customer), None).await;
    assert_eq!(cart.json["items"], json!([]), "{}", cart.json);
    let payment = p.send("GET", &format!("/v1/payments/{payment_id}"), Some(&customer), None).await;
    assert_eq!(payment.json["status"], "PAYMENT_STATUS_CAPTURED");

    // A declined card leaves the order FAILED with a readable reason and the stock where it was.
    let items = json!([{"productId": beans, "quantity": 1}]);
    let declined_body = json!({"shippingAddress": address, "paymentMethod": "tok_chargeDeclined", "items": items});
    let declined = p
        .send_with(
            "POST",
            "/v1/orders",
            &[("authorization", bearer.as_str()), ("idempotency-key", "checkout-2")],
            Some(declined_body),
        )
        .await;
    assert_eq!(declined.json["status"], "ORDER_STATUS_FAILED", "{}", declined.json);
    assert_eq!(declined.json["failureReason"], "Your card was declined.");
    let stock = p.send("GET", &format!("/v1/products/{beans}/inventory"), None, None).await;
    assert_eq!(stock.json["available"], 3);

    // Another customer cannot see the order; the owner can list it.
    let other = p.customer_token("nosy@example.com").await;
    let id = placed.json["id"].as_str().expect("order id");
    assert_eq!(p.send("GET", &format!("/v1/orders/{id}"), Some(&other), None).await.status, 404);
    let mine = p.send("GET", "/v1/orders", Some(&customer), None).await;
    assert_eq!(mine.json["orders"].as_array().map(Vec::len), Some(2), "{}", mine.json);

    // Cancelling refunds the payment and, through order.cancelled, puts the stock back. (Once its shipment
    // exists: an order cancelled before deliveries saw order.confirmed never gets one.)
    shipment_of(&p, &customer, id, "SHIPMENT_STATUS_PENDING").await;
    let cancelled = p.send("POST", &format!("/v1/orders/{id}:cancel"), Some(&customer), Some(json!({}))).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.json);
    assert_eq!(cancelled.json["status"], "ORDER_STATUS_CANCELLED", "{}", cancelled.json);
    let payment = p.send("GET", &format!("/v1/payments/{payment_id}"), Some(&customer), None).await;
    assert_eq!(payment.json["status"], "PAYMENT_STATUS_REFUNDED", "{}", payment.json);
    let mut available = Value::Null;
    for _ in 0..100 {
        available =
            p.send("GET", &format!("/v1/products/{beans}/inventory"), None, None).await.json["available"].clone();
        if available == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(available, 5, "the cancelled units are back in stock");
    // The order's shipment, made when it was confirmed and not yet dispatched, is cancelled with it.
    let shipment = shipment_of(&p, &customer, id, "SHIPMENT_STATUS_CANCELLED").await;
    assert_eq!(shipment["address"]["city"], "Paris", "{shipment}");
    p.stop().await;
}

/// A T-shirt in sizes through the gateway: made as a group, listed once with its choices, refused with the field
/// that breaks the group's rules, a size renamed by PATCH (the mask is the body's fields), one size bought as any
/// product.
async fn variants(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let size = |value: &str| json!([{"name": "Size", "value": value}]);
    let mut medium = product("TEE-M", "T-shirt, M", "apparel", "1900");
    medium["options"] = size("M");
    let base = p.send("POST", "/v1/products", Some(&admin), Some(medium)).await;
    assert_eq!((base.status, &base.json["options"], &base.json["variantOf"]), (201, &size("M"), &json!("")));
    let base_id = base.json["id"].as_str().expect("id").to_owned();
    let mut large = product("TEE-L", "T-shirt, L", "apparel", "2100");
    large["variantOf"] = json!(base_id);
    large["options"] = size("L");
    let made = p.send("POST", "/v1/products", Some(&admin), Some(large.clone())).await;
    assert_eq!((made.status, made.json["variants"].as_array().map(Vec::len)), (201, Some(2)), "{}", made.json);
    let large_id = made.json["id"].as_str().expect("id").to_owned();

    large["sku"] = json!("TEE-L-2");
    large["options"] = size("l");
    let twin = p.send("POST", "/v1/products", Some(&admin), Some(large.clone())).await;
    assert_eq!(twin.status, 409, "{}", twin.json);
    large["options"] = json!([{"name": "Colour", "value": "red"}]);
    let refused = p.send("POST", "/v1/products", Some(&admin), Some(large)).await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert_eq!(
        refused.json["error"]["details"][0]["fieldViolations"][0]["field"], "product.options",
        "{}",
        refused.json
    );

    // The shop lists the T-shirt once, with its sizes and what is left of each.
    let adjust = format!("/v1/products/{large_id}/inventory:adjust");
    p.send("POST", &adjust, Some(&admin), Some(json!({"delta": 3}))).await;
    let listed = p.send("GET", "/v1/products?category=apparel", None, None).await;
    assert_eq!(listed.json["products"].as_array().map(Vec::len), Some(1), "{}", listed.json);
    let choice = |id: &str, sku: &str, value: &str, cents: &str, available: i64| {
        json!({"id": id, "sku": sku, "name": format!("T-shirt, {value}"), "options": size(value),
               "price": {"currency": "EUR", "amountMinor": cents}, "active": true, "available": available})
    };
    let sizes = json!([choice(&base_id, "TEE-M", "M", "1900", 0), choice(&large_id, "TEE-L", "L", "2100", 3)]);
    assert_eq!(listed.json["products"][0]["variants"], sizes, "{}", listed.json);
    let every = p.send("GET", "/v1/products?category=apparel&includeVariants=true", None, None).await;
    assert_eq!(every.json["products"].as_array().map(Vec::len), Some(2), "{}", every.json);

    // A PATCH of the options alone changes them and nothing else.
    let patched =
        p.send("PATCH", &format!("/v1/products/{large_id}"), Some(&admin), Some(json!({"options": size("XL")}))).await;
    assert_eq!(patched.status, 200, "{}", patched.json);
    assert_eq!((&patched.json["options"], &patched.json["variantOf"]), (&size("XL"), &json!(base_id)));
    assert_eq!(patched.json["name"], "T-shirt, L", "{}", patched.json);

    // A size is bought as any product: its own price and stock.
    let customer = p.customer_token("tee@example.com").await;
    p.send("POST", "/v1/cart/items", Some(&customer), Some(json!({"productId": large_id, "quantity": 2}))).await;
    let address = json!({"name": "Ada", "line1": "1 Main St", "line2": "", "city": "Paris", "region": "", "postalCode": "75001", "country": "FR"});
    let bearer = format!("Bearer {customer}");
    let headers = [("authorization", bearer.as_str()), ("idempotency-key", "tee-1")];
    let body = json!({"shippingAddress": address, "paymentMethod": "tok_visa"});
    let placed = p.send_with("POST", "/v1/orders", &headers, Some(body)).await;
    assert_eq!(placed.json["status"], "ORDER_STATUS_CONFIRMED", "{}", placed.json);
    assert_eq!(placed.json["total"], json!({"currency": "EUR", "amountMinor": "4200"}));
    assert_eq!(placed.json["items"][0]["sku"], "TEE-L", "{}", placed.json);
    let shown = p.send("GET", &format!("/v1/products/{base_id}"), None, None).await;
    assert_eq!(
        (&shown.json["variants"][1]["available"], &shown.json["variants"][0]["available"]),
        (&json!(1), &json!(0))
    );
    p.stop().await;
}

/// A wishlist through the gateway against the real catalog: a product saved (201), listed with its price and
/// stock now, refused when not for sale, taken off (200, idempotent).
#[tokio::test]
async fn a_wishlist_through_the_gateway() {
    let Some(p) = TestPlatform::start(Storage::Sqlite).await else { return };
    let admin = p.admin_token().await;
    let customer = p.customer_token("wishes@example.com").await;
    let made = p.send("POST", "/v1/products", Some(&admin), Some(product("PEN-1", "Pen", "stationery", "2590"))).await;
    let pen = made.json["id"].as_str().expect("id").to_owned();
    p.send("POST", &format!("/v1/products/{pen}/inventory:adjust"), Some(&admin), Some(json!({"delta": 4}))).await;
    let saved = p.send("POST", "/v1/wishlist/items", Some(&customer), Some(json!({"productId": pen}))).await;
    assert_eq!(saved.status, 201, "{}", saved.json);
    let listed = p.send("GET", "/v1/wishlist/items", Some(&customer), None).await;
    let item = &listed.json["items"][0];
    assert_eq!(
        (&item["productId"], &item["name"], &item["price"], &item["forSale"], &item["available"]),
        (&json!(pen), &json!("Pen"), &json!({"currency": "EUR", "amountMinor": "2590"}), &json!(true), &json!(4)),
        "{}",
        listed.json
    );
    assert_eq!(item["createTime"], saved.json["createTime"], "{}", listed.json);
    p.send("PATCH", &format!("/v1/products/{pen}"), Some(&admin), Some(json!({"active": false}))).await;
    let off = p.send("GET", "/v1/wishlist/items", Some(&customer), None).await;
    assert_eq!(
        (&off.json["items"][0]["forSale"], off.json["items"][0].get("price")),
        (&json!(false), None),
        "{}",
        off.json
    );
    let refused = p.send("POST", "/v1/wishlist/items", Some(&customer), Some(json!({"productId": pen}))).await;
    assert_eq!((refused.status, &refused.json["error"]["details"][0]["reason"]), (400, &json!("PRODUCT_INACTIVE")));
    let anonymous = p.send("GET", "/v1/wishlist/items", None, None).await;
    assert_eq!(anonymous.status, 401);
    for _ in 0..2 {
        let removed = p.send("DELETE", &format!("/v1/wishlist/items/{pen}"), Some(&customer), None).await;
        assert_eq!(removed.status, 200, "{}", removed.json);
    }
    let emptied = p.send("GET", "/v1/wishlist/items", Some(&customer), None).await;
    assert_eq!(emptied.json, json!({"items": []}));
    p.stop().await;
}

#[tokio::test]
async fn variants_on_sqlite() {
    variants(Storage::Sqlite).await;
}

#[tokio::test]
async fn variants_on_postgres() {
    variants(Storage::Postgres).await;
}

/// The shipment of order `order_id` as its customer lists it, once it is in state `status` (the deliveries
/// service learns of orders through events: waits up to 5 s).
async fn shipment_of(p: &TestPlatform, token: &str, order_id: &str, status: &str) -> Value {
    let mut listed = Value::Null;
    for _ in 0..100 {
        listed = p.send("GET", &format!("/v1/shipments?orderId={order_id}"), Some(token), None).await.json;
        if listed["shipments"][0]["status"] == status {
            return listed["shipments"][0].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no {status} shipment for order {order_id}: {listed}");
}

/// A paid order is shipped: the deliveries service makes its shipment from `order.confirmed`, staff dispatch
/// it, the carrier's events move it, and the customer follows it to delivery.
async fn shipping(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let customer = p.customer_token("shipping@example.com").await;
    let made = p.send("POST", "/v1/products", Some(&admin), Some(product("TEA-9", "Tea", "tea", "800"))).await;
    let tea = made.json["id"].as_str().expect("id").to_owned();
    p.send("POST", &format!("/v1/products/{tea}/inventory:adjust"), Some(&admin), Some(json!({"delta": 5}))).await;
    let address =
        json!({"name": "Grace", "line1": "2 Side St", "city": "Lyon", "postalCode": "69001", "country": "fr"});
    let body =
        json!({"shippingAddress": address, "paymentMethod": "tok_visa", "items": [{"productId": tea, "quantity": 3}]});
    let bearer = format!("Bearer {customer}");
    let placed = p
        .send_with(
            "POST",
            "/v1/orders",
            &[("authorization", bearer.as_str()), ("idempotency-key", "ship-1")],
            Some(body),
        )
        .await;
    assert_eq!(placed.json["status"], "ORDER_STATUS_CONFIRMED", "{}", placed.json);
    let order_id = placed.json["id"].as_str().expect("order id");

    let pending = shipment_of(&p, &customer, order_id, "SHIPMENT_STATUS_PENDING").await;
    assert_eq!(pending["items"], json!([{"productId": tea, "sku": "TEA-9", "name": "Tea", "quantity": 3}]));
    assert_eq!(pending["address"]["country"], "FR", "the order's address, as the order kept it");
    let id = pending["id"].as_str().expect("shipment id");

    let dispatch = json!({"carrier": "La Poste", "trackingNumber": "6A123456789"});
    let by_customer =
        p.send("POST", &format!("/v1/shipments/{id}:dispatch"), Some(&customer), Some(dispatch.clone())).await;
    assert_eq!(by_customer.status, 403, "{}", by_customer.json);
    let shipped = p.send("POST", &format!("/v1/shipments/{id}:dispatch"), Some(&admin), Some(dispatch)).await;
    assert_eq!(shipped.status, 200, "{}", shipped.json);
    assert_eq!(shipped.json["status"], "SHIPMENT_STATUS_SHIPPED");
    assert_eq!(shipped.json["trackingNumber"], "6A123456789");

    // With the carrier, the order can no longer be cancelled (nor refunded as if the goods never left).
    let cancel = p.send("POST", &format!("/v1/orders/{order_id}:cancel"), Some(&customer), Some(json!({}))).await;
    assert_eq!(cancel.status, 400, "{}", cancel.json);
    let reasons: Vec<_> =
        cancel.json["error"]["details"].as_array().expect("details").iter().map(|d| &d["reason"]).collect();
    assert!(reasons.contains(&&json!("ORDER_SHIPPED")), "{}", cancel.json);
    let order = p.send("GET", &format!("/v1/orders/{order_id}"), Some(&customer), None).await;
    assert_eq!(order.json["status"], "ORDER_STATUS_CONFIRMED", "{}", order.json);
    let payment_id = order.json["paymentId"].as_str().expect("payment id");
    let payment = p.send("GET", &format!("/v1/payments/{payment_id}"), Some(&customer), None).await;
    assert_eq!(payment.json["status"], "PAYMENT_STATUS_CAPTURED", "{}", payment.json);

    for (status, event_id) in [("SHIPMENT_STATUS_IN_TRANSIT", "lp-1"), ("SHIPMENT_STATUS_DELIVERED", "lp-2")] {
        let event = json!({"status": status, "location": "Lyon", "carrierEventId": event_id});
        let recorded = p.send("POST", &format!("/v1/shipments/{id}/events"), Some(&admin), Some(event)).await;
        assert_eq!(recorded.status, 201, "{}", recorded.json);
        assert_eq!(recorded.json["status"], status);
    }
    let bad = json!({"status": "SHIPMENT_STATUS_PENDING"});
    let refused = p.send("POST", &format!("/v1/shipments/{id}/events"), Some(&admin), Some(bad)).await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert_eq!(refused.json["error"]["details"][0]["fieldViolations"][0]["field"], "status", "{}", refused.json);

    let seen = p.send("GET", &format!("/v1/shipments/{id}"), Some(&customer), None).await;
    assert_eq!(seen.json["status"], "SHIPMENT_STATUS_DELIVERED", "{}", seen.json);
    let steps: Vec<_> = seen.json["events"].as_array().expect("history").iter().map(|e| e["status"].clone()).collect();
    assert_eq!(
        steps,
        [
            "SHIPMENT_STATUS_PENDING",
            "SHIPMENT_STATUS_SHIPPED",
            "SHIPMENT_STATUS_IN_TRANSIT",
            "SHIPMENT_STATUS_DELIVERED"
        ]
    );
    let other = p.customer_token("curious@example.com").await;
    assert_eq!(p.send("GET", &format!("/v1/shipments/{id}"), Some(&other), None).await.status, 404);

    // The customer was told, by the notifications service, through shipment.shipped and shipment.delivered.
    let mut told = Vec::new();
    for _ in 0..100 {
        let listed = p.send("GET", "/v1/notifications", Some(&customer), None).await.json;
        told = listed["notifications"].as_array().cloned().unwrap_or_default();
        if told.iter().filter(|n| n["eventType"].as_str().is_some_and(|t| t.starts_with("shipment."))).count() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let subjects: Vec<_> = told.iter().filter_map(|n| n["subject"].as_str()).collect();
    assert!(subjects.contains(&format!("Your order {order_id} is on its way").as_str()), "{subjects:?}");
    assert!(subjects.contains(&format!("Your order {order_id} was delivered").as_str()), "{subjects:?}");
    p.stop().await;
}

/// A registered customer finds their profile made from the registration, keeps it and an address book, and
/// checks out to a saved address.
async fn profiles_and_address_books(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let customer = p.customer_token("profile@example.com").await;
    let mut profile = Value::Null;
    for _ in 0..100 {
        profile = p.send("GET", "/v1/profile", Some(&customer), None).await.json;
        if profile["email"] == "profile@example.com" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(profile["displayName"], "Customer", "made from user.registered: {profile}");
    let changed = p.send("PATCH", "/v1/profile", Some(&customer), Some(json!({"phone": "+33 1 23 45 67 89"}))).await;
    assert_eq!(changed.status, 200, "{}", changed.json);
    assert_eq!(
        (changed.json["phone"].as_str(), changed.json["displayName"].as_str()),
        (Some("+33123456789"), Some("Customer"))
    );
    let bad = p.send("PATCH", "/v1/profile", Some(&customer), Some(json!({"phone": "call me"}))).await;
    assert_eq!(bad.status, 400, "{}", bad.json);
    assert_eq!(bad.json["error"]["details"][0]["fieldViolations"][0]["field"], "profile.phone", "{}", bad.json);

    let home = json!({"name": "Marie", "line1": "3 Rue X", "city": "Paris", "postalCode": "75003", "country": "fr"});
    let saved = p.send("POST", "/v1/addresses", Some(&customer), Some(json!({"label": "Home", "address": home}))).await;
    assert_eq!(saved.status, 201, "{}", saved.json);
    assert_eq!(
        (saved.json["isDefault"].as_bool(), saved.json["address"]["country"].as_str()),
        (Some(true), Some("FR"))
    );
    let id = saved.json["id"].as_str().expect("address id").to_owned();
    let other = p.customer_token("other@example.com").await;
    assert_eq!(p.send("DELETE", &format!("/v1/addresses/{id}"), Some(&other), None).await.status, 404);
    assert_eq!(p.send("GET", "/v1/users/some-user/profile", Some(&other), None).await.status, 404);

    // The saved address is what checkout takes as its shipping address.
    let admin = p.admin_token().await;
    let made = p.send("POST", "/v1/products", Some(&admin), Some(product("MUG-2", "Mug", "home", "900"))).await;
    let mug = made.json["id"].as_str().expect("id").to_owned();
    p.send("POST", &format!("/v1/products/{mug}/inventory:adjust"), Some(&admin), Some(json!({"delta": 5}))).await;
    let book = p.send("GET", "/v1/addresses", Some(&customer), None).await.json;
    let body = json!({"shippingAddress": book["addresses"][0]["address"], "paymentMethod": "tok_visa", "items": [{"productId": mug, "quantity": 1}]});
    let bearer = format!("Bearer {customer}");
    let placed = p
        .send_with(
            "POST",
            "/v1/orders",
            &[("authorization", bearer.as_str()), ("idempotency-key", "addr-1")],
            Some(body),
        )
        .await;
    assert_eq!(placed.json["status"], "ORDER_STATUS_CONFIRMED", "{}", placed.json);
    assert_eq!(placed.json["shippingAddress"]["city"], "Paris", "{}", placed.json);
    // Or checkout names it by id (orders asks users for it, as the customer), or takes the default.
    let fetched = p.send("GET", &format!("/v1/addresses/{id}"), Some(&customer), None).await;
    assert_eq!((fetched.status, &fetched.json["label"]), (200, &json!("Home")), "{}", fetched.json);
    for (key, body) in [
        (
            "addr-2",
            json!({"shippingAddressId": id, "paymentMethod": "tok_visa", "items": [{"productId": mug, "quantity": 1}]}),
        ),
        ("addr-3", json!({"paymentMethod": "tok_visa", "items": [{"productId": mug, "quantity": 1}]})),
    ] {
        let headers = [("authorization", bearer.as_str()), ("idempotency-key", key)];
        let placed = p.send_with("POST", "/v1/orders", &headers, Some(body)).await;
        assert_eq!(placed.status, 201, "{key}: {}", placed.json);
        assert_eq!(placed.json["shippingAddress"]["name"], "Marie", "{key}: {}", placed.json);
    }
    let others = format!("Bearer {other}");
    let body =
        json!({"shippingAddressId": id, "paymentMethod": "tok_visa", "items": [{"productId": mug, "quantity": 1}]});
    let refused = p
        .send_with(
            "POST",
            "/v1/orders",
            &[("authorization", others.as_str()), ("idempotency-key", "addr-4")],
            Some(body),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert_eq!(
        refused.json["error"]["details"][0]["fieldViolations"][0]["field"], "shippingAddressId",
        "{}",
        refused.json
    );
    assert_eq!(p.send("DELETE", &format!("/v1/addresses/{id}"), Some(&customer), None).await.status, 200);
    p.stop().await;
}

#[tokio::test]
async fn profiles_and_address_books_on_sqlite() {
    profiles_and_address_books(Storage::Sqlite).await;
}

#[tokio::test]
async fn profiles_and_address_books_on_postgres() {
    profiles_and_address_books(Storage::Postgres).await;
}

/// A customer asks for help and gets an answer; someone without an account uses the contact form.
async fn support_tickets(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let customer = p.customer_token("help@example.com").await;
    let admin = p.admin_token().await;
    let body = json!({"subject": "Wrong size", "message": "The mug is too small."});
    let opened = p.send("POST", "/v1/tickets", Some(&customer), Some(body)).await;
    assert_eq!(opened.status, 201, "{}", opened.json);
    assert_eq!(opened.json["status"], "TICKET_STATUS_OPEN");
    let id = opened.json["id"].as_str().expect("ticket id").to_owned();

    let answer = json!({"body": "We will send a bigger one."});
    let answered = p.send("POST", &format!("/v1/tickets/{id}/messages"), Some(&admin), Some(answer)).await;
    assert_eq!(answered.status, 201, "{}", answered.json);
    assert_eq!(answered.json["status"], "TICKET_STATUS_PENDING");
    let seen = p.send("GET", &format!("/v1/tickets/{id}"), Some(&customer), None).await;
    let roles: Vec<_> =
        seen.json["messages"].as_array().expect("messages").iter().map(|m| m["authorRole"].clone()).collect();
    assert_eq!(roles, ["AUTHOR_ROLE_CUSTOMER", "AUTHOR_ROLE_AGENT"], "{}", seen.json);
    let other = p.customer_token("snoop@example.com").await;
    assert_eq!(p.send("GET", &format!("/v1/tickets/{id}"), Some(&other), None).await.status, 404);

    // A photo of the problem, as base64 in JSON; the agent fetches it back as the file itself.
    let jpeg: &[u8] = b"\xFF\xD8\xFF\xE0\0\x10JFIF\0 small mug";
    let file = json!({"filename": "mug.jpg", "contentType": "image/jpeg", "data": BASE64_STANDARD.encode(jpeg)});
    let attached = p.send("POST", &format!("/v1/tickets/{id}/attachments"), Some(&customer), Some(file)).await;
    assert_eq!(attached.status, 201, "{}", attached.json);
    assert_eq!(attached.json["authorRole"], "AUTHOR_ROLE_CUSTOMER", "{}", attached.json);
    let uri = attached.json["uri"].as_str().expect("uri").to_owned();
    let fetched = p.send("GET", &uri, Some(&admin), None).await;
    assert_eq!((fetched.status, fetched.headers["content-type"].to_str().ok()), (200, Some("image/jpeg")));
    assert_eq!(fetched.bytes, jpeg, "the bytes as uploaded");
    assert_eq!(fetched.headers["content-disposition"], "attachment; filename=\"mug.jpg\"; filename*=UTF-8''mug.jpg");
    assert_eq!(fetched.headers["cache-control"], "private, no-cache");
    assert_eq!(p.send("GET", &uri, Some(&other), None).await.status, 404, "another customer's file");
    assert_eq!(p.send("GET", &uri, None, None).await.status, 401, "files are not public");
    let html = json!({"filename": "x.html", "contentType": "text/html", "data": BASE64_STANDARD.encode("<script>")});
    let refused = p.send("POST", &format!("/v1/tickets/{id}/attachments"), Some(&customer), Some(html)).await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert_eq!(refused.json["error"]["details"][0]["fieldViolations"][0]["field"], "contentType", "{}", refused.json);

    let form =
        json!({"name": "Grace", "email": "grace@example.com", "subject": "Norway?", "message": "Do you ship there?"});
    let sent = p.send("POST", "/v1/contact", None, Some(form)).await;
    assert_eq!(sent.status, 202, "the contact form needs no account: {}", sent.json);
    let form_ticket = sent.json["ticketId"].as_str().expect("ticket id");
    let bad = p
        .send("POST", "/v1/contact", None, Some(json!({"name": "G", "email": "nope", "subject": "s", "message": "m"})))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.json);
    assert_eq!(bad.json["error"]["details"][0]["fieldViolations"][0]["field"], "email", "{}", bad.json);
    let all = p.send("GET", "/v1/tickets", Some(&admin), None).await.json;
    let ids: Vec<_> = all["tickets"].as_array().expect("tickets").iter().filter_map(|t| t["id"].as_str()).collect();
    assert!(ids.contains(&form_ticket) && ids.contains(&id.as_str()), "agents see both: {all}");

    // The FAQ: an agent writes a draft and publishes it with PATCH (the body's fields are the mask); anybody reads it.
    let draft = json!({"question": "Do you ship abroad?", "answer": "Within the EU.", "category": "shipping"});
    let written = p.send("POST", "/v1/faq", Some(&admin), Some(draft)).await;
    assert_eq!(written.status, 201, "{}", written.json);
    let faq_id = written.json["id"].as_str().expect("entry id").to_owned();
    assert_eq!(p.send("GET", "/v1/faq", None, None).await.json["entries"], json!([]), "drafts are not shown");
    let publish = json!({"published": true});
    let published = p.send("PATCH", &format!("/v1/faq/{faq_id}"), Some(&admin), Some(publish)).await;
    assert_eq!((published.status, &published.json["answer"]), (200, &json!("Within the EU.")), "{}", published.json);
    let shown = p.send("GET", "/v1/faq?category=shipping&query=eu", None, None).await;
    assert_eq!(shown.json["entries"][0]["question"], "Do you ship abroad?", "{}", shown.json);
    let denied = p.send("POST", "/v1/faq", Some(&customer), Some(json!({"question": "Q", "answer": "A"}))).await;
    assert_eq!(denied.status, 403, "{}", denied.json);

    // The newsletter: anyone asks, and the address is mailed its confirmation (logged here: no SMTP server).
    let asked = p.send("POST", "/v1/newsletter/subscriptions", None, Some(json!({"email": "fan@example.com"}))).await;
    assert_eq!(asked.status, 202, "{}", asked.json);
    let mut recipients = Vec::new();
    for _ in 0..100 {
        let all = p.send("GET", "/v1/notifications?pageSize=100", Some(&admin), None).await.json;
        recipients = all["notifications"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter(|n| n["eventType"] == "newsletter.subscription_requested")
                    .filter_map(|n| n["recipient"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if !recipients.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(recipients, ["fan@example.com"]);
    let issue = json!({"subject": "Spring sale", "body": "Ten percent off.", "requestId": "spring-1"});
    let sent = p.send("POST", "/v1/newsletters", Some(&admin), Some(issue.clone())).await;
    assert_eq!((sent.status, &sent.json["recipientCount"]), (201, &json!(0)), "unconfirmed: {}", sent.json);
    assert_eq!(p.send("POST", "/v1/newsletters", Some(&customer), Some(issue)).await.status, 403);
    let unknown = json!({"token": "a".repeat(43)});
    assert_eq!(p.send("POST", "/v1/newsletter/subscriptions:confirm", None, Some(unknown)).await.status, 404);
    // Staff see who asked and what was sent, and forget an address on request.
    let listed =
        p.send("GET", "/v1/newsletter/subscriptions?status=SUBSCRIPTION_STATUS_PENDING", Some(&admin), None).await;
    assert_eq!(listed.status, 200, "{}", listed.json);
    assert_eq!(listed.json["subscribers"][0]["email"], "fan@example.com", "{}", listed.json);
    assert!(listed.json["subscribers"][0].get("token").is_none(), "never the token: {}", listed.json);
    let history = p.send("GET", "/v1/newsletters", Some(&admin), None).await;
    assert_eq!(history.json["newsletters"][0]["subject"], "Spring sale", "{}", history.json);
    assert_eq!(p.send("GET", "/v1/newsletters", Some(&customer), None).await.status, 403);
    let forgotten = p.send("DELETE", "/v1/newsletter/subscriptions/fan%40example.com", Some(&admin), None).await;
    assert_eq!(forgotten.status, 200, "{}", forgotten.json);
    let listed = p.send("GET", "/v1/newsletter/subscriptions", Some(&admin), None).await;
    assert_eq!(listed.json["subscribers"], json!([]), "{}", listed.json);

    // The agent's answer reached the customer as a notification too (ticket.replied).
    let mut subjects = Vec::new();
    for _ in 0..100 {
        let listed = p.send("GET", "/v1/notifications", Some(&customer), None).await.json;
        subjects = listed["notifications"]
            .as_array()
            .map(|all| all.iter().filter_map(|n| n["subject"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if subjects.iter().any(|s| s == "Re: Wrong size") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(subjects.iter().any(|s| s == "Re: Wrong size"), "{subjects:?}");
    p.stop().await;
}

#[tokio::test]
async fn support_tickets_on_sqlite() {
    support_tickets(Storage::Sqlite).await;
}

#[tokio::test]
async fn support_tickets_on_postgres() {
    support_tickets(Storage::Postgres).await;
}

/// Staff give a product images over HTTP (JSON, the bytes in base64); shoppers see them on the product and
/// fetch each as the image itself.
async fn product_images(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let made = p.send("POST", "/v1/products", Some(&admin), Some(product("MUG-7", "Mug", "kitchen", "900"))).await;
    let id = made.json["id"].as_str().expect("id").to_owned();
    let png: &[u8] = b"\x89PNG\r\n\x1A\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
    let body = json!({"contentType": "image/png", "data": BASE64_STANDARD.encode(png), "altText": "A blue mug"});
    let added = p.send("POST", &format!("/v1/products/{id}/images"), Some(&admin), Some(body.clone())).await;
    assert_eq!(added.status, 201, "{}", added.json);
    let uri = added.json["uri"].as_str().expect("uri").to_owned();
    assert_eq!(added.json["sizeBytes"], png.len().to_string(), "int64 as a string, as proto3 JSON says");

    let shown = p.send("GET", &format!("/v1/products/{id}"), None, None).await;
    assert_eq!(shown.json["images"][0]["altText"], "A blue mug", "{}", shown.json);
    let image = p.send("GET", &uri, None, None).await;
    assert_eq!(image.status, 200);
    assert_eq!(image.headers["content-type"], "image/png");
    assert_eq!(image.bytes, png, "the bytes as uploaded");
    assert_eq!(image.headers["cache-control"], "public, max-age=86400", "caches may keep it");
    // A browser that has it revalidates by its ETag and gets no bytes again.
    let etag = image.headers["etag"].to_str().expect("an ETag").to_owned();
    let again = p.send_with("GET", &uri, &[("if-none-match", &etag)], None).await;
    assert_eq!((again.status, again.bytes.len()), (304, 0));

    // Customers may not add images; a file that is not what it claims is refused, naming the field.
    let customer = p.customer_token("looker@example.com").await;
    let denied = p.send("POST", &format!("/v1/products/{id}/images"), Some(&customer), Some(body)).await;
    assert_eq!(denied.status, 403, "{}", denied.json);
    let lying = json!({"contentType": "image/jpeg", "data": BASE64_STANDARD.encode(png)});
    let refused = p.send("POST", &format!("/v1/products/{id}/images"), Some(&admin), Some(lying)).await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert_eq!(refused.json["error"]["details"][0]["fieldViolations"][0]["field"], "data", "{}", refused.json);

    let image_id = added.json["id"].as_str().expect("image id");
    let deleted = p.send("DELETE", &format!("/v1/products/{id}/images/{image_id}"), Some(&admin), None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.json);
    assert_eq!(p.send("GET", &uri, None, None).await.status, 404);
    p.stop().await;
}

#[tokio::test]
async fn product_images_on_sqlite() {
    product_images(Storage::Sqlite).await;
}

#[tokio::test]
async fn product_images_on_postgres() {
    product_images(Storage::Postgres).await;
}

#[tokio::test]
async fn shipping_on_sqlite() {
    shipping(Storage::Sqlite).await;
}

#[tokio::test]
async fn shipping_on_postgres() {
    shipping(Storage::Postgres).await;
}

#[tokio::test]
async fn checkout_on_sqlite() {
    checkout(Storage::Sqlite).await;
}

#[tokio::test]
async fn checkout_on_postgres() {
    checkout(Storage::Postgres).await;
}

/// The token `email` was last mailed to reset its password: read where notifications gets it, auth's outbox.
/// Waits until the edge refuses `token` on `path` as the token of an ended session (services and the gateway read
/// the ended sessions every few seconds), and returns that reply.
async fn refused_as_ended(p: &TestPlatform, path: &str, token: &str) -> Reply {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let reply = p.send("GET", path, Some(token), None).await;
        if reply.status == 401 {
            assert!(
                reply.json["error"]["message"].as_str().is_some_and(|m| m.contains("session has ended")),
                "{}",
                reply.json
            );
            return reply;
        }
        assert_eq!(reply.status, 200, "{}", reply.json);
        assert!(std::time::Instant::now() < deadline, "an ended session's token is still honoured on {path}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn signing_out_ends_the_session_at_the_edge() {
    let Some(p) = TestPlatform::start(Storage::Sqlite).await else { return };
    let email = "two-devices@example.com";
    p.customer_token(email).await;
    let sign_in =
        || p.send("POST", "/v1/auth/login", None, Some(json!({"email": email, "password": "customer-pass-1"})));
    let (phone, laptop) = (sign_in().await.json, sign_in().await.json);
    let access = |session: &Value| session["accessToken"].as_str().expect("access token").to_owned();
    assert_eq!(p.send("GET", "/v1/cart", Some(&access(&phone)), None).await.status, 200);

    let out = p.send("POST", "/v1/auth/logout", None, Some(json!({"refreshToken": phone["refreshToken"]}))).await;
    assert_eq!(out.status, 200, "{}", out.json);
    let refused = refused_as_ended(&p, "/v1/cart", &access(&phone)).await;
    let challenge = refused.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(challenge.starts_with("Bearer") && challenge.contains("invalid_token"), "{challenge}");
    assert_eq!(p.send("GET", "/v1/auth/me", Some(&access(&phone)), None).await.status, 401);
    assert_eq!(p.send("GET", "/v1/cart", Some(&access(&laptop)), None).await.status, 200, "the other session lives");

    // The owner lists their sessions and ends one from another.
    let tablet = sign_in().await.json;
    let listed = p.send("GET", "/v1/auth/sessions", Some(&access(&laptop)), None).await;
    assert_eq!(listed.status, 200, "{}", listed.json);
    let sessions = listed.json["sessions"].as_array().cloned().unwrap_or_default();
    let current: Vec<bool> = sessions.iter().map(|s| s["current"] == json!(true)).collect();
    // The sign-in that registered, the laptop's (the caller's), the tablet's; the phone's ended.
    assert_eq!(current, [false, true, false], "{}", listed.json);
    let tablet_id = sessions[2]["id"].as_str().expect("id").to_owned();
    let ended = p.send("DELETE", &format!("/v1/auth/sessions/{tablet_id}"), Some(&access(&laptop)), None).await;
    assert_eq!((ended.status, &ended.json), (200, &json!({})), "{}", ended.json);
    refused_as_ended(&p, "/v1/cart", &access(&tablet)).await;
    let again = p.send("DELETE", &format!("/v1/auth/sessions/{tablet_id}"), Some(&access(&laptop)), None).await;
    assert_eq!(again.status, 404, "{}", again.json);
    let others = p.send("POST", "/v1/auth/sessions:revokeOthers", Some(&access(&laptop)), Some(json!({}))).await;
    assert_eq!((others.status, &others.json["revokedCount"]), (200, &json!(1)), "{}", others.json);
    assert_eq!(p.send("GET", "/v1/cart", Some(&access(&laptop)), None).await.status, 200, "the caller's own lives");
    p.stop().await;
}

#[tokio::test]
async fn staff_give_roles_and_disable_accounts() {
    let Some(p) = TestPlatform::start(Storage::Sqlite).await else { return };
    let admin = p.admin_token().await;
    let email = "new-hire@example.com";
    let token = p.customer_token(email).await;
    let tea = || Some(product("HIRE-1", "Hire tea", "tea", "300"));
    assert_eq!(p.send("POST", "/v1/products", Some(&token), tea()).await.status, 403, "a customer");

    let found = p.send("GET", "/v1/auth/users?email=NEW-HIRE", Some(&admin), None).await;
    assert_eq!(found.status, 200, "{}", found.json);
    assert_eq!(found.json["users"].as_array().map(Vec::len), Some(1), "{}", found.json);
    let id = found.json["users"][0]["id"].as_str().expect("id").to_owned();
    let by_customer = p.send("GET", "/v1/auth/users", Some(&token), None).await;
    assert_eq!(by_customer.status, 403, "{}", by_customer.json);

    let set_roles = format!("/v1/auth/users/{id}:setRoles");
    let roles = p.send("POST", &set_roles, Some(&admin), Some(json!({"roles": ["catalog"]}))).await;
    assert_eq!((roles.status, &roles.json["roles"]), (200, &json!(["customer", "catalog"])), "{}", roles.json);
    let unknown = p.send("POST", &set_roles, Some(&admin), Some(json!({"roles": ["owner"]}))).await;
    assert_eq!(unknown.status, 400, "{}", unknown.json);
    assert_eq!(unknown.json["error"]["details"][0]["fieldViolations"][0]["field"], "roles[0]", "{}", unknown.json);
    let staff = p.login(email, "customer-pass-1").await;
    assert_eq!(p.send("POST", "/v1/products", Some(&staff), tea()).await.status, 201, "the catalog role's scope");

    let disabled = p.send("POST", &format!("/v1/auth/users/{id}:disable"), Some(&admin), Some(json!({}))).await;
    assert_eq!(disabled.status, 200, "{}", disabled.json);
    assert!(disabled.json["disableTime"].is_string(), "{}", disabled.json);
    refused_as_ended(&p, "/v1/auth/me", &staff).await;
    let credentials = json!({"email": email, "password": "customer-pass-1"});
    let refused = p.send("POST", "/v1/auth/login", None, Some(credentials.clone())).await;
    assert_eq!(refused.status, 403, "{}", refused.json);
    assert_eq!(refused.json["error"]["details"][0]["reason"], "ACCOUNT_DISABLED", "{}", refused.json);
    let enabled = p.send("POST", &format!("/v1/auth/users/{id}:enable"), Some(&admin), Some(json!({}))).await;
    assert_eq!(enabled.status, 200, "{}", enabled.json);
    assert_eq!(p.send("POST", "/v1/auth/login", None, Some(credentials)).await.status, 200, "enabled again");

    // The owner was mailed each change (logged here: no SMTP server).
    let mut told = Vec::new();
    for _ in 0..200 {
        let all = p.send("GET", "/v1/notifications?pageSize=100", Some(&admin), None).await.json;
        told = all["notifications"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["recipient"] == email)
            .filter(|n| n["eventType"] != "user.registered" && n["eventType"] != "user.email_verification_requested")
            .filter_map(|n| n["eventType"].as_str().map(str::to_owned))
            .collect();
        if told.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    told.sort();
    assert_eq!(told, ["user.disabled", "user.enabled", "user.roles_changed"]);
    p.stop().await;
}

async fn mailed_reset_token(p: &TestPlatform, email: &str) -> String {
    let mailed: Vec<api::auth::PasswordResetRequested> =
        outbox_payloads(p, "auth", "user.password_reset_requested").await;
    mailed.into_iter().filter(|e| e.email == email).map(|e| e.token).next_back().expect("a reset token was mailed")
}

async fn an_account_changes_and_resets_its_password_then_is_deleted(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let email = "forgetful@example.com";
    let token = p.customer_token(email).await;

    let change = |current: &str, new: &str| json!({"currentPassword": current, "newPassword": new});
    let wrong =
        p.send("POST", "/v1/auth/password:change", Some(&token), Some(change("guess-guess", "second-pass-2"))).await;
    assert_eq!(wrong.status, 400, "{}", wrong.json);
    assert_eq!(wrong.json["error"]["details"][0]["fieldViolations"][0]["field"], "currentPassword", "{}", wrong.json);
    let changed = p
        .send("POST", "/v1/auth/password:change", Some(&token), Some(change("customer-pass-1", "second-pass-2")))
        .await;
    assert_eq!(changed.status, 200, "{}", changed.json);
    assert!(changed.json["accessToken"].is_string() && changed.json["refreshToken"].is_string(), "{}", changed.json);
    p.login(email, "second-pass-2").await;
    // Every session signed in with the old password ends: its access token is refused before it expires.
    refused_as_ended(&p, "/v1/auth/me", &token).await;

    // Forgotten: the same 202 for an address with or without an account; the account is mailed a code.
    for address in [email, "nobody@example.com"] {
        let asked = p.send("POST", "/v1/auth/password-resets", None, Some(json!({"email": address}))).await;
        assert_eq!((asked.status, &asked.json), (202, &json!({})), "{address}");
    }
    let mailed = p
        .get_until("/v1/notifications?pageSize=100", &admin, |all| {
            all["notifications"].as_array().is_some_and(|all| {
                all.iter().any(|n| n["eventType"] == "user.password_reset_requested" && n["recipient"] == email)
            })
        })
        .await;
    let resets = mailed["notifications"]
        .as_array()
        .map_or(0, |all| all.iter().filter(|n| n["eventType"] == "user.password_reset_requested").count());
    assert_eq!(resets, 1, "nobody@example.com has no account and is mailed nothing: {mailed}");
    let code = mailed_reset_token(&p, email).await;

    let confirm = |token: &str, new: &str| json!({"token": token, "newPassword": new});
    let unknown =
        p.send("POST", "/v1/auth/password-resets:confirm", None, Some(confirm("made-up", "third-pass-3"))).await;
    assert_eq!(unknown.status, 404, "{}", unknown.json);
    let reset = p.send("POST", "/v1/auth/password-resets:confirm", None, Some(confirm(&code, "third-pass-3"))).await;
    assert_eq!(reset.status, 200, "{}", reset.json);
    let again = p.send("POST", "/v1/auth/password-resets:confirm", None, Some(confirm(&code, "fourth-pass-4"))).await;
    assert_eq!(again.status, 400, "{}", again.json);
    assert_eq!(again.json["error"]["details"][0]["reason"], "TOKEN_USED", "{}", again.json);
    let old = p.send("POST", "/v1/auth/login", None, Some(json!({"email": email, "password": "second-pass-2"}))).await;
    assert_eq!(old.status, 401, "{}", old.json);
    let token = p.login(email, "third-pass-3").await;

    // The owner is told of both changes, in their own list.
    let told = p
        .get_until("/v1/notifications", &token, |mine| {
            let changes = mine["notifications"]
                .as_array()
                .map_or(0, |all| all.iter().filter(|n| n["eventType"] == "user.password_changed").count());
            changes == 2
        })
        .await;
    let subjects: Vec<&str> = told["notifications"]
        .as_array()
        .map(|all| all.iter().filter_map(|n| n["subject"].as_str()).collect())
        .unwrap_or_default();
    assert!(subjects.contains(&"Your Mercato password was changed"), "{told}");

    // Deleting the account takes its password; then its profile, address book and cart go too.
    let me = p.send("GET", "/v1/auth/me", Some(&token), None).await.json;
    let user_id = me["id"].as_str().expect("id").to_owned();
    let home = json!({"name": "F", "line1": "1 Rue", "city": "Paris", "postalCode": "75001", "country": "FR"});
    assert_eq!(p.send("POST", "/v1/addresses", Some(&token), Some(json!({"address": home}))).await.status, 201);
    let wrong = p.send("POST", "/v1/auth/me:delete", Some(&token), Some(json!({"password": "guess-guess"}))).await;
    assert_eq!(wrong.status, 400, "{}", wrong.json);
    assert_eq!(wrong.json["error"]["details"][0]["fieldViolations"][0]["field"], "password", "{}", wrong.json);
    let deleted = p.send("POST", "/v1/auth/me:delete", Some(&token), Some(json!({"password": "third-pass-3"}))).await;
    assert_eq!((deleted.status, &deleted.json), (200, &json!({})), "{}", deleted.json);
    let gone = p.send("POST", "/v1/auth/login", None, Some(json!({"email": email, "password": "third-pass-3"}))).await;
    assert_eq!(gone.status, 401, "{}", gone.json);
    refused_as_ended(&p, "/v1/cart", &token).await;
    let profile = format!("/v1/users/{user_id}/profile");
    let mut status = 0;
    for _ in 0..100 {
        status = p.send("GET", &profile, Some(&admin), None).await.status;
        if status == 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, 404, "the profile is erased once user.deleted arrives");
    let confirmed = p
        .get_until("/v1/notifications?pageSize=100", &admin, |all| {
            all["notifications"].as_array().is_some_and(|all| all.iter().any(|n| n["eventType"] == "user.deleted"))
        })
        .await;
    let farewell = confirmed["notifications"]
        .as_array()
        .and_then(|all| all.iter().find(|n| n["eventType"] == "user.deleted").cloned());
    assert_eq!(farewell.map(|n| n["recipient"].clone()), Some(json!(email)), "{confirmed}");
    p.stop().await;
}

#[tokio::test]
async fn an_account_changes_and_resets_its_password_then_is_deleted_on_sqlite() {
    an_account_changes_and_resets_its_password_then_is_deleted(Storage::Sqlite).await;
}

#[tokio::test]
async fn an_account_changes_and_resets_its_password_then_is_deleted_on_postgres() {
    an_account_changes_and_resets_its_password_then_is_deleted(Storage::Postgres).await;
}

/// Registering mails a code (the platform wired together: auth's outbox, the bus, notifications' log); the code
/// verifies the address without a sign-in, and the account shows it.
#[tokio::test]
async fn a_new_account_verifies_its_address_with_the_code_mailed_to_it() {
    let Some(p) = TestPlatform::start(Storage::Sqlite).await else { return };
    let email = "verify-me@example.com";
    let token = p.customer_token(email).await;
    let me = p.send("GET", "/v1/auth/me", Some(&token), None).await.json;
    assert_eq!(me["emailVerified"], false, "{me}");
    let mine = p
        .get_until("/v1/notifications", &token, |mine| {
            mine["notifications"].as_array().is_some_and(|all| {
                all.iter().any(|n| n["eventType"] == "user.email_verification_requested" && n["recipient"] == email)
            })
        })
        .await;
    let mail = mine["notifications"].as_array().and_then(|all| {
        all.iter().find(|n| n["eventType"] == "user.email_verification_requested").map(|n| n["subject"].clone())
    });
    assert_eq!(mail, Some(json!("Confirm your email address")), "{mine}");
    let mailed: Vec<api::auth::EmailVerificationRequested> =
        outbox_payloads(&p, "auth", "user.email_verification_requested").await;
    let code = mailed.into_iter().find(|e| e.email == email).map(|e| e.token).expect("a code was mailed");

    let confirm = |token: &str| Some(json!({"token": token}));
    let unknown = p.send("POST", "/v1/auth/email-verifications:confirm", None, confirm("made-up")).await;
    assert_eq!((unknown.status, &unknown.json["error"]["details"][0]["reason"]), (404, &json!("TOKEN_NOT_FOUND")));
    let verified = p.send("POST", "/v1/auth/email-verifications:confirm", None, confirm(&code)).await;
    assert_eq!(verified.status, 200, "{}", verified.json);
    assert_eq!(
        (&verified.json["user"]["email"], &verified.json["user"]["emailVerified"]),
        (&json!(email), &json!(true))
    );
    let me = p.send("GET", "/v1/auth/me", Some(&token), None).await.json;
    assert_eq!(
        (&me["emailVerified"], &me["emailVerifyTime"]),
        (&json!(true), &verified.json["user"]["emailVerifyTime"])
    );
    let needless = p.send("POST", "/v1/auth/email-verifications", Some(&token), Some(json!({}))).await;
    assert_eq!(needless.status, 400, "{}", needless.json);
    assert_eq!(needless.json["error"]["details"][0]["reason"], "EMAIL_ALREADY_VERIFIED", "{}", needless.json);
    p.stop().await;
}

/// An account moves to another address: the code goes to the new mailbox (auth's outbox, the bus,
/// notifications' log), its return moves the account without a sign-in, the profile follows, and the address the
/// account left is told, with a code that takes the account back; the profile follows it back too.
#[tokio::test]
async fn an_account_moves_to_a_new_address_and_the_services_follow() {
    // Signing in six times in a minute is more than the default budget of the login route allows.
    let Some(p) = TestPlatform::start_with(Storage::Sqlite, &[("MERCATO_RATE_LIMITS", "off")]).await else { return };
    let (old, new) = ("moving@example.com", "moved@example.org");
    let token = p.customer_token(old).await;
    let ask = |email: &str, password: &str| Some(json!({"newEmail": email, "password": password}));
    let wrong = p.send("POST", "/v1/auth/email-changes", Some(&token), ask(new, "not-my-password")).await;
    assert_eq!(wrong.status, 400, "{}", wrong.json);
    assert_eq!(wrong.json["error"]["details"][0]["fieldViolations"][0]["field"], "password", "{}", wrong.json);
    let asked = p.send("POST", "/v1/auth/email-changes", Some(&token), ask(new, "customer-pass-1")).await;
    assert_eq!(asked.status, 202, "{}", asked.json);
    assert!(asked.json["expireTime"].is_string(), "{}", asked.json);
    let mine = p
        .get_until("/v1/notifications", &token, |mine| {
            mine["notifications"].as_array().is_some_and(|all| {
                all.iter().any(|n| n["eventType"] == "user.email_change_requested" && n["recipient"] == new)
            })
        })
        .await;
    assert!(mine.to_string().contains("Confirm your new email address"), "{mine}");
    let mailed: Vec<api::auth::EmailChangeRequested> = outbox_payloads(&p, "auth", "user.email_change_requested").await;
    let code = mailed.into_iter().find(|e| e.email == new).map(|e| e.token).expect("a code was mailed");

    let moved = p.send("POST", "/v1/auth/email-changes:confirm", None, Some(json!({"token": code}))).await;
    assert_eq!(moved.status, 200, "{}", moved.json);
    assert_eq!((&moved.json["user"]["email"], &moved.json["user"]["emailVerified"]), (&json!(new), &json!(true)));
    let profile = p.get_until("/v1/profile", &token, |profile| profile["email"] == new).await;
    assert_eq!(profile["email"], new, "the users service follows user.email_changed");
    let told = p
        .get_until("/v1/notifications", &token, |mine| {
            mine["notifications"].as_array().is_some_and(|all| {
                all.iter().any(|n| n["eventType"] == "user.email_change_confirmed" && n["recipient"] == old)
            })
        })
        .await;
    assert!(told.to_string().contains("The email address of your Mercato account was changed"), "{told}");
    let login = |email: &str, password: &str| {
        p.send("POST", "/v1/auth/login", None, Some(json!({"email": email, "password": password})))
    };
    assert_eq!(login(new, "customer-pass-1").await.status, 200);
    assert_eq!(login(old, "customer-pass-1").await.status, 401);

    // "This wasn't me": the code mailed to the old address takes the account back with a new password.
    let notices: Vec<api::auth::EmailChangeConfirmed> =
        outbox_payloads(&p, "auth", "user.email_change_confirmed").await;
    let undo = notices.into_iter().find(|e| e.previous_email == old).map(|e| e.token).expect("an undo code");
    let body = json!({"token": undo, "newPassword": "taken-back-pass-2"});
    let back = p.send("POST", "/v1/auth/email-changes:revert", None, Some(body.clone())).await;
    assert_eq!(back.status, 200, "{}", back.json);
    assert_eq!(back.json["user"]["email"], old, "{}", back.json);
    assert_eq!(login(old, "taken-back-pass-2").await.status, 200);
    assert_eq!(login(new, "customer-pass-1").await.status, 401);
    let fresh = login(old, "taken-back-pass-2").await.json["accessToken"].as_str().expect("token").to_owned();
    let profile = p.get_until("/v1/profile", &fresh, |profile| profile["email"] == old).await;
    assert_eq!(profile["email"], old, "the users service follows the way back");
    let again = p.send("POST", "/v1/auth/email-changes:revert", None, Some(body)).await;
    assert_eq!((again.status, &again.json["error"]["details"][0]["reason"]), (404, &json!("TOKEN_NOT_FOUND")));
    p.stop().await;
}

/// A shop that requires verified addresses: the checkout of an unverified customer is refused saying why; once
/// the code mailed at registration is used and the sign-in refreshed, the same order goes through.
#[tokio::test]
async fn a_shop_can_require_a_verified_address_for_checkout() {
    let settings = [("MERCATO_RATE_LIMITS", "off"), ("MERCATO_CHECKOUT_REQUIRES_VERIFIED_EMAIL", "true")];
    let Some(p) = TestPlatform::start_with(Storage::Sqlite, &settings).await else { return };
    let admin = p.admin_token().await;
    let made = p.send("POST", "/v1/products", Some(&admin), Some(product("TEA-9", "Tea", "tea", "900"))).await;
    let tea = made.json["id"].as_str().expect("id").to_owned();
    p.send("POST", &format!("/v1/products/{tea}/inventory:adjust"), Some(&admin), Some(json!({"delta": 3}))).await;
    let email = "unverified@example.com";
    p.customer_token(email).await;
    let signed_in =
        p.send("POST", "/v1/auth/login", None, Some(json!({"email": email, "password": "customer-pass-1"}))).await;
    let token = signed_in.json["accessToken"].as_str().expect("access token").to_owned();
    let address = json!({"name": "Ada", "line1": "1 Main St", "city": "Paris", "postalCode": "75001", "country": "FR"});
    let body =
        json!({"items": [{"productId": tea, "quantity": 1}], "shippingAddress": address, "paymentMethod": "tok_visa"});
    let platform = &p;
    let place = |token: &str| {
        let bearer = format!("Bearer {token}");
        let body = body.clone();
        async move {
            let headers = [("authorization", bearer.as_str()), ("idempotency-key", "verified-checkout-1")];
            platform.send_with("POST", "/v1/orders", &headers, Some(body)).await
        }
    };
    let refused = place(&token).await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert_eq!(refused.json["error"]["details"][0]["reason"], "EMAIL_NOT_VERIFIED", "{}", refused.json);
    let stock = p.send("GET", &format!("/v1/products/{tea}/inventory"), None, None).await;
    assert_eq!(stock.json["available"], 3, "nothing held: {}", stock.json);

    let mailed: Vec<api::auth::EmailVerificationRequested> =
        outbox_payloads(&p, "auth", "user.email_verification_requested").await;
    let code = mailed.into_iter().find(|e| e.email == email).map(|e| e.token).expect("a code was mailed");
    let verified = p.send("POST", "/v1/auth/email-verifications:confirm", None, Some(json!({"token": code}))).await;
    assert_eq!(verified.status, 200, "{}", verified.json);
    let refreshed =
        p.send("POST", "/v1/auth/refresh", None, Some(json!({"refreshToken": signed_in.json["refreshToken"]}))).await;
    let token = refreshed.json["accessToken"].as_str().expect("access token").to_owned();
    let placed = place(&token).await;
    assert_eq!(placed.status, 201, "{}", placed.json);
    assert_eq!(placed.json["status"], "ORDER_STATUS_CONFIRMED", "{}", placed.json);
    p.stop().await;
}

#[tokio::test]
async fn anyone_may_subscribe_but_not_flood_the_newsletter() {
    let Some(p) = TestPlatform::start_with(Storage::Sqlite, &[]).await else { return };
    let mut statuses = Vec::new();
    for i in 0..6 {
        let body = json!({"email": format!("reader{i}@example.com")});
        statuses.push(p.send("POST", "/v1/newsletter/subscriptions", None, Some(body)).await.status);
    }
    // The default budget of this route is 5 a minute per client: each request mails an address.
    assert_eq!(statuses, [202, 202, 202, 202, 202, 429]);
    p.stop().await;
}

/// Events of `event_type` that `service` wrote to its outbox (the mails they cause), oldest first.
async fn outbox_payloads<M: prost::Message + Default>(p: &TestPlatform, service: &str, event_type: &str) -> Vec<M> {
    let db = platform::Db::open(&p.settings, service).await.expect("the service's database");
    let payloads: Vec<String> = platform::with_db!(&db, pool => {
        sqlx::query_scalar("SELECT payload FROM outbox WHERE event_type = $1 ORDER BY create_time")
            .bind(event_type)
            .fetch_all(pool)
            .await
    })
    .expect("outbox");
    db.close().await;
    let decode = |payload: &String| M::decode(BASE64_STANDARD.decode(payload).expect("base64").as_slice());
    payloads.iter().map(|payload| decode(payload).expect("payload")).collect()
}

#[tokio::test]
async fn a_newsletter_is_left_with_one_click_in_the_mail_client() {
    let settings = [("MERCATO_RATE_LIMITS", "off"), ("MERCATO_PUBLIC_API_URL", "https://api.shop.test")];
    let Some(p) = TestPlatform::start_with(Storage::Sqlite, &settings).await else { return };
    let admin = p.admin_token().await;
    let asked = p.send("POST", "/v1/newsletter/subscriptions", None, Some(json!({"email": "fan@example.com"}))).await;
    assert_eq!(asked.status, 202, "{}", asked.json);
    let requested: Vec<api::mercato::support::v1::NewsletterSubscriptionRequested> =
        outbox_payloads(&p, "support", "newsletter.subscription_requested").await;
    let confirm = json!({"token": requested[0].token});
    let confirmed = p.send("POST", "/v1/newsletter/subscriptions:confirm", None, Some(confirm)).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.json);
    let issue = json!({"subject": "Spring sale", "body": "Ten percent off."});
    let sent = p.send("POST", "/v1/newsletters", Some(&admin), Some(issue)).await;
    assert_eq!((sent.status, &sent.json["recipientCount"]), (201, &json!(1)), "{}", sent.json);

    // The newsletter's List-Unsubscribe names the gateway's one-click route (the mail itself is logged here).
    let mut header = None;
    for _ in 0..200 {
        let db = platform::Db::open(&p.settings, "notifications").await.expect("notifications database");
        header = platform::with_db!(&db, pool => {
            sqlx::query_as::<_, (String, i32)>(
                "SELECT list_unsubscribe, list_unsubscribe_one_click FROM notifications WHERE event_type = 'newsletter.issued'",
            )
            .fetch_optional(pool)
            .await
        })
        .expect("notifications");
        db.close().await;
        if header.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (url, one_click) = header.expect("the newsletter's mail");
    assert_eq!(one_click, 1, "announced with List-Unsubscribe-Post");
    let path = url.strip_prefix("https://api.shop.test").expect("the public address").to_owned();
    assert!(path.starts_with("/v1/newsletter/tokens/") && path.ends_with(":unsubscribe"), "{url}");

    // The mail client's POST: a form, no token, no cookie. Twice (a retry) answers the same.
    let form = "application/x-www-form-urlencoded";
    let odd = p.send_raw("POST", &path, form, b"List-Unsubscribe=Maybe".to_vec()).await;
    assert_eq!(odd.status, 400, "{}", odd.json);
    assert_eq!(odd.json["error"]["details"][0]["fieldViolations"][0]["field"], "List-Unsubscribe", "{}", odd.json);
    for _ in 0..2 {
        let left = p.send_raw("POST", &path, form, b"List-Unsubscribe=One-Click".to_vec()).await;
        assert_eq!(left.status, 200, "{}", left.json);
        assert_eq!(
            (&left.json["email"], &left.json["status"]),
            (&json!("fan@example.com"), &json!("SUBSCRIPTION_STATUS_UNSUBSCRIBED"))
        );
    }
    let again = p.send("POST", "/v1/newsletters", Some(&admin), Some(json!({"subject": "S", "body": "B"}))).await;
    assert_eq!(again.json["recipientCount"], 0, "{}", again.json);
    p.stop().await;
}

#[tokio::test]
async fn discount_codes_cannot_be_guessed_at_the_preview() {
    let Some(p) = TestPlatform::start_with(Storage::Sqlite, &[]).await else { return };
    let customer = p.customer_token("guesser@example.com").await;
    let mut statuses = Vec::new();
    for i in 0..25 {
        let guess =
            json!({"items": [{"productId": "no-such-product", "quantity": 1}], "discountCode": format!("GUESS-{i}")});
        statuses.push(p.send("POST", "/v1/orders:preview", Some(&customer), Some(guess)).await.status);
    }
    // The default budget of the preview is 60 a minute per caller, bursts of 20: enough for a storefront.
    assert!(statuses[..20].iter().all(|s| *s != 429), "{statuses:?}");
    assert!(statuses[20..].contains(&429), "a burst beyond 20 is refused: {statuses:?}");
    p.stop().await;
}

#[tokio::test]
async fn a_customer_who_keeps_guessing_codes_is_stopped() {
    // Gateway budgets off: the orders service's own budget of refused codes is what stops this guesser.
    let Some(p) = TestPlatform::start(Storage::Sqlite).await else { return };
    let admin = p.admin_token().await;
    let made = p.send("POST", "/v1/products", Some(&admin), Some(product("GUESS-1", "Tea", "tea", "500"))).await;
    assert_eq!(made.status, 201, "{}", made.json);
    let customer = p.customer_token("code-guesser@example.com").await;
    let preview =
        |code: String| json!({"items": [{"productId": made.json["id"], "quantity": 1}], "discountCode": code});
    for i in 0..10 {
        let refused = p.send("POST", "/v1/orders:preview", Some(&customer), Some(preview(format!("GUESS-{i}")))).await;
        assert_eq!(refused.status, 400, "{}", refused.json);
    }
    let stopped = p.send("POST", "/v1/orders:preview", Some(&customer), Some(preview("GUESS-10".into()))).await;
    assert_eq!(stopped.status, 429, "{}", stopped.json);
    assert_eq!(stopped.json["error"]["details"][0]["reason"], "DISCOUNT_CODE_ATTEMPTS", "{}", stopped.json);
    let without = json!({"items": [{"productId": made.json["id"], "quantity": 1}]});
    assert_eq!(p.send("POST", "/v1/orders:preview", Some(&customer), Some(without)).await.status, 200, "no code: fine");
    p.stop().await;
}

#[tokio::test]
async fn logins_are_rate_limited_before_any_password_is_checked() {
    let Some(p) = TestPlatform::start_with(Storage::Sqlite, &[]).await else { return };
    let attempt = json!({"email": "victim@example.com", "password": "guess-guess"});
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let r = p.send("POST", "/v1/auth/login", None, Some(attempt.clone())).await;
        if r.status == 429 {
            assert!(r.headers.get("retry-after").is_some(), "429 without Retry-After");
            assert_eq!(r.json["error"]["status"], "RESOURCE_EXHAUSTED");
        } else {
            assert!(r.headers.get("ratelimit-remaining").is_some(), "no RateLimit headers");
        }
        statuses.push(r.status);
    }
    // The default login budget is 5 a minute per client: wrong passwords first, then refusals.
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429]);
    p.stop().await;
}

#[tokio::test]
async fn every_service_answers_health_and_reflection_without_a_token() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let Some(p) = TestPlatform::start(Storage::Sqlite).await else { return };
    assert_eq!(p.services.len(), mercato::SERVICES.len());
    for (name, addr) in &p.services {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connects");
        let health = HealthClient::new(channel.clone()).check(HealthCheckRequest { service: String::new() }).await;
        assert_eq!(health.expect("health answers").get_ref().status, ServingStatus::Serving as i32, "{name}");

        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("reflection answers")
            .into_inner();
        let answer = answers.message().await.expect("stream").expect("one answer");
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("{name}: no list")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n.starts_with(&format!("mercato.{name}.v1."))), "{name} lists {names:?}");

        // Anything else needs a token.
        if *name == "auth" {
            let mut auth = api::auth::auth_service_client::AuthServiceClient::new(channel);
            let refused = auth.get_me(api::auth::GetMeRequest {}).await.expect_err("no token");
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        }
    }
    p.stop().await;
}
