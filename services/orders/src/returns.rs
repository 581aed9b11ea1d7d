//! Returns, pure: what a customer may send back, what it gives back, and how a return moves from asked to
//! refunded.

use std::collections::HashMap;

use platform::config::ReturnShipping;
use platform::error::FieldViolation;

use crate::domain::Line;
use crate::error::Error;

/// `ErrorInfo` reason when a return is asked for an order the carrier has not delivered (or that is not
/// CONFIRMED).
pub const ORDER_NOT_DELIVERED: &str = "ORDER_NOT_DELIVERED";
/// `ErrorInfo` reason when the return window of an order has closed.
pub const RETURN_WINDOW_CLOSED: &str = "RETURN_WINDOW_CLOSED";
/// `ErrorInfo` reason when approving or rejecting a return that is no longer REQUESTED.
pub const RETURN_NOT_REQUESTED: &str = "RETURN_NOT_REQUESTED";
/// `ErrorInfo` reason when withdrawing a return whose parcel arrived (or that staff rejected).
pub const RETURN_NOT_OPEN: &str = "RETURN_NOT_OPEN";
/// `ErrorInfo` reason when receiving a return that was not APPROVED.
pub const RETURN_NOT_APPROVED: &str = "RETURN_NOT_APPROVED";
/// Longest reason, the customer's or staff's.
pub const MAX_REASON_CHARS: usize = 1000;
/// The return window when the shop does not set one (`MERCATO_RETURN_WINDOW_DAYS`).
pub const DEFAULT_WINDOW_DAYS: u32 = 30;

/// The shop's terms for returns (its settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnPolicy {
    /// Days after delivery a return may be asked for (`MERCATO_RETURN_WINDOW_DAYS`); 0: none.
    pub window_days: u32,
    /// What a return gives back of the shipping (`MERCATO_RETURN_SHIPPING`).
    pub shipping: ReturnShipping,
}

impl ReturnPolicy {
    /// What a return that leaves some of the order's units behind does not give back of its `shipping_minor`.
    pub fn kept_shipping(&self, shipping_minor: i64) -> i64 {
        match self.shipping {
            ReturnShipping::Shared => 0,
            ReturnShipping::WholeOrder => shipping_minor.max(0),
        }
    }
}

/// Where a return stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnStatus {
    /// The customer asked.
    Requested,
    /// Staff agreed; the customer sends the items.
    Approved,
    /// Staff refused.
    Rejected,
    /// The items arrived; the refund is being made.
    Received,
    /// The items arrived and the refund was made.
    Refunded,
    /// Withdrawn before the parcel arrived.
    Cancelled,
}

impl ReturnStatus {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Received => "received",
            Self::Refunded => "refunded",
            Self::Cancelled => "cancelled",
        }
    }

    /// From the stored text; None for anything else.
    pub fn parse(stored: &str) -> Option<Self> {
        [Self::Requested, Self::Approved, Self::Rejected, Self::Received, Self::Refunded, Self::Cancelled]
            .into_iter()
            .find(|s| s.as_str() == stored)
    }
}

/// A line of a return: units of one of the order's products.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnLine {
    /// The product.
    pub product_id: String,
    /// Units sent back.
    pub quantity: i64,
}

/// A return as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Return {
    /// UUIDv7.
    pub id: String,
    /// The order.
    pub order_id: String,
    /// The order's customer.
    pub customer_id: String,
    /// Where it stands.
    pub status: ReturnStatus,
    /// What is sent back.
    pub lines: Vec<ReturnLine>,
    /// The customer's words.
    pub reason: String,
    /// The order's currency.
    pub currency: String,
    /// What it gives back.
    pub refund_minor: i64,
    /// Staff's words when rejected.
    pub reject_reason: String,
    /// Whether its units went back in stock.
    pub restocked: bool,
    /// The refund at the payments service, once made.
    pub refund_id: String,
    /// Why the payments service refused the last attempt.
    pub refund_failure: String,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub update_time: i64,
}

/// The refund id of return `return_id` at the payments service: one refund per return, whoever asks and however
/// often.
pub fn refund_id(return_id: &str) -> String {
    format!("return:{return_id}")
}

