//! What the cart consumes: `order.confirmed` empties the cart an order was placed from. The orders service
//! also clears it right away; this consumer is what makes it certain (the saga's call is best effort).

use std::sync::Arc;

use api::mercato::orders::v1::OrderConfirmed;
use platform::events::{EventBus, EventEnvelope};
use prost::Message;

use crate::store::Store;

/// The cart's consumer name (its inbox and, on RabbitMQ, its queue).
pub const CONSUMER: &str = "cart";
/// Event type of a confirmed order.
pub const ORDER_CONFIRMED: &str = "order.confirmed";

/// Subscribes the cart's consumers on `bus`.
pub fn subscribe(bus: &dyn EventBus, store: Store) {
    bus.subscribe(
        CONSUMER,
        &[ORDER_CONFIRMED],
        Arc::new(move |envelope: Arc<EventEnvelope>| {
            let store = store.clone();
            Box::pin(async move { empty_cart(&store, &envelope).await })
        }),
    );
}

async fn empty_cart(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
    let confirmed = OrderConfirmed::decode(envelope.data.as_slice()).map_err(|e| format!("bad payload: {e}"))?;
    if !confirmed.from_cart {
        return Ok(());
    }
    store
        .clear_for_event(&envelope.id, &confirmed.customer_id, platform::time::now_micros())
        .await
        .map_err(|e| format!("emptying the cart of order {}: {e}", confirmed.order_id))?;
    Ok(())
}
