//! The payment-processor adapter: what the service asks of a processor (Stripe, Adyen, ...), and
//! [`SimulatedProcessor`], the built-in stand-in with test tokens in the style of the big processors.
//!
//! The business logic sees only [`PaymentProcessor`]; `lib.rs` picks the adapter.

use std::sync::atomic::{AtomicUsize, Ordering};

use platform::db::{BeginWrite, Db};
use platform::with_db;

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

/// A processor simulated by the service itself, for development, demos and tests. No money moves. Test tokens:
/// `tok_visa` and `tok_mastercard` approve; `tok_chargeDeclined` declines (`card_declined`);
/// `tok_insufficientFunds` declines (`insufficient_funds`); `tok_processingError` fails transiently on every
/// call; any other token is an unknown payment method. Idempotent by key like a real processor, and it
/// counts calls so tests can see retries and deduplication.
///
/// What a real processor keeps on its servers the simulator keeps in the payments database, in tables of its
/// own (`sim_charges`, `sim_refunds`, see the migrations): a charge made before a restart, or by another
/// replica, can be refunded later, as it could at Stripe.
#[derive(Debug)]
pub struct SimulatedProcessor {
    db: Db,
    charge_calls: AtomicUsize,
    refund_calls: AtomicUsize,
}

impl SimulatedProcessor {
    /// A simulator keeping its charges and refunds in `db`, the payments database (migrated by the service).
    pub fn new(db: Db) -> Self {
        Self { db, charge_calls: AtomicUsize::new(0), refund_calls: AtomicUsize::new(0) }
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
    pub async fn approved_charges(&self) -> Result<i64, ProcessorError> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sim_charges WHERE approved")
                .fetch_one(pool)
                .await
                .map_err(unavailable)?
        }))
    }
}

/// The simulator's storage failing is the processor being unreachable: the same call may succeed later.
fn unavailable(error: sqlx::Error) -> ProcessorError {
    ProcessorError::Transient(format!("simulated processor storage: {error}"))
}

fn declined(code: &str, message: &str) -> ChargeOutcome {
    ChargeOutcome::Declined { code: code.to_owned(), message: message.to_owned() }
}

fn reference(prefix: &str) -> String {
    format!("{prefix}_sim_{}", uuid::Uuid::now_v7().simple())
}

fn rejected(code: &str, message: &str) -> ProcessorError {
    ProcessorError::Rejected { code: code.into(), message: message.into() }
}

