//! The payments use cases over the store, the processor and the ledger: idempotent charges, refunds that
//! never exceed the capture, and ledger postings that are retried until they land.

use std::sync::Arc;
use std::time::{Duration, Instant};

use platform::events::RelayHandle;
use platform::time::now_micros;
use tokio_util::sync::CancellationToken;

use crate::domain::{self, NewPayment, Status};
use crate::error::{Error, PAYMENT_NOT_REFUNDABLE, REFUND_EXCEEDS_CAPTURED, REFUND_REJECTED};
use crate::events;
use crate::ledger::LedgerClient;
use crate::processor::{ChargeOutcome, PaymentProcessor, ProcessorError};
use crate::store::{
    KEY_FINISHED, PaymentFilter, PaymentRow, REFUND_COMPLETED, REFUND_PENDING, RefundRow, Reservation, Store,
};

/// How long a ledger call right after a commit may take before it is left to the retry loop.
const POST_NOW_TIMEOUT: Duration = Duration::from_secs(5);
/// How many unposted captures (and refunds) one pass of the retry loop handles.
const RETRY_BATCH: i64 = 100;
/// How often old idempotency keys are deleted.
const KEY_CLEANUP_EVERY: Duration = Duration::from_secs(60 * 60);

/// A refund request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// The payment.
    pub payment_id: String,
    /// The refunds service's id of the refund; the idempotency key.
    pub refund_id: String,
    /// ISO 4217 code and positive amount in minor units; None: whatever is still refundable (the rest).
    pub amount: Option<(String, i64)>,
    /// Why, for the books.
    pub reason: String,
}

/// What a refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refunded {
    /// The payment after it.
    pub payment: PaymentRow,
    /// The processor's reference of the refund; empty when nothing was refunded.
    pub processor_reference: String,
    /// What it gave back, in the payment's currency (0: a refund of the rest found nothing left).
    pub amount_minor: i64,
}

/// The payments service's logic.
#[derive(Clone)]
pub struct Payments {
    store: Store,
    processor: Arc<dyn PaymentProcessor>,
    ledger: LedgerClient,
    relay: RelayHandle,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments").field("store", &self.store).finish_non_exhaustive()
    }
}

fn key_reused(what: &str) -> Error {
    Error::KeyReused(format!("this {what} was already used for a different request"))
}

impl Payments {
    /// The logic over a migrated store.
    pub fn new(store: Store, processor: Arc<dyn PaymentProcessor>, ledger: LedgerClient, relay: RelayHandle) -> Self {
        Self { store, processor, ledger, relay }
    }