/// Whether a return may still be asked for at `now` of an order delivered at `deliver_time`, with a window of
/// `window_days` (0: the shop takes no returns).
pub fn window_open(deliver_time: i64, window_days: u32, now: i64) -> bool {
    let window = i64::from(window_days) * 24 * 3600 * 1_000_000;
    window_days > 0 && now <= deliver_time.saturating_add(window)
}

/// The asked-for lines checked against the order's `ordered` lines: each a product of the order, once, with 1
/// to the units ordered; violations name `items[i].product_id` or `items[i].quantity`.
pub fn checked_lines(asked: &[(String, i32)], ordered: &[Line]) -> Result<Vec<ReturnLine>, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let mut lines: Vec<ReturnLine> = Vec::new();
    if asked.is_empty() {
        violations.push(FieldViolation::new("items", "name at least one product of the order to send back"));
    }
    for (i, (product_id, quantity)) in asked.iter().enumerate() {
        let product_id = product_id.trim();
        let Some(line) = ordered.iter().find(|l| l.product_id == product_id) else {
            violations.push(FieldViolation::new(format!("items[{i}].product_id"), "is not a product of the order"));
            continue;
        };
        if lines.iter().any(|l| l.product_id == product_id) {
            violations.push(FieldViolation::new(format!("items[{i}].product_id"), "is named twice"));
        } else if !(1..=line.quantity).contains(quantity) {
            let message = format!("must be between 1 and {} (the units ordered)", line.quantity);
            violations.push(FieldViolation::new(format!("items[{i}].quantity"), message));
        } else {
            lines.push(ReturnLine { product_id: product_id.to_owned(), quantity: i64::from(*quantity) });
        }
    }
    if violations.is_empty() { Ok(lines) } else { Err(violations) }
}

/// The order's earlier returns as a new one sees them: those not rejected or cancelled (units and refunds).
#[derive(Debug, Clone, Default)]
pub struct Earlier {
    /// Units of each product in them.
    pub units: HashMap<String, i64>,
    /// What they give back together.
    pub refund_minor: i64,
}

impl Earlier {
    /// The earlier returns `returns`, rejected and cancelled ones left out.
    pub fn of(returns: &[Return]) -> Self {
        let mut earlier = Self::default();
        for r in returns.iter().filter(|r| !matches!(r.status, ReturnStatus::Rejected | ReturnStatus::Cancelled)) {
            earlier.refund_minor += r.refund_minor;
            for line in &r.lines {
                *earlier.units.entry(line.product_id.clone()).or_default() += line.quantity;
            }
        }
        earlier
    }
}

/// What a return of `lines` gives back of an order of `ordered` lines that cost `total_minor` (discount and
/// shipping included), after its `earlier` returns; or the violations of lines asking more units than are left
/// (`items[i].quantity`, in the order `lines` were asked).
///
/// The items' prices with their share of the discount and of shipping, in proportion to their prices (as the
/// order's tax is shared out): total × value / subtotal, half up; less `kept_shipping_minor` of the total when
/// the shop keeps the shipping of partial returns ([`ReturnPolicy::kept_shipping`]). The return that takes back
/// the last units gives back the rest of the total, so all of an order's returns together give back exactly its
/// total; no return gives back more than the earlier ones left.
pub fn refund_of(
    lines: &[ReturnLine],
    ordered: &[Line],
    total_minor: i64,
    kept_shipping_minor: i64,
    earlier: &Earlier,
) -> Result<i64, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let mut value: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        let Some(order_line) = ordered.iter().find(|l| l.product_id == line.product_id) else { continue };
        let returned = earlier.units.get(&line.product_id).copied().unwrap_or(0);
        let left = i64::from(order_line.quantity) - returned;
        if line.quantity > left {
            let message = format!("{} of {} units are left to return", left.max(0), order_line.quantity);
            violations.push(FieldViolation::new(format!("items[{i}].quantity"), message));
        }
        value = value.saturating_add(order_line.unit_price_minor.saturating_mul(line.quantity));
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    let left_to_give = (total_minor - earlier.refund_minor).max(0);
    let takes_the_rest = ordered.iter().all(|order_line| {
        let returned = earlier.units.get(&order_line.product_id).copied().unwrap_or(0);
        let now = lines.iter().find(|l| l.product_id == order_line.product_id).map_or(0, |l| l.quantity);
        returned + now >= i64::from(order_line.quantity)
    });
    if takes_the_rest {
        return Ok(left_to_give);
    }
    let subtotal: i64 = ordered.iter().map(Line::total_minor).sum();
    if subtotal <= 0 {
        return Ok(0);
    }
    let shared = (total_minor - kept_shipping_minor).max(0);
    Ok(crate::invoice::share(shared, value, subtotal).min(left_to_give))
}

