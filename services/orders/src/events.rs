//! What the orders service publishes, through its outbox: `order.placed`, `order.confirmed`,
//! `order.failed` and `order.cancelled` (payloads in `mercato.orders.v1`, see events.proto).

use api::mercato::orders::v1::{OrderCancelled, OrderConfirmed, OrderFailed, OrderPlaced};
use platform::events::NewEvent;

use crate::domain::Price;
use crate::grpc::{address_to_wire, lines_to_wire, money};
use crate::store::Order;

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

/// The `order.confirmed` event of an order paid with its `payment_id`.
pub fn confirmed(order: &Order) -> NewEvent {
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
