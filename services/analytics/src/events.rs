//! What analytics consumes, and how a payload becomes a domain [`Fact`]:
//!
//! | type             | payload                              | counts as                                   |
//! | ---------------- | ------------------------------------ | ------------------------------------------- |
//! | order.confirmed  | mercato.orders.v1.OrderConfirmed     | an order, its revenue and units; a cart conversion when `from_cart` |
//! | order.cancelled  | mercato.orders.v1.OrderCancelled     | a cancellation: its refund, its units back  |
//! | payment.captured | mercato.payments.v1.PaymentCaptured  | money captured                              |
//! | refund.completed | mercato.refunds.v1.RefundCompleted   | a refund                                    |
//! | return.received  | mercato.orders.v1.ReturnReceived     | units sent back, by product                 |
//! | return.refunded  | mercato.orders.v1.ReturnRefunded     | a refund (of a return's items)              |
//! | cart.item_added  | mercato.cart.v1.CartItemAdded        | a cart started when the cart was empty      |
//!
//! Each event counts on the UTC day of its envelope's `time`.

use std::sync::Arc;

use api::common::Money;
use api::mercato::cart::v1::CartItemAdded;
use api::mercato::orders::v1::{OrderCancelled, OrderConfirmed, OrderItem, ReturnReceived, ReturnRefunded};
use api::mercato::payments::v1::PaymentCaptured;
use api::mercato::refunds::v1::RefundCompleted;
use platform::events::{BatchRecorder, EventBus, EventEnvelope, GroupCommit};
use prost::Message;

use crate::domain::{self, Amount, Effect, Fact, OrderLine};
use crate::error::Error;
use crate::store::{RecordedEvent, Store};

/// The analytics consumer name (its inbox and, on RabbitMQ, its queue).
pub const CONSUMER: &str = "analytics";
/// Event type of a confirmed order.
pub const ORDER_CONFIRMED: &str = "order.confirmed";
/// Event type of a cancelled order.
pub const ORDER_CANCELLED: &str = "order.cancelled";
/// Event type of a captured payment.
pub const PAYMENT_CAPTURED: &str = "payment.captured";
/// Event type of a completed refund.
pub const REFUND_COMPLETED: &str = "refund.completed";
/// Event type of a return whose items arrived.
pub const RETURN_RECEIVED: &str = "return.received";
/// Event type of a return's refund.
pub const RETURN_REFUNDED: &str = "return.refunded";
/// Event type of a product put into a cart.
pub const CART_ITEM_ADDED: &str = "cart.item_added";
/// The event types the consumer takes: what it subscribes to, and its queue's bindings on RabbitMQ, which a
/// publisher in another process declares too (`AmqpBus::expect_consumer`).
pub fn event_types() -> Vec<&'static str> {
    vec![
        ORDER_CONFIRMED,
        ORDER_CANCELLED,
        PAYMENT_CAPTURED,
        REFUND_COMPLETED,
        RETURN_RECEIVED,
        RETURN_REFUNDED,
        CART_ITEM_ADDED,
    ]
}

/// Most events recorded in one transaction.
const MAX_BATCH: usize = 64;

/// Records deliveries in batches through [`Store::record_batch`].
struct Recorder(Store);

impl BatchRecorder for Recorder {
    type Item = (RecordedEvent, Effect);
    type Outcome = bool;
    type Error = Error;

    async fn record_batch(&self, events: &[(RecordedEvent, Effect)]) -> Result<Vec<bool>, Error> {
        self.0.record_batch(events).await
    }
}

