//! What the catalog publishes and consumes.
//!
//! Published, each in the transaction of its change: `product.created`, `product.updated` (its fields or its
//! images changed; it carries the images), `inventory.adjusted` (every change of units on hand) and
//! `inventory.low` (available units fell below [`LOW_STOCK_THRESHOLD`](crate::domain::LOW_STOCK_THRESHOLD)) and
//! `stock_alert.triggered` (a product a customer waited for can be ordered again; one per alert) and
//! `review.submitted` (a review written or changed waits for staff, when the shop moderates reviews).
//! Consumed: `order.cancelled` puts the sold units of a cancelled order back in stock, and `return.received` the
//! units of a return when staff say they can be sold again; `order.confirmed` and
//! `order.cancelled` tell who bought what (only a buyer may review a product); `user.deleted` erases the
//! account's reviews, purchases and stock alerts.

use api::auth::UserDeleted;
use api::catalog::{
    InventoryAdjusted, InventoryLow, ProductCreated, ProductUpdated, ReviewSubmitted, StockAlertTriggered,
};
use api::mercato::orders::v1::{OrderCancelled, OrderConfirmed, ReturnReceived};
use platform::events::{EventBus, EventEnvelope, NewEvent};
use prost::Message;

use crate::store::{ImageRow, ProductRow, ReviewRow, Store};

/// Event type of a new product.
pub const PRODUCT_CREATED: &str = "product.created";
/// Event type of a changed product.
pub const PRODUCT_UPDATED: &str = "product.updated";
/// Event type of a change of units on hand.
pub const INVENTORY_ADJUSTED: &str = "inventory.adjusted";
/// Event type of a product whose available units fell below the threshold.
pub const INVENTORY_LOW: &str = "inventory.low";
/// Event type of a product a customer waited for that can be ordered again.
pub const STOCK_ALERT_TRIGGERED: &str = "stock_alert.triggered";
/// Event type of a review that waits for staff to publish it.
pub const REVIEW_SUBMITTED: &str = "review.submitted";

/// The `review.submitted` event of `review`, of the product named `product_name`.
pub fn review_submitted(review: &ReviewRow, product_name: &str) -> NewEvent {
    let payload = ReviewSubmitted {
        review_id: review.id.clone(),
        product_id: review.product_id.clone(),
        product_name: product_name.to_owned(),
        customer_id: review.customer_id.clone(),
        rating: review.rating,
        title: review.title.clone(),
        body: review.body.clone(),
        author_name: review.author_name.clone(),
    };
    NewEvent::new(REVIEW_SUBMITTED, review.id.clone(), &payload)
}

/// The `product.created` event of `row`.
pub fn product_created(row: &ProductRow) -> NewEvent {
    NewEvent::new(
        PRODUCT_CREATED,
        row.id.clone(),
        &ProductCreated { product: Some(crate::grpc::product_to_wire(row.clone())) },
    )
}

/// The `product.updated` event of `row` as it is now, with its `images` in the order shown.
pub fn product_updated(row: &ProductRow, images: Vec<ImageRow>) -> NewEvent {
    let mut product = crate::grpc::product_to_wire(row.clone());
    product.images = images.into_iter().map(crate::grpc::image_to_wire).collect();
    NewEvent::new(PRODUCT_UPDATED, row.id.clone(), &ProductUpdated { product: Some(product) })
}

/// The `inventory.adjusted` event of adjustment `adjustment_id`.
pub fn inventory_adjusted(adjustment_id: &str, product_id: &str, delta: i64, reason: &str, actor: &str) -> NewEvent {
    let payload = InventoryAdjusted {
        adjustment_id: adjustment_id.to_owned(),
        product_id: product_id.to_owned(),
        delta,
        reason: reason.to_owned(),
        actor: actor.to_owned(),
    };
    NewEvent::new(INVENTORY_ADJUSTED, product_id, &payload)
}

/// The `inventory.low` event of product `product_id` (`sku`, `name`), now at `available` units.
pub fn inventory_low(product_id: &str, sku: &str, name: &str, available: i64) -> NewEvent {
    let payload = InventoryLow {
        product_id: product_id.to_owned(),
        available,
        threshold: crate::domain::LOW_STOCK_THRESHOLD,
        sku: sku.to_owned(),
        name: name.to_owned(),
    };
    NewEvent::new(INVENTORY_LOW, product_id, &payload)
}

