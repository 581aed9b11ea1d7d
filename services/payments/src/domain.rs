//! The rules of payments, free of I/O: validation, request fingerprints, statuses, retry timing and the
//! ledger's account codes and transaction ids.

use std::time::Duration;

use platform::error::{FieldViolation, Violations};
use sha2::{Digest, Sha256};

/// How many times a charge is tried when the processor fails transiently.
pub const CHARGE_TRIES: u32 = 3;
/// The pause before the second try; it doubles before each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Failure code of a payment whose processor kept failing.
pub const PROCESSING_ERROR_CODE: &str = "processing_error";
/// What a customer reads when the processor kept failing.
pub const PROCESSING_ERROR_MESSAGE: &str = "We could not process your payment. Please try again.";
/// How long idempotency keys are kept at least.
pub const KEY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a duplicate request waits for the first request with its key to finish.
pub const DUPLICATE_WAIT: Duration = Duration::from_secs(10);
/// How often a waiting duplicate looks again.
pub const DUPLICATE_POLL: Duration = Duration::from_millis(25);
/// A key whose first request has shown no progress for this long is taken over by the next request with
/// it (the first one crashed); the processor's own idempotency by key prevents a second charge.
pub const STALE_KEY_AFTER: Duration = Duration::from_secs(60);
/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// Longest id (order, customer) or payment method token accepted.
pub const MAX_ID_LEN: usize = 255;
/// Longest refund id accepted: it is part of a ledger transaction id (at most 100 characters there).
pub const MAX_REFUND_ID_LEN: usize = 50;

/// State of a payment, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Charged.
    Captured,
    /// Not charged.
    Failed,
    /// Part of the captured amount was given back.
    PartiallyRefunded,
    /// All of it was given back.
    Refunded,
}

impl Status {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Captured => "CAPTURED",
            Status::Failed => "FAILED",
            Status::PartiallyRefunded => "PARTIALLY_REFUNDED",
            Status::Refunded => "REFUNDED",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "CAPTURED" => Status::Captured,
            "FAILED" => Status::Failed,
            "PARTIALLY_REFUNDED" => Status::PartiallyRefunded,
            "REFUNDED" => Status::Refunded,
            _ => return None,
        })
    }

    /// The status after refunds totalling `refunded` of `amount` completed.
    pub fn after_refunds(refunded: i64, amount: i64) -> Self {
        if refunded >= amount {
            Status::Refunded
        } else if refunded > 0 {
            Status::PartiallyRefunded
        } else {
            Status::Captured
        }
    }
}

/// A validated CreatePayment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    /// The order paid for.
    pub order_id: String,
    /// The customer charged.
    pub customer_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Positive amount in minor units.
    pub amount_minor: i64,
    /// Payment method token.
    pub payment_method: String,
    /// The tax the amount includes, in its currency (0: none).
    pub tax_minor: i64,
}

