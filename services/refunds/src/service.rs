//! The refunds use cases over the store and the payments service: idempotent refunds that reserve their
//! amount before asking the payments service, and a retry loop for the ones it could not answer.

use std::time::Duration;

use api::mercato::payments::v1::PaymentStatus;
use platform::events::RelayHandle;
use platform::time::now_micros;
use tokio_util::sync::CancellationToken;

use crate::domain::{self, NewRefund, Status};
use crate::error::{Error, PAYMENT_NOT_REFUNDABLE, REFUND_EXCEEDS_CAPTURED};
use crate::events;
use crate::payments::PaymentsClient;
use crate::store::{RefundFilter, RefundRow, Reservation, Store};

/// How many pending refunds one pass of the retry loop handles.
const RETRY_BATCH: i64 = 100;

/// The refunds service's logic.
#[derive(Clone)]
pub struct Refunds {
    store: Store,
    payments: PaymentsClient,
    relay: RelayHandle,
}

impl std::fmt::Debug for Refunds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refunds").field("store", &self.store).field("payments", &self.payments).finish_non_exhaustive()
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn payments_unavailable(status: &tonic::Status) -> Error {
    tracing::warn!(code = ?status.code(), message = status.message(), "the payments service did not answer");
    Error::Unavailable("the payments service is unavailable; try again later".to_owned())
}

impl Refunds {
    /// The logic over a migrated store.
    pub fn new(store: Store, payments: PaymentsClient, relay: RelayHandle) -> Self {
        Self { store, payments, relay }
    }

