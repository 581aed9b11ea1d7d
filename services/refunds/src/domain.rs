//! The rules of refunds, free of I/O: validation, request fingerprints, statuses, which answers of the
//! payments service are final, and pagination.

use std::time::Duration;

use api::mercato::payments::v1::PaymentStatus;
use platform::error::{FieldViolation, Violations};
use sha2::{Digest, Sha256};
use tonic::Code;

pub use platform::paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, id_token as page_token, page_size};

/// Longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// Longest payment id accepted.
pub const MAX_ID_LEN: usize = 255;
/// Longest reason accepted.
pub const MAX_REASON_LEN: usize = 500;
/// A refund pending longer than this is reported by the audit.
pub const STUCK_AFTER: Duration = Duration::from_secs(15 * 60);

/// State of a refund, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Reserved; the payments service is (or will again be) asked.
    Pending,
    /// Given back.
    Completed,
    /// Refused by the payments service; its amount is refundable again.
    Failed,
}

impl Status {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => Status::Pending,
            "COMPLETED" => Status::Completed,
            "FAILED" => Status::Failed,
            _ => return None,
        })
    }
}

/// A validated CreateRefund request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    /// The payment to refund.
    pub payment_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Positive amount in minor units.
    pub amount_minor: i64,
    /// Why (may be empty).
    pub reason: String,
}

