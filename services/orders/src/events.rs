//! What the orders service publishes, through its outbox: `order.placed`, `order.confirmed`,
//! `order.failed` and `order.cancelled`, and `return.requested`, `return.approved`, `return.rejected`,
//! `return.cancelled`, `return.received` and `return.refunded` (payloads in `mercato.orders.v1`, see events.proto); and what it consumes:
//! `payment.refunded`, which tells an order how much of it has been given back, and issues the refund's credit
//! note; `shipment.delivered`, which starts an order's return window.

use api::mercato::deliveries::v1::ShipmentDelivered;
use api::mercato::orders::v1::{
    OrderCancelled, OrderConfirmed, OrderFailed, OrderPlaced, ReturnApproved, ReturnCancelled, ReturnReceived,
    ReturnRefunded, ReturnRejected, ReturnRequested,
};
use api::mercato::payments::v1::PaymentRefunded;
use platform::events::{EventBus, EventEnvelope, NewEvent};
use prost::Message;

use crate::domain::Price;
use crate::grpc::{address_to_wire, lines_to_wire, money, taxes_to_wire};
use crate::invoice_store::Refund;
use crate::return_grpc::return_items_to_wire;
use crate::returns::Return;
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

/// A customer asked to return items.
pub const RETURN_REQUESTED: &str = "return.requested";
/// Staff approved a return.
pub const RETURN_APPROVED: &str = "return.approved";
/// Staff rejected a return.
pub const RETURN_REJECTED: &str = "return.rejected";
/// A return's items arrived; the catalog puts them back in stock when asked to.
pub const RETURN_RECEIVED: &str = "return.received";
/// A return's refund was made.
pub const RETURN_REFUNDED: &str = "return.refunded";
/// A return was withdrawn before its parcel arrived.
pub const RETURN_CANCELLED: &str = "return.cancelled";

fn refund_of(r: &Return) -> Option<api::common::Money> {
    Some(money(&Price { currency: r.currency.clone(), amount_minor: r.refund_minor }))
}

/// The `return.requested` event of return `r` of `order`.
pub fn return_requested(r: &Return, order: &Order) -> NewEvent {
    let payload = ReturnRequested {
        return_id: r.id.clone(),
        order_id: r.order_id.clone(),
        customer_id: r.customer_id.clone(),
        items: return_items_to_wire(&r.lines, Some(order)),
        refund: refund_of(r),
        reason: r.reason.clone(),
    };
    NewEvent::new(RETURN_REQUESTED, r.id.clone(), &payload)
}

/// The `return.approved` event of return `r`.
pub fn return_approved(r: &Return) -> NewEvent {
    let payload =
        ReturnApproved { return_id: r.id.clone(), order_id: r.order_id.clone(), customer_id: r.customer_id.clone() };
    NewEvent::new(RETURN_APPROVED, r.id.clone(), &payload)
}

/// The `return.rejected` event of return `r`.
pub fn return_rejected(r: &Return) -> NewEvent {
    let payload = ReturnRejected {
        return_id: r.id.clone(),
        order_id: r.order_id.clone(),
        customer_id: r.customer_id.clone(),
        reason: r.reject_reason.clone(),
    };
    NewEvent::new(RETURN_REJECTED, r.id.clone(), &payload)
}

/// The `return.cancelled` event of return `r`.
pub fn return_cancelled(r: &Return) -> NewEvent {
    let payload =
        ReturnCancelled { return_id: r.id.clone(), order_id: r.order_id.clone(), customer_id: r.customer_id.clone() };
    NewEvent::new(RETURN_CANCELLED, r.id.clone(), &payload)
}

/// The `return.received` event of return `r` of `order`.
pub fn return_received(r: &Return, order: &Order) -> NewEvent {
    let payload = ReturnReceived {
        return_id: r.id.clone(),
        order_id: r.order_id.clone(),
        customer_id: r.customer_id.clone(),
        items: return_items_to_wire(&r.lines, Some(order)),
        restock: r.restocked,
        refund: refund_of(r),
    };
    NewEvent::new(RETURN_RECEIVED, r.id.clone(), &payload)
}

/// The `return.refunded` event of return `r`, refunded by `refund_id` (empty when nothing was left to give back).
pub fn return_refunded(r: &Return, refund_id: &str) -> NewEvent {
    let payload = ReturnRefunded {
        return_id: r.id.clone(),
        order_id: r.order_id.clone(),
        customer_id: r.customer_id.clone(),
        refund_id: refund_id.to_owned(),
        refunded: refund_of(r),
    };
    NewEvent::new(RETURN_REFUNDED, r.id.clone(), &payload)
}

/// The service's consumer name (its queue on RabbitMQ). It keeps no inbox: what it records is a cumulative amount
/// that only rises ([`Store::record_refunded`]), one credit note per refund ([`Store::issue_credit_note`]) and an
/// order's first delivery ([`Store::record_delivery`]), so a redelivered event changes nothing.
pub const CONSUMER: &str = "orders";
/// Event type of a payment's refund (payload `mercato.payments.v1.PaymentRefunded`).
pub const PAYMENT_REFUNDED: &str = "payment.refunded";
/// Event type of a delivered shipment (payload `mercato.deliveries.v1.ShipmentDelivered`).
pub const SHIPMENT_DELIVERED: &str = "shipment.delivered";

/// The event types the consumer takes: what it subscribes to, and its queue's bindings on RabbitMQ, which a
/// publisher in another process declares too (`AmqpBus::expect_consumer`).
pub fn event_types() -> Vec<&'static str> {
    vec![PAYMENT_REFUNDED, SHIPMENT_DELIVERED]
}

/// Subscribes the service's consumer on `bus`.
pub fn subscribe(bus: &dyn EventBus, store: Store) {
    platform::events::subscribe_with(bus, CONSUMER, &event_types(), store, |store, envelope| async move {
        handle(&store, &envelope).await
    });
}

async fn handle(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
    match envelope.r#type.as_str() {
        PAYMENT_REFUNDED => refunded(store, envelope).await,
        SHIPMENT_DELIVERED => delivered(store, envelope).await,
        _ => Ok(()),
    }
}

async fn delivered(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
    let delivered = ShipmentDelivered::decode(envelope.data.as_slice()).map_err(|e| format!("bad payload: {e}"))?;
    // When the carrier said so (the event's time), not when it reached this consumer.
    let deliver_time =
        envelope.time.as_ref().and_then(platform::time::micros).unwrap_or_else(platform::time::now_micros);
    let news = store
        .record_delivery(&delivered.order_id, deliver_time)
        .await
        .map_err(|e| format!("recording the delivery of order {}: {e}", delivered.order_id))?;
    if news {
        tracing::info!(order_id = %delivered.order_id, "order delivered: its return window runs");
    }
    Ok(())
}

async fn refunded(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
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
