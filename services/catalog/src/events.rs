//! What the catalog consumes: `order.cancelled` puts the sold units of a cancelled order back in stock.

use std::sync::Arc;

use api::mercato::orders::v1::OrderCancelled;
use platform::events::{EventBus, EventEnvelope};
use prost::Message;

use crate::store::Store;

/// The catalog's consumer name (its inbox and, on RabbitMQ, its queue).
pub const CONSUMER: &str = "catalog";
/// Event type of a cancelled order.
pub const ORDER_CANCELLED: &str = "order.cancelled";

/// Subscribes the catalog's consumers on `bus`.
pub fn subscribe(bus: &dyn EventBus, store: Store) {
    bus.subscribe(
        CONSUMER,
        &[ORDER_CANCELLED],
        Arc::new(move |envelope: Arc<EventEnvelope>| {
            let store = store.clone();
            Box::pin(async move { restock(&store, &envelope).await })
        }),
    );
}

async fn restock(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
    let cancelled = OrderCancelled::decode(envelope.data.as_slice()).map_err(|e| format!("bad payload: {e}"))?;
    let items: Vec<(String, i64)> =
        cancelled.items.iter().map(|item| (item.product_id.clone(), i64::from(item.quantity))).collect();
    let reason = format!("order {} cancelled", cancelled.order_id);
    let applied = store
        .restock(&envelope.id, &items, &reason, platform::time::now_micros())
        .await
        .map_err(|e| format!("restocking order {}: {e}", cancelled.order_id))?;
    if applied {
        tracing::info!(order_id = %cancelled.order_id, lines = items.len(), "stock of a cancelled order put back");
    }
    Ok(())
}
