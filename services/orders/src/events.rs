//! What the orders service publishes, through its outbox: `order.placed`, `order.confirmed`,
//! `order.failed` and `order.cancelled` (payloads in `mercato.orders.v1`, see events.proto); and what it
//! consumes: `payment.refunded`, which tells an order how much of it has been given back, and issues the refund's
//! credit note.

use api::mercato::orders::v1::{OrderCancelled, OrderConfirmed, OrderFailed, OrderPlaced};
use api::mercato::payments::v1::PaymentRefunded;
use platform::events::{EventBus, EventEnvelope, NewEvent};
use prost::Message;

use crate::domain::Price;
use crate::grpc::{address_to_wire, lines_to_wire, money, taxes_to_wire};
use crate::invoice_store::Refund;
use crate::store::{Order, Store};

/// An order was created and its checkout started.
pub const ORDER_PLACED: &str = "order.placed";
/// An order was paid and its stock sold.
pub const ORDER_CONFIRMED: &str = "order.confirmed";
/// A checkout failed and was compensated.
pub const ORDER_FAILED: &str = "order.failed";
/// A confirmed order was cancelled and refunded; the catalog puts its units back in stock.
pub const ORDER_CANCELLED: &str = "order.cancelled";

/// The `order.placed` event of a new order.
pub fn placed(order: &Order) -> NewEvent {
    let payload = OrderPlaced {
        order_id: order.id.clone(),
        customer_id: order.customer_id.clone(),
        items: lines_to_wire(&order.lines, &order.total.currency),
        total: Some(money(&order.total)),
        discount: Some(money(&order.discount())),
        discount_code: order.discount_code.clone(),
        shipping: Some(money(&order.shipping())),
        shipping_rate_id: order.shipping_rate_id.clone(),
    };
    NewEvent::new(ORDER_PLACED, order.id.clone(), &payload)
}

/// The `order.confirmed` event of an order paid with its `payment_id` and invoiced as `invoice_number`.
pub fn confirmed(order: &Order, invoice_number: &str) -> NewEvent {
    let payload = OrderConfirmed {
        order_id: order.id.clone(),
        customer_id: order.customer_id.clone(),
        payment_id: order.payment_id.clone(),
        items: lines_to_wire(&order.lines, &order.total.currency),
        total: Some(money(&order.total)),
        shipping_address: Some(address_to_wire(&order.address)),
        from_cart: order.from_cart,
        discount: Some(money(&order.discount())),
        discount_code: order.discount_code.clone(),
        shipping: Some(money(&order.shipping())),
        shipping_rate_id: order.shipping_rate_id.clone(),
        shipping_rate_name: order.shipping_rate_name.clone(),
        taxes: taxes_to_wire(&order.total.currency, order.tax.as_ref()),
        invoice_number: invoice_number.to_owned(),
    };
    NewEvent::new(ORDER_CONFIRMED, order.id.clone(), &payload)
}

/// The `order.failed` event of an order failed for `reason` (payment id as far as known).
pub fn failed(order: &Order, reason: &str, payment_id: &str) -> NewEvent {
    let payload = OrderFailed {
        order_id: order.id.clone(),
        customer_id: order.customer_id.clone(),
        reason: reason.to_owned(),
        payment_id: payment_id.to_owned(),
    };
    NewEvent::new(ORDER_FAILED, order.id.clone(), &payload)
}

/// The `order.cancelled` event of a cancelled order whose cancellation gave `refunded_minor` back (the total,
/// less what was refunded before), so its payment is now refunded in full.
pub fn cancelled(order: &Order, refunded_minor: i64) -> NewEvent {
    let payload = OrderCancelled {
        order_id: order.id.clone(),
        customer_id: order.customer_id.clone(),
        items: lines_to_wire(&order.lines, &order.total.currency),
        payment_id: order.payment_id.clone(),
        refunded: Some(money(&Price { currency: order.total.currency.clone(), amount_minor: refunded_minor })),
        reason: order.cancel_reason.clone(),
    };
    NewEvent::new(ORDER_CANCELLED, order.id.clone(), &payload)
}

/// The service's consumer name (its queue on RabbitMQ). It keeps no inbox: what it records is a cumulative amount
/// that only rises ([`Store::record_refunded`]) and one credit note per refund ([`Store::issue_credit_note`]), so a
/// redelivered event changes nothing.
pub const CONSUMER: &str = "orders";
/// Event type of a payment's refund (payload `mercato.payments.v1.PaymentRefunded`).
pub const PAYMENT_REFUNDED: &str = "payment.refunded";

/// The event types the consumer takes: what it subscribes to, and its queue's bindings on RabbitMQ, which a
/// publisher in another process declares too (`AmqpBus::expect_consumer`).
pub fn event_types() -> Vec<&'static str> {
    vec![PAYMENT_REFUNDED]
}

/// Subscribes the service's consumer on `bus`.
pub fn subscribe(bus: &dyn EventBus, store: Store) {
    platform::events::subscribe_with(bus, CONSUMER, &event_types(), store, |store, envelope| async move {
        handle(&store, &envelope).await
    });
}

async fn handle(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
    if envelope.r#type != PAYMENT_REFUNDED {
        return Ok(());
    }
    let refunded = PaymentRefunded::decode(envelope.data.as_slice()).map_err(|e| format!("bad payload: {e}"))?;
    let so_far = refunded.refunded_amount.map_or(0, |m| m.amount_minor);
    let raised = store
        .record_refunded(&refunded.order_id, &refunded.payment_id, so_far, platform::time::now_micros())
        .await
        .map_err(|e| format!("recording the refund of order {}: {e}", refunded.order_id))?;
    if raised {
        tracing::info!(order_id = %refunded.order_id, refunded_minor = so_far, "order refunded");
    }
    // Tried on every delivery, not only when the amount rose: a credit note failed before is issued on redelivery,
    // and one issued already is not issued again.
    let refund = Refund {
        refund_id: refunded.refund_id,
        order_id: refunded.order_id,
        payment_id: refunded.payment_id,
        amount_minor: refunded.amount.map_or(0, |m| m.amount_minor),
    };
    let issued = store
        .issue_credit_note(&refund, platform::time::now_micros())
        .await
        .map_err(|e| format!("issuing the credit note of refund {}: {e}", refund.refund_id))?;
    if let Some(number) = issued {
        tracing::info!(order_id = %refund.order_id, refund_id = %refund.refund_id, %number, "credit note issued");
    }
    Ok(())
}
