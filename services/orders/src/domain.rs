//! The rules of orders and checkout, free of I/O: validation, pricing, states and steps, cursors, and the
//! words customers read when a checkout fails.

use platform::error::FieldViolation;
use sha2::{Digest, Sha256};

/// Most lines in one order.
pub const MAX_LINES: usize = 100;
/// Most units of one product in one order.
pub const MAX_QUANTITY: i32 = 999;
/// Longest idempotency key.
pub const MAX_KEY_LEN: usize = 255;
/// Longest free-text field (address lines, names, payment method, reasons).
pub const MAX_TEXT: usize = 200;
/// Page sizes as every listing takes them (AIP-158: unset is 20, more than 100 is 100, negative is refused).
pub use platform::paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, page_size};

/// What customers see of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Checkout in progress.
    Pending,
    /// Paid, stock sold.
    Confirmed,
    /// Checkout failed and was compensated.
    Failed,
    /// Cancelled after confirmation, payment refunded.
    Cancelled,
}

impl Status {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// From the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => Self::Pending,
            "CONFIRMED" => Self::Confirmed,
            "FAILED" => Self::Failed,
            "CANCELLED" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// Where the checkout saga of an order stands: the next thing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Hold the stock (ReserveStock with the order id).
    Reserve,
    /// Charge the payment method (CreatePayment with key `order:<id>`).
    Pay,
    /// Sell the held stock (CommitStock).
    Commit,
    /// Compensation: give the captured payment back (refund id `order:<id>:compensation`).
    Refund,
    /// Compensation: give the held stock back (ReleaseStock), then the order is FAILED.
    Release,
    /// Nothing left to do.
    Done,
    /// A confirmed order is being cancelled: refund (refund id `order:<id>:cancel`), then CANCELLED.
    Cancel,
}

impl Step {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserve => "reserve",
            Self::Pay => "pay",
            Self::Commit => "commit",
            Self::Refund => "refund",
            Self::Release => "release",
            Self::Done => "done",
            Self::Cancel => "cancel",
        }
    }

    /// Whether the saga has work left at this step: every step but [`Step::Done`] (a PENDING order's, and a
    /// confirmed order's cancellation). The recovery task resumes exactly these.
    pub fn in_flight(self) -> bool {
        self != Self::Done
    }

    /// From the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "reserve" => Self::Reserve,
            "pay" => Self::Pay,
            "commit" => Self::Commit,
            "refund" => Self::Refund,
            "release" => Self::Release,
            "done" => Self::Done,
            "cancel" => Self::Cancel,
            _ => return None,
        })
    }
}

/// An amount of money in minor units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// ISO 4217 code.
    pub currency: String,
    /// Minor units.
    pub amount_minor: i64,
}

/// A shipping address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Address {
    /// Recipient.
    pub name: String,
    /// Street and number.
    pub line1: String,
    /// Optional second line.
    pub line2: String,
    /// City.
    pub city: String,
    /// Optional region.
    pub region: String,
    /// Postal code.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
}

/// A product and quantity asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInput {
    /// Product id.
    pub product_id: String,
    /// Units.
    pub quantity: i32,
}

/// What the catalog says about a product now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Product id.
    pub product_id: String,
    /// Sku.
    pub sku: String,
    /// Name.
    pub name: String,
    /// Unit price.
    pub price: Price,
    /// Whether it can be bought.
    pub active: bool,
    /// Whether its price includes a country's reduced tax rate (where it has one) rather than the standard.
    pub reduced_tax: bool,
}

/// One priced line of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Product id.
    pub product_id: String,
    /// Sku when ordered.
    pub sku: String,
    /// Name when ordered.
    pub name: String,
    /// Units.
    pub quantity: i32,
    /// Unit price in minor units of the order's currency.
    pub unit_price_minor: i64,
    /// Units that came back in received returns; 0 when priced or placed.
    pub returned: i32,
}

impl Line {
    /// unit price times quantity (checked when the order was priced).
    pub fn total_minor(&self) -> i64 {
        self.unit_price_minor.saturating_mul(i64::from(self.quantity))
    }
}

/// The priced lines of an order and what they cost together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// Lines in the order asked.
    pub lines: Vec<Line>,
    /// Total in one currency.
    pub total: Price,
    /// What of the total is for products taxed at the reduced rate.
    pub reduced_tax_minor: i64,
}

/// Checks the payment method token.
pub fn validate_payment_method(method: &str) -> Result<(), FieldViolation> {
    if method.trim().is_empty() {
        return Err(FieldViolation::new("payment_method", "is required"));
    }
    if method.len() > MAX_TEXT {
        return Err(FieldViolation::new("payment_method", format!("is longer than {MAX_TEXT}")));
    }
    Ok(())
}