/// What a move to `to` (staff's decision, the receipt, the customer's withdrawal) does to a return in `status`:
/// Ok(true) moves it, Ok(false) leaves it as it is (asked twice), Err refuses (`reason` and why).
pub fn decide(status: ReturnStatus, to: ReturnStatus) -> Result<bool, Error> {
    let refuse = |reason: &'static str, message: String| Err(Error::FailedPrecondition { reason, message });
    match (status, to) {
        (ReturnStatus::Requested, ReturnStatus::Approved | ReturnStatus::Rejected) => Ok(true),
        (ReturnStatus::Requested | ReturnStatus::Approved, ReturnStatus::Cancelled) => Ok(true),
        (from, to) if from == to => Ok(false),
        (from, ReturnStatus::Cancelled) => refuse(
            RETURN_NOT_OPEN,
            format!("the return is {}: only one whose parcel has not arrived is withdrawn", from.as_str()),
        ),
        (ReturnStatus::Approved, ReturnStatus::Received) => Ok(true),
        // Received again: the refund is tried again, the receipt stays as it was.
        (ReturnStatus::Received | ReturnStatus::Refunded, ReturnStatus::Received) => Ok(false),
        (from, ReturnStatus::Received) => {
            refuse(RETURN_NOT_APPROVED, format!("the return is {}: only an approved return is received", from.as_str()))
        }
        (from, _) => refuse(RETURN_NOT_REQUESTED, format!("the return is {}: staff decided already", from.as_str())),
    }
}

