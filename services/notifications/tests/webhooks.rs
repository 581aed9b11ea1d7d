//! Webhook endpoints over real gRPC and real HTTP: an axum receiver started by the test gets signed POSTs,
//! failing twice before it accepts. On SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL.

mod common;

use std::sync::{Arc, Mutex};

use api::mercato::auth::v1::PasswordResetRequested;
use api::mercato::catalog::v1::ProductUpdated;
use api::mercato::deliveries::v1::ShipmentCreated;
use api::mercato::notifications::v1::{
    CreateWebhookEndpointRequest, DeleteWebhookEndpointRequest, ListWebhookEndpointsRequest, Notification,
    NotificationChannel, NotificationSent, NotificationStatus,
};
use axum::http::{HeaderMap, StatusCode};
use common::{Service, confirmed, fast_retries, registered, with_token};
use hmac::{Hmac, Mac};
use notifications::Mailer;
use platform::db::Db;
use platform::with_db;
use prost::Message;
use sha2::Sha256;
use tonic::Code;

/// What the receiver got, and how many times it still answers 500.
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    failures_left: Arc<Mutex<u32>>,
}

async fn receive(
    axum::extract::State(receiver): axum::extract::State<Receiver>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    receiver.requests.lock().expect("lock").push((headers, body));
    let mut left = receiver.failures_left.lock().expect("lock");
    if *left > 0 {
        *left -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// Starts the receiver; returns its URL and the task serving it.
async fn start_receiver(receiver: Receiver) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().route("/hooks/mercato", axum::routing::post(receive)).with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let url = format!("http://{}/hooks/mercato", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// Checks a `Mercato-Signature` header the way a receiver would; returns its timestamp.
fn verify(header: &str, secret: &str, body: &str) -> i64 {
    let (t, v1) = header.split_once(',').expect("t=...,v1=...");
    let t: i64 = t.strip_prefix("t=").expect("t=").parse().expect("seconds");
    let v1 = v1.strip_prefix("v1=").expect("v1=");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v1, expected, "the signature verifies with the secret from creation");
    t
}

async fn deliveries_are_signed_and_retried_until_accepted(db: Db) {
    let service = Service::start(db, Mailer::Log, fast_retries()).await;
    let receiver = Receiver { failures_left: Arc::new(Mutex::new(2)), ..Receiver::default() };
    let (url, receiver_task) = start_receiver(receiver.clone()).await;
    let admin = service.admin();
    let request = CreateWebhookEndpointRequest { url: url.clone(), event_types: vec!["order.confirmed".into()] };
    let created = service
        .client
        .clone()
        .create_webhook_endpoint(with_token(request, &admin))
        .await
        .expect("created")
        .into_inner();
    let secret = created.secret;
    assert!(secret.starts_with("whsec_"), "{secret}");
    let endpoint = created.webhook_endpoint.expect("endpoint");
    assert_eq!(
        (endpoint.url.as_str(), endpoint.event_types.as_slice()),
        (url.as_str(), &["order.confirmed".to_owned()][..])
    );

    service.deliver(&registered("u-ada", "ada@example.com", "Ada", "en")).await; // not subscribed: no webhook
    let order = confirmed("o-1", "u-ada", "pay-1");
    service.deliver(&order).await;
    service.deliver(&order).await; // a redelivery is not a second webhook

    let all = service
        .wait_until("the webhook is delivered", |all| {
            all.iter().any(|n| {
                n.channel == NotificationChannel::Webhook as i32 && n.status == NotificationStatus::Sent as i32
            })
        })
        .await;
    let hooks: Vec<_> = all.iter().filter(|n| n.channel == NotificationChannel::Webhook as i32).collect();
    assert_eq!(hooks.len(), 1, "{all:#?}");
    let hook = hooks[0];
    assert_eq!((hook.attempts, hook.recipient.as_str(), hook.event_id.as_str()), (3, url.as_str(), order.id.as_str()));
    assert_eq!(hook.user_id, "", "webhooks are addressed to endpoints, not users");

    let requests = receiver.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 3, "500, 500, then 200: three POSTs, no more");
    let (headers, body) = &requests[2];
    assert_eq!(headers["content-type"], "application/json");
    let signed_at = verify(headers["mercato-signature"].to_str().expect("ascii"), &secret, body);
    assert!((platform::time::now_secs() - signed_at).abs() < 60, "signed with the time of sending");
    let json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(json["id"], order.id.as_str());
    assert_eq!(json["type"], "order.confirmed");
    assert_eq!(json["subject"], "o-1");
    assert!(json["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{json}");
    assert_eq!(json["data"]["orderId"], "o-1", "proto3 JSON: lowerCamelCase");
    assert_eq!(json["data"]["total"], serde_json::json!({"currency": "EUR", "amountMinor": "2900"}));
    assert_eq!(json["data"]["items"][0]["name"], "Coffee");
    for (earlier, _) in &requests[..2] {
        verify(earlier["mercato-signature"].to_str().expect("ascii"), &secret, body);
    }

    // notification.sent went out through the outbox, for the webhook only (the emails were LOGGED).
    let mut sent = Vec::new();
    for _ in 0..100 {
        sent = service.published.lock().expect("lock").clone();
        if !sent.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].r#type, "notification.sent");
    let payload = NotificationSent::decode(sent[0].data.as_slice()).expect("payload");
    assert_eq!((payload.notification_id.as_str(), payload.attempts), (hook.id.as_str(), 3));
    assert_eq!(payload.channel, NotificationChannel::Webhook as i32);
    receiver_task.abort();
    service.stop().await;
}

/// With the production default, a webhook to a private address (here the test's own loopback receiver) is
/// refused at once and never sent: an endpoint URL cannot reach inside the network.
async fn private_addresses_are_not_called_by_default(db: Db) {
    let options = notifications::DispatchOptions { allow_private_networks: false, ..fast_retries() };
    let service = Service::start(db, Mailer::Log, options).await;
    let receiver = Receiver::default();
    let (url, receiver_task) = start_receiver(receiver.clone()).await;
    let request = CreateWebhookEndpointRequest { url, event_types: vec!["order.confirmed".into()] };
    service.client.clone().create_webhook_endpoint(with_token(request, &service.admin())).await.expect("created");
    service.deliver(&confirmed("o-1", "u-ada", "pay-1")).await;
    let all = service
        .wait_until("the webhook is refused", |all| {
            all.iter().any(|n| {
                n.channel == NotificationChannel::Webhook as i32 && n.status == NotificationStatus::Failed as i32
            })
        })
        .await;
    let hook = all.iter().find(|n| n.channel == NotificationChannel::Webhook as i32).expect("the webhook");
    assert_eq!(hook.attempts, 1, "refused for good, not retried: {hook:?}");
    assert!(hook.last_error.contains("127.0.0.1 is not a public address"), "{}", hook.last_error);
    assert!(receiver.requests.lock().expect("lock").is_empty(), "nothing reached the private address");
    receiver_task.abort();
    service.stop().await;
}

async fn endpoints_are_managed_by_admins_only(db: Db) {
    let service = Service::start(db, Mailer::Log, fast_retries()).await;
    let admin = service.admin();
    let mut client = service.client.clone();

    let customer = service.customer("u-ada");
    let request = CreateWebhookEndpointRequest {
        url: "https://hooks.example.com".into(),
        event_types: vec!["order.failed".into()],
    };
    let denied = client.create_webhook_endpoint(with_token(request.clone(), &customer)).await.expect_err("admins only");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = client.list_webhook_endpoints(with_token(ListWebhookEndpointsRequest {}, &customer)).await;
    assert_eq!(denied.expect_err("admins only").code(), Code::PermissionDenied);

    let bad = CreateWebhookEndpointRequest {
        url: "ftp://hooks.example.com".into(),
        event_types: vec!["order.shipped".into()],
    };
    let err = client.create_webhook_endpoint(with_token(bad, &admin)).await.expect_err("invalid");
    assert_eq!(common::bad_fields(&err), ["url", "event_types[0]"]);

    // A reset token is for its account's mailbox only.
    let secrets = CreateWebhookEndpointRequest {
        url: "https://hooks.example.com".into(),
        event_types: vec!["user.password_changed".into(), "user.password_reset_requested".into()],
    };
    let err = client.create_webhook_endpoint(with_token(secrets, &admin)).await.expect_err("a secret's event");
    assert_eq!(common::bad_fields(&err), ["event_types[1]"]);

    let first = client.create_webhook_endpoint(with_token(request, &admin)).await.expect("created").into_inner();
    let second = CreateWebhookEndpointRequest {
        url: "https://other.example.com/in".into(),
        event_types: vec!["user.registered".into(), "refund.completed".into()],
    };
    let second = client.create_webhook_endpoint(with_token(second, &admin)).await.expect("created").into_inner();
    assert_ne!(first.secret, second.secret);
    let listed = client.list_webhook_endpoints(with_token(ListWebhookEndpointsRequest {}, &admin)).await.expect("list");
    let listed = listed.into_inner().webhook_endpoints;
    assert_eq!(listed, vec![second.webhook_endpoint.clone().expect("e"), first.webhook_endpoint.clone().expect("e")]);

    let id = first.webhook_endpoint.expect("endpoint").id;
    let delete = || with_token(DeleteWebhookEndpointRequest { id: id.clone() }, &admin);
    client.delete_webhook_endpoint(delete()).await.expect("deleted");
    assert_eq!(client.delete_webhook_endpoint(delete()).await.expect_err("gone").code(), Code::NotFound);
    let listed = client.list_webhook_endpoints(with_token(ListWebhookEndpointsRequest {}, &admin)).await.expect("list");
    assert_eq!(listed.into_inner().webhook_endpoints.len(), 1);
    service.stop().await;
}

/// Runs each scenario once on SQLite and once on PostgreSQL.
macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (db, _dir) = platform::testkit::sqlite("notifications").await.expect("sqlite");
                    super::$scenario(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(db) = platform::testkit::postgres("notifications").await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
}

/// An endpoint stored with a mail-only type (before the rule, or by hand) still never gets its events.
async fn events_carrying_secrets_never_reach_webhooks(db: Db) {
    db.migrate(&notifications::MIGRATOR, notifications::NAME).await.expect("migrated");
    with_db!(&db, pool => {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, event_types, secret, create_time) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind("w-old")
        .bind("https://hooks.example.com/in")
        .bind("user.password_reset_requested order.confirmed")
        .bind("whsec_old")
        .bind(1_i64)
        .execute(pool)
        .await
        .expect("endpoint");
    });
    let service = Service::start(db, Mailer::Log, fast_retries()).await;
    let reset = PasswordResetRequested {
        user_id: "u-1".into(),
        email: "ada@example.com".into(),
        token: "secret".into(),
        ..Default::default()
    };
    service.deliver(&common::envelope("user.password_reset_requested", "u-1", &reset)).await;
    service.deliver(&confirmed("o-1", "u-1", "pay-1")).await;
    let all = service
        .wait_until("the order's webhook and the reset's mail", |all| {
            let hook = all.iter().any(|n| n.channel == NotificationChannel::Webhook as i32);
            let mail = all.iter().any(|n| n.event_type == "user.password_reset_requested");
            hook && mail
        })
        .await;
    let hooks: Vec<&str> = all
        .iter()
        .filter(|n| n.channel == NotificationChannel::Webhook as i32)
        .map(|n| n.event_type.as_str())
        .collect();
    assert_eq!(hooks, ["order.confirmed"], "{all:#?}");
    service.stop().await;
}

/// Events nobody is mailed of (a shipment to pack, a product changed) are there for integrations: an endpoint
/// subscribed to one gets it, once, and no email row is written for them.
async fn events_nobody_is_mailed_of_reach_the_endpoints_subscribed_to_them(db: Db) {
    let service = Service::start(db.clone(), Mailer::Log, fast_retries()).await;
    let receiver = Receiver::default();
    let (url, receiver_task) = start_receiver(receiver.clone()).await;
    let request = CreateWebhookEndpointRequest { url: url.clone(), event_types: vec!["shipment.created".into()] };
    let mut client = service.client.clone();
    client.create_webhook_endpoint(with_token(request, &service.admin())).await.expect("subscribed");

    let created = ShipmentCreated { shipment_id: "s-1".into(), order_id: "o-1".into(), customer_id: "u-1".into() };
    let shipment = common::envelope("shipment.created", "s-1", &created);
    service.deliver(&shipment).await;
    service.deliver(&shipment).await; // a redelivery is not a second webhook
    let product = ProductUpdated::default();
    service.deliver(&common::envelope("product.updated", "p-1", &product)).await; // nobody subscribed
    let sent = |n: &Notification| n.status == NotificationStatus::Sent as i32;
    let all = service.wait_until("the webhook is delivered", |all| all.iter().any(sent)).await;
    let rows: Vec<(i32, &str)> = all.iter().map(|n| (n.channel, n.event_type.as_str())).collect();
    assert_eq!(rows, [(NotificationChannel::Webhook as i32, "shipment.created")], "no email rows: {all:#?}");
    let requests = receiver.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 1);
    let json: serde_json::Value = serde_json::from_str(&requests[0].1).expect("JSON body");
    assert_eq!((json["type"].as_str(), json["data"]["orderId"].as_str()), (Some("shipment.created"), Some("o-1")));
    // An event that wrote nothing leaves no inbox row either (most of a checkout's events, without endpoints).
    let handled: Vec<String> = with_db!(&db, pool => {
        sqlx::query_scalar("SELECT event_id FROM inbox WHERE consumer = 'notifications'").fetch_all(pool).await.expect("inbox")
    });
    assert_eq!(handled, [shipment.id.as_str()]);

    // Events no one subscribed to, and this service's own, cannot be asked for by mistake.
    for (types, bad) in [(vec!["notification.sent".to_owned()], true), (vec!["product.updated".to_owned()], false)] {
        let request = CreateWebhookEndpointRequest { url: url.clone(), event_types: types };
        let answer = client.create_webhook_endpoint(with_token(request, &service.admin())).await;
        assert_eq!(answer.is_err(), bad, "{answer:?}");
    }
    receiver_task.abort();
    service.stop().await;
}

