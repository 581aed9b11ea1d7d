//! An order shows what has been given back of it (`refunded`), from the payments service's `payment.refunded`
//! events, whose amount is cumulative. On SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL; the
//! events are published on the service's in-process bus as the payments service's relay would.

mod harness;

use api::common::Money;
use api::mercato::orders::v1::{ListOrdersRequest, Order, OrderStatus};
use api::mercato::payments::v1::PaymentRefunded;
use platform::db::Db;
use platform::events::{EventBus, EventEnvelope};
use prost::Message;

use harness::*;

/// The `payment.refunded` event of payment `payment_id` of order `order_id` that has given back `so_far` in all.
fn refunded_event(id: &str, order_id: &str, payment_id: &str, so_far: i64) -> EventEnvelope {
    let eur = |amount_minor| Some(Money { currency: "EUR".into(), amount_minor });
    let payload = PaymentRefunded {
        payment_id: payment_id.into(),
        order_id: order_id.into(),
        refund_id: format!("refund-{id}"),
        amount: eur(so_far),
        refunded_amount: eur(so_far),
        ..PaymentRefunded::default()
    };
    EventEnvelope {
        id: id.into(),
        source: "payments".into(),
        r#type: "payment.refunded".into(),
        subject: payment_id.into(),
        data: payload.encode_to_vec(),
        ..EventEnvelope::default()
    }
}

fn micros(order: &Order) -> i64 {
    let t = order.update_time.as_ref().expect("update time");
    t.seconds * 1_000_000 + i64::from(t.nanos / 1_000)
}

fn refunded(order: &Order) -> i64 {
    let money = order.refunded.as_ref().expect("refunded is always shown");
    assert_eq!(money.currency, order.total.as_ref().expect("total").currency, "in the order's currency");
    money.amount_minor
}

async fn an_order_shows_what_its_payment_gave_back(db: Db) {
    let server = Server::start(db, Fake::new(), Wiring::Direct).await;
    let ada = server.client("ada", false).await;
    let order = ada.create(order_of(&[(COFFEE, 2)], "r1")).await.expect("create");
    assert_eq!((status(&order), refunded(&order)), (OrderStatus::Confirmed, 0), "nothing given back yet");
    let other = ada.create(order_of(&[(TEA, 1)], "r2")).await.expect("create");
    let publish = |event: EventEnvelope| {
        let bus = server.bus.clone();
        async move { bus.publish(event).await }
    };

    // Staff refunded a part of it.
    publish(refunded_event("e1", &order.id, &order.payment_id, 500)).await.expect("taken");
    let after = ada.get(&order.id).await.expect("get");
    assert_eq!(refunded(&after), 500);
    assert!(micros(&after) > micros(&order), "the order changed: {after:?}");
    let (listed, _) = ada.list(ListOrdersRequest::default()).await.expect("list");
    let listed: Vec<_> = listed.iter().map(|o| (o.id.as_str(), refunded(o))).collect();
    assert_eq!(listed, [(other.id.as_str(), 0), (order.id.as_str(), 500)], "the list shows it too");

    // Redelivered, or overtaken by the next refund's event: what was given back in all never goes down.
    publish(refunded_event("e1", &order.id, &order.payment_id, 500)).await.expect("a redelivery is taken");
    publish(refunded_event("e3", &order.id, &order.payment_id, 2900)).await.expect("taken");
    publish(refunded_event("e2", &order.id, &order.payment_id, 800)).await.expect("an overtaken event is taken");
    let full = ada.get(&order.id).await.expect("get");
    assert_eq!(refunded(&full), 2900, "the whole total, as the latest event says");
    assert_eq!(full.update_time, ada.get(&order.id).await.expect("get").update_time);

    // An event naming another payment of the order, or an order this service does not know, changes nothing
    // and is no error (payments may take a payment for any order id).
    publish(refunded_event("e4", &other.id, "pay-elsewhere", 1450)).await.expect("taken");
    publish(refunded_event("e5", "no-such-order", "pay-elsewhere", 1450)).await.expect("taken");
    assert_eq!(refunded(&ada.get(&other.id).await.expect("get")), 0);

    // A payload that is not a PaymentRefunded is refused (RabbitMQ retries it, then dead-letters it).
    let mut garbled = refunded_event("e6", &other.id, &other.payment_id, 1450);
    garbled.data = vec![0xff, 0xff, 0xff];
    publish(garbled).await.expect_err("a garbled event is refused");
    assert_eq!(refunded(&ada.get(&other.id).await.expect("get")), 0);
    server.stop().await;
}

on_both_engines!(an_order_shows_what_its_payment_gave_back);