/// A reason as given, trimmed; `required` ones may not be empty. Violations name `field`.
pub fn checked_reason(field: &str, reason: &str, required: bool) -> Result<String, FieldViolation> {
    let reason = reason.trim();
    if required && reason.is_empty() {
        return Err(FieldViolation::new(field, "is required: say why, for the customer"));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(FieldViolation::new(field, format!("is longer than {MAX_REASON_CHARS} characters")));
    }
    Ok(reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(product_id: &str, quantity: i32, unit_price_minor: i64) -> Line {
        Line {
            product_id: product_id.into(),
            sku: String::new(),
            name: String::new(),
            quantity,
            unit_price_minor,
            returned: 0,
        }
    }

    fn asked(lines: &[(&str, i32)]) -> Vec<(String, i32)> {
        lines.iter().map(|(p, q)| ((*p).to_owned(), *q)).collect()
    }

    fn returned(status: ReturnStatus, lines: &[(&str, i64)], refund_minor: i64) -> Return {
        Return {
            id: "r".into(),
            order_id: "o".into(),
            customer_id: "c".into(),
            status,
            lines: lines.iter().map(|(p, q)| ReturnLine { product_id: (*p).into(), quantity: *q }).collect(),
            reason: String::new(),
            currency: "EUR".into(),
            refund_minor,
            reject_reason: String::new(),
            restocked: false,
            refund_id: String::new(),
            refund_failure: String::new(),
            create_time: 0,
            update_time: 0,
        }
    }

    fn fields(violations: &[FieldViolation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn lines_must_be_the_orders_each_once_within_the_units_ordered() {
        let ordered = [line("tea", 2, 500), line("cup", 1, 1200)];
        let lines = checked_lines(&asked(&[(" tea ", 2)]), &ordered).expect("fine");
        assert_eq!(lines, vec![ReturnLine { product_id: "tea".into(), quantity: 2 }]);
        let bad = checked_lines(&asked(&[("pot", 1), ("tea", 3), ("cup", 0), ("cup", 1), ("cup", 1)]), &ordered)
            .expect_err("bad");
        assert_eq!(
            fields(&bad),
            ["items[0].product_id", "items[1].quantity", "items[2].quantity", "items[4].product_id"]
        );
        assert_eq!(fields(&checked_lines(&[], &ordered).expect_err("none")), ["items"]);
    }

    #[test]
    fn a_part_gives_back_its_share_of_the_total_and_the_last_part_the_rest() {
        // 2 × 5.00 + 12.00 = 22.00, less 2.00 discount, plus 4.90 shipping: 24.90 paid.
        let ordered = [line("tea", 2, 500), line("cup", 1, 1200)];
        let one_tea = [ReturnLine { product_id: "tea".into(), quantity: 1 }];
        // 24.90 × 5 / 22 = 5.659... → 5.66
        assert_eq!(refund_of(&one_tea, &ordered, 2490, 0, &Earlier::default()), Ok(566));
        let earlier = Earlier::of(&[returned(ReturnStatus::Refunded, &[("tea", 1)], 566)]);
        assert_eq!(refund_of(&one_tea, &ordered, 2490, 0, &earlier), Ok(566));
        // The cup takes the last units: the rest of the total, 24.90 - 2 × 5.66.
        let earlier = Earlier::of(&[
            returned(ReturnStatus::Refunded, &[("tea", 1)], 566),
            returned(ReturnStatus::Approved, &[("tea", 1)], 566),
        ]);
        let cup = [ReturnLine { product_id: "cup".into(), quantity: 1 }];
        assert_eq!(refund_of(&cup, &ordered, 2490, 0, &earlier), Ok(2490 - 1132));
        // Everything at once: the whole total.
        let all = [
            ReturnLine { product_id: "tea".into(), quantity: 2 },
            ReturnLine { product_id: "cup".into(), quantity: 1 },
        ];
        assert_eq!(refund_of(&all, &ordered, 2490, 0, &Earlier::default()), Ok(2490));
    }

    #[test]
    fn a_shop_that_keeps_shipping_gives_it_back_only_with_the_whole_order() {
        // 24.90 paid: 22.00 of items, less 2.00 discount, plus 4.90 shipping; the shop keeps shipping for parts.
        let ordered = [line("tea", 2, 500), line("cup", 1, 1200)];
        let policy = ReturnPolicy { window_days: 30, shipping: ReturnShipping::WholeOrder };
        let kept = policy.kept_shipping(490);
        let one_tea = [ReturnLine { product_id: "tea".into(), quantity: 1 }];
        // (24.90 - 4.90) × 5 / 22 = 4.545... → 4.55: the tea's price less its share of the discount.
        assert_eq!(refund_of(&one_tea, &ordered, 2490, kept, &Earlier::default()), Ok(455));
        let earlier = Earlier::of(&[returned(ReturnStatus::Refunded, &[("tea", 1)], 455)]);
        let rest = [
            ReturnLine { product_id: "tea".into(), quantity: 1 },
            ReturnLine { product_id: "cup".into(), quantity: 1 },
        ];
        assert_eq!(refund_of(&rest, &ordered, 2490, kept, &earlier), Ok(2490 - 455), "the rest, shipping too");
        let all = [ReturnLine { product_id: "tea".into(), quantity: 2 }, rest[1].clone()];
        assert_eq!(refund_of(&all, &ordered, 2490, kept, &Earlier::default()), Ok(2490));
        let shared = ReturnPolicy { shipping: ReturnShipping::Shared, ..policy };
        assert_eq!(shared.kept_shipping(490), 0);
        assert_eq!(policy.kept_shipping(-5), 0);
    }

    #[test]
    fn rejected_and_cancelled_returns_free_their_units_and_no_more_units_than_are_left_are_returned() {
        let ordered = [line("tea", 2, 500), line("cup", 1, 1200)];
        let two_teas = [ReturnLine { product_id: "tea".into(), quantity: 2 }];
        let rejected = Earlier::of(&[
            returned(ReturnStatus::Rejected, &[("tea", 2)], 1132),
            returned(ReturnStatus::Cancelled, &[("tea", 1)], 566),
        ]);
        assert_eq!(refund_of(&two_teas, &ordered, 2490, 0, &rejected), Ok(1132));
        let taken = Earlier::of(&[returned(ReturnStatus::Requested, &[("tea", 1)], 566)]);
        let bad = refund_of(&two_teas, &ordered, 2490, 0, &taken).expect_err("one left");
        assert_eq!(fields(&bad), ["items[0].quantity"]);
        assert!(bad[0].description.contains("1 of 2"), "{bad:?}");
    }

    #[test]
    fn no_return_gives_back_more_than_the_earlier_ones_left() {
        // Rounding up twice: 1.00 paid for three items of 1.00 less 2.00 discount.
        let ordered = [line("a", 1, 100), line("b", 1, 100), line("c", 1, 100)];
        let a = [ReturnLine { product_id: "a".into(), quantity: 1 }];
        assert_eq!(refund_of(&a, &ordered, 100, 0, &Earlier::default()), Ok(33));
        let earlier = Earlier::of(&[returned(ReturnStatus::Refunded, &[("b", 1), ("c", 1)], 90)]);
        assert_eq!(refund_of(&a, &ordered, 100, 0, &earlier), Ok(10));
        let more = Earlier::of(&[returned(ReturnStatus::Refunded, &[("b", 1)], 95)]);
        assert_eq!(refund_of(&a, &ordered, 100, 0, &more), Ok(5));
    }

    #[test]
    fn the_window_counts_from_delivery_and_zero_takes_no_returns() {
        let day = 24 * 3600 * 1_000_000_i64;
        assert!(window_open(0, 30, 30 * day));
        assert!(!window_open(0, 30, 30 * day + 1));
        assert!(!window_open(0, 0, 0));
    }

    #[test]
    fn staff_decide_once_and_receive_only_what_they_approved() {
        use ReturnStatus::*;
        assert_eq!(decide(Requested, Approved).ok(), Some(true));
        assert_eq!(decide(Requested, Rejected).ok(), Some(true));
        assert_eq!(decide(Approved, Approved).ok(), Some(false));
        assert_eq!(decide(Approved, Received).ok(), Some(true));
        assert_eq!(decide(Received, Received).ok(), Some(false));
        assert_eq!(decide(Refunded, Received).ok(), Some(false));
        let reason = |r: Result<bool, Error>| match r {
            Err(Error::FailedPrecondition { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(decide(Approved, Rejected)), RETURN_NOT_REQUESTED);
        assert_eq!(reason(decide(Rejected, Approved)), RETURN_NOT_REQUESTED);
        assert_eq!(reason(decide(Requested, Received)), RETURN_NOT_APPROVED);
        assert_eq!(reason(decide(Rejected, Received)), RETURN_NOT_APPROVED);
        assert_eq!(decide(Requested, Cancelled).ok(), Some(true));
        assert_eq!(decide(Approved, Cancelled).ok(), Some(true));
        assert_eq!(decide(Cancelled, Cancelled).ok(), Some(false));
        assert_eq!(reason(decide(Received, Cancelled)), RETURN_NOT_OPEN);
        assert_eq!(reason(decide(Rejected, Cancelled)), RETURN_NOT_OPEN);
        assert_eq!(reason(decide(Cancelled, Approved)), RETURN_NOT_REQUESTED);
        assert_eq!(reason(decide(Cancelled, Received)), RETURN_NOT_APPROVED);
        assert_eq!(ReturnStatus::parse("received"), Some(Received));
        assert_eq!(ReturnStatus::parse("lost"), None);
    }

    #[test]
    fn reasons_are_trimmed_bounded_and_required_of_staff() {
        assert_eq!(checked_reason("reason", "  too big ", false).ok().as_deref(), Some("too big"));
        assert_eq!(checked_reason("reason", "", false).ok().as_deref(), Some(""));
        assert_eq!(checked_reason("reason", " ", true).expect_err("required").field, "reason");
        assert!(checked_reason("reason", &"x".repeat(MAX_REASON_CHARS + 1), false).is_err());
    }
}