/// The `stock_alert.triggered` event telling `customer_id` that product `product_id` (`name`, `sku`, `price` as
/// currency and minor units) has `available` units again.
pub fn stock_alert_triggered(
    customer_id: &str,
    product_id: &str,
    name: &str,
    sku: &str,
    price: (&str, i64),
    available: i64,
) -> NewEvent {
    let payload = StockAlertTriggered {
        customer_id: customer_id.to_owned(),
        product_id: product_id.to_owned(),
        name: name.to_owned(),
        sku: sku.to_owned(),
        price: Some(api::common::Money { currency: price.0.to_owned(), amount_minor: price.1 }),
        available,
    };
    NewEvent::new(STOCK_ALERT_TRIGGERED, customer_id, &payload)
}

/// The catalog's consumer name (its inbox and, on RabbitMQ, its queue).
pub const CONSUMER: &str = "catalog";
/// Event type of a cancelled order.
pub const ORDER_CANCELLED: &str = "order.cancelled";
/// Event type of a confirmed (paid) order.
pub const ORDER_CONFIRMED: &str = "order.confirmed";
/// Event type of a return whose items arrived.
pub const RETURN_RECEIVED: &str = "return.received";
/// Event type of a deleted account.
pub const USER_DELETED: &str = "user.deleted";

/// The event types the consumer takes: what it subscribes to, and its queue's bindings on RabbitMQ, which a
/// publisher in another process declares too (`AmqpBus::expect_consumer`).
pub fn event_types() -> Vec<&'static str> {
    vec![ORDER_CANCELLED, ORDER_CONFIRMED, RETURN_RECEIVED, USER_DELETED]
}

/// Subscribes the catalog's consumers on `bus`.
pub fn subscribe(bus: &dyn EventBus, store: Store) {
    platform::events::subscribe_with(bus, CONSUMER, &event_types(), store, |store, envelope| async move {
        match envelope.r#type.as_str() {
            ORDER_CANCELLED => restock(&store, &envelope).await,
            ORDER_CONFIRMED => record_purchase(&store, &envelope).await,
            RETURN_RECEIVED => restock_return(&store, &envelope).await,
            USER_DELETED => erase_customer(&store, &envelope).await,
            _ => Ok(()),
        }
    });
}

fn bad_payload(e: prost::DecodeError) -> String {
    format!("bad payload: {e}")
}

/// The distinct products of an order's lines.
fn products_of(items: &[api::mercato::orders::v1::OrderItem]) -> Vec<String> {
    let mut ids: Vec<String> = items.iter().map(|item| item.product_id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

async fn record_purchase(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
    let confirmed = OrderConfirmed::decode(envelope.data.as_slice()).map_err(bad_payload)?;
    // Idempotent as it is (a row per order and product, written once): no inbox needed.
    store
        .record_purchase(
            &confirmed.customer_id,
            &confirmed.order_id,
            &products_of(&confirmed.items),
            false,
            platform::time::now_micros(),
        )
        .await
        .map_err(|e| format!("recording the purchases of order {}: {e}", confirmed.order_id))
}

async fn erase_customer(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
    let deleted = UserDeleted::decode(envelope.data.as_slice()).map_err(bad_payload)?;
    let reviews = store
        .erase_customer(&deleted.user_id)
        .await
        .map_err(|e| format!("erasing the reviews of user {}: {e}", deleted.user_id))?;
    if reviews > 0 {
        tracing::info!(user_id = %deleted.user_id, reviews, "reviews of a deleted account erased");
    }
    Ok(())
}

async fn restock(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
    let cancelled = OrderCancelled::decode(envelope.data.as_slice()).map_err(bad_payload)?;
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
    // After the restock (kept once by the inbox); marking the purchases is idempotent on its own.
    let now = platform::time::now_micros();
    store
        .record_purchase(&cancelled.customer_id, &cancelled.order_id, &products_of(&cancelled.items), true, now)
        .await
        .map_err(|e| format!("cancelling the purchases of order {}: {e}", cancelled.order_id))
}

async fn restock_return(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
    let received = ReturnReceived::decode(envelope.data.as_slice()).map_err(bad_payload)?;
    if !received.restock {
        return Ok(());
    }
    let items: Vec<(String, i64)> =
        received.items.iter().map(|item| (item.product_id.clone(), i64::from(item.quantity))).collect();
    let reason = format!("return {} of order {}", received.return_id, received.order_id);
    let applied = store
        .restock(&envelope.id, &items, &reason, platform::time::now_micros())
        .await
        .map_err(|e| format!("restocking return {}: {e}", received.return_id))?;
    if applied {
        tracing::info!(return_id = %received.return_id, lines = items.len(), "stock of a return put back");
    }
    Ok(())
}