/// Replicas share the endpoints: one created through another replica is heard of here too, within about
/// [`notifications::subscriptions::REFRESH`], although this replica lets the events nobody is mailed of go without
/// reading the database while it knows of no endpoint for them.
async fn an_endpoint_created_through_another_replica_is_heard_of_here(db: Db) {
    let here = Service::start(db.clone(), Mailer::Log, fast_retries()).await;
    let there = Service::start(db, Mailer::Log, fast_retries()).await;
    let receiver = Receiver::default();
    let (url, receiver_task) = start_receiver(receiver.clone()).await;
    let updated = |n: u32| common::envelope("product.updated", &format!("p-{n}"), &ProductUpdated::default());
    here.deliver(&updated(0)).await; // before any endpoint: let go

    let request = CreateWebhookEndpointRequest { url, event_types: vec!["product.updated".into()] };
    there.client.clone().create_webhook_endpoint(with_token(request, &there.admin())).await.expect("subscribed");
    // Until here reads the endpoints again, its product updates go unheard; then they reach the endpoint.
    let mut sent = 0;
    while receiver.requests.lock().expect("lock").is_empty() {
        sent += 1;
        assert!(sent <= 100, "no product update reached the endpoint created through the other replica");
        here.deliver(&updated(sent)).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let requests = receiver.requests.lock().expect("lock").clone();
    let json: serde_json::Value = serde_json::from_str(&requests[0].1).expect("JSON body");
    assert_ne!(json["subject"], "p-0", "the update before the endpoint existed is not delivered: {json}");
    receiver_task.abort();
    here.stop().await;
    there.stop().await;
}

on_both_engines!(
    an_endpoint_created_through_another_replica_is_heard_of_here,
    events_nobody_is_mailed_of_reach_the_endpoints_subscribed_to_them,
    events_carrying_secrets_never_reach_webhooks,
    deliveries_are_signed_and_retried_until_accepted,
    private_addresses_are_not_called_by_default,
    endpoints_are_managed_by_admins_only,
);