/// Subscribes the analytics consumer on `bus`. Deliveries that arrive while a batch is being recorded wait and
/// are recorded together in the next one ([`GroupCommit`]): under load every aggregate row is written once per
/// batch instead of once per event, and each delivery is acknowledged only once its batch has committed.
/// Must be called inside a Tokio runtime: it starts the task that records the batches, which ends with the bus.
pub fn subscribe(bus: &dyn EventBus, store: Store) {
    let batches = GroupCommit::start(Recorder(store), MAX_BATCH);
    bus.subscribe(
        CONSUMER,
        &event_types(),
        Arc::new(move |envelope: Arc<EventEnvelope>| {
            let batches = batches.clone();
            Box::pin(async move {
                let event = recorded(&envelope).map_err(|e| e.to_string())?;
                let effect = effect_of(&event).map_err(|e| e.to_string())?;
                let new = batches.record((event, effect)).await?;
                log_outcome(&envelope.id, &envelope.r#type, new);
                Ok(())
            })
        }),
    );
}

fn log_outcome(event_id: &str, event_type: &str, new: bool) {
    if new {
        tracing::debug!(%event_id, %event_type, "event counted");
    } else {
        tracing::info!(%event_id, %event_type, "event seen before, skipped");
    }
}

/// Handles one delivery on its own (no batching): keeps the event and applies its effect, once (a
/// redelivery changes nothing). Returns whether it was new.
pub async fn consume(store: &Store, envelope: &EventEnvelope) -> Result<bool, Error> {
    let event = recorded(envelope)?;
    let effect = effect_of(&event)?;
    let applied = store.record(&event, &effect).await?;
    log_outcome(&event.id, &event.event_type, applied);
    Ok(applied)
}

/// The event as the history keeps it: id, type, time (required) and payload.
pub fn recorded(envelope: &EventEnvelope) -> Result<RecordedEvent, Error> {
    let time = envelope.time.as_ref().ok_or_else(|| Error::bad_event(&envelope.id, "the envelope has no time"))?;
    let micros = time.seconds.saturating_mul(1_000_000).saturating_add(i64::from(time.nanos / 1000));
    Ok(RecordedEvent {
        id: envelope.id.clone(),
        event_type: envelope.r#type.clone(),
        event_time: micros,
        payload: envelope.data.clone(),
    })
}

/// What a recorded event adds to the aggregates.
pub fn effect_of(event: &RecordedEvent) -> Result<Effect, Error> {
    Ok(domain::effect(&fact(event)?, domain::day_of_micros(event.event_time)))
}

/// Decodes the payload of an event into what it says.
pub fn fact(event: &RecordedEvent) -> Result<Fact, Error> {
    let bad = |problem: String| Error::bad_event(&event.id, problem);
    let payload = event.payload.as_slice();
    let decode_error = |e: prost::DecodeError| bad(format!("{} payload does not decode: {e}", event.event_type));
    match event.event_type.as_str() {
        ORDER_CONFIRMED => {
            let confirmed = OrderConfirmed::decode(payload).map_err(decode_error)?;
            // Absent (events from before discount codes) or zero: no discount.
            let discount_minor = confirmed.discount.map_or(0, |d| d.amount_minor.max(0));
            // Likewise for events from before shipping rates.
            let shipping_minor = confirmed.shipping.map_or(0, |s| s.amount_minor.max(0));
            // And for tax: none before tax rates, or to a country without one.
            let tax_minor =
                confirmed.taxes.iter().filter_map(|t| t.amount.as_ref()).map(|a| a.amount_minor.max(0)).sum();
            Ok(Fact::OrderConfirmed {
                total: amount(confirmed.total, "total").map_err(bad)?,
                discount_minor,
                shipping_minor,
                tax_minor,
                discount_code: confirmed.discount_code,
                lines: lines(confirmed.items).map_err(bad)?,
                from_cart: confirmed.from_cart,
            })
        }
        ORDER_CANCELLED => {
            let cancelled = OrderCancelled::decode(payload).map_err(decode_error)?;
            Ok(Fact::OrderCancelled {
                refunded: amount(cancelled.refunded, "refunded").map_err(bad)?,
                lines: lines(cancelled.items).map_err(bad)?,
            })
        }
        PAYMENT_CAPTURED => {
            let captured = PaymentCaptured::decode(payload).map_err(decode_error)?;
            Ok(Fact::PaymentCaptured { amount: amount(captured.amount, "amount").map_err(bad)? })
        }
        REFUND_COMPLETED => {
            let completed = RefundCompleted::decode(payload).map_err(decode_error)?;
            Ok(Fact::RefundCompleted { amount: amount(completed.amount, "amount").map_err(bad)? })
        }
        RETURN_RECEIVED => {
            let received = ReturnReceived::decode(payload).map_err(decode_error)?;
            let lines = received
                .items
                .into_iter()
                .map(|item| {
                    let currency = item.unit_price.map(|p| p.currency).unwrap_or_default();
                    (item.product_id, currency, i64::from(item.quantity))
                })
                .collect();
            Ok(Fact::ReturnReceived { lines })
        }
        // Money given back like any refund (made through the payments service, not the refunds service).
        RETURN_REFUNDED => {
            let refunded = ReturnRefunded::decode(payload).map_err(decode_error)?;
            Ok(Fact::RefundCompleted { amount: amount(refunded.refunded, "refunded").map_err(bad)? })
        }
        CART_ITEM_ADDED => {
            let added = CartItemAdded::decode(payload).map_err(decode_error)?;
            Ok(Fact::CartItemAdded { cart_was_empty: added.cart_was_empty })
        }
        other => Err(bad(format!("analytics does not consume {other:?} events"))),
    }
}

fn amount(money: Option<Money>, field: &str) -> Result<Amount, String> {
    match money {
        Some(Money { currency, amount_minor }) if !currency.is_empty() => Ok(Amount { currency, minor: amount_minor }),
        _ => Err(format!("the payload has no {field}")),
    }
}

fn lines(items: Vec<OrderItem>) -> Result<Vec<OrderLine>, String> {
    items
        .into_iter()
        .map(|item| {
            Ok(OrderLine {
                line_total: amount(item.line_total, "line_total")?,
                product_id: item.product_id,
                sku: item.sku,
                name: item.name,
                quantity: i64::from(item.quantity),
            })
        })
        .collect()
}
