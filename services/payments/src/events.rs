//! What the payments service publishes, through its outbox.

use api::common::Money;
use api::mercato::payments::v1::{PaymentCaptured, PaymentFailed, PaymentRefunded};
use platform::events::NewEvent;

use crate::store::{PaymentRow, RefundRow};

/// Event type published when a payment is captured (payload `mercato.payments.v1.PaymentCaptured`).
pub const PAYMENT_CAPTURED: &str = "payment.captured";
/// Event type published when a payment fails (payload `mercato.payments.v1.PaymentFailed`).
pub const PAYMENT_FAILED: &str = "payment.failed";
/// Event type published when a refund is given back (payload `mercato.payments.v1.PaymentRefunded`).
pub const PAYMENT_REFUNDED: &str = "payment.refunded";

fn money(currency: &str, amount_minor: i64) -> Option<Money> {
    Some(Money { currency: currency.to_owned(), amount_minor })
}

/// The `payment.captured` event of a captured payment.
pub fn payment_captured(p: &PaymentRow) -> NewEvent {
    let payload = PaymentCaptured {
        payment_id: p.id.clone(),
        order_id: p.order_id.clone(),
        customer_id: p.customer_id.clone(),
        amount: money(&p.currency, p.amount_minor),
        processor_reference: p.processor_reference.clone(),
    };
    NewEvent::new(PAYMENT_CAPTURED, p.id.clone(), &payload)
}

/// The `payment.failed` event of a failed payment.
pub fn payment_failed(p: &PaymentRow) -> NewEvent {
    let payload = PaymentFailed {
        payment_id: p.id.clone(),
        order_id: p.order_id.clone(),
        customer_id: p.customer_id.clone(),
        amount: money(&p.currency, p.amount_minor),
        failure_code: p.failure_code.clone(),
        failure_reason: p.failure_reason.clone(),
    };
    NewEvent::new(PAYMENT_FAILED, p.id.clone(), &payload)
}

/// The `payment.refunded` event of refund `r` of `p`, after which `refunded_total` has been given back.
pub fn payment_refunded(p: &PaymentRow, r: &RefundRow, refunded_total: i64, reference: &str) -> NewEvent {
    let payload = PaymentRefunded {
        payment_id: p.id.clone(),
        order_id: p.order_id.clone(),
        customer_id: p.customer_id.clone(),
        refund_id: r.refund_id.clone(),
        amount: money(&r.currency, r.amount_minor),
        refunded_amount: money(&p.currency, refunded_total),
        fully_refunded: refunded_total >= p.amount_minor,
        processor_reference: reference.to_owned(),
    };
    NewEvent::new(PAYMENT_REFUNDED, p.id.clone(), &payload)
}