    /// The payment `id`, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<PaymentRow>, Error> {
        self.store.payment(id).await
    }

    /// The payments `filter` selects, newest first.
    pub async fn list(&self, filter: &PaymentFilter) -> Result<Vec<PaymentRow>, Error> {
        self.store.payments(filter).await
    }

    /// Creates a payment under the customer's idempotency `key`: the first request with the key charges;
    /// duplicates wait for it and return the same payment; the key with another request is refused.
    pub async fn create(&self, new: &NewPayment, key: &str) -> Result<PaymentRow, Error> {
        let fingerprint = new.fingerprint();
        let started = Instant::now();
        loop {
            if self.store.claim_key(&new.customer_id, key, &fingerprint, now_micros()).await? {
                return self.charge(new, key).await;
            }
            let Some(stored) = self.store.key(&new.customer_id, key).await? else {
                // Its first request ended without a result and let the key go: claim it again.
                continue;
            };
            if stored.fingerprint != fingerprint {
                return Err(key_reused("idempotency key"));
            }
            if stored.state == KEY_FINISHED {
                let id =
                    stored.payment_id.ok_or_else(|| Error::Corrupt(format!("key {key} finished without a payment")))?;
                return self
                    .store
                    .payment(&id)
                    .await?
                    .ok_or_else(|| Error::Corrupt(format!("payment {id} is missing")));
            }
            let idle = Duration::from_micros(u64::try_from(now_micros() - stored.update_time).unwrap_or(0));
            if idle > domain::STALE_KEY_AFTER
                && self.store.take_over_key(&new.customer_id, key, stored.update_time, now_micros()).await?
            {
                tracing::warn!(customer_id = %new.customer_id, "taking over an idempotency key whose request stalled");
                return self.charge(new, key).await;
            }
            if started.elapsed() > domain::DUPLICATE_WAIT {
                return Err(Error::Aborted("a request with this key is still in progress".to_owned()));
            }
            tokio::time::sleep(domain::DUPLICATE_POLL).await;
        }
    }

    /// Charges as the owner of `key`, stores the result, and posts the capture to the ledger.
    async fn charge(&self, new: &NewPayment, key: &str) -> Result<PaymentRow, Error> {
        let result = self.charge_and_store(new, key).await;
        if result.is_err() {
            // No result to replay: let the key go so that the client can retry with it. Retrying charges no
            // second time, as the processor is idempotent by the same charge key.
            if let Err(e) = self.store.release_key(&new.customer_id, key).await {
                tracing::error!(error = %e, "releasing an idempotency key failed");
            }
        }
        let payment = result?;
        self.relay.wake();
        metrics::counter!("mercato_payments_total", "status" => payment.status.as_str()).increment(1);
        if payment.status == Status::Captured {
            self.post_capture_now(&payment).await;
        }
        Ok(payment)
    }

    async fn charge_and_store(&self, new: &NewPayment, key: &str) -> Result<PaymentRow, Error> {
        let charge_key = domain::charge_key(&new.customer_id, key);
        let outcome = self.charge_with_retries(new, &charge_key).await?;
        let now = now_micros();
        let mut payment = PaymentRow {
            id: uuid::Uuid::now_v7().to_string(),
            order_id: new.order_id.clone(),
            customer_id: new.customer_id.clone(),
            currency: new.currency.clone(),
            amount_minor: new.amount_minor,
            refunded_minor: 0,
            status: Status::Captured,
            payment_method: new.payment_method.clone(),
            failure_code: String::new(),
            failure_reason: String::new(),
            processor_reference: String::new(),
            ledger_posted: false,
            tax_minor: new.tax_minor,
            create_time: now,
            update_time: now,
        };
        let event = match outcome {
            ChargeOutcome::Approved { reference } => {
                payment.processor_reference = reference;
                events::payment_captured(&payment)
            }
            ChargeOutcome::Declined { code, message } => {
                payment.status = Status::Failed;
                payment.failure_code = code;
                payment.failure_reason = message;
                events::payment_failed(&payment)
            }
        };
        self.store.insert_payment(&payment, key, &event).await?;
        tracing::info!(
            payment_id = %payment.id,
            order_id = %payment.order_id,
            status = payment.status.as_str(),
            failure_code = %payment.failure_code,
            "payment created"
        );
        Ok(payment)
    }

    /// Charges, retrying transient failures with exponential backoff; a processor that keeps failing is a
    /// declined charge with code `processing_error`.
    async fn charge_with_retries(&self, new: &NewPayment, charge_key: &str) -> Result<ChargeOutcome, Error> {
        let mut attempt = 1;
        loop {
            let result = self.processor.charge(new.amount_minor, &new.currency, &new.payment_method, charge_key).await;
            match result {
                Ok(outcome) => return Ok(outcome),
                Err(ProcessorError::InvalidPaymentMethod(_)) => {
                    return Err(Error::invalid("payment_method", "is not a payment method the processor accepts"));
                }
                Err(ProcessorError::Rejected { code, message }) => {
                    return Ok(ChargeOutcome::Declined { code, message });
                }
                Err(ProcessorError::Transient(why)) if attempt < domain::CHARGE_TRIES => {
                    tracing::warn!(attempt, error = %why, "charge failed transiently; retrying");
                    tokio::time::sleep(domain::backoff(attempt)).await;
                    attempt += 1;
                }
                Err(ProcessorError::Transient(why)) => {
                    tracing::warn!(attempt, error = %why, "charge kept failing; giving up");
                    return Ok(ChargeOutcome::Declined {
                        code: domain::PROCESSING_ERROR_CODE.to_owned(),
                        message: domain::PROCESSING_ERROR_MESSAGE.to_owned(),
                    });
                }
            }
        }
    }

    async fn post_capture_now(&self, payment: &PaymentRow) {
        match tokio::time::timeout(POST_NOW_TIMEOUT, self.ledger.post_capture(payment)).await {
            Ok(Ok(())) => {
                if let Err(e) = self.store.mark_capture_posted(&payment.id).await {
                    tracing::warn!(payment_id = %payment.id, error = %e, "noting the ledger posting failed; will retry");
                }
            }
            Ok(Err(status)) => {
                tracing::warn!(payment_id = %payment.id, code = ?status.code(), message = status.message(), "ledger posting failed; will retry")
            }
            Err(_) => tracing::warn!(payment_id = %payment.id, "ledger posting timed out; will retry"),
        }
    }

    async fn post_refund_now(&self, payment: &PaymentRow, refund: &RefundRow) {
        match tokio::time::timeout(POST_NOW_TIMEOUT, self.ledger.post_refund(payment, refund)).await {
            Ok(Ok(())) => {
                if let Err(e) = self.store.mark_refund_posted(&refund.refund_id).await {
                    tracing::warn!(refund_id = %refund.refund_id, error = %e, "noting the ledger posting failed; will retry");
                }
            }
            Ok(Err(status)) => {
                tracing::warn!(refund_id = %refund.refund_id, code = ?status.code(), message = status.message(), "ledger posting failed; will retry")
            }
            Err(_) => tracing::warn!(refund_id = %refund.refund_id, "ledger posting timed out; will retry"),
        }
    }

    /// Gives back part or all of a captured payment, idempotent by refund id; returns the payment after it,
    /// the processor's reference of the refund and what it gave back. A refund of the rest gives back what is
    /// refundable when it is reserved: a concurrent refund that takes part first makes it compute again.
    pub async fn refund(&self, req: &RefundRequest) -> Result<Refunded, Error> {
        loop {
            if let Some(existing) = self.store.refund(&req.refund_id).await? {
                match self.replay_refund(req, existing).await? {
                    Some(result) => return Ok(result),
                    // Its first request failed and gave the amount back: try afresh.
                    None => continue,
                }
            }
            let payment =
                self.store.payment(&req.payment_id).await?.ok_or_else(|| Error::payment_not_found(&req.payment_id))?;
            let amount_minor = match &req.amount {
                Some((currency, _)) if *currency != payment.currency => {
                    return Err(Error::invalid(
                        "amount.currency",
                        format!("must be the payment's currency, {}", payment.currency),
                    ));
                }
                Some((_, amount_minor)) => *amount_minor,
                None => payment.amount_minor - payment.refunded_minor,
            };
            if payment.status == Status::Failed {
                return Err(not_refundable(&payment));
            }
            if req.amount.is_none() && amount_minor <= 0 {
                // The rest of a payment given back in full already: nothing to do.
                return Ok(Refunded { payment, processor_reference: String::new(), amount_minor: 0 });
            }
            let now = now_micros();
            let refund = RefundRow {
                refund_id: req.refund_id.clone(),
                payment_id: req.payment_id.clone(),
                currency: payment.currency.clone(),
                amount_minor,
                state: REFUND_PENDING.to_owned(),
                reason: req.reason.clone(),
                processor_reference: String::new(),
                ledger_posted: false,
                create_time: now,
                update_time: now,
            };
            match self.store.reserve_refund(&refund).await? {
                Reservation::Reserved => return self.drive_refund(&payment, &refund).await,
                // A concurrent request with the same id got there first: replay it.
                Reservation::Duplicate => continue,
                Reservation::Refused => {
                    // A concurrent request with the same id may have reserved first.
                    if self.store.refund(&req.refund_id).await?.is_some() {
                        continue;
                    }
                    let now = self.store.payment(&req.payment_id).await?.unwrap_or_else(|| payment.clone());
                    if now.status == Status::Failed {
                        return Err(not_refundable(&now));
                    }
                    if req.amount.is_none() && now.refunded_minor != payment.refunded_minor {
                        // The rest changed under it (a concurrent refund): compute it again.
                        continue;
                    }
                    return Err(Error::FailedPrecondition {
                        reason: REFUND_EXCEEDS_CAPTURED,
                        message: format!(
                            "the refund exceeds what is left to refund: at most {} {} of payment {}",
                            now.amount_minor - now.refunded_minor,
                            now.currency,
                            now.id
                        ),
                    });
                }
            }
        }
    }

    /// A refund id seen before: the same refund returns its result (waiting while it is in flight), another
    /// one is refused. `None` when it vanished meanwhile (its first request failed and gave the amount back).
    async fn replay_refund(&self, req: &RefundRequest, mut existing: RefundRow) -> Result<Option<Refunded>, Error> {
        let started = Instant::now();
        loop {
            // A refund of the rest is the same request whatever it came to.
            let same_amount = req.amount.as_ref().is_none_or(|(currency, amount_minor)| {
                existing.currency == *currency && existing.amount_minor == *amount_minor
            });
            if existing.payment_id != req.payment_id || !same_amount {
                return Err(key_reused("refund id"));
            }
            if existing.state == REFUND_COMPLETED {
                let payment = self
                    .store
                    .payment(&existing.payment_id)
                    .await?
                    .ok_or_else(|| Error::Corrupt(format!("payment {} is missing", existing.payment_id)))?;
                let amount_minor = existing.amount_minor;
                return Ok(Some(Refunded { payment, processor_reference: existing.processor_reference, amount_minor }));
            }
            let idle = Duration::from_micros(u64::try_from(now_micros() - existing.update_time).unwrap_or(0));
            if idle > domain::STALE_KEY_AFTER {
                // Its first request stalled (crashed) between reserving and completing: finish its work. The
                // processor refund is idempotent by refund id.
                let payment = self
                    .store
                    .payment(&existing.payment_id)
                    .await?
                    .ok_or_else(|| Error::Corrupt(format!("payment {} is missing", existing.payment_id)))?;
                return self.drive_refund(&payment, &existing).await.map(Some);
            }
            if started.elapsed() > domain::DUPLICATE_WAIT {
                return Err(Error::Aborted("a refund with this id is still in progress".to_owned()));
            }
            tokio::time::sleep(domain::DUPLICATE_POLL).await;
            match self.store.refund(&req.refund_id).await? {
                Some(row) => existing = row,
                None => return Ok(None),
            }
        }
    }

    /// Asks the processor for reserved refund `r` of `payment`, then completes it, or undoes the reservation.
    async fn drive_refund(&self, payment: &PaymentRow, r: &RefundRow) -> Result<Refunded, Error> {
        let key = domain::refund_key(&r.refund_id);
        let mut attempt = 1;
        let result = loop {
            match self.processor.refund(&payment.processor_reference, r.amount_minor, &key).await {
                Err(ProcessorError::Transient(why)) if attempt < domain::CHARGE_TRIES => {
                    tracing::warn!(attempt, error = %why, "refund failed transiently; retrying");
                    tokio::time::sleep(domain::backoff(attempt)).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        let reference = match result {
            Ok(reference) => reference,
            Err(e) => {
                tracing::warn!(refund_id = %r.refund_id, error = %e, "refund failed at the processor; releasing its amount");
                self.store.cancel_refund(&r.refund_id, now_micros()).await?;
                return Err(match e {
                    ProcessorError::Transient(_) => {
                        Error::Unavailable("the payment processor is unavailable; try again later".to_owned())
                    }
                    ProcessorError::Rejected { message, .. } | ProcessorError::InvalidPaymentMethod(message) => {
                        Error::FailedPrecondition {
                            reason: REFUND_REJECTED,
                            message: format!("the payment processor refused the refund: {message}"),
                        }
                    }
                });
            }
        };
        let completed = self
            .store
            .complete_refund(&r.refund_id, &reference, now_micros(), |p, total| {
                events::payment_refunded(p, r, total, &reference)
            })
            .await?;
        if completed {
            self.relay.wake();
            tracing::info!(payment_id = %payment.id, refund_id = %r.refund_id, amount_minor = r.amount_minor, "refund completed");
        }
        let stored = self.store.refund(&r.refund_id).await?.ok_or_else(|| {
            Error::Corrupt(format!("refund {} vanished after the processor refunded it", r.refund_id))
        })?;
        let after = self
            .store
            .payment(&payment.id)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("payment {} is missing", payment.id)))?;
        if completed {
            self.post_refund_now(&after, &stored).await;
        }
        Ok(Refunded { payment: after, processor_reference: stored.processor_reference, amount_minor: r.amount_minor })
    }

    /// Posts every capture and refund the ledger does not have yet; returns how many were posted.
    pub async fn post_unposted(&self) -> Result<usize, Error> {
        let mut posted = 0;
        for payment in self.store.unposted_captures(RETRY_BATCH).await? {
            match self.ledger.post_capture(&payment).await {
                Ok(()) => {
                    self.store.mark_capture_posted(&payment.id).await?;
                    posted += 1;
                }
                Err(status) => {
                    tracing::warn!(payment_id = %payment.id, code = ?status.code(), message = status.message(), "ledger still refuses the capture");
                    if ledger_unreachable(&status) {
                        // Try again on the next pass rather than hammering a ledger that is down.
                        return Ok(posted);
                    }
                }
            }
        }
        for refund in self.store.unposted_refunds(RETRY_BATCH).await? {
            let Some(payment) = self.store.payment(&refund.payment_id).await? else { continue };
            match self.ledger.post_refund(&payment, &refund).await {
                Ok(()) => {
                    self.store.mark_refund_posted(&refund.refund_id).await?;
                    posted += 1;
                }
                Err(status) => {
                    tracing::warn!(refund_id = %refund.refund_id, code = ?status.code(), message = status.message(), "ledger still refuses the refund");
                    if ledger_unreachable(&status) {
                        return Ok(posted);
                    }
                }
            }
        }
        Ok(posted)
    }

    /// Deletes idempotency keys older than [`domain::KEY_RETENTION`].
    pub async fn delete_old_keys(&self) -> Result<u64, Error> {
        let retention = i64::try_from(domain::KEY_RETENTION.as_micros()).unwrap_or(i64::MAX);
        let deleted = self.store.delete_keys_before(now_micros().saturating_sub(retention)).await?;
        if deleted > 0 {
            tracing::info!(deleted, "deleted idempotency keys older than 24 hours");
        }
        Ok(deleted)
    }

    /// The background loop: at start and every retry interval, posts what the ledger is missing; every hour
    /// deletes old idempotency keys. Runs until `shutdown` is cancelled.
    pub async fn run_background(self, shutdown: CancellationToken) {
        let mut last_cleanup: Option<Instant> = None;
        loop {
            if last_cleanup.is_none_or(|t| t.elapsed() >= KEY_CLEANUP_EVERY) {
                if let Err(e) = self.delete_old_keys().await {
                    tracing::warn!(error = %e, "deleting old idempotency keys failed");
                }
                last_cleanup = Some(Instant::now());
            }
            match self.post_unposted().await {
                Ok(0) => {}
                Ok(posted) => tracing::info!(posted, "posted pending ledger transactions"),
                Err(e) => tracing::warn!(error = %e, "posting pending ledger transactions failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.ledger.retry_interval()) => {}
            }
        }
    }
}

/// Whether a ledger error means the ledger (or the auth service minting our token) is unreachable, rather
/// than a refusal of one transaction that should not hold up the others.
fn ledger_unreachable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

fn not_refundable(payment: &PaymentRow) -> Error {
    Error::FailedPrecondition {
        reason: PAYMENT_NOT_REFUNDABLE,
        message: format!("payment {} was not captured and cannot be refunded", payment.id),
    }
}