/// Checks the asked-for lines and merges repeated products (quantities added), keeping first-seen order.
/// An empty list is valid: the order is for the cart.
pub fn normalize_lines(lines: &[LineInput]) -> Result<Vec<LineInput>, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let mut merged: Vec<LineInput> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.product_id.trim().is_empty() {
            violations.push(FieldViolation::new(format!("items[{i}].product_id"), "is required"));
            continue;
        }
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            violations.push(FieldViolation::new(
                format!("items[{i}].quantity"),
                format!("must be between 1 and {MAX_QUANTITY}"),
            ));
            continue;
        }
        match merged.iter_mut().find(|m| m.product_id == line.product_id) {
            Some(m) => m.quantity = m.quantity.saturating_add(line.quantity),
            None => merged.push(line.clone()),
        }
    }
    if merged.len() > MAX_LINES {
        violations.push(FieldViolation::new("items", format!("at most {MAX_LINES} different products")));
    }
    for m in &merged {
        if m.quantity > MAX_QUANTITY {
            violations.push(FieldViolation::new(
                "items",
                format!("product {} is ordered more than {MAX_QUANTITY} times", m.product_id),
            ));
        }
    }
    if violations.is_empty() { Ok(merged) } else { Err(violations) }
}

/// The idempotency key: the `idempotency-key` metadata when present, else the request field.
pub fn idempotency_key(header: Option<&str>, field: &str) -> Result<String, FieldViolation> {
    let key = header.map(str::trim).filter(|h| !h.is_empty()).unwrap_or(field.trim());
    if key.is_empty() {
        return Err(FieldViolation::new(
            "idempotency_key",
            "is required (the Idempotency-Key header or the idempotency_key field)",
        ));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(FieldViolation::new("idempotency_key", format!("is longer than {MAX_KEY_LEN}")));
    }
    Ok(key.to_owned())
}

/// A fingerprint of a request's meaning (hex SHA-256 of its canonical encoding), to tell a replay from a
/// reused key.
pub fn fingerprint(canonical: &[u8]) -> String {
    Sha256::digest(canonical).iter().map(|b| format!("{b:02x}")).collect()
}

/// Why an offer cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PricingError {
    /// The product is not for sale (inactive).
    Inactive(String),
    /// Lines are priced in more than one currency.
    MixedCurrencies,
    /// The total does not fit.
    Overflow,
}

/// Prices `lines` with `offers` (same order, same length): one currency, no overflow, active products.
pub fn price(lines: &[LineInput], offers: &[Offer]) -> Result<Priced, PricingError> {
    let mut currency: Option<&str> = None;
    let mut total: i64 = 0;
    let mut reduced_tax_minor: i64 = 0;
    let mut priced = Vec::with_capacity(lines.len());
    for (line, offer) in lines.iter().zip(offers) {
        if !offer.active {
            return Err(PricingError::Inactive(offer.name.clone()));
        }
        match currency {
            None => currency = Some(&offer.price.currency),
            Some(c) if c != offer.price.currency => return Err(PricingError::MixedCurrencies),
            Some(_) => {}
        }
        let line_total =
            offer.price.amount_minor.checked_mul(i64::from(line.quantity)).ok_or(PricingError::Overflow)?;
        total = total.checked_add(line_total).ok_or(PricingError::Overflow)?;
        if offer.reduced_tax {
            // At most the total, which did not overflow.
            reduced_tax_minor += line_total;
        }
        priced.push(Line {
            product_id: line.product_id.clone(),
            sku: offer.sku.clone(),
            name: offer.name.clone(),
            quantity: line.quantity,
            unit_price_minor: offer.price.amount_minor,
            returned: 0,
        });
    }
    Ok(Priced {
        lines: priced,
        total: Price { currency: currency.unwrap_or_default().to_owned(), amount_minor: total },
        reduced_tax_minor,
    })
}

/// The customer-readable reason of an order failed for lack of stock of `name`.
pub fn out_of_stock(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("Sorry, {name} is out of stock."),
        None => "Sorry, an item in your order is out of stock.".to_owned(),
    }
}

/// The customer-readable reason of an order failed because `name` is no longer sold.
pub fn not_for_sale(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("Sorry, {name} is no longer available."),
        None => "Sorry, an item in your order is no longer available.".to_owned(),
    }
}