impl NewRefund {
    /// SHA-256 (hex) of the canonical form of the request: every field, length-prefixed, in a fixed order,
    /// so that two requests share a fingerprint exactly when they ask for the same refund.
    pub fn fingerprint(&self) -> String {
        let amount = self.amount_minor.to_string();
        let fields = ["create_refund/v1", &self.payment_id, &self.currency, &amount, &self.reason];
        let mut hasher = Sha256::new();
        for field in fields {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
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

/// The fields of a CreateRefund request, as sent.
#[derive(Debug, Clone, Default)]
pub struct RefundInput<'a> {
    /// `payment_id`.
    pub payment_id: &'a str,
    /// `amount` as (currency, minor units), if set.
    pub amount: Option<(&'a str, i64)>,
    /// `reason`.
    pub reason: &'a str,
    /// The idempotency key from metadata, if any.
    pub key_header: Option<&'a str>,
    /// `idempotency_key`.
    pub key_field: &'a str,
}

/// Validates a CreateRefund request, naming every offending field; returns the refund to make and its
/// idempotency key.
pub fn validate_refund(input: &RefundInput<'_>) -> Result<(NewRefund, String), Vec<FieldViolation>> {
    let mut v = Violations::new();
    if input.payment_id.is_empty() {
        v.add("payment_id", "is required");
    } else if input.payment_id.len() > MAX_ID_LEN {
        v.add("payment_id", format!("must be at most {MAX_ID_LEN} characters"));
    }
    match input.amount {
        None => v.add("amount", "is required"),
        Some((currency, amount)) => {
            if amount <= 0 {
                v.add("amount.amount_minor", "must be positive");
            }
            if let Err(violation) = platform::money::check_currency("amount.currency", currency) {
                v.add(violation.field, violation.description);
            }
        }
    }
    if input.reason.chars().count() > MAX_REASON_LEN {
        v.add("reason", format!("must be at most {MAX_REASON_LEN} characters"));
    }
    let key = idempotency_key(input.key_header, input.key_field).map_err(|e| v.add(e.field, e.description)).ok();
    let violations = v.into_vec();
    match (key, input.amount) {
        (Some(key), Some((currency, amount_minor))) if violations.is_empty() => Ok((
            NewRefund {
                payment_id: input.payment_id.to_owned(),
                currency: currency.to_owned(),
                amount_minor,
                reason: input.reason.to_owned(),
            },
            key,
        )),
        _ => Err(violations),
    }
}

/// Whether a payment in `status` can be refunded.
pub fn is_refundable(status: PaymentStatus) -> bool {
    matches!(status, PaymentStatus::Captured | PaymentStatus::PartiallyRefunded)
}

/// Whether an error from the payments service's RefundPayment is its final word on a refund (it refused it,
/// and the same call would be refused again). Everything else — unreachable, overloaded, timed out, an
/// internal error, or our own token refused — may succeed later, and RefundPayment is idempotent by refund
/// id, so those refunds stay pending and are retried.
pub fn is_definitive_refusal(code: Code) -> bool {
    matches!(code, Code::FailedPrecondition | Code::InvalidArgument | Code::NotFound | Code::OutOfRange)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(amount: Option<(&'a str, i64)>, header: Option<&'a str>, field: &'a str) -> RefundInput<'a> {
        RefundInput { payment_id: "p-1", amount, reason: "damaged", key_header: header, key_field: field }
    }

    #[test]
    fn a_valid_request_yields_the_refund_and_its_key() {
        let (refund, key) = validate_refund(&input(Some(("EUR", 500)), None, "k-1")).expect("valid");
        assert_eq!(key, "k-1");
        assert_eq!(
            refund,
            NewRefund { payment_id: "p-1".into(), currency: "EUR".into(), amount_minor: 500, reason: "damaged".into() }
        );
    }

    #[test]
    fn the_header_wins_over_the_field_and_one_is_required() {
        let (_, key) = validate_refund(&input(Some(("EUR", 500)), Some(" h-1 "), "k-1")).expect("valid");
        assert_eq!(key, "h-1");
        let errors = validate_refund(&input(Some(("EUR", 500)), Some(""), "")).expect_err("no key");
        assert_eq!(errors[0].field, "idempotency_key");
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = RefundInput {
            payment_id: "",
            amount: Some(("eur", 0)),
            reason: &"x".repeat(501),
            key_header: None,
            key_field: "",
        };
        let fields: Vec<String> = validate_refund(&bad).expect_err("invalid").into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            ["payment_id", "amount.amount_minor", "amount.currency", "reason", "idempotency_key"].map(String::from)
        );
        let missing = RefundInput { payment_id: "p", key_field: "k", ..Default::default() };
        assert_eq!(validate_refund(&missing).expect_err("no amount")[0].field, "amount");
    }

    #[test]
    fn fingerprints_differ_exactly_when_the_request_does() {
        let a = NewRefund { payment_id: "p".into(), currency: "EUR".into(), amount_minor: 1, reason: "r".into() };
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(a.fingerprint(), NewRefund { amount_minor: 2, ..a.clone() }.fingerprint());
        assert_ne!(a.fingerprint(), NewRefund { reason: "s".into(), ..a.clone() }.fingerprint());
        // Length prefixes keep field boundaries apart.
        let b = NewRefund { payment_id: "pE".into(), currency: "UR".into(), ..a.clone() };
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn only_captured_payments_are_refundable() {
        assert!(is_refundable(PaymentStatus::Captured));
        assert!(is_refundable(PaymentStatus::PartiallyRefunded));
        assert!(!is_refundable(PaymentStatus::Refunded));
        assert!(!is_refundable(PaymentStatus::Failed));
        assert!(!is_refundable(PaymentStatus::Unspecified));
    }

    #[test]
    fn refusals_are_final_and_outages_are_not() {
        assert!(is_definitive_refusal(Code::FailedPrecondition));
        assert!(is_definitive_refusal(Code::InvalidArgument));
        assert!(is_definitive_refusal(Code::NotFound));
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Internal, Code::Unauthenticated, Code::Aborted] {
            assert!(!is_definitive_refusal(code), "{code:?}");
        }
    }

    #[test]
    fn statuses_round_trip() {
        for s in [Status::Pending, Status::Completed, Status::Failed] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("pending"), None);
    }

    #[test]
    fn pages_are_bounded() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(500), Ok(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
        assert!(page_token("0190-abc").is_ok());
        assert!(page_token("' OR 1=1").is_err());
    }
}
