//! The checkout's hard cases over HTTP, on SQLite and PostgreSQL: an order for more than is in stock, 300
//! buyers racing for 100 units, a second customer who tries to read or act on the first one's cart, orders,
//! payments and refunds, a discount code with one use, shipping rates priced with the checkout, the tax an order's
//! total includes, a return of part of a delivered order, and a review only a buyer may write. Each ends with `mercato audit` finding the books sound.

use std::time::Duration;

use e2e::{Storage, TestPlatform};
use serde_json::{Value, json};

fn address() -> Value {
    json!({"name": "Ada", "line1": "1 Main St", "line2": "", "city": "Paris", "region": "", "postalCode": "75001", "country": "FR"})
}

/// A new active product with `stock` units; returns its id.
async fn product_in_stock(p: &TestPlatform, admin: &str, sku: &str, price_minor: &str, stock: i64) -> String {
    let body = json!({"sku": sku, "name": format!("Product {sku}"), "description": "", "category": "test",
        "price": {"currency": "EUR", "amountMinor": price_minor}, "active": true});
    let made = p.send("POST", "/v1/products", Some(admin), Some(body)).await;
    assert_eq!(made.status, 201, "{}", made.json);
    let id = made.json["id"].as_str().expect("product id").to_owned();
    let adjusted = p
        .send("POST", &format!("/v1/products/{id}/inventory:adjust"), Some(admin), Some(json!({"delta": stock})))
        .await;
    assert_eq!(adjusted.status, 200, "{}", adjusted.json);
    id
}