impl NewPayment {
    /// SHA-256 (hex) of the canonical form of the request: every field, length-prefixed, in a fixed order,
    /// so that two requests share a fingerprint exactly when they ask for the same charge.
    pub fn fingerprint(&self) -> String {
        let amount = self.amount_minor.to_string();
        // The tax only when there is some: requests from before it keep their fingerprints.
        let tax = self.tax_minor.to_string();
        let taxed = (self.tax_minor != 0).then_some(tax.as_str());
        let fields =
            ["create_payment/v1", &self.customer_id, &self.order_id, &self.currency, &amount, &self.payment_method];
        let mut hasher = Sha256::new();
        for field in fields.into_iter().chain(taxed) {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        hex(&hasher.finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_id(v: &mut Violations, field: &str, value: &str) {
    if value.is_empty() {
        v.add(field, "is required");
    } else if value.len() > MAX_ID_LEN {
        v.add(field, format!("must be at most {MAX_ID_LEN} characters"));
    }
}

fn check_money(v: &mut Violations, field: &str, money: Option<(&str, i64)>) {
    match money {
        None => v.add(field, "is required"),
        Some((currency, amount)) => {
            if amount <= 0 {
                v.add(format!("{field}.amount_minor"), "must be positive");
            }
            if let Err(violation) = platform::money::check_currency(&format!("{field}.currency"), currency) {
                v.add(violation.field, violation.description);
            }
        }
    }
}

/// The idempotency key of a request: the `idempotency-key` metadata, else the field.
pub fn idempotency_key(metadata: Option<&str>, field: &str) -> Result<String, FieldViolation> {
    let key = metadata.map(str::trim).filter(|k| !k.is_empty()).unwrap_or(field.trim());
    if key.is_empty() {
        return Err(FieldViolation::new(
            "idempotency_key",
            "is required (the Idempotency-Key header or the idempotency_key field)",
        ));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(FieldViolation::new("idempotency_key", format!("must be at most {MAX_KEY_LEN} characters")));
    }
    Ok(key.to_owned())
}

/// The fields of a CreatePayment request, as sent.
#[derive(Debug, Clone, Default)]
pub struct PaymentInput<'a> {
    /// `order_id`.
    pub order_id: &'a str,
    /// `amount` as (currency, minor units), if set.
    pub amount: Option<(&'a str, i64)>,
    /// `payment_method`.
    pub payment_method: &'a str,
    /// `tax` as (currency, minor units), if set.
    pub tax: Option<(&'a str, i64)>,
    /// The idempotency key from metadata, if any.
    pub key_header: Option<&'a str>,
    /// `idempotency_key`.
    pub key_field: &'a str,
}

/// Validates a CreatePayment request for `customer_id`, naming every offending field; returns the payment
/// to make and its idempotency key.
pub fn validate_payment(
    input: &PaymentInput<'_>,
    customer_id: &str,
) -> Result<(NewPayment, String), Vec<FieldViolation>> {
    let mut v = Violations::new();
    check_id(&mut v, "order_id", input.order_id);
    check_money(&mut v, "amount", input.amount);
    check_id(&mut v, "payment_method", input.payment_method);
    if let Some((tax_currency, tax_minor)) = input.tax {
        if tax_minor < 0 {
            v.add("tax.amount_minor", "must not be negative");
        }
        if let Some((currency, amount_minor)) = input.amount {
            if tax_currency != currency {
                v.add("tax.currency", "must be the amount's currency");
            } else if tax_minor > amount_minor {
                v.add("tax.amount_minor", "must be at most the amount");
            }
        }
    }
    let key = idempotency_key(input.key_header, input.key_field).map_err(|e| v.add(e.field, e.description)).ok();
    let violations = v.into_vec();
    match (key, input.amount) {
        (Some(key), Some((currency, amount_minor))) if violations.is_empty() => Ok((
            NewPayment {
                order_id: input.order_id.to_owned(),
                customer_id: customer_id.to_owned(),
                currency: currency.to_owned(),
                amount_minor,
                payment_method: input.payment_method.to_owned(),
                tax_minor: input.tax.map_or(0, |(_, tax)| tax),
            },
            key,
        )),
        _ => Err(violations),
    }
}

/// Validates a RefundPayment request; returns the currency and amount, or None for the rest (`rest`: whatever
/// is still refundable, with no amount given).
pub fn validate_refund(
    payment_id: &str,
    refund_id: &str,
    amount: Option<(&str, i64)>,
    rest: bool,
) -> Result<Option<(String, i64)>, Vec<FieldViolation>> {
    let mut v = Violations::new();
    check_id(&mut v, "payment_id", payment_id);
    check_id(&mut v, "refund_id", refund_id);
    if refund_id.len() > MAX_REFUND_ID_LEN {
        v.add("refund_id", format!("must be at most {MAX_REFUND_ID_LEN} characters"));
    }
    if rest {
        if amount.is_some() {
            v.add("amount", "cannot be given with rest: the rest is whatever is still refundable");
        }
        return v.finish().map(|()| None);
    }
    check_money(&mut v, "amount", amount);
    match amount {
        Some((currency, amount_minor)) if v.is_empty() => Ok(Some((currency.to_owned(), amount_minor))),
        _ => Err(v.into_vec()),
    }
}

/// The pause after failed try number `attempt` (1-based): 50 ms, 100 ms, 200 ms, ...
pub fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1u32 << attempt.saturating_sub(1).min(10))
}

/// The processor-side idempotency key of a charge: stable for the customer's key, so a takeover of a stale
/// key or a retry never charges twice.
pub fn charge_key(customer_id: &str, key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update((customer_id.len() as u64).to_be_bytes());
    hasher.update(customer_id.as_bytes());
    hasher.update(key.as_bytes());
    format!("charge_{}", hex(&hasher.finalize()))
}

/// The processor-side idempotency key of a refund.
pub fn refund_key(refund_id: &str) -> String {
    format!("refund_{refund_id}")
}

/// Ledger account that holds money at the processor, per currency (ASSET).
pub fn processor_account(currency: &str) -> String {
    format!("assets:processor:{}", currency.to_ascii_lowercase())
}

/// Ledger account of sales, per currency (REVENUE).
pub fn sales_account(currency: &str) -> String {
    format!("revenue:sales:{}", currency.to_ascii_lowercase())
}

/// Ledger account of refunds, per currency: a contra-revenue account (type REVENUE, normally a debit
/// balance), so gross sales and refunds stay visible apart.
pub fn refunds_account(currency: &str) -> String {
    format!("revenue:refunds:{}", currency.to_ascii_lowercase())
}

/// Ledger account of the tax that sales included, per currency (LIABILITY): owed to the tax authorities.
pub fn tax_account(currency: &str) -> String {
    format!("liabilities:tax:{}", currency.to_ascii_lowercase())
}

/// The tax a refund of `refund_minor` gives back of a payment of `amount_minor` that included `tax_minor`: its
/// share, rounded half up (as a credit note rounds its own tax). A refund of the whole amount gives the whole tax.
pub fn refund_tax(amount_minor: i64, tax_minor: i64, refund_minor: i64) -> i64 {
    if amount_minor <= 0 || tax_minor <= 0 || refund_minor <= 0 {
        return 0;
    }
    let share = (2 * i128::from(refund_minor) * i128::from(tax_minor) + i128::from(amount_minor))
        / (2 * i128::from(amount_minor));
    // At most the tax, which fits in an i64.
    i64::try_from(share).unwrap_or(tax_minor).min(tax_minor)
}

/// Ledger transaction id of a payment's capture.
pub fn capture_transaction_id(payment_id: &str) -> String {
    format!("payment:{payment_id}:capture")
}

/// Ledger transaction id of a refund of a payment.
pub fn refund_transaction_id(payment_id: &str, refund_id: &str) -> String {
    format!("payment:{payment_id}:refund:{refund_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>() -> PaymentInput<'a> {
        PaymentInput {
            order_id: "o-1",
            amount: Some(("EUR", 1999)),
            payment_method: "tok_visa",
            tax: None,
            key_header: None,
            key_field: "k-1",
        }
    }

    #[test]
    fn a_valid_payment_passes() {
        let (payment, key) = validate_payment(&input(), "cust").expect("valid");
        assert_eq!(key, "k-1");
        assert_eq!(payment.customer_id, "cust");
        assert_eq!(payment.amount_minor, 1999);
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = PaymentInput {
            order_id: "",
            amount: Some(("eur", 0)),
            payment_method: "",
            tax: None,
            key_header: Some("  "),
            key_field: "",
        };
        let fields: Vec<_> = validate_payment(&bad, "c").expect_err("bad").into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["order_id", "amount.amount_minor", "amount.currency", "payment_method", "idempotency_key"]);
        let no_amount = PaymentInput { amount: None, ..input() };
        assert_eq!(validate_payment(&no_amount, "c").expect_err("bad")[0].field, "amount");
    }

    #[test]
    fn the_tax_is_within_the_amount_and_its_currency() {
        let taxed = PaymentInput { tax: Some(("EUR", 319)), ..input() };
        assert_eq!(validate_payment(&taxed, "c").expect("valid").0.tax_minor, 319);
        assert_eq!(validate_payment(&input(), "c").expect("valid").0.tax_minor, 0, "none unless given");
        let fields = |tax| -> Vec<String> {
            let bad = PaymentInput { tax: Some(tax), ..input() };
            validate_payment(&bad, "c").expect_err("bad").into_iter().map(|v| v.field).collect()
        };
        assert_eq!(fields(("USD", 10)), ["tax.currency"]);
        assert_eq!(fields(("EUR", 2000)), ["tax.amount_minor"]);
        assert_eq!(fields(("EUR", -1)), ["tax.amount_minor"]);
    }

    #[test]
    fn a_refund_gives_back_its_share_of_the_tax() {
        // 119.00 including 19.00: half back gives 9.50; all of it, 19.00.
        assert_eq!(refund_tax(11_900, 1_900, 5_950), 950);
        assert_eq!(refund_tax(11_900, 1_900, 11_900), 1_900);
        // 10.00 of 53.60 including 6.09: 1.136 → 1.14; 0.01 → 0.001 → 0.00.
        assert_eq!(refund_tax(5_360, 609, 1_000), 114);
        assert_eq!(refund_tax(5_360, 609, 1), 0);
        assert_eq!(refund_tax(5_360, 0, 1_000), 0, "no tax, none back");
        assert_eq!(refund_tax(i64::MAX, i64::MAX, i64::MAX), i64::MAX, "no overflow");
    }

    #[test]
    fn the_header_wins_over_the_field() {
        assert_eq!(idempotency_key(Some("h"), "f"), Ok("h".to_owned()));
        assert_eq!(idempotency_key(None, "f"), Ok("f".to_owned()));
        assert!(idempotency_key(None, "").is_err());
        assert!(idempotency_key(Some(&"x".repeat(256)), "").is_err());
    }

    #[test]
    fn fingerprints_differ_exactly_when_requests_do() {
        let (a, _) = validate_payment(&input(), "cust").expect("valid");
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
        let other_amount = NewPayment { amount_minor: 2000, ..a.clone() };
        assert_ne!(a.fingerprint(), other_amount.fingerprint());
        let taxed = NewPayment { tax_minor: 319, ..a.clone() };
        assert_ne!(a.fingerprint(), taxed.fingerprint());
        // Without tax, the fingerprint is what it was before payments carried tax (stored ones still match).
        let before = {
            let fields = ["create_payment/v1", "cust", "o-1", "EUR", "1999", "tok_visa"];
            let mut hasher = Sha256::new();
            for field in fields {
                hasher.update((field.len() as u64).to_be_bytes());
                hasher.update(field.as_bytes());
            }
            hex(&hasher.finalize())
        };
        assert_eq!(a.fingerprint(), before);
        // Length prefixes: moving a character between fields changes the fingerprint.
        let shifted = NewPayment { order_id: "o-1E".into(), currency: "UR".into(), ..a.clone() };
        assert_ne!(a.fingerprint(), shifted.fingerprint());
    }

    #[test]
    fn refunds_are_validated() {
        assert_eq!(validate_refund("p", "r", Some(("EUR", 5)), false), Ok(Some(("EUR".to_owned(), 5))));
        assert_eq!(validate_refund("p", "r", None, true), Ok(None), "the rest needs no amount");
        let both = validate_refund("p", "r", Some(("EUR", 5)), true).expect_err("both");
        assert_eq!(both.into_iter().map(|v| v.field).collect::<Vec<_>>(), ["amount"]);
        let fields: Vec<_> =
            validate_refund("", "", Some(("EUR", -1)), false).expect_err("bad").into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["payment_id", "refund_id", "amount.amount_minor"]);
        assert!(validate_refund("p", &"r".repeat(51), Some(("EUR", 5)), false).is_err());
    }

    #[test]
    fn statuses_round_trip_and_follow_refunds() {
        for s in [Status::Captured, Status::Failed, Status::PartiallyRefunded, Status::Refunded] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("nope"), None);
        assert_eq!(Status::after_refunds(0, 10), Status::Captured);
        assert_eq!(Status::after_refunds(4, 10), Status::PartiallyRefunded);
        assert_eq!(Status::after_refunds(10, 10), Status::Refunded);
    }

    #[test]
    fn backoff_doubles() {
        assert_eq!(backoff(1), Duration::from_millis(50));
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(200));
    }

    #[test]
    fn ledger_names() {
        assert_eq!(processor_account("EUR"), "assets:processor:eur");
        assert_eq!(sales_account("USD"), "revenue:sales:usd");
        assert_eq!(refunds_account("EUR"), "revenue:refunds:eur");
        assert_eq!(capture_transaction_id("p1"), "payment:p1:capture");
        assert_eq!(refund_transaction_id("p1", "r1"), "payment:p1:refund:r1");
        assert_ne!(charge_key("ab", "c"), charge_key("a", "bc"));
    }
}