    /// The refund `id`, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<RefundRow>, Error> {
        self.store.refund(id).await
    }

    /// Whether payment `payment_id` was made by `customer` (an unknown payment belongs to nobody).
    pub async fn paid_by(&self, payment_id: &str, customer: &str) -> Result<bool, Error> {
        let payment = self.payments.get_payment(payment_id).await.map_err(|s| payments_unavailable(&s))?;
        Ok(payment.is_some_and(|p| p.customer_id == customer))
    }

    /// Up to `limit` refunds of `payment_id` after refund id `after`, oldest first.
    pub async fn list(&self, payment_id: &str, after: &str, limit: i64) -> Result<Vec<RefundRow>, Error> {
        self.store.list(payment_id, after, limit).await
    }

    /// The refunds `filter` selects, newest first.
    pub async fn list_all(&self, filter: &RefundFilter) -> Result<Vec<RefundRow>, Error> {
        self.store.list_all(filter).await
    }

    /// Creates refund `new` for `requester` under idempotency `key`: a key seen before replays its refund
    /// (or is refused for another request); otherwise the amount is reserved against what the payment
    /// captured, and the payments service is asked to give it back.
    pub async fn create(&self, requester: &str, new: &NewRefund, key: &str) -> Result<RefundRow, Error> {
        let fingerprint = new.fingerprint();
        if let Some(existing) = self.store.refund_by_key(requester, key).await? {
            return self.replay(existing, &fingerprint).await;
        }
        let payment = self
            .payments
            .get_payment(&new.payment_id)
            .await
            .map_err(|s| payments_unavailable(&s))?
            .ok_or_else(|| Error::NotFound(format!("payment {} not found", new.payment_id)))?;
        let captured = payment.amount.clone().unwrap_or_default();
        if captured.currency != new.currency {
            return Err(Error::invalid(
                "amount.currency",
                format!("must be the payment's currency, {}", captured.currency),
            ));
        }
        let status = PaymentStatus::try_from(payment.status).unwrap_or(PaymentStatus::Unspecified);
        if !domain::is_refundable(status) {
            return Err(Error::FailedPrecondition {
                reason: PAYMENT_NOT_REFUNDABLE,
                message: format!("payment {} is {} and cannot be refunded", payment.id, status.as_str_name()),
            });
        }
        let now = now_micros();
        self.store.ensure_totals(&new.payment_id, &captured.currency, captured.amount_minor, now).await?;
        let refund = RefundRow {
            id: uuid::Uuid::now_v7().to_string(),
            payment_id: new.payment_id.clone(),
            currency: new.currency.clone(),
            amount_minor: new.amount_minor,
            reason: new.reason.clone(),
            status: Status::Pending,
            failure_reason: String::new(),
            requester: requester.to_owned(),
            idempotency_key: key.to_owned(),
            fingerprint: fingerprint.clone(),
            // Held by this request while it asks the payments service.
            lease_until: now.saturating_add(micros(self.payments.lease())),
            create_time: now,
            update_time: now,
        };
        match self.store.reserve(&refund).await? {
            Reservation::Reserved => {
                tracing::info!(refund_id = %refund.id, payment_id = %refund.payment_id, amount_minor = refund.amount_minor, "refund reserved");
                self.drive(refund).await
            }
            reservation => {
                // A concurrent request with the same key may have won (and its reservation taken the room).
                if let Some(existing) = self.store.refund_by_key(requester, key).await? {
                    return self.replay(existing, &fingerprint).await;
                }
                if reservation == Reservation::DuplicateKey {
                    return Err(Error::Corrupt(format!("idempotency key of {requester} taken but not found")));
                }
                let left = self.store.totals(&new.payment_id).await?.map_or(0, |t| t.captured_minor - t.refunded_minor);
                Err(Error::FailedPrecondition {
                    reason: REFUND_EXCEEDS_CAPTURED,
                    message: format!(
                        "the refund exceeds what is left to refund: at most {left} {} of payment {}",
                        new.currency, new.payment_id
                    ),
                })
            }
        }
    }

    /// The refund a key produced before: the same request gets it back (a pending one is driven again
    /// first, when no other worker holds it), another request is refused.
    async fn replay(&self, existing: RefundRow, fingerprint: &str) -> Result<RefundRow, Error> {
        if existing.fingerprint != fingerprint {
            return Err(Error::KeyReused("this idempotency key was already used for a different request".to_owned()));
        }
        if existing.status == Status::Pending && self.claim(&existing.id).await? {
            return self.drive(existing).await;
        }
        Ok(existing)
    }

    async fn claim(&self, id: &str) -> Result<bool, Error> {
        let now = now_micros();
        self.store.claim(id, now, now.saturating_add(micros(self.payments.lease()))).await
    }

    /// Asks the payments service to give back pending refund `r` (held by this worker), then records the
    /// answer: completed, failed (its amount given back to the payment's total) or, when the payments
    /// service could not answer, still pending for the retry loop. Returns the refund as stored after.
    async fn drive(&self, r: RefundRow) -> Result<RefundRow, Error> {
        match self.payments.refund_payment(&r).await {
            Ok(_) => {
                if self.store.complete(&r.id, now_micros(), &events::refund_completed(&r)).await? {
                    self.relay.wake();
                    tracing::info!(refund_id = %r.id, payment_id = %r.payment_id, amount_minor = r.amount_minor, "refund completed");
                }
            }
            Err(status) if domain::is_definitive_refusal(status.code()) => {
                let why = status.message().to_owned();
                if self.store.fail(&r, &why, now_micros(), &events::refund_failed(&r, &why)).await? {
                    self.relay.wake();
                    tracing::warn!(refund_id = %r.id, payment_id = %r.payment_id, code = ?status.code(), reason = %why, "refund refused by the payments service");
                }
            }
            Err(status) => {
                tracing::warn!(refund_id = %r.id, code = ?status.code(), message = status.message(), "refund not answered by the payments service; will retry");
                self.store.release(&r.id).await?;
            }
        }
        self.store.refund(&r.id).await?.ok_or_else(|| Error::Corrupt(format!("refund {} vanished", r.id)))
    }

    /// Drives every pending refund no worker holds; returns how many are no longer pending.
    pub async fn retry_pending(&self) -> Result<usize, Error> {
        let mut settled = 0;
        for refund in self.store.due(now_micros(), RETRY_BATCH).await? {
            if !self.claim(&refund.id).await? {
                continue;
            }
            let after = self.drive(refund).await?;
            if after.status == Status::Pending {
                // The payments service is still not answering: try again on the next pass.
                return Ok(settled);
            }
            settled += 1;
        }
        Ok(settled)
    }

    /// The background loop: at start and every retry interval, drives the pending refunds. Runs until
    /// `shutdown` is cancelled.
    pub async fn run_background(self, shutdown: CancellationToken) {
        loop {
            match self.retry_pending().await {
                Ok(0) => {}
                Ok(settled) => tracing::info!(settled, "settled pending refunds"),
                Err(e) => tracing::warn!(error = %e, "retrying pending refunds failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.payments.retry_interval()) => {}
            }
        }
    }
}