/// Places an order for `quantity` units of `product` paid with `method`, under idempotency `key`, and returns
/// the order in its final state (a checkout answered PENDING is followed until it ends).
async fn place_order(p: &TestPlatform, token: &str, key: &str, product: &str, quantity: i32, method: &str) -> Value {
    let body = json!({"shippingAddress": address(), "paymentMethod": method,
        "items": [{"productId": product, "quantity": quantity}]});
    let bearer = format!("Bearer {token}");
    let placed = p
        .send_with("POST", "/v1/orders", &[("authorization", bearer.as_str()), ("idempotency-key", key)], Some(body))
        .await;
    assert_eq!(placed.status, 201, "{}", placed.json);
    let mut order = placed.json;
    for _ in 0..600 {
        if order["status"] != "ORDER_STATUS_PENDING" {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let id = order["id"].as_str().expect("order id").to_owned();
        order = p.send("GET", &format!("/v1/orders/{id}"), Some(token), None).await.json;
    }
    panic!("order never finished: {order}");
}

async fn inventory(p: &TestPlatform, product: &str) -> Value {
    p.send("GET", &format!("/v1/products/{product}/inventory"), None, None).await.json
}

/// The balance (minor units, as JSON) of the ledger account `code` in a listing of accounts; null without it.
fn balance(accounts: &Value, code: &str) -> Value {
    let found = accounts["accounts"].as_array().and_then(|a| a.iter().find(|a| a["code"] == code));
    found.map_or(Value::Null, |a| a["balance"]["amountMinor"].clone())
}

/// Changes one row behind the services' backs in `service`'s database: `sql` with `id` as its $1 (what an audit must
/// notice, or a state an upgrade leaves). Answers how many rows it changed.
async fn alter(p: &TestPlatform, service: &str, sql: &'static str, id: &str) -> u64 {
    let db = platform::Db::open(&p.settings, service).await.expect("the service's database");
    let changed = platform::with_db!(&db, pool => {
        sqlx::query(sql).bind(id).execute(pool).await.map(|r| r.rows_affected())
    })
    .expect("altered");
    db.close().await;
    changed
}

/// The units of `product` available once they are `want` (the catalog follows events: a moment), or as they are
/// after 5 s.
async fn available_soon(p: &TestPlatform, product: &str, want: i64) -> Value {
    let mut available = Value::Null;
    for _ in 0..100 {
        available = inventory(p, product).await["available"].clone();
        if available == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    available
}

async fn assert_books_sound(p: &TestPlatform) {
    let violations = mercato::audit(&p.settings).await.expect("audit runs");
    assert!(violations.is_empty(), "mercato audit found: {violations:#?}");
}

async fn more_than_in_stock(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let customer = p.customer_token("short@example.com").await;
    let mugs = product_in_stock(&p, &admin, "MUG-1", "900", 2).await;

    let order = place_order(&p, &customer, "short-1", &mugs, 3, "tok_visa").await;
    assert_eq!(order["status"], "ORDER_STATUS_FAILED", "{order}");
    assert_eq!(order["failureReason"], "Sorry, Product MUG-1 is out of stock.", "{order}");
    assert_eq!(order["paymentId"].as_str().unwrap_or_default(), "", "nothing was charged: {order}");
    assert_eq!(inventory(&p, &mugs).await, json!({"productId": mugs, "onHand": 2, "reserved": 0, "available": 2}));

    // What is there can still be bought.
    let order = place_order(&p, &customer, "short-2", &mugs, 2, "tok_visa").await;
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");
    assert_eq!(inventory(&p, &mugs).await, json!({"productId": mugs, "onHand": 0, "reserved": 0, "available": 0}));
    assert_books_sound(&p).await;

    // The audit checks across services: a confirmed order whose stock the catalog never sold is reported.
    let id = order["id"].as_str().expect("order id");
    alter(&p, "catalog", "UPDATE reservations SET status = 'HELD' WHERE id = $1", id).await;
    let violations = mercato::audit(&p.settings).await.expect("audit runs");
    assert_eq!(violations, [format!("orders: order {id} is confirmed but its stock was not committed")]);

    // And a confirmed order that deliveries never made a shipment for, once that is no longer in flight.
    for _ in 0..100 {
        let listed = p.send("GET", &format!("/v1/shipments?orderId={id}"), Some(&customer), None).await.json;
        if listed["shipments"].as_array().is_some_and(|s| !s.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alter(&p, "orders", "UPDATE orders SET update_time = update_time - 600000000 WHERE id = $1", id).await;
    let shipped_before = mercato::audit(&p.settings).await.expect("audit runs");
    assert_eq!(shipped_before.len(), 1, "its shipment exists: {shipped_before:#?}");
    let deliveries = platform::Db::open(&p.settings, "deliveries").await.expect("deliveries database");
    platform::with_db!(&deliveries, pool => {
        async {
            for table in ["tracking_events", "shipment_items"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE shipment_id IN (SELECT id FROM shipments WHERE order_id = $1)"
                )))
                .bind(id)
                .execute(pool)
                .await?;
            }
            sqlx::query("DELETE FROM shipments WHERE order_id = $1").bind(id).execute(pool).await.map(|r| r.rows_affected())
        }
        .await
    })
    .expect("lose the shipment");
    deliveries.close().await;
    let violations = mercato::audit(&p.settings).await.expect("audit runs");
    assert!(
        violations.contains(&format!("deliveries: order {id} is confirmed but has no shipment")),
        "{violations:#?}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_than_in_stock_on_sqlite() {
    more_than_in_stock(Storage::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_than_in_stock_on_postgres() {
    more_than_in_stock(Storage::Postgres).await;
}

/// 300 orders of one unit each, all at once, for 100 units: exactly 100 are confirmed and charged, the others
/// fail as out of stock without a charge, and the stock ends at zero, never below.
async fn three_hundred_buyers_for_a_hundred_units(storage: Storage) {
    const UNITS: i64 = 100;
    const CUSTOMERS: usize = 30;
    const ORDERS_EACH: usize = 10;
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let lamps = product_in_stock(&p, &admin, "LAMP-1", "2500", UNITS).await;
    let mut customers = Vec::new();
    for i in 0..CUSTOMERS {
        customers.push(p.customer_token(&format!("buyer{i}@example.com")).await);
    }

    let orders = futures::future::join_all(customers.iter().enumerate().flat_map(|(i, token)| {
        let (p, lamps) = (&p, &lamps);
        (0..ORDERS_EACH)
            .map(move |n| async move { place_order(p, token, &format!("rush-{i}-{n}"), lamps, 1, "tok_visa").await })
    }))
    .await;

    let confirmed: Vec<&Value> = orders.iter().filter(|o| o["status"] == "ORDER_STATUS_CONFIRMED").collect();
    let failed: Vec<&Value> = orders.iter().filter(|o| o["status"] == "ORDER_STATUS_FAILED").collect();
    assert_eq!(confirmed.len(), 100, "exactly the units in stock are sold");
    assert_eq!(failed.len(), 200, "every other order fails");
    for order in &failed {
        assert_eq!(order["failureReason"], "Sorry, Product LAMP-1 is out of stock.", "{order}");
        assert_eq!(order["paymentId"].as_str().unwrap_or_default(), "", "a failed order charges nothing: {order}");
    }
    assert_eq!(inventory(&p, &lamps).await, json!({"productId": lamps, "onHand": 0, "reserved": 0, "available": 0}));

    // Each confirmed order was charged exactly once, and the customer sees it as captured.
    let mut payments: Vec<&str> = confirmed.iter().map(|o| o["paymentId"].as_str().expect("payment id")).collect();
    payments.sort_unstable();
    payments.dedup();
    assert_eq!(payments.len(), 100, "one payment per confirmed order");
    let sample = confirmed[0];
    let owner = orders.iter().position(|o| o["id"] == sample["id"]).expect("owner") / ORDERS_EACH;
    let payment = p.send("GET", &format!("/v1/payments/{}", payments[0]), Some(&admin), None).await;
    assert_eq!(payment.status, 200, "{}", payment.json);
    let theirs = p
        .send(
            "GET",
            &format!("/v1/payments/{}", sample["paymentId"].as_str().unwrap_or_default()),
            Some(&customers[owner]),
            None,
        )
        .await;
    assert_eq!(theirs.json["status"], "PAYMENT_STATUS_CAPTURED", "{}", theirs.json);

    // Every sale reaches the books: under this load some postings are left to the payments service's retry
    // loop, which books them within seconds.
    let sales_balance = |accounts: &Value| balance(accounts, "revenue:sales:eur");
    let accounts = p.get_until("/v1/ledger/accounts?currency=EUR", &admin, |a| sales_balance(a) == "-250000").await;
    assert_eq!(sales_balance(&accounts), "-250000", "100 sales of 25.00 EUR, credited to revenue");
    assert_books_sound(&p).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_buyers_for_a_hundred_units_on_sqlite() {
    three_hundred_buyers_for_a_hundred_units(Storage::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_buyers_for_a_hundred_units_on_postgres() {
    three_hundred_buyers_for_a_hundred_units(Storage::Postgres).await;
}

/// Customer B reading or acting on customer A's cart, order, payment or refunds finds nothing there: 404,
/// never a hint that it exists, and A's things are untouched.
async fn other_customers_things_do_not_exist(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let ada = p.customer_token("ada@example.com").await;
    let bob = p.customer_token("bob@example.com").await;
    let books = product_in_stock(&p, &admin, "BOOK-1", "1500", 10).await;
    let order = place_order(&p, &ada, "ada-1", &books, 2, "tok_visa").await;
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");
    let (order_id, payment_id) = (order["id"].as_str().expect("id"), order["paymentId"].as_str().expect("payment"));
    let refund_body =
        json!({"paymentId": payment_id, "amount": {"currency": "EUR", "amountMinor": "500"}, "reason": "dented"});
    let bearer = format!("Bearer {admin}");
    let refund = p
        .send_with(
            "POST",
            "/v1/refunds",
            &[("authorization", bearer.as_str()), ("idempotency-key", "r-1")],
            Some(refund_body),
        )
        .await;
    assert_eq!(refund.status, 201, "{}", refund.json);
    let refund_id = refund.json["id"].as_str().expect("refund id");
    let stock = p.send("GET", "/v1/inventory?availableBelow=9", Some(&admin), None).await;
    assert_eq!(stock.json["stockLevels"][0]["sku"], "BOOK-1", "{}", stock.json);
    assert_eq!(stock.json["stockLevels"][0]["inventory"]["available"], 8, "ten less Ada's two: {}", stock.json);
    assert_eq!(p.send("GET", "/v1/inventory", Some(&ada), None).await.status, 403);
    let refunds = p.send("GET", "/v1/refunds", Some(&admin), None).await;
    assert_eq!(refunds.json["refunds"][0]["id"], refund_id, "finance lists it first: {}", refunds.json);
    let not_finance = p.send("GET", "/v1/refunds", Some(&ada), None).await;
    assert_eq!(not_finance.status, 403, "a customer lists no refunds but her payments': {}", not_finance.json);
    let added = p.send("POST", "/v1/cart/items", Some(&ada), Some(json!({"productId": books, "quantity": 1}))).await;
    assert_eq!(added.status, 200, "{}", added.json);
    let ada_id = p.send("GET", "/v1/auth/me", Some(&ada), None).await.json["id"].as_str().expect("ada's id").to_owned();

    // Ada sees all of her own.
    for path in [
        format!("/v1/orders/{order_id}"),
        format!("/v1/payments/{payment_id}"),
        format!("/v1/refunds/{refund_id}"),
        format!("/v1/payments/{payment_id}/refunds"),
    ] {
        let mine = p.send("GET", &path, Some(&ada), None).await;
        assert_eq!(mine.status, 200, "ada reads {path}: {}", mine.json);
    }
    let listed = p.send("GET", &format!("/v1/payments?orderId={order_id}"), Some(&ada), None).await;
    assert_eq!(listed.status, 200, "{}", listed.json);
    assert_eq!(listed.json["payments"][0]["id"], payment_id, "ada lists her order's payment: {}", listed.json);

    // Bob finds none of it.
    for (method, path) in [
        ("GET", format!("/v1/orders/{order_id}")),
        ("POST", format!("/v1/orders/{order_id}:cancel")),
        ("GET", format!("/v1/payments/{payment_id}")),
        ("GET", format!("/v1/refunds/{refund_id}")),
        ("GET", format!("/v1/payments/{payment_id}/refunds")),
        ("DELETE", format!("/v1/cart?customerId={ada_id}")),
    ] {
        let body = (method == "POST").then(|| json!({}));
        let theirs = p.send(method, &path, Some(&bob), body).await;
        assert_eq!(theirs.status, 404, "bob {method} {path}: {}", theirs.json);
        assert_eq!(theirs.json["error"]["status"], "NOT_FOUND", "{}", theirs.json);
    }
    let bobs_payments = p.send("GET", "/v1/payments", Some(&bob), None).await;
    assert_eq!(bobs_payments.json["payments"], json!([]), "bob lists only his own: {}", bobs_payments.json);
    let adas_payments = p.send("GET", &format!("/v1/payments?customerId={ada_id}"), Some(&bob), None).await;
    assert_eq!(adas_payments.status, 403, "{}", adas_payments.json);
    let bobs_cart = p.send("GET", "/v1/cart", Some(&bob), None).await;
    assert_eq!(bobs_cart.json["items"], json!([]), "bob only ever sees his own cart: {}", bobs_cart.json);

    // Nothing of Ada's changed.
    let order = p.send("GET", &format!("/v1/orders/{order_id}"), Some(&ada), None).await;
    assert_eq!(order.json["status"], "ORDER_STATUS_CONFIRMED", "{}", order.json);
    let cart = p.send("GET", "/v1/cart", Some(&ada), None).await;
    assert_eq!(cart.json["items"].as_array().map(Vec::len), Some(1), "{}", cart.json);
    assert_books_sound(&p).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_customers_things_do_not_exist_on_sqlite() {
    other_customers_things_do_not_exist(Storage::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_customers_things_do_not_exist_on_postgres() {
    other_customers_things_do_not_exist(Storage::Postgres).await;
}

/// Staff make a code with one use; a customer previews an order with it, then places one that takes it off
/// what is charged (the payment and the books follow the total); another customer is told it is used up, naming
/// the field; cancelling the first order gives the use back.
async fn a_discount_code_with_one_use(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let (ada, bob) = (p.customer_token("ada-code@example.com").await, p.customer_token("bob-code@example.com").await);
    let mugs = product_in_stock(&p, &admin, "MUG-5", "900", 5).await;
    let code =
        json!({"code": "welcome-5", "amountOff": {"currency": "EUR", "amountMinor": "500"}, "maxRedemptions": 1});
    let made = p.send("POST", "/v1/discount-codes", Some(&admin), Some(code)).await;
    assert_eq!(made.status, 201, "{}", made.json);
    assert_eq!((made.json["code"].as_str(), made.json["timesRedeemed"].as_i64().unwrap_or(0)), (Some("WELCOME-5"), 0));
    let hidden = p.send("GET", "/v1/discount-codes", Some(&ada), None).await;
    assert_eq!(hidden.status, 403, "customers do not list codes: {}", hidden.json);

    let with_code = |token: &str, key: &str| {
        let body = json!({"shippingAddress": address(), "paymentMethod": "tok_visa",
            "items": [{"productId": mugs, "quantity": 2}], "discountCode": "Welcome-5"});
        let (bearer, key) = (format!("Bearer {token}"), key.to_owned());
        let p = &p;
        async move {
            p.send_with(
                "POST",
                "/v1/orders",
                &[("authorization", bearer.as_str()), ("idempotency-key", &key)],
                Some(body),
            )
            .await
        }
    };
    // The storefront shows what the code takes off before the order is placed.
    let preview = json!({"items": [{"productId": mugs, "quantity": 2}], "discountCode": "welcome-5"});
    let quoted = p.send("POST", "/v1/orders:preview", Some(&ada), Some(preview)).await;
    assert_eq!(quoted.status, 200, "{}", quoted.json);
    let amounts = ["subtotal", "discount", "total"].map(|field| quoted.json[field]["amountMinor"].clone());
    assert_eq!(amounts, [json!("1800"), json!("500"), json!("1300")], "{}", quoted.json);
    assert_eq!(inventory(&p, &mugs).await["available"], 5, "a preview holds nothing");

    let placed = with_code(&ada, "ada-1").await;
    assert_eq!(placed.status, 201, "{}", placed.json);
    let order = placed.json;
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");
    let amounts = ["subtotal", "discount", "total"].map(|field| order[field]["amountMinor"].clone());
    assert_eq!(amounts, [json!("1800"), json!("500"), json!("1300")], "{order}");
    assert_eq!(order["discountCode"], "WELCOME-5");
    let payment_id = order["paymentId"].as_str().expect("payment id");
    let payment = p.send("GET", &format!("/v1/payments/{payment_id}"), Some(&ada), None).await;
    assert_eq!(payment.json["amount"]["amountMinor"], "1300", "{}", payment.json);
    assert_books_sound(&p).await;
    // Marketing sees what the code brought in.
    let report = p.get_until("/v1/analytics/discount-codes", &admin, |v| v["codes"][0]["code"] == "WELCOME-5").await;
    let code = &report["codes"][0];
    assert_eq!(
        (code["orders"].clone(), code["discount"]["amountMinor"].clone(), code["gross"]["amountMinor"].clone()),
        (json!("1"), json!("500"), json!("1300")),
        "{report}"
    );

    let refused = with_code(&bob, "bob-1").await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    let violation = &refused.json["error"]["details"][0]["fieldViolations"][0];
    assert_eq!(
        (violation["field"].as_str(), violation["description"].as_str()),
        (Some("discountCode"), Some("has been used up"))
    );
    assert_eq!(inventory(&p, &mugs).await["available"], 3, "nothing held for the refused order");

    let id = order["id"].as_str().expect("order id");
    let cancelled = p.send("POST", &format!("/v1/orders/{id}:cancel"), Some(&ada), Some(json!({}))).await;
    assert_eq!(cancelled.json["status"], "ORDER_STATUS_CANCELLED", "{}", cancelled.json);
    let code = p.send("GET", "/v1/discount-codes/welcome-5", Some(&admin), None).await;
    assert_eq!(code.json["timesRedeemed"].as_i64().unwrap_or(0), 0, "the use is given back: {}", code.json);
    let again = with_code(&bob, "bob-1").await;
    assert_eq!(again.json["discount"]["amountMinor"], "500", "{}", again.json);
    assert_books_sound(&p).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_discount_code_with_one_use_on_sqlite() {
    a_discount_code_with_one_use(Storage::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_discount_code_with_one_use_on_postgres() {
    a_discount_code_with_one_use(Storage::Postgres).await;
}

async fn shipping_is_charged_by_the_rate_the_destination_allows(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let ada = p.customer_token("ada-ship@example.com").await;
    let teas = product_in_stock(&p, &admin, "TEA-SHIP", "1200", 10).await;
    let eur = |minor: &str| json!({"currency": "EUR", "amountMinor": minor});
    let rates = [
        json!({"id": "standard", "name": "Standard (3-5 days)", "countries": ["fr", "DE"], "price": eur("490"),
            "freeFrom": eur("5000")}),
        json!({"id": "express", "name": "Express", "countries": ["FR"], "price": eur("1290")}),
    ];
    for rate in rates {
        let made = p.send("POST", "/v1/shipping-rates", Some(&admin), Some(rate)).await;
        assert_eq!(made.status, 201, "{}", made.json);
    }
    let mine = json!({"id": "mine", "name": "Mine", "price": eur("0")});
    assert_eq!(
        p.send("POST", "/v1/shipping-rates", Some(&ada), Some(mine)).await.status,
        403,
        "customers set no rates"
    );

    // Anyone sees what shipping to France costs, cheapest first.
    let listed = p.send("GET", "/v1/shipping-rates?country=fr", None, None).await;
    assert_eq!(listed.status, 200, "{}", listed.json);
    let ids: Vec<_> = listed.json["shippingRates"].as_array().expect("rates").iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, [json!("standard"), json!("express")]);

    // The preview offers both and prices the cheapest; the order charges the one chosen.
    let items = json!([{"productId": teas, "quantity": 2}]);
    let preview = json!({"items": items, "shippingAddress": address()});
    let quoted = p.send("POST", "/v1/orders:preview", Some(&ada), Some(preview)).await;
    assert_eq!(quoted.status, 200, "{}", quoted.json);
    let amounts = ["subtotal", "shipping", "total"].map(|field| quoted.json[field]["amountMinor"].clone());
    assert_eq!(amounts, [json!("2400"), json!("490"), json!("2890")], "{}", quoted.json);
    let offered: Vec<_> = quoted.json["shippingOptions"]
        .as_array()
        .expect("options")
        .iter()
        .map(|o| (o["shippingRateId"].clone(), o["price"]["amountMinor"].clone()))
        .collect();
    assert_eq!(offered, [(json!("standard"), json!("490")), (json!("express"), json!("1290"))]);

    let order = json!({"shippingAddress": address(), "paymentMethod": "tok_visa", "items": items,
        "shippingRateId": "express"});
    let bearer = format!("Bearer {ada}");
    let headers = [("authorization", bearer.as_str()), ("idempotency-key", "ship-1")];
    let placed = p.send_with("POST", "/v1/orders", &headers, Some(order)).await;
    assert_eq!(placed.status, 201, "{}", placed.json);
    let order = placed.json;
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");
    let amounts = ["subtotal", "shipping", "total"].map(|field| order[field]["amountMinor"].clone());
    assert_eq!(amounts, [json!("2400"), json!("1290"), json!("3690")], "{order}");
    assert_eq!(
        (order["shippingRateId"].as_str(), order["shippingRateName"].as_str()),
        (Some("express"), Some("Express"))
    );
    let payment_id = order["paymentId"].as_str().expect("payment id");
    let payment = p.send("GET", &format!("/v1/payments/{payment_id}"), Some(&ada), None).await;
    assert_eq!(payment.json["amount"]["amountMinor"], "3690", "the payment includes shipping: {}", payment.json);
    assert_books_sound(&p).await;

    // The warehouse sees how the parcel is to go.
    let id = order["id"].as_str().expect("order id");
    let shipments = p
        .get_until(&format!("/v1/shipments?orderId={id}"), &ada, |v| v["shipments"][0]["shippingMethod"] == "Express")
        .await;
    assert_eq!(shipments["shipments"].as_array().map(Vec::len), Some(1), "{shipments}");

    // A free-shipping code: the order pays the items only.
    let code = json!({"code": "freeship", "freeShipping": true});
    let made = p.send("POST", "/v1/discount-codes", Some(&admin), Some(code)).await;
    assert_eq!((made.status, &made.json["freeShipping"]), (201, &json!(true)), "{}", made.json);
    let order = json!({"shippingAddress": address(), "paymentMethod": "tok_visa", "items": items,
        "shippingRateId": "express", "discountCode": "FREESHIP"});
    let headers = [("authorization", bearer.as_str()), ("idempotency-key", "ship-free")];
    let placed = p.send_with("POST", "/v1/orders", &headers, Some(order)).await;
    assert_eq!(placed.status, 201, "{}", placed.json);
    let amounts = ["subtotal", "discount", "shipping", "total"].map(|field| placed.json[field]["amountMinor"].clone());
    assert_eq!(amounts, [json!("2400"), json!("1290"), json!("1290"), json!("2400")], "{}", placed.json);

    // Where no rate goes, the order is refused before anything is held.
    let mut far = address();
    far["country"] = json!("JP");
    let order =
        json!({"shippingAddress": far, "paymentMethod": "tok_visa", "items": [{"productId": teas, "quantity": 1}]});
    let headers = [("authorization", bearer.as_str()), ("idempotency-key", "ship-2")];
    let refused = p.send_with("POST", "/v1/orders", &headers, Some(order)).await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    let violation = &refused.json["error"]["details"][0]["fieldViolations"][0];
    assert_eq!(
        (violation["field"].as_str(), violation["description"].as_str()),
        (Some("shippingAddress.country"), Some("JP is not a country this shop ships orders in EUR to"))
    );
    assert_eq!(inventory(&p, &teas).await["available"], 6, "nothing held for the refused order");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shipping_is_charged_by_the_rate_the_destination_allows_on_sqlite() {
    shipping_is_charged_by_the_rate_the_destination_allows(Storage::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shipping_is_charged_by_the_rate_the_destination_allows_on_postgres() {
    shipping_is_charged_by_the_rate_the_destination_allows(Storage::Postgres).await;
}

async fn an_order_shows_the_tax_its_total_includes(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let ada = p.customer_token("ada-tax@example.com").await;
    let teas = product_in_stock(&p, &admin, "TEA-TAX", "1200", 10).await;

    // Staff set France's rate; anyone reads it; customers and strangers set none.
    let vat = json!({"name": "TVA", "rateBasisPoints": 2000, "reducedRate": {"rateBasisPoints": 550}});
    let set = p.send("PUT", "/v1/tax-rates/fr", Some(&admin), Some(vat.clone())).await;
    assert_eq!(set.status, 200, "{}", set.json);
    assert_eq!((&set.json["country"], &set.json["rateBasisPoints"]), (&json!("FR"), &json!(2000)), "{}", set.json);
    assert_eq!(set.json["reducedRate"]["rateBasisPoints"], 550, "{}", set.json);
    let listed = p.send("GET", "/v1/tax-rates", None, None).await;
    assert_eq!(listed.json["taxRates"][0]["name"], "TVA", "{}", listed.json);
    assert_eq!(p.send("PUT", "/v1/tax-rates/fr", Some(&ada), Some(vat.clone())).await.status, 403);
    assert_eq!(p.send("PUT", "/v1/tax-rates/fr", None, Some(vat)).await.status, 401);
    let wrong = p.send("PUT", "/v1/tax-rates/fr", Some(&admin), Some(json!({"name": "TVA", "rateBasisPoints": 20000})));
    let wrong = wrong.await;
    assert_eq!(wrong.status, 400, "{}", wrong.json);
    let violation = &wrong.json["error"]["details"][0]["fieldViolations"][0];
    assert_eq!(violation["field"], "taxRate.rateBasisPoints", "{}", wrong.json);
    assert_eq!(p.send("GET", "/v1/tax-rates/fr", None, None).await.json["rateBasisPoints"], 2000, "unchanged");

    // The preview and the order show the tax the total includes; the customer pays the total.
    let items = json!([{"productId": teas, "quantity": 2}]);
    let quoted =
        p.send("POST", "/v1/orders:preview", Some(&ada), Some(json!({"items": items, "shippingAddress": address()})));
    let quoted = quoted.await;
    assert_eq!((quoted.status, &quoted.json["tax"]["amountMinor"]), (200, &json!("400")), "{}", quoted.json);
    let order = place_order(&p, &ada, "tax-1", &teas, 2, "tok_visa").await;
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");
    assert_eq!(order["total"]["amountMinor"], "2400", "{order}");
    // 2400 × 20 / 120
    let taxes = &order["taxes"];
    assert_eq!(
        (&taxes[0]["name"], &taxes[0]["rateBasisPoints"], &taxes[0]["taxable"]["amountMinor"]),
        (&json!("TVA"), &json!(2000), &json!("2400")),
        "{order}"
    );
    assert_eq!((&taxes[0]["amount"]["amountMinor"], &order["tax"]["amountMinor"]), (&json!("400"), &json!("400")));
    let payment_id = order["paymentId"].as_str().expect("payment id");
    let payment = p.send("GET", &format!("/v1/payments/{payment_id}"), Some(&ada), None).await;
    assert_eq!(payment.json["amount"]["amountMinor"], "2400", "prices include tax: {}", payment.json);

    // A book in the reduced class: the total splits between the rates as the items' prices do.
    let body = json!({"sku": "BOOK-TAX", "name": "A Book", "description": "", "category": "books", "taxClass":
        "TAX_CLASS_REDUCED", "price": {"currency": "EUR", "amountMinor": "1000"}, "active": true});
    let book = p.send("POST", "/v1/products", Some(&admin), Some(body)).await;
    assert_eq!((book.status, &book.json["taxClass"]), (201, &json!("TAX_CLASS_REDUCED")), "{}", book.json);
    let book_id = book.json["id"].as_str().expect("product id").to_owned();
    let adjust = format!("/v1/products/{book_id}/inventory:adjust");
    assert_eq!(p.send("POST", &adjust, Some(&admin), Some(json!({"delta": 5}))).await.status, 200);
    let both = json!({"shippingAddress": address(), "paymentMethod": "tok_visa",
        "items": [{"productId": teas, "quantity": 1}, {"productId": book_id, "quantity": 1}]});
    let bearer = format!("Bearer {ada}");
    let headers = [("authorization", bearer.as_str()), ("idempotency-key", "tax-3")];
    let placed = p.send_with("POST", "/v1/orders", &headers, Some(both)).await;
    assert_eq!(placed.status, 201, "{}", placed.json);
    let parts: Vec<_> = placed.json["taxes"]
        .as_array()
        .expect("taxes")
        .iter()
        .map(|t| {
            (t["rateBasisPoints"].clone(), t["taxable"]["amountMinor"].clone(), t["amount"]["amountMinor"].clone())
        })
        .collect();
    // 1200 × 20 / 120 = 200; 1000 × 5.5 / 105.5 = 52.13
    assert_eq!(parts, [(json!(2000), json!("1200"), json!("200")), (json!(550), json!("1000"), json!("52"))]);
    assert_eq!(placed.json["tax"]["amountMinor"], "252", "{}", placed.json);

    // Once the rate is removed, orders show none; the earlier one keeps its own.
    assert_eq!(p.send("DELETE", "/v1/tax-rates/FR", Some(&admin), None).await.status, 200);
    let untaxed = place_order(&p, &ada, "tax-2", &teas, 1, "tok_visa").await;
    assert_eq!((&untaxed["taxes"], &untaxed["tax"]["amountMinor"]), (&json!([]), &json!("0")), "{untaxed}");
    let id = order["id"].as_str().expect("order id");
    assert_eq!(p.send("GET", &format!("/v1/orders/{id}"), Some(&ada), None).await.json["tax"], order["tax"]);

    // The books: of 58.00 sold, the 6.52 tax is owed to the tax authorities, not sales.
    let accounts = p
        .get_until("/v1/ledger/accounts?currency=EUR", &admin, |a| {
            balance(a, "liabilities:tax:eur") == "-652" && balance(a, "revenue:sales:eur") == "-5148"
        })
        .await;
    assert_eq!(balance(&accounts, "assets:processor:eur"), "5800", "{accounts}");
    assert_books_sound(&p).await;

    // The audit finds a payment that booked other tax than its order included.
    alter(&p, "payments", "UPDATE payments SET tax_minor = 0 WHERE id = $1", payment_id).await;
    let violations = mercato::audit(&p.settings).await.expect("audit runs");
    let found = format!("orders: order {id} includes 400 EUR of tax but payment {payment_id} booked 0 EUR as tax");
    assert_eq!(violations, [found]);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_shows_the_tax_its_total_includes_on_sqlite() {
    an_order_shows_the_tax_its_total_includes(Storage::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_shows_the_tax_its_total_includes_on_postgres() {
    an_order_shows_the_tax_its_total_includes(Storage::Postgres).await;
}

async fn an_order_refunded_in_part_is_cancelled_for_the_rest(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let ada = p.customer_token("ada-partial@example.com").await;
    let lamps = product_in_stock(&p, &admin, "LAMP-1", "4000", 5).await;
    let issuer = json!({"address": {"name": "Lampen GmbH", "line1": "Hauptstr. 1", "city": "Berlin", "postalCode":
        "10115", "country": "DE"}, "vatId": "DE 123 456 789"});
    let set = p.send("PUT", "/v1/invoice-issuer", Some(&admin), Some(issuer)).await;
    assert_eq!((set.status, &set.json["vatId"]), (200, &json!("DE123456789")), "{}", set.json);
    let order = place_order(&p, &ada, "ada-lamp", &lamps, 1, "tok_visa").await;
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");
    let (id, payment_id) = (order["id"].as_str().expect("id"), order["paymentId"].as_str().expect("payment"));
    assert_eq!(order["refunded"], json!({"currency": "EUR", "amountMinor": "0"}), "nothing given back yet: {order}");

    // Staff give EUR 5.00 back for a scratch: Ada's order shows it (from payment.refunded, so in a moment); then,
    // before it ships, she cancels the order.
    let refund_body =
        json!({"paymentId": payment_id, "amount": {"currency": "EUR", "amountMinor": "500"}, "reason": "scratched"});
    let bearer = format!("Bearer {admin}");
    let headers = [("authorization", bearer.as_str()), ("idempotency-key", "scratch-1")];
    let refund = p.send_with("POST", "/v1/refunds", &headers, Some(refund_body)).await;
    assert_eq!(refund.status, 201, "{}", refund.json);
    let path = format!("/v1/orders/{id}");
    p.get_until(&path, &ada, |o| o["refunded"]["amountMinor"] == "500").await;
    let cancelled = p.send("POST", &format!("/v1/orders/{id}:cancel"), Some(&ada), Some(json!({}))).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.json);
    assert_eq!(cancelled.json["status"], "ORDER_STATUS_CANCELLED", "{}", cancelled.json);

    // She got the rest back: the payment is refunded in full, once.
    let payment = p.send("GET", &format!("/v1/payments/{payment_id}"), Some(&ada), None).await.json;
    assert_eq!(payment["status"], "PAYMENT_STATUS_REFUNDED", "{payment}");
    assert_eq!(payment["refundedAmount"]["amountMinor"], "4000", "{payment}");
    let refunded = p.get_until(&path, &ada, |o| o["refunded"]["amountMinor"] == "4000").await;
    assert_eq!(refunded["status"], "ORDER_STATUS_CANCELLED", "and the order shows the whole total: {refunded}");

    // The order's invoice, and a credit note for each refund (from payment.refunded: in a moment), numbered in
    // order; Ada reads hers, a stranger none.
    let year = platform::time::date_of_micros(platform::time::now_micros()).0;
    let invoice_no = format!("INV-{year}-000001");
    let of_order = format!("/v1/invoices?orderId={id}");
    let documents = p.get_until(&of_order, &ada, |d| d["invoices"].as_array().is_some_and(|a| a.len() == 3)).await;
    let listed: Vec<_> = documents["invoices"]
        .as_array()
        .expect("invoices")
        .iter()
        .map(|d| {
            (d["number"].clone(), d["kind"].clone(), d["total"]["amountMinor"].clone(), d["correctedInvoice"].clone())
        })
        .collect();
    let note = |n: u32, amount: &str| {
        (json!(format!("CN-{year}-{n:06}")), json!("INVOICE_KIND_CREDIT_NOTE"), json!(amount), json!(invoice_no))
    };
    assert_eq!(
        listed,
        [note(2, "3500"), note(1, "500"), (json!(invoice_no), json!("INVOICE_KIND_INVOICE"), json!("4000"), json!(""))],
        "{documents}"
    );
    let invoice = p.send("GET", &format!("/v1/invoices/{invoice_no}"), Some(&ada), None).await;
    assert_eq!(
        (invoice.status, &invoice.json["items"], &invoice.json["paymentId"]),
        (200, &order["items"], &json!(payment_id))
    );
    assert_eq!(invoice.json["issuer"]["address"]["name"], "Lampen GmbH", "{}", invoice.json);
    // The page to print, in German.
    let page = p.send("GET", &format!("/v1/invoices/{invoice_no}/document?language=de"), Some(&ada), None).await;
    let header = |name: &str| page.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!((page.status, header("content-type")), (200, "text/html; charset=utf-8".to_owned()));
    assert_eq!(header("content-disposition"), format!("inline; filename=\"{invoice_no}.html\""));
    let text = String::from_utf8_lossy(&page.bytes);
    assert!(text.contains("<h1>Rechnung</h1>") && text.contains("Gesamt</td><td class=\"amount\">EUR 40.00"), "{text}");
    let stranger = p.customer_token("eve-partial@example.com").await;
    assert_eq!(p.send("GET", &format!("/v1/invoices/{invoice_no}"), Some(&stranger), None).await.status, 404);
    assert_eq!(p.send("GET", &of_order, None, None).await.status, 401);
    // The catalog restocks from order.cancelled, an event: it may take a moment.
    let available = available_soon(&p, &lamps, 5).await;
    assert_eq!(available, 5, "the lamp is back in stock");
    assert_books_sound(&p).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_refunded_in_part_is_cancelled_for_the_rest_on_sqlite() {
    an_order_refunded_in_part_is_cancelled_for_the_rest(Storage::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_refunded_in_part_is_cancelled_for_the_rest_on_postgres() {
    an_order_refunded_in_part_is_cancelled_for_the_rest(Storage::Postgres).await;
}

/// The error reasons (`ErrorInfo`) of an error reply.
fn reasons(reply: &e2e::Reply) -> Vec<Value> {
    reply.json["error"]["details"].as_array().map_or_else(Vec::new, |d| d.iter().map(|d| d["reason"].clone()).collect())
}

async fn a_delivered_order_is_returned_and_refunded_its_share(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let ada = p.customer_token("ada-returns@example.com").await;
    let mugs = product_in_stock(&p, &admin, "MUG-1", "1200", 5).await;
    let order = place_order(&p, &ada, "ada-mugs", &mugs, 2, "tok_visa").await;
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");
    let (id, payment_id) = (order["id"].as_str().expect("id"), order["paymentId"].as_str().expect("payment"));
    let ask = json!({"items": [{"productId": mugs, "quantity": 1}], "reason": "one arrived chipped"});
    let returns_path = format!("/v1/orders/{id}/returns");

    // Not before the carrier delivered it.
    let early = p.send("POST", &returns_path, Some(&ada), Some(ask.clone())).await;
    assert_eq!((early.status, reasons(&early)), (400, vec![json!("ORDER_NOT_DELIVERED")]), "{}", early.json);
    let shipments = format!("/v1/shipments?orderId={id}");
    let listed = p.get_until(&shipments, &ada, |l| l["shipments"][0]["status"] == "SHIPMENT_STATUS_PENDING").await;
    let shipment = listed["shipments"][0]["id"].as_str().expect("shipment id").to_owned();
    let dispatch = json!({"carrier": "DHL", "trackingNumber": "00340434161234567890"});
    let shipped = p.send("POST", &format!("/v1/shipments/{shipment}:dispatch"), Some(&admin), Some(dispatch)).await;
    assert_eq!(shipped.status, 200, "{}", shipped.json);
    let delivered = json!({"status": "SHIPMENT_STATUS_DELIVERED", "location": "Paris", "carrierEventId": "dhl-1"});
    let recorded = p.send("POST", &format!("/v1/shipments/{shipment}/events"), Some(&admin), Some(delivered)).await;
    assert_eq!(recorded.status, 201, "{}", recorded.json);

    // Orders learns of the delivery from shipment.delivered, an event: the request succeeds in a moment.
    let mut asked = early;
    for _ in 0..100 {
        asked = p.send("POST", &returns_path, Some(&ada), Some(ask.clone())).await;
        if asked.status != 400 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((asked.status, &asked.json["status"]), (201, &json!("RETURN_STATUS_REQUESTED")), "{}", asked.json);
    assert_eq!(asked.json["refund"], json!({"currency": "EUR", "amountMinor": "1200"}), "{}", asked.json);
    assert_eq!(asked.json["items"][0]["name"], "Product MUG-1", "{}", asked.json);
    let return_id = asked.json["id"].as_str().expect("return id").to_owned();
    let path = format!("/v1/returns/{return_id}");
    // An order delivered before an upgrade to returns: the backfill tells orders when, from the deliveries.
    assert_eq!(mercato::backfill_deliveries(&p.settings).await.expect("backfill"), 0, "orders knew of it");
    alter(&p, "orders", "DELETE FROM order_deliveries WHERE order_id = $1", id).await;
    let forgotten = p.send("POST", &returns_path, Some(&ada), Some(ask.clone())).await;
    assert_eq!(reasons(&forgotten), [json!("ORDER_NOT_DELIVERED")], "{}", forgotten.json);
    assert_eq!(mercato::backfill_deliveries(&p.settings).await.expect("backfill"), 1);
    assert_eq!(mercato::backfill_deliveries(&p.settings).await.expect("again"), 0, "again: nothing new");

    // Only staff decide; a stranger does not see it; staff approve and receive the parcel.
    let by_ada = p.send("POST", &format!("{path}:approve"), Some(&ada), Some(json!({}))).await;
    assert_eq!(by_ada.status, 403, "{}", by_ada.json);
    let stranger = p.customer_token("eve-returns@example.com").await;
    assert_eq!(p.send("GET", &path, Some(&stranger), None).await.status, 404);
    assert_eq!(p.send("GET", &path, None, None).await.status, 401);
    let approved = p.send("POST", &format!("{path}:approve"), Some(&admin), Some(json!({}))).await;
    assert_eq!(approved.json["status"], "RETURN_STATUS_APPROVED", "{}", approved.json);
    let received = p.send("POST", &format!("{path}:receive"), Some(&admin), Some(json!({"restock": true}))).await;
    assert_eq!(received.status, 200, "{}", received.json);
    assert_eq!(
        (&received.json["status"], &received.json["refundId"], &received.json["restocked"]),
        (&json!("RETURN_STATUS_REFUNDED"), &json!(format!("return:{return_id}")), &json!(true)),
        "{}",
        received.json
    );

    // The money: the payment gave 12.00 back, the order shows it, and the refund has its credit note.
    let payment = p.send("GET", &format!("/v1/payments/{payment_id}"), Some(&ada), None).await.json;
    assert_eq!(payment["refundedAmount"]["amountMinor"], "1200", "{payment}");
    let after = p.get_until(&format!("/v1/orders/{id}"), &ada, |o| o["refunded"]["amountMinor"] == "1200").await;
    // The order shows the mug that came back; it is still a confirmed sale.
    assert_eq!(
        (&after["items"][0]["productId"], &after["items"][0]["returnedQuantity"], &after["status"]),
        (&json!(mugs), &json!(1), &json!("ORDER_STATUS_CONFIRMED")),
        "{after}"
    );
    let of_order = format!("/v1/invoices?orderId={id}&kind=INVOICE_KIND_CREDIT_NOTE");
    let notes = p.get_until(&of_order, &ada, |d| d["invoices"].as_array().is_some_and(|a| a.len() == 1)).await;
    let note = &notes["invoices"][0];
    assert_eq!(
        (&note["refundId"], &note["total"]["amountMinor"]),
        (&json!(format!("return:{return_id}")), &json!("1200"))
    );
    // The stock: the mug is back (from return.received, an event).
    let available = available_soon(&p, &mugs, 4).await;
    assert_eq!(available, 4, "5 - 2 sold + 1 returned");
    // The sales figures count the return's refund (from return.refunded).
    let summary = p.get_until("/v1/analytics/summary", &admin, |s| s["currencies"][0]["refunds"] == "1").await;
    let eur = &summary["currencies"][0];
    assert_eq!(
        (&eur["refunded"]["amountMinor"], &eur["net"]["amountMinor"]),
        (&json!("1200"), &json!("1200")),
        "{summary}"
    );
    // And the top products show what came back (from return.received).
    let top = p.get_until("/v1/analytics/top-products", &admin, |t| t["products"][0]["unitsReturned"] == "1").await;
    assert_eq!((&top["products"][0]["productId"], &top["products"][0]["units"]), (&json!(mugs), &json!("2")), "{top}");
    let mine = p.send("GET", "/v1/returns", Some(&ada), None).await;
    assert_eq!(mine.json["returns"].as_array().map(Vec::len), Some(1), "{}", mine.json);
    // Operators count returns by what became of them.
    let metrics = p.metrics_text().await;
    for status in ["requested", "approved", "received", "refunded"] {
        assert!(counted(&metrics, "mercato_returns_total", &format!("status=\"{status}\"")), "{status}: {metrics}");
    }
    assert_books_sound(&p).await;
    // Ada was told: approved (send it back), then received with what is refunded.
    let subject_of = |list: &Value, event_type: &str| {
        let found = list["notifications"].as_array().and_then(|n| n.iter().find(|n| n["eventType"] == event_type));
        found.map(|n| n["subject"].clone())
    };
    let mails = p
        .get_until("/v1/notifications?pageSize=100", &ada, |l| {
            subject_of(l, "return.approved").is_some() && subject_of(l, "return.received").is_some()
        })
        .await;
    assert_eq!(
        subject_of(&mails, "return.received"),
        Some(json!("Your return arrived: we refund EUR 12.00")),
        "{mails}"
    );

    // The audit checks the return's refund against the payments service's.
    alter(&p, "orders", "UPDATE returns SET refund_minor = 1300 WHERE id = $1", &return_id).await;
    let violations = mercato::audit(&p.settings).await.expect("audit runs");
    let found = format!(
        "orders: return {return_id} refunded 1300 EUR of payment {payment_id} but refund return:{return_id} gave back \
         1200 EUR of payment {payment_id}"
    );
    assert_eq!(violations, [found]);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivered_order_is_returned_and_refunded_its_share_on_sqlite() {
    a_delivered_order_is_returned_and_refunded_its_share(Storage::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivered_order_is_returned_and_refunded_its_share_on_postgres() {
    a_delivered_order_is_returned_and_refunded_its_share(Storage::Postgres).await;
}

/// Whether `/metrics` text `metrics` has a sample of counter `name` with label `label` (`status="refunded"`) above 0.
/// The test process shares one recorder between the platforms its tests start, so only "some" is certain.
fn counted(metrics: &str, name: &str, label: &str) -> bool {
    metrics.lines().any(|line| {
        line.starts_with(&format!("{name}{{"))
            && line.contains(label)
            && line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0)
    })
}

/// POSTs `body` as a review of `product` by `token`'s customer until the catalog knows of their purchase (it learns
/// from `order.confirmed`, an event): the first answer that is not NOT_A_BUYER.
async fn review_once_bought(p: &TestPlatform, token: &str, product: &str, body: Value) -> e2e::Reply {
    let path = format!("/v1/products/{product}/reviews");
    for _ in 0..300 {
        let reply = p.send("POST", &path, Some(token), Some(body.clone())).await;
        if reply.json["error"]["details"][0]["reason"] != "NOT_A_BUYER" {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the catalog never learnt of the purchase of {product}");
}

async fn a_buyer_reviews_what_they_bought(storage: Storage) {
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let ada = p.customer_token("ada-reviews@example.com").await;
    let bob = p.customer_token("bob-reviews@example.com").await;
    let kettle = product_in_stock(&p, &admin, "KETTLE-1", "3500", 5).await;
    let reviews = format!("/v1/products/{kettle}/reviews");

    // Nobody who has not bought it may review it.
    let body = json!({"rating": 5, "title": "Boils fast", "body": "Quiet, too.", "authorName": "Ada"});
    let refused = p.send("POST", &reviews, Some(&bob), Some(body.clone())).await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    assert_eq!(refused.json["error"]["status"], "FAILED_PRECONDITION", "{}", refused.json);
    assert_eq!(refused.json["error"]["details"][0]["reason"], "NOT_A_BUYER", "{}", refused.json);
    let anonymous = p.send("POST", &reviews, None, Some(body.clone())).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.json);

    // Ada buys one; then she may.
    let order = place_order(&p, &ada, "ada-kettle", &kettle, 1, "tok_visa").await;
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");
    let written = review_once_bought(&p, &ada, &kettle, body.clone()).await;
    assert_eq!(written.status, 201, "{}", written.json);
    assert_eq!((&written.json["rating"], &written.json["mine"]), (&json!(5), &json!(true)), "{}", written.json);
    let again = p.send("POST", &reviews, Some(&ada), Some(body)).await;
    assert_eq!(again.status, 409, "one each: {}", again.json);
    let bad = p.send("POST", &reviews, Some(&ada), Some(json!({"rating": 6}))).await;
    assert_eq!(bad.status, 400, "{}", bad.json);
    assert_eq!(bad.json["error"]["details"][0]["fieldViolations"][0]["field"], "review.rating", "{}", bad.json);

    // Anyone reads it, and the product shows its rating.
    let listed = p.send("GET", &reviews, None, None).await;
    assert_eq!(listed.status, 200, "{}", listed.json);
    assert_eq!(listed.json["reviews"][0]["title"], "Boils fast", "{}", listed.json);
    assert_eq!(listed.json["reviews"][0]["mine"], false, "{}", listed.json);
    assert_eq!(listed.json["summary"]["stars"], json!([0, 0, 0, 0, 1]), "{}", listed.json);
    let product = p.send("GET", &format!("/v1/products/{kettle}"), None, None).await.json;
    assert_eq!((&product["rating"]["count"], &product["rating"]["average"]), (&json!(1), &json!(5.0)), "{product}");

    // She changes her mind by a star or two, then deletes it: the product follows.
    let id = written.json["id"].as_str().expect("review id");
    let changed = p.send("PATCH", &format!("{reviews}/{id}"), Some(&ada), Some(json!({"rating": 3}))).await;
    assert_eq!((changed.status, &changed.json["title"]), (200, &json!("Boils fast")), "{}", changed.json);
    let product = p.send("GET", &format!("/v1/products/{kettle}"), None, None).await.json;
    assert_eq!(product["rating"]["average"], json!(3.0), "{product}");
    assert_eq!(p.send("DELETE", &format!("{reviews}/{id}"), Some(&bob), None).await.status, 404, "not Bob's");
    assert_eq!(p.send("DELETE", &format!("{reviews}/{id}"), Some(&ada), None).await.status, 200);
    let product = p.send("GET", &format!("/v1/products/{kettle}"), None, None).await.json;
    assert_eq!(product["rating"]["count"], json!(0), "{product}");

    // A shop upgrading from before reviews: the catalog knows no buyers (its purchases emptied here, once Bob's
    // order reached it) until `mercato backfill-purchases` reads them from the orders.
    let bobs = place_order(&p, &bob, "bob-kettle", &kettle, 1, "tok_visa").await;
    let bobs = bobs["id"].as_str().expect("order id").to_owned();
    let catalog = platform::Db::open(&p.settings, "catalog").await.expect("catalog database");
    let known = || async {
        platform::with_db!(&catalog, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM purchases WHERE order_id = $1")
                .bind(&bobs)
                .fetch_one(pool)
                .await
                .expect("purchases")
        })
    };
    for _ in 0..300 {
        if known().await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    platform::with_db!(&catalog, pool => {
        sqlx::query("DELETE FROM purchases").execute(pool).await.expect("emptied");
    });
    let body = json!({"rating": 4, "title": "Solid"});
    let before = p.send("POST", &reviews, Some(&bob), Some(body.clone())).await;
    assert_eq!(before.json["error"]["details"][0]["reason"], "NOT_A_BUYER", "{}", before.json);
    assert_eq!(mercato::backfill_purchases(&p.settings).await.expect("backfill"), 2, "Ada's order and Bob's");
    assert_eq!(known().await, 1);
    assert_eq!(mercato::backfill_purchases(&p.settings).await.expect("again"), 2, "again: the same, nothing added");
    assert_eq!(known().await, 1);
    let after = p.send("POST", &reviews, Some(&bob), Some(body)).await;
    assert_eq!(after.status, 201, "{}", after.json);
    catalog.close().await;
    assert_books_sound(&p).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_buyer_reviews_what_they_bought_on_sqlite() {
    a_buyer_reviews_what_they_bought(Storage::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_buyer_reviews_what_they_bought_on_postgres() {
    a_buyer_reviews_what_they_bought(Storage::Postgres).await;
}

/// A shop that moderates reviews (`MERCATO_REVIEW_MODERATION=pre`, through the settings as `mercato up` reads
/// them): a review waits for staff, who find it in their queue and publish it through the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_moderating_shop_shows_a_review_once_staff_publish_it() {
    let settings = [("MERCATO_RATE_LIMITS", "off"), ("MERCATO_REVIEW_MODERATION", "pre")];
    let Some(p) = TestPlatform::start_with(Storage::Sqlite, &settings).await else { return };
    let admin = p.admin_token().await;
    let ada = p.customer_token("ada-moderated@example.com").await;
    let teapot = product_in_stock(&p, &admin, "TEAPOT-1", "4200", 5).await;
    let reviews = format!("/v1/products/{teapot}/reviews");
    let order = place_order(&p, &ada, "ada-teapot", &teapot, 1, "tok_visa").await;
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED", "{order}");

    let written = review_once_bought(&p, &ada, &teapot, json!({"rating": 4, "title": "Pours well"})).await;
    assert_eq!((written.status, &written.json["state"]), (201, &json!("REVIEW_STATE_PENDING")), "{}", written.json);
    let id = written.json["id"].as_str().expect("review id");
    let public = p.send("GET", &reviews, None, None).await;
    assert_eq!(public.json["reviews"], json!([]), "waiting: {}", public.json);
    assert_eq!(p.send("GET", &format!("{reviews}/{id}"), None, None).await.status, 404, "not to anyone");
    let queue = p.send("GET", "/v1/reviews?state=REVIEW_STATE_PENDING", Some(&admin), None).await;
    assert_eq!(queue.json["reviews"][0]["id"], id, "{}", queue.json);

    let publish = format!("{reviews}/{id}:publish");
    assert_eq!(p.send("POST", &publish, Some(&ada), Some(json!({}))).await.status, 403, "staff only");
    let published = p.send("POST", &publish, Some(&admin), Some(json!({}))).await;
    assert_eq!(
        (published.status, &published.json["state"]),
        (200, &json!("REVIEW_STATE_PUBLISHED")),
        "{}",
        published.json
    );
    let public = p.send("GET", &reviews, None, None).await;
    assert_eq!(public.json["reviews"][0]["title"], "Pours well", "{}", public.json);
    let product = p.send("GET", &format!("/v1/products/{teapot}"), None, None).await.json;
    assert_eq!((&product["rating"]["count"], &product["rating"]["average"]), (&json!(1), &json!(4.0)), "{product}");
    let metrics = p.metrics_text().await;
    assert!(counted(&metrics, "mercato_reviews_written_total", "state=\"pending\""), "{metrics}");
    p.stop().await;
}
