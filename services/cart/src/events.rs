//! What the cart publishes and consumes.
//!
//! It publishes `cart.item_added` (analytics counts carts started from it). It consumes `order.confirmed`,
//! which empties the cart an order was placed from: the orders service also clears it right away; this
//! consumer is what makes it certain (the saga's call is best effort). And `user.deleted`: the cart of a
//! deleted account is erased.

use api::mercato::auth::v1::UserDeleted;
use api::mercato::cart::v1::CartItemAdded;
use api::mercato::orders::v1::OrderConfirmed;
use platform::events::{EventBus, EventEnvelope, NewEvent};
use prost::Message;

use crate::store::Store;

/// Event type published when units of a product are put in a cart (payload `mercato.cart.v1.CartItemAdded`).
pub const ITEM_ADDED: &str = "cart.item_added";

/// The `cart.item_added` event of `quantity` units of `product_id` put in `customer_id`'s cart; its subject is
/// the customer, so one customer's events arrive in order.
pub fn item_added(customer_id: &str, product_id: &str, quantity: i32, cart_was_empty: bool) -> NewEvent {
    let payload = CartItemAdded {
        customer_id: customer_id.to_owned(),
        product_id: product_id.to_owned(),
        quantity,
        cart_was_empty,
    };
    NewEvent::new(ITEM_ADDED, customer_id, &payload)
}

/// The cart's consumer name (its inbox and, on RabbitMQ, its queue).
pub const CONSUMER: &str = "cart";
/// Event type of a confirmed order.
pub const ORDER_CONFIRMED: &str = "order.confirmed";
/// Event type of a deleted account.
pub const USER_DELETED: &str = "user.deleted";

/// The event types the consumer takes: what it subscribes to, and its queue's bindings on RabbitMQ, which a
/// publisher in another process declares too (`AmqpBus::expect_consumer`).
pub fn event_types() -> Vec<&'static str> {
    vec![ORDER_CONFIRMED, USER_DELETED]
}

/// Subscribes the cart's consumers on `bus`.
pub fn subscribe(bus: &dyn EventBus, store: Store) {
    platform::events::subscribe_with(bus, CONSUMER, &event_types(), store, |store, envelope| async move {
        match envelope.r#type.as_str() {
            USER_DELETED => erase_cart(&store, &envelope).await,
            _ => empty_cart(&store, &envelope).await,
        }
    });
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

async fn erase_cart(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
    let deleted = UserDeleted::decode(envelope.data.as_slice()).map_err(|e| format!("bad payload: {e}"))?;
    if deleted.user_id.is_empty() {
        return Err("user.deleted names no user".to_owned());
    }
    store
        .erase(&envelope.id, &deleted.user_id)
        .await
        .map_err(|e| format!("erasing the cart of user {}: {e}", deleted.user_id))?;
    Ok(())
}
