//! The payment-processor adapter: what the service asks of a processor (Stripe, Adyen, ...), and
//! [`SimulatedProcessor`], the built-in stand-in with test tokens in the style of the big processors.
//!
//! The business logic sees only [`PaymentProcessor`]; `lib.rs` picks the adapter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How a charge ended at the processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Charged.
    Approved {
        /// The processor's reference of the charge.
        reference: String,
    },
    /// Refused by the card issuer or the processor.
    Declined {
        /// Machine-readable code, e.g. `card_declined`.
        code: String,
        /// Why, in words a customer can read.
        message: String,
    },
}

/// A processor call that did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessorError {
    /// The processor could not be reached or failed; the same call may succeed later.
    #[error("transient processor failure: {0}")]
    Transient(String),
    /// The payment method token is not one the processor knows.
    #[error("unknown payment method: {0}")]
    InvalidPaymentMethod(String),
    /// The processor refused the request for good (e.g. a refund above what is left of the charge).
    #[error("{code}: {message}")]
    Rejected {
        /// Machine-readable code.
        code: String,
        /// What happened.
        message: String,
    },
}

/// A payment processor. Both calls are idempotent by `idempotency_key` at the processor: a retried call with
/// the same key returns the first result and moves no money again.
#[tonic::async_trait]
pub trait PaymentProcessor: Send + Sync + 'static {
    /// Charges `amount_minor` of `currency` to `payment_method` (a token such as `tok_visa`).
    async fn charge(
        &self,
        amount_minor: i64,
        currency: &str,
        payment_method: &str,
        idempotency_key: &str,
    ) -> Result<ChargeOutcome, ProcessorError>;

    /// Gives back `amount_minor` of the charge `charge_reference`; returns the refund's reference.
    async fn refund(
        &self,
        charge_reference: &str,
        amount_minor: i64,
        idempotency_key: &str,
    ) -> Result<String, ProcessorError>;
}

/// Approved test token (Visa).
pub const TOK_VISA: &str = "tok_visa";
/// Approved test token (Mastercard).
pub const TOK_MASTERCARD: &str = "tok_mastercard";
/// Test token declined with `card_declined`.
pub const TOK_CHARGE_DECLINED: &str = "tok_chargeDeclined";
/// Test token declined with `insufficient_funds`.
pub const TOK_INSUFFICIENT_FUNDS: &str = "tok_insufficientFunds";
/// Test token whose every charge fails transiently.
pub const TOK_PROCESSING_ERROR: &str = "tok_processingError";

#[derive(Debug, Default)]
struct SimState {
    /// Charge results by idempotency key.
    charges: HashMap<String, ChargeOutcome>,
    /// Approved charges by reference: (amount, refunded so far).
    captured: HashMap<String, (i64, i64)>,
    /// Refund references by idempotency key.
    refunds: HashMap<String, String>,
}

/// A processor simulated in memory, for development, demos and tests. No money moves. Test tokens:
/// `tok_visa` and `tok_mastercard` approve; `tok_chargeDeclined` declines (`card_declined`);
/// `tok_insufficientFunds` declines (`insufficient_funds`); `tok_processingError` fails transiently on every
/// call; any other token is an unknown payment method. Idempotent by key like a real processor, and it
/// counts calls so tests can see retries and deduplication.
#[derive(Debug, Default)]
pub struct SimulatedProcessor {
    state: Mutex<SimState>,
    charge_calls: AtomicUsize,
    refund_calls: AtomicUsize,
}

impl SimulatedProcessor {
    /// A fresh simulator with no charges.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times `charge` was called (replays and failures included).
    pub fn charge_calls(&self) -> usize {
        self.charge_calls.load(Ordering::SeqCst)
    }

    /// How many times `refund` was called (replays and failures included).
    pub fn refund_calls(&self) -> usize {
        self.refund_calls.load(Ordering::SeqCst)
    }

