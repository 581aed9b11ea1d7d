//! What the deliveries service publishes and consumes.
//!
//! It consumes `order.confirmed` (a shipment is made for the order, to its shipping address, unless the order
//! was cancelled first) and `order.cancelled` (a shipment not yet dispatched is cancelled; a dispatched one
//! gets a history entry; usually the orders service has already cancelled it with CancelOrderShipment). It
//! publishes `shipment.created`, `shipment.shipped`, `shipment.delivered` and `shipment.cancelled`, each with
//! the shipment as its subject, so one shipment's events arrive in order.

use api::mercato::deliveries::v1::{ShipmentCancelled, ShipmentCreated, ShipmentDelivered, ShipmentShipped};
use api::mercato::orders::v1::{OrderCancelled, OrderConfirmed};
use platform::events::{EventBus, EventEnvelope, NewEvent};
use prost::Message;

use crate::store::{Item, NewShipment, Store};

/// Event type published when a confirmed order's shipment is made (payload `ShipmentCreated`).
pub const SHIPMENT_CREATED: &str = "shipment.created";
/// Event type published when a shipment is handed to a carrier (payload `ShipmentShipped`).
pub const SHIPMENT_SHIPPED: &str = "shipment.shipped";
/// Event type published when a shipment is delivered (payload `ShipmentDelivered`).
pub const SHIPMENT_DELIVERED: &str = "shipment.delivered";
/// Event type published when a shipment is cancelled with its order (payload `ShipmentCancelled`).
pub const SHIPMENT_CANCELLED: &str = "shipment.cancelled";

/// The `shipment.created` event.
pub fn created(shipment_id: &str, order_id: &str, customer_id: &str) -> NewEvent {
    let payload = ShipmentCreated {
        shipment_id: shipment_id.to_owned(),
        order_id: order_id.to_owned(),
        customer_id: customer_id.to_owned(),
    };
    NewEvent::new(SHIPMENT_CREATED, shipment_id, &payload)
}

/// The `shipment.shipped` event.
pub fn shipped(shipment_id: &str, order_id: &str, customer_id: &str, carrier: &str, tracking_number: &str) -> NewEvent {
    let payload = ShipmentShipped {
        shipment_id: shipment_id.to_owned(),
        order_id: order_id.to_owned(),
        customer_id: customer_id.to_owned(),
        carrier: carrier.to_owned(),
        tracking_number: tracking_number.to_owned(),
    };
    NewEvent::new(SHIPMENT_SHIPPED, shipment_id, &payload)
}

/// The `shipment.delivered` event.
pub fn delivered(shipment_id: &str, order_id: &str, customer_id: &str) -> NewEvent {
    let payload = ShipmentDelivered {
        shipment_id: shipment_id.to_owned(),
        order_id: order_id.to_owned(),
        customer_id: customer_id.to_owned(),
    };
    NewEvent::new(SHIPMENT_DELIVERED, shipment_id, &payload)
}

/// The `shipment.cancelled` event.
pub fn cancelled(shipment_id: &str, order_id: &str, customer_id: &str) -> NewEvent {
    let payload = ShipmentCancelled {
        shipment_id: shipment_id.to_owned(),
        order_id: order_id.to_owned(),
        customer_id: customer_id.to_owned(),
    };
    NewEvent::new(SHIPMENT_CANCELLED, shipment_id, &payload)
}

/// The service's consumer name (its inbox and, on RabbitMQ, its queue).
pub const CONSUMER: &str = "deliveries";
/// Event type of a confirmed order.
pub const ORDER_CONFIRMED: &str = "order.confirmed";
/// Event type of a cancelled order.
pub const ORDER_CANCELLED: &str = "order.cancelled";

/// The event types the consumer takes: what it subscribes to, and its queue's bindings on RabbitMQ, which a
/// publisher in another process declares too (`AmqpBus::expect_consumer`).
pub fn event_types() -> Vec<&'static str> {
    vec![ORDER_CONFIRMED, ORDER_CANCELLED]
}

/// Subscribes the service's consumer on `bus`.
pub fn subscribe(bus: &dyn EventBus, store: Store) {
    platform::events::subscribe_with(bus, CONSUMER, &event_types(), store, |store, envelope| async move {
        handle(&store, &envelope).await
    });
}

async fn handle(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
    let now = platform::time::now_micros();
    match envelope.r#type.as_str() {
        ORDER_CONFIRMED => {
            let confirmed =
                OrderConfirmed::decode(envelope.data.as_slice()).map_err(|e| format!("bad payload: {e}"))?;
            let new = NewShipment {
                address: confirmed.shipping_address.unwrap_or_default(),
                items: confirmed
                    .items
                    .into_iter()
                    .map(|i| Item { product_id: i.product_id, sku: i.sku, name: i.name, quantity: i.quantity })
                    .collect(),
                order_id: confirmed.order_id,
                customer_id: confirmed.customer_id,
                shipping_method: confirmed.shipping_rate_name,
            };
            let created = store
                .create_for_order(&envelope.id, &new, now)
                .await
                .map_err(|e| format!("making the shipment of order {}: {e}", new.order_id))?;
            if let Some(id) = created {
                tracing::info!(shipment_id = %id, order_id = %new.order_id, "shipment created");
            }
        }
        ORDER_CANCELLED => {
            let cancelled =
                OrderCancelled::decode(envelope.data.as_slice()).map_err(|e| format!("bad payload: {e}"))?;
            let outcome = store
                .cancel_for_order(&envelope.id, &cancelled.order_id, now)
                .await
                .map_err(|e| format!("cancelling the shipment of order {}: {e}", cancelled.order_id))?;
            tracing::info!(order_id = %cancelled.order_id, ?outcome, "order cancelled");
        }
        other => return Err(format!("unexpected event type {other}")),
    }
    Ok(())
}
