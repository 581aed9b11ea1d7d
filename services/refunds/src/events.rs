//! What the refunds service publishes, through its outbox.

use api::common::Money;
use api::mercato::refunds::v1::{RefundCompleted, RefundFailed};
use platform::events::NewEvent;

use crate::store::RefundRow;

/// Event type published when a refund is given back (payload `mercato.refunds.v1.RefundCompleted`).
pub const REFUND_COMPLETED: &str = "refund.completed";
/// Event type published when the payments service refused a refund (payload `mercato.refunds.v1.RefundFailed`).
pub const REFUND_FAILED: &str = "refund.failed";

fn money(r: &RefundRow) -> Option<Money> {
    Some(Money { currency: r.currency.clone(), amount_minor: r.amount_minor })
}

/// The `refund.completed` event of refund `r` (subject: its payment, so a payment's events stay in order).
pub fn refund_completed(r: &RefundRow) -> NewEvent {
    let payload = RefundCompleted {
        refund_id: r.id.clone(),
        payment_id: r.payment_id.clone(),
        amount: money(r),
        reason: r.reason.clone(),
    };
    NewEvent::new(REFUND_COMPLETED, r.payment_id.clone(), &payload)
}

/// The `refund.failed` event of refund `r`, refused for `failure_reason`.
pub fn refund_failed(r: &RefundRow, failure_reason: &str) -> NewEvent {
    let payload = RefundFailed {
        refund_id: r.id.clone(),
        payment_id: r.payment_id.clone(),
        amount: money(r),
        reason: r.reason.clone(),
        failure_reason: failure_reason.to_owned(),
    };
    NewEvent::new(REFUND_FAILED, r.payment_id.clone(), &payload)
}
