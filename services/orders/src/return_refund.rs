//! Receiving a return and refunding it: the receipt is stored first (RECEIVED, with `return.received`, which
//! puts the units back in stock), then the payments service is asked for the refund, keyed by the return so
//! that asking again never refunds twice; a refund that could not be asked for (the payments service down) is
//! retried in the background until it is made or refused.

use std::sync::Arc;
use std::time::Duration;

use platform::time::now_micros;
use tokio_util::sync::CancellationToken;

use crate::domain::Price;
use crate::error::Error;
use crate::ports::{PortError, RefundRequest, SagaPorts};
use crate::returns::{self, Return, ReturnStatus};
use crate::store::{Order, Store};

/// Receives returns and refunds them.
pub struct Refunder {
    store: Store,
    ports: Arc<dyn SagaPorts>,
}

impl Refunder {
    /// A refunder over the orders store, asking the payments service through `ports`.
    pub fn new(store: Store, ports: Arc<dyn SagaPorts>) -> Self {
        Self { store, ports }
    }

    /// Receives return `id` (putting its units back in stock when `restock`, which only the first receipt
    /// decides) and refunds it; receiving a RECEIVED return tries its refund again.
    pub async fn receive(&self, id: &str, restock: bool) -> Result<Return, Error> {
        let not_found = || Error::NotFound(format!("return {id} not found"));
        let found = self.store.return_by_id(id).await?.ok_or_else(not_found)?;
        let order = self.order_of(&found).await?;
        // No more than is left of the payment (staff may have given part of it back by other means).
        let left = (order.total.amount_minor - order.refunded_minor).max(0);
        let receive = |r: &mut Return| {
            r.restocked = restock;
            r.refund_minor = r.refund_minor.min(left);
        };
        let event = |r: &Return| crate::events::return_received(r, &order);
        let received = self.store.move_return(id, ReturnStatus::Received, now_micros(), receive, event).await?;
        let received = received.ok_or_else(not_found)?;
        if received.status == ReturnStatus::Received {
            tracing::info!(return_id = %id, restock = received.restocked, "return received");
            // The crash tests kill the process here: the receipt is stored, the refund not asked for.
            fail::fail_point!("orders::return::received", |_| std::process::abort());
            return self.refund(received, &order).await;
        }
        Ok(received)
    }

    async fn order_of(&self, found: &Return) -> Result<Order, Error> {
        self.store
            .order(&found.order_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("the order of return {} is gone", found.id)))
    }

    /// Refunds RECEIVED return `received` of `order`, and answers it as it ends: REFUNDED; RECEIVED with the
    /// refusal when the payments service refused; RECEIVED as it was when it could not be reached.
    async fn refund(&self, received: Return, order: &Order) -> Result<Return, Error> {
        let refund_id = returns::refund_id(&received.id);
        // After a refusal (the payment was given back by other means since the receipt) no more than is left now;
        // otherwise the amount as received, exactly: payments answers a repeat of the same refund only when it
        // asks for the same amount, and a repeat after a lost answer must.
        let amount_minor = if received.refund_failure.is_empty() {
            received.refund_minor
        } else {
            received.refund_minor.min((order.total.amount_minor - order.refunded_minor).max(0))
        };
        let refunded = if amount_minor == 0 {
            // Everything was given back before: nothing to ask for.
            Ok(0)
        } else {
            let request = RefundRequest {
                payment_id: order.payment_id.clone(),
                refund_id: refund_id.clone(),
                reason: format!("return {} of order {}", received.id, order.id),
                amount: Some(Price { currency: received.currency.clone(), amount_minor }),
            };
            self.ports.refund(&request).await
        };
        let now = now_micros();
        match refunded {
            Ok(amount_minor) => {
                // And here: the money is given back, our record of it not.
                fail::fail_point!("orders::return::refunded", |_| std::process::abort());
                let refund_id = if amount_minor > 0 { refund_id } else { String::new() };
                self.store.return_refunded(&received, &refund_id, amount_minor, now).await?;
                tracing::info!(return_id = %received.id, refunded_minor = amount_minor, "return refunded");
            }
            Err(PortError::Transient(problem)) => {
                tracing::warn!(return_id = %received.id, %problem, "return's refund to be retried");
                return Ok(received);
            }
            Err(PortError::Permanent(problem)) => {
                tracing::warn!(return_id = %received.id, %problem, "return's refund refused");
                self.store.return_refund_refused(&received.id, &problem, now).await?;
            }
        }
        let not_found = || Error::NotFound(format!("return {} not found", received.id));
        self.store.return_by_id(&received.id).await?.ok_or_else(not_found)
    }

    /// Tries again the refunds of RECEIVED returns last tried more than `older_than` ago and not refused;
    /// answers how many were made.
    pub async fn retry_due(&self, older_than: Duration) -> Result<usize, Error> {
        let before = now_micros() - i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX);
        let mut refunded = 0;
        for id in self.store.returns_to_refund(before).await? {
            let Some(found) = self.store.return_by_id(&id).await? else { continue };
            let order = self.order_of(&found).await?;
            if self.refund(found, &order).await?.status == ReturnStatus::Refunded {
                refunded += 1;
            }
        }
        Ok(refunded)
    }

    /// Retries the refunds left by an earlier process at once (a crash between the receipt and the refund), then
    /// due refunds every `interval`, until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut older_than = Duration::ZERO;
        loop {
            if let Err(e) = self.retry_due(older_than).await {
                tracing::warn!(error = %e, "retrying the refunds of returns");
            }
            older_than = interval;
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