/// A stored charge: (approved, reference, decline code, decline message).
type ChargeRow = (bool, String, String, String);

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
        let outcome = match payment_method {
            TOK_VISA | TOK_MASTERCARD => ChargeOutcome::Approved { reference: reference("ch") },
            TOK_CHARGE_DECLINED => declined("card_declined", "Your card was declined."),
            TOK_INSUFFICIENT_FUNDS => declined("insufficient_funds", "Your card has insufficient funds."),
            TOK_PROCESSING_ERROR => {
                return Err(ProcessorError::Transient("simulated processing error".to_owned()));
            }
            other => return Err(ProcessorError::InvalidPaymentMethod(other.to_owned())),
        };
        let (approved, reference, code, message) = match &outcome {
            ChargeOutcome::Approved { reference } => (true, reference.as_str(), "", ""),
            ChargeOutcome::Declined { code, message } => (false, "", code.as_str(), message.as_str()),
        };
        // The first request with this key decides; a repeated one gets its outcome.
        let (approved, reference, code, message) = with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO sim_charges (idempotency_key, approved, reference, decline_code, decline_message, \
                 amount_minor, refunded_minor) VALUES ($1, $2, $3, $4, $5, $6, 0) \
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )
            .bind(idempotency_key)
            .bind(approved)
            .bind(reference)
            .bind(code)
            .bind(message)
            .bind(amount_minor)
            .execute(pool)
            .await
            .map_err(unavailable)?;
            sqlx::query_as::<_, ChargeRow>(
                "SELECT approved, reference, decline_code, decline_message FROM sim_charges \
                 WHERE idempotency_key = $1",
            )
            .bind(idempotency_key)
            .fetch_one(pool)
            .await
            .map_err(unavailable)?
        });
        Ok(if approved { ChargeOutcome::Approved { reference } } else { declined(&code, &message) })
    }

    async fn refund(
        &self,
        charge_reference: &str,
        amount_minor: i64,
        idempotency_key: &str,
    ) -> Result<String, ProcessorError> {
        self.refund_calls.fetch_add(1, Ordering::SeqCst);
        let refund = reference("re");
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await.map_err(unavailable)?;
            let result = async {
                // The refund's row first: a concurrent request with the same key waits here for this one.
                let inserted = sqlx::query(
                    "INSERT INTO sim_refunds (idempotency_key, charge_reference, reference, amount_minor) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING",
                )
                .bind(idempotency_key)
                .bind(charge_reference)
                .bind(&refund)
                .bind(amount_minor)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                if inserted.rows_affected() == 0 {
                    let first = sqlx::query_scalar::<_, String>(
                        "SELECT reference FROM sim_refunds WHERE idempotency_key = $1",
                    )
                    .bind(idempotency_key)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                    return Ok(first);
                }
                let taken = sqlx::query(
                    "UPDATE sim_charges SET refunded_minor = refunded_minor + $1 \
                     WHERE approved AND reference = $2 AND $1 > 0 AND refunded_minor + $1 <= amount_minor",
                )
                .bind(amount_minor)
                .bind(charge_reference)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                if taken.rows_affected() == 1 {
                    return Ok(refund.clone());
                }
                let known = sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM sim_charges WHERE approved AND reference = $1",
                )
                .bind(charge_reference)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
                Err(if known == 0 {
                    rejected("resource_missing", "no such charge")
                } else {
                    rejected("amount_too_large", "the refund exceeds what is left of the charge")
                })
            }
            .await;
            // A refused refund leaves no row behind: the same key may be tried again.
            match result {
                Ok(reference) => {
                    tx.commit().await.map_err(unavailable)?;
                    Ok(reference)
                }
                Err(error) => {
                    tx.rollback().await.map_err(unavailable)?;
                    Err(error)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn simulator() -> (SimulatedProcessor, platform::testkit::TempDir) {
        let (db, dir) = platform::testkit::sqlite("payments").await.expect("sqlite");
        db.migrate(&crate::MIGRATOR, crate::NAME).await.expect("migrate");
        (SimulatedProcessor::new(db), dir)
    }

    #[tokio::test]
    async fn test_tokens_behave_like_a_processor() {
        let (p, _dir) = simulator().await;
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
        assert_eq!(p.approved_charges().await, Ok(2));
    }

    #[tokio::test]
    async fn charges_and_refunds_are_idempotent_by_key() {
        let (p, _dir) = simulator().await;
        let first = p.charge(500, "EUR", TOK_VISA, "same").await;
        assert_eq!(p.charge(500, "EUR", TOK_VISA, "same").await, first);
        let declined_first = p.charge(500, "EUR", TOK_CHARGE_DECLINED, "other").await;
        assert_eq!(p.charge(500, "EUR", TOK_VISA, "other").await, declined_first, "the first request decides");
        assert_eq!(p.approved_charges().await, Ok(1));
        let Ok(ChargeOutcome::Approved { reference }) = first else { panic!("approved") };
        let refund = p.refund(&reference, 300, "r1").await.expect("refund");
        assert_eq!(p.refund(&reference, 300, "r1").await, Ok(refund));
        let too_much = p.refund(&reference, 300, "r2").await;
        assert!(matches!(&too_much, Err(ProcessorError::Rejected { code, .. }) if code == "amount_too_large"));
        assert!(p.refund(&reference, 200, "r3").await.is_ok());
        let unknown = p.refund("ch_unknown", 1, "r4").await;
        assert!(matches!(&unknown, Err(ProcessorError::Rejected { code, .. }) if code == "resource_missing"));
        // A refused refund's key is not spent: nothing is left of the charge, so it is refused again.
        assert_eq!(p.refund(&reference, 300, "r2").await, too_much);
    }

    #[tokio::test]
    async fn a_charge_outlives_the_simulator_that_made_it() {
        let (db, _dir) = platform::testkit::sqlite("payments").await.expect("sqlite");
        db.migrate(&crate::MIGRATOR, crate::NAME).await.expect("migrate");
        let before_restart = SimulatedProcessor::new(db.clone());
        let Ok(ChargeOutcome::Approved { reference }) = before_restart.charge(900, "EUR", TOK_VISA, "k").await else {
            panic!("approved")
        };
        drop(before_restart);
        let after_restart = SimulatedProcessor::new(db);
        assert!(after_restart.refund(&reference, 900, "r").await.is_ok(), "refunded after a restart");
    }
}