/// Reason when the stock could not be held for another reason.
pub const RESERVE_FAILED: &str = "We could not hold the items of your order. Please try again.";
/// Reason when a payment was declined without a reason of its own.
pub const PAYMENT_DECLINED: &str = "Your payment was declined.";
/// Reason when the payment could not be attempted.
pub const PAYMENT_ERROR: &str = "We could not process your payment. You have not been charged.";
/// Reason when the stock could not be sold after the payment was captured.
pub const COMMIT_FAILED: &str = "We could not complete your order. Your payment has been refunded.";
/// What a cancellation refused because the parcel is with the carrier says, to the caller and in the saga log.
pub const CANCEL_REFUSED_SHIPPED: &str =
    "the order has been handed to the carrier and can no longer be cancelled; return it once it arrives";

/// Position in the newest-first order list: the create time and id of the last order of a page.
pub use platform::paging::KeyCursor as Cursor;

/// The payment's idempotency key of an order.
pub fn payment_key(order_id: &str) -> String {
    format!("order:{order_id}")
}

/// The refund id of the compensation of an order whose stock could not be sold.
pub fn compensation_refund_id(order_id: &str) -> String {
    format!("order:{order_id}:compensation")
}

/// The refund id of the cancellation of an order.
pub fn cancel_refund_id(order_id: &str) -> String {
    format!("order:{order_id}:cancel")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(id: &str, currency: &str, cents: i64) -> Offer {
        Offer {
            product_id: id.into(),
            sku: format!("SKU-{id}"),
            name: format!("Product {id}"),
            price: Price { currency: currency.into(), amount_minor: cents },
            active: true,
            reduced_tax: false,
        }
    }

    fn line(id: &str, quantity: i32) -> LineInput {
        LineInput { product_id: id.into(), quantity }
    }

    #[test]
    fn states_and_steps_round_trip() {
        for s in [Status::Pending, Status::Confirmed, Status::Failed, Status::Cancelled] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        for s in [Step::Reserve, Step::Pay, Step::Commit, Step::Refund, Step::Release, Step::Done, Step::Cancel] {
            assert_eq!(Step::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("pending"), None);
    }

    #[test]
    fn lines_merge_and_are_bounded() {
        let merged = normalize_lines(&[line("a", 1), line("b", 2), line("a", 3)]).expect("valid");
        assert_eq!(merged, vec![line("a", 4), line("b", 2)]);
        let bad = normalize_lines(&[line("", 1), line("a", 0), line("b", 1000)]).expect_err("bad");
        assert_eq!(bad.len(), 3);
        assert!(normalize_lines(&[line("a", 600), line("a", 600)]).is_err());
        assert!(normalize_lines(&[]).expect("cart").is_empty());
    }

    #[test]
    fn the_header_key_wins_and_one_is_required() {
        assert_eq!(idempotency_key(Some("h"), "f").expect("key"), "h");
        assert_eq!(idempotency_key(None, "f").expect("key"), "f");
        assert_eq!(idempotency_key(Some(" "), "f").expect("key"), "f");
        assert!(idempotency_key(None, "").is_err());
        assert!(idempotency_key(None, &"k".repeat(256)).is_err());
    }

    #[test]
    fn pricing_needs_one_currency_and_active_products() {
        let priced =
            price(&[line("a", 2), line("b", 1)], &[offer("a", "EUR", 150), offer("b", "EUR", 1000)]).expect("priced");
        assert_eq!(priced.total, Price { currency: "EUR".into(), amount_minor: 1300 });
        assert_eq!(priced.lines[0].total_minor(), 300);
        assert_eq!(priced.reduced_tax_minor, 0);
        let food = Offer { reduced_tax: true, ..offer("a", "EUR", 150) };
        let mixed = price(&[line("a", 2), line("b", 1)], &[food, offer("b", "EUR", 1000)]).expect("priced");
        assert_eq!((mixed.total.amount_minor, mixed.reduced_tax_minor), (1300, 300), "the reduced lines' share");
        assert_eq!(
            price(&[line("a", 1), line("b", 1)], &[offer("a", "EUR", 1), offer("b", "USD", 1)]),
            Err(PricingError::MixedCurrencies)
        );
        let mut inactive = offer("a", "EUR", 1);
        inactive.active = false;
        assert_eq!(price(&[line("a", 1)], &[inactive]), Err(PricingError::Inactive("Product a".into())));
        assert_eq!(price(&[line("a", 2)], &[offer("a", "EUR", i64::MAX)]), Err(PricingError::Overflow));
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(100), Ok(100));
        assert_eq!(page_size(101), Ok(100), "more than the largest page is the largest page (AIP-158)");
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn customer_reasons_name_the_product() {
        assert_eq!(out_of_stock(Some("Coffee")), "Sorry, Coffee is out of stock.");
        assert_eq!(fingerprint(b"a"), fingerprint(b"a"));
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
        assert_eq!(payment_key("o"), "order:o");
        assert_eq!(compensation_refund_id("o"), "order:o:compensation");
        assert_eq!(cancel_refund_id("o"), "order:o:cancel");
    }
}