    /// How many distinct charges were approved (money that would have moved).
    pub fn approved_charges(&self) -> usize {
        self.lock().captured.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn declined(code: &str, message: &str) -> ChargeOutcome {
    ChargeOutcome::Declined { code: code.to_owned(), message: message.to_owned() }
}

fn reference(prefix: &str) -> String {
    format!("{prefix}_sim_{}", uuid::Uuid::now_v7().simple())
}

#[tonic::async_trait]
impl PaymentProcessor for SimulatedProcessor {
    async fn charge(
        &self,
        amount_minor: i64,
        _currency: &str,
        payment_method: &str,
        idempotency_key: &str,
    ) -> Result<ChargeOutcome, ProcessorError> {
        self.charge_calls.fetch_add(1, Ordering::SeqCst);
        let mut state = self.lock();
        if let Some(first) = state.charges.get(idempotency_key) {
            return Ok(first.clone());
        }
        let outcome = match payment_method {
            TOK_VISA | TOK_MASTERCARD => ChargeOutcome::Approved { reference: reference("ch") },
            TOK_CHARGE_DECLINED => declined("card_declined", "Your card was declined."),
            TOK_INSUFFICIENT_FUNDS => declined("insufficient_funds", "Your card has insufficient funds."),
            TOK_PROCESSING_ERROR => {
                return Err(ProcessorError::Transient("simulated processing error".to_owned()));
            }
            other => return Err(ProcessorError::InvalidPaymentMethod(other.to_owned())),
        };
        if let ChargeOutcome::Approved { reference } = &outcome {
            state.captured.insert(reference.clone(), (amount_minor, 0));
        }
        state.charges.insert(idempotency_key.to_owned(), outcome.clone());
        Ok(outcome)
    }

    async fn refund(
        &self,
        charge_reference: &str,
        amount_minor: i64,
        idempotency_key: &str,
    ) -> Result<String, ProcessorError> {
        self.refund_calls.fetch_add(1, Ordering::SeqCst);
        let mut state = self.lock();
        if let Some(first) = state.refunds.get(idempotency_key) {
            return Ok(first.clone());
        }
        let rejected =
            |code: &str, message: &str| ProcessorError::Rejected { code: code.into(), message: message.into() };
        let Some((captured, refunded)) = state.captured.get_mut(charge_reference) else {
            return Err(rejected("resource_missing", "no such charge"));
        };
        if amount_minor <= 0 || *refunded + amount_minor > *captured {
            return Err(rejected("amount_too_large", "the refund exceeds what is left of the charge"));
        }
        *refunded += amount_minor;
        let refund = reference("re");
        state.refunds.insert(idempotency_key.to_owned(), refund.clone());
        Ok(refund)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_tokens_behave_like_a_processor() {
        let p = SimulatedProcessor::new();
        assert!(matches!(p.charge(100, "EUR", TOK_VISA, "k1").await, Ok(ChargeOutcome::Approved { .. })));
        assert!(matches!(p.charge(100, "EUR", TOK_MASTERCARD, "k2").await, Ok(ChargeOutcome::Approved { .. })));
        assert_eq!(
            p.charge(100, "EUR", TOK_CHARGE_DECLINED, "k3").await,
            Ok(declined("card_declined", "Your card was declined."))
        );
        assert_eq!(
            p.charge(100, "EUR", TOK_INSUFFICIENT_FUNDS, "k4").await,
            Ok(declined("insufficient_funds", "Your card has insufficient funds."))
        );
        assert!(matches!(p.charge(100, "EUR", TOK_PROCESSING_ERROR, "k5").await, Err(ProcessorError::Transient(_))));
        assert!(matches!(p.charge(100, "EUR", "tok_bogus", "k6").await, Err(ProcessorError::InvalidPaymentMethod(_))));
        assert_eq!(p.charge_calls(), 6);
        assert_eq!(p.approved_charges(), 2);
    }

    #[tokio::test]
    async fn charges_and_refunds_are_idempotent_by_key() {
        let p = SimulatedProcessor::new();
        let first = p.charge(500, "EUR", TOK_VISA, "same").await;
        assert_eq!(p.charge(500, "EUR", TOK_VISA, "same").await, first);
        assert_eq!(p.approved_charges(), 1);
        let Ok(ChargeOutcome::Approved { reference }) = first else { panic!("approved") };
        let refund = p.refund(&reference, 300, "r1").await.expect("refund");
        assert_eq!(p.refund(&reference, 300, "r1").await, Ok(refund));
        assert!(matches!(p.refund(&reference, 300, "r2").await, Err(ProcessorError::Rejected { .. })));
        assert!(p.refund(&reference, 200, "r3").await.is_ok());
        assert!(matches!(p.refund("ch_unknown", 1, "r4").await, Err(ProcessorError::Rejected { .. })));
    }
}
