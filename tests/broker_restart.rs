//! The broker stopped and restarted in the middle of a stream of orders, through the whole platform on
//! RabbitMQ (PostgreSQL): every order placed before, during and after the outage is confirmed, and every
//! `order.confirmed` reaches analytics and notifications exactly once — nothing lost, nothing applied twice.
//!
//! It stops this machine's RabbitMQ (`rabbitmqctl stop_app`), so it runs only with
//! `MERCATO_TEST_AMQP_RESTART=1` (`.ci/run` sets it), in a test binary of its own so that no other test is
//! talking to the broker meanwhile.

use std::time::Duration;

use e2e::{Storage, TestPlatform};
use serde_json::{Value, json};

const ORDERS: usize = 30;
/// The order after which the broker goes down, and how many are placed while it is down.
const OUTAGE_AFTER: usize = 10;
const DURING_OUTAGE: usize = 10;
const PRICE_MINOR: i64 = 700;

/// Consumers reconnect with backoff after the outage: how long the platform gets to catch up.
const CATCH_UP: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_mid_stream_of_orders_loses_nothing_and_applies_nothing_twice() {
    if std::env::var("MERCATO_TEST_AMQP_RESTART").as_deref() != Ok("1") {
        eprintln!("skipping the broker restart test: set MERCATO_TEST_AMQP_RESTART=1 to run it");
        return;
    }
    let Some(p) = TestPlatform::start_on_rabbitmq(Storage::Postgres).await else { return };
    let admin = p.admin_token().await;
    let customer = p.customer_token("stream@example.com").await;
    let product = json!({"sku": "STREAM-1", "name": "Tea", "description": "", "category": "tea",
        "price": {"currency": "EUR", "amountMinor": PRICE_MINOR.to_string()}, "active": true});
    let tea = p.send("POST", "/v1/products", Some(&admin), Some(product)).await.json["id"]
        .as_str()
        .expect("product id")
        .to_owned();
    p.send("POST", &format!("/v1/products/{tea}/inventory:adjust"), Some(&admin), Some(json!({"delta": 1000}))).await;
    let address = json!({"name": "S", "line1": "1 Main St", "line2": "", "city": "Paris", "region": "",
        "postalCode": "75001", "country": "FR"});
    let body = json!({"shippingAddress": address, "paymentMethod": "tok_visa",
        "items": [{"productId": tea, "quantity": 1}]});
    let bearer = format!("Bearer {customer}");

    let mut outage = None;
    for n in 0..ORDERS {
        if n == OUTAGE_AFTER {
            // Some events have gone through before the outage.
            p.get_until("/v1/analytics/summary", &admin, |s| s["currencies"][0]["orders"] != Value::Null).await;
            outage = Some(platform::testkit::BrokerOutage::begin().expect("rabbitmqctl stop_app failed"));
        }
        if n == OUTAGE_AFTER + DURING_OUTAGE {
            // Checkouts never needed the broker; their events waited in the outboxes.
            drop(outage.take());
        }
        let key = format!("stream-{n}");
        let placed = p
            .send_with(
                "POST",
                "/v1/orders",
                &[("authorization", bearer.as_str()), ("idempotency-key", key.as_str())],
                Some(body.clone()),
            )
            .await;
        assert_eq!(placed.status, 201, "order {n}: {}", placed.json);
        assert_eq!(placed.json["status"], "ORDER_STATUS_CONFIRMED", "order {n}: {}", placed.json);
    }
    drop(outage);

    // Every order.confirmed reaches analytics and notifications...
    let total = (ORDERS as i64 * PRICE_MINOR).to_string();
    let summary = p
        .get_until_within("/v1/analytics/summary", &admin, CATCH_UP, |s| {
            s["currencies"][0]["orders"].as_str().and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| n >= ORDERS)
        })
        .await;
    let confirmations = |list: &Value| {
        list["notifications"].as_array().map_or(0, |n| n.iter().filter(|n| n["eventType"] == "order.confirmed").count())
    };
    let mine =
        p.get_until_within("/v1/notifications?pageSize=100", &customer, CATCH_UP, |l| confirmations(l) >= ORDERS).await;

    // ... once: give a redelivery time to show up, then count again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let summary_after = p.send("GET", "/v1/analytics/summary", Some(&admin), None).await.json;
    assert_eq!(summary_after["currencies"][0]["orders"], ORDERS.to_string(), "{summary_after}");
    assert_eq!(summary_after["currencies"][0]["gross"]["amountMinor"], total, "{summary_after}");
    assert_eq!(summary_after, summary, "analytics moved after every order had arrived");
    let mine_after = p.send("GET", "/v1/notifications?pageSize=100", Some(&customer), None).await.json;
    assert_eq!(confirmations(&mine_after), ORDERS, "{mine_after}");
    assert_eq!(confirmations(&mine), ORDERS, "{mine}");
    p.stop().await;
}
