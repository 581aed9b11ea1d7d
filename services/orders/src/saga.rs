//! The checkout saga, orchestrated here with its state in the orders table (`status` + `saga_step`):
//!
//! 1. the order is created PENDING at step `reserve`, priced at the catalog, with `order.placed` (grpc.rs);
//! 2. `reserve`: ReserveStock with the order id. Not enough stock → FAILED ("Sorry, <name> is out of
//!    stock."), nothing to compensate;
//! 3. `pay`: CreatePayment with key `order:<id>` for the customer. Declined → `release` with the payment's
//!    reason;
//! 4. `commit`: CommitStock. Refused → `refund` (refund id `order:<id>:compensation`) → `release`;
//! 5. CONFIRMED with `order.confirmed` in one transaction, then the cart is cleared when the order came
//!    from it (best effort: the cart also consumes `order.confirmed`).
//!
//! `release` gives the stock back and ends the order FAILED with `order.failed`. Cancelling a confirmed
//! order is a step too (`cancel`: refund with id `order:<id>:cancel`, then CANCELLED with `order.cancelled`).
//!
//! A step's remote call happens before the step's state is persisted, so a crash in between repeats the
//! call on resume; every call is idempotent by the ids above, so resuming is "run from the persisted step".
//! Moves are compare-and-set on the step: when two runners drive one order only one moves it. Transient
//! errors are retried with backoff; when they persist the order stays at its step and the recovery task
//! resumes it later (at start for every in-flight order, then periodically for those whose step is older
//! than [`SagaOptions::stuck_after`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform::events::{NewEvent, RelayHandle};
use platform::time::now_micros;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::domain::{self, Status, Step};
use crate::error::Error;
use crate::events;
use crate::ports::{Commit, PaymentRequest, PortError, RefundRequest, Reservation, SagaPorts, ShipmentCancel};
use crate::store::{Change, Order, Store};
use crate::tax;

/// Timing of the saga.
#[derive(Debug, Clone)]
pub struct SagaOptions {
    /// How long CreateOrder and CancelOrder wait for the saga before answering the current state.
    pub wait: Duration,
    /// Attempts of one remote call on transient errors, within one run.
    pub attempts: u32,
    /// First pause between attempts; doubled each time, at most 5 s.
    pub backoff: Duration,
    /// How often the recovery task looks for stalled sagas.
    pub recovery_interval: Duration,
    /// A saga whose step is older than this is stalled: the recovery task resumes it.
    pub stuck_after: Duration,
    /// Whether a checkout needs the customer's email address verified (the shop's choice,
    /// `MERCATO_CHECKOUT_REQUIRES_VERIFIED_EMAIL`): CreateOrder refuses it otherwise, before anything is held.
    pub requires_verified_email: bool,
    /// Days after delivery a customer may ask to return items (`MERCATO_RETURN_WINDOW_DAYS`; 0: no returns).
    pub return_window_days: u32,
    /// What a return gives back of the shipping (`MERCATO_RETURN_SHIPPING`).
    pub return_shipping: platform::config::ReturnShipping,
}

impl Default for SagaOptions {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(20),
            attempts: 5,
            backoff: Duration::from_millis(200),
            recovery_interval: Duration::from_secs(10),
            stuck_after: Duration::from_secs(30),
            requires_verified_email: false,
            return_window_days: crate::returns::DEFAULT_WINDOW_DAYS,
            return_shipping: platform::config::ReturnShipping::Shared,
        }
    }
}

/// Longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs sagas: at most one run per order in this process, every run tracked so shutdown can wait for it.
#[derive(Clone)]
pub struct Saga {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Saga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saga").field("options", &self.inner.options).finish_non_exhaustive()
    }
}

struct Inner {
    store: Store,
    ports: Arc<dyn SagaPorts>,
    relay: RelayHandle,
    options: SagaOptions,
    running: Mutex<HashMap<String, watch::Receiver<Option<Order>>>>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

/// How a step ended for this run.
enum Next {
    /// The order moved on: run the next step.
    Continue,
    /// Stop this run (finished or stalled); the run's copy of the order is what is stored.
    Stop,
    /// Another runner moved the order first: stop, and forget this run's copy of it.
    Lost,
}

impl Saga {
    /// A saga runner over `store` calling `ports`; its runs stop when `stop` is cancelled.
    pub fn new(
        store: Store,
        ports: Arc<dyn SagaPorts>,
        relay: RelayHandle,
        options: SagaOptions,
        stop: CancellationToken,
    ) -> Self {
        #[cfg(feature = "failpoints")]
        arm_failpoints();
        Self {
            inner: Arc::new(Inner {
                store,
                ports,
                relay,
                options,
                running: Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                stop,
            }),
        }
    }

    /// The options.
    pub fn options(&self) -> &SagaOptions {
        &self.inner.options
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<Option<Order>>>> {
        self.inner.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a run of order `id` is in progress in this process.
    pub fn is_running(&self, id: &str) -> bool {
        self.running().contains_key(id)
    }

    /// Starts a run of order `id` unless one is in progress; returns a receiver that closes when it ends,
    /// holding the order as the run left it when the run knows that exactly.
    pub fn start(&self, id: &str) -> watch::Receiver<Option<Order>> {
        self.run(id, None)
    }

    /// Starts a run of `order`, just stored as it is, unless one is in progress: the run begins from this copy
    /// instead of reading the order back.
    pub fn start_placed(&self, order: Order) -> watch::Receiver<Option<Order>> {
        self.run(&order.id.clone(), Some(order))
    }

    fn run(&self, id: &str, stored: Option<Order>) -> watch::Receiver<Option<Order>> {
        let mut running = self.running();
        if let Some(rx) = running.get(id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        if self.inner.stop.is_cancelled() {
            // Shutting down: a request still being answered must not start a run that would be cut off after
            // its first remote call; the next start resumes the order. The dropped sender ends the wait.
            return rx;
        }
        running.insert(id.to_owned(), rx.clone());
        drop(running);
        let this = self.clone();
        let id = id.to_owned();
        // In the span of the request that started the run (if any), so its calls and events join its trace.
        let span = tracing::Span::current();
        self.inner.tracker.spawn(async move {
            tokio::select! {
                // Stopping wins over a step that is ready at the same moment.
                biased;
                () = this.inner.stop.cancelled() => {
                    tracing::info!(order_id = %id, "saga run stopped by shutdown; it resumes on the next start");
                }
                result = this.drive(&id, stored) => match result {
                    Ok(last) => {
                        tx.send_replace(last);
                    }
                    Err(error) => {
                        tracing::error!(order_id = %id, %error, "saga run failed; the recovery task will resume it");
                    }
                }
            }
            this.running().remove(&id);
            drop(tx);
        }.instrument(span));
        rx
    }

    /// Starts (or joins) the run of order `id` and waits for it to end, at most [`SagaOptions::wait`]. Returns
    /// the order as the run left it when the run ended knowing that exactly (None: read it from the store).
    pub async fn finish(&self, id: &str) -> Option<Order> {
        let mut done = self.start(id);
        // `changed` fails once the run drops its sender: that is the end of the run.
        let wait = self.inner.options.wait;
        let ended = tokio::time::timeout(wait, async { while done.changed().await.is_ok() {} }).await.is_ok();
        if ended { done.borrow().clone() } else { None }
    }

    /// Resumes in-flight sagas: all of them (`older_than` = None, at start) or those whose step is older.
    /// Returns how many runs were started.
    pub async fn recover(&self, older_than: Option<Duration>) -> Result<usize, Error> {
        let now = now_micros();
        let before = older_than.map(|d| now - i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let mut started = 0;
        for (id, seen) in self.inner.store.in_flight(before).await? {
            if self.is_running(&id) {
                continue;
            }
            // Claiming moves the step time, so other replicas' scans leave this order alone for a while.
            if !self.inner.store.claim(&id, seen, now).await? {
                continue;
            }
            tracing::info!(order_id = %id, "resuming checkout saga");
            self.start(&id);
            started += 1;
        }
        Ok(started)
    }

    /// The recovery task: resumes every in-flight saga now, then stalled ones periodically, until stopped.
    pub fn spawn_recovery(&self) {
        let this = self.clone();
        self.inner.tracker.spawn(async move {
            let mut older_than = None;
            loop {
                match this.recover(older_than).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(resumed = n, "recovery resumed checkout sagas"),
                    Err(error) => tracing::warn!(%error, "recovery scan failed"),
                }
                older_than = Some(this.inner.options.stuck_after);
                tokio::select! {
                    () = this.inner.stop.cancelled() => return,
                    () = tokio::time::sleep(this.inner.options.recovery_interval) => {}
                }
            }
        });
    }

    /// Stops every run (they resume on the next start) and waits for them to end.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    /// Runs the order's steps until it settles, stalls or another runner takes it. The order is read once (or
    /// given, when just stored) and then kept up to date by each stored move, so a checkout reads it once.
    /// Returns the order as it is stored when the run knows that exactly.
    async fn drive(&self, id: &str, stored: Option<Order>) -> Result<Option<Order>, Error> {
        let mut order = match stored {
            Some(order) => order,
            None => match self.inner.store.order(id).await? {
                Some(order) => order,
                None => return Ok(None),
            },
        };
        loop {
            let next = match (order.status, order.step) {
                (Status::Pending, Step::Reserve) => self.reserve(&mut order).await?,
                (Status::Pending, Step::Pay) => self.pay(&mut order).await?,
                (Status::Pending, Step::Commit) => self.commit(&mut order).await?,
                (Status::Pending, Step::Refund) => self.refund(&mut order).await?,
                (Status::Pending, Step::Release) => self.release(&mut order).await?,
                (Status::Confirmed, Step::Cancel) => self.cancel(&mut order).await?,
                _ => return Ok(Some(order)),
            };
            match next {
                Next::Continue => {}
                Next::Stop => return Ok(Some(order)),
                Next::Lost => return Ok(None),
            }
        }
    }

    /// Calls `f`, retrying transient errors with backoff up to [`SagaOptions::attempts`] times.
    async fn call<T, F, Fut>(&self, what: &str, order_id: &str, f: F) -> Result<T, PortError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, PortError>>,
    {
        let mut delay = self.inner.options.backoff;
        let mut attempt = 1;
        loop {
            match f().await {
                Err(error) if error.is_transient() && attempt < self.inner.options.attempts => {
                    tracing::warn!(order_id, step = what, attempt, %error, "transient error; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
                other => {
                    // The crash tests kill the process here: the remote effect happened, our record of it not.
                    fail::fail_point!(&format!("orders::{what}::answered"), |_| std::process::abort());
                    return other;
                }
            }
        }
    }

    /// Persists a move and applies it to `order`; wakes the relay when it wrote an event. Continue when moved,
    /// Lost when another runner moved the order first.
    async fn advance(
        &self,
        order: &mut Order,
        change: Change,
        event: Option<NewEvent>,
        note: &str,
    ) -> Result<Next, Error> {
        let now = now_micros();
        let moved =
            self.inner.store.advance(&order.id, (order.status, order.step), &change, event.as_ref(), note, now).await?;
        if !moved {
            // Rare, and once seen without another runner in sight: say where the stored order is now.
            let stored = self.inner.store.order(&order.id).await.ok().flatten();
            tracing::info!(order_id = %order.id, status = order.status.as_str(), step = order.step.as_str(),
                stored_status = stored.as_ref().map_or("none", |o| o.status.as_str()),
                stored_step = stored.as_ref().map_or("none", |o| o.step.as_str()),
                "another runner moved the order");
            return Ok(Next::Lost);
        }
        // The crash tests kill the process here too: the move is stored, the next step not begun.
        fail::fail_point!(&format!("orders::{}::stored", order.step.as_str()), |_| std::process::abort());
        tracing::info!(order_id = %order.id, from = order.step.as_str(), to = change.step.as_str(),
            status = change.status.as_str(), note, "saga step");
        let settled = change.status;
        change.apply(order, now);
        if event.is_some() {
            self.inner.relay.wake();
        }
        if matches!(settled, Status::Confirmed | Status::Failed | Status::Cancelled) && order.step == Step::Done {
            metrics_count(settled);
        }
        Ok(Next::Continue)
    }

    async fn fail(&self, order: &mut Order, reason: &str, note: &str) -> Result<Next, Error> {
        let change = Change { failure_reason: Some(reason.to_owned()), ..Change::to(Status::Failed, Step::Done) };
        let event = events::failed(order, reason, &order.payment_id);
        self.advance(order, change, Some(event), note).await
    }

    fn stalled(order: &Order, error: &PortError) -> Next {
        tracing::warn!(order_id = %order.id, step = order.step.as_str(), %error,
            "saga stalled; the recovery task will resume it");
        Next::Stop
    }

    fn name_of<'a>(order: &'a Order, product_id: Option<&str>) -> Option<&'a str> {
        let product_id = product_id?;
        order.lines.iter().find(|l| l.product_id == product_id).map(|l| l.name.as_str())
    }

    async fn reserve(&self, order: &mut Order) -> Result<Next, Error> {
        let lines: Vec<_> = order
            .lines
            .iter()
            .map(|l| domain::LineInput { product_id: l.product_id.clone(), quantity: l.quantity })
            .collect();
        let ports = &self.inner.ports;
        match self.call("reserve", &order.id, || ports.reserve(&order.id, &lines)).await {
            Ok(Reservation::Held) => {
                let next = self.advance(order, Change::to(Status::Pending, Step::Pay), None, "stock held").await?;
                if let Next::Lost = next {
                    // Another runner failed the order while we held stock (e.g. stock freed up between its
                    // attempt and ours): give ours back.
                    let failed = self.inner.store.order(&order.id).await?.is_some_and(|o| o.status == Status::Failed);
                    if failed && let Err(error) = ports.release(&order.id).await {
                        tracing::warn!(order_id = %order.id, %error, "releasing a stray reservation failed");
                    }
                }
                Ok(next)
            }
            Ok(Reservation::OutOfStock(product)) => {
                let reason = domain::out_of_stock(Self::name_of(order, product.as_deref()));
                self.fail(order, &reason, "out of stock").await
            }
            Ok(Reservation::NotForSale(product)) => {
                let reason = domain::not_for_sale(Self::name_of(order, product.as_deref()));
                self.fail(order, &reason, "product not for sale").await
            }
            Ok(Reservation::Released) => self.fail(order, domain::RESERVE_FAILED, "reservation already released").await,
            Err(error @ PortError::Transient(_)) => Ok(Self::stalled(order, &error)),
            Err(error) => {
                tracing::error!(order_id = %order.id, %error, "reserving stock failed");
                self.fail(order, domain::RESERVE_FAILED, "reserve failed").await
            }
        }
    }

    async fn pay(&self, order: &mut Order) -> Result<Next, Error> {
        let request = PaymentRequest {
            order_id: order.id.clone(),
            customer_id: order.customer_id.clone(),
            amount: order.total.clone(),
            tax_minor: order.tax.as_ref().map_or(0, tax::OrderTax::amount_minor),
            payment_method: order.payment_method.clone(),
            idempotency_key: domain::payment_key(&order.id),
        };
        let ports = &self.inner.ports;
        match self.call("pay", &order.id, || ports.pay(&request)).await {
            Ok(payment) if payment.captured => {
                let change =
                    Change { payment_id: Some(payment.payment_id), ..Change::to(Status::Pending, Step::Commit) };
                self.advance(order, change, None, "payment captured").await
            }
            Ok(payment) => {
                let reason = if payment.failure_reason.trim().is_empty() {
                    domain::PAYMENT_DECLINED.to_owned()
                } else {
                    payment.failure_reason
                };
                let change = Change {
                    payment_id: Some(payment.payment_id),
                    failure_reason: Some(reason),
                    ..Change::to(Status::Pending, Step::Release)
                };
                self.advance(order, change, None, "payment failed").await
            }
            Err(error @ PortError::Transient(_)) => Ok(Self::stalled(order, &error)),
            Err(error) => {
                tracing::error!(order_id = %order.id, %error, "payment refused");
                let change = Change {
                    failure_reason: Some(domain::PAYMENT_ERROR.to_owned()),
                    ..Change::to(Status::Pending, Step::Release)
                };
                self.advance(order, change, None, "payment refused").await
            }
        }
    }

    async fn commit(&self, order: &mut Order) -> Result<Next, Error> {
        let ports = &self.inner.ports;
        match self.call("commit", &order.id, || ports.commit(&order.id)).await {
            Ok(Commit::Committed) => {
                // The stock is sold: nothing stops the order now but a crash, after which this step runs again
                // and finds the invoice issued. Its number goes into order.confirmed, for the mail.
                let invoice_number = self.inner.store.issue_invoice(&order.id, now_micros()).await?;
                let event = events::confirmed(order, &invoice_number);
                let next =
                    self.advance(order, Change::to(Status::Confirmed, Step::Done), Some(event), "stock sold").await?;
                if matches!(next, Next::Continue) && order.from_cart {
                    // Best effort: the cart also empties itself on order.confirmed.
                    if let Err(error) =
                        self.call("clear_cart", &order.id, || ports.clear_cart(&order.customer_id)).await
                    {
                        tracing::warn!(order_id = %order.id, %error, "clearing the cart failed");
                    }
                }
                Ok(next)
            }
            Err(error @ PortError::Transient(_)) => Ok(Self::stalled(order, &error)),
            refused => {
                if let Err(error) = refused {
                    tracing::error!(order_id = %order.id, %error, "committing stock failed");
                }
                let change = Change {
                    failure_reason: Some(domain::COMMIT_FAILED.to_owned()),
                    ..Change::to(Status::Pending, Step::Refund)
                };
                self.advance(order, change, None, "stock could not be sold").await
            }
        }
    }

    /// Records on the order that its payment has been given back in full (a refund of the rest just answered), so
    /// the answer shows it at once rather than when `payment.refunded` arrives (which then changes nothing).
    async fn refunded_in_full(&self, order: &mut Order) -> Result<(), Error> {
        let total = order.total.amount_minor;
        self.inner.store.record_refunded(&order.id, &order.payment_id, total, platform::time::now_micros()).await?;
        order.refunded_minor = order.refunded_minor.max(total);
        Ok(())
    }

    fn refund_request(order: &Order, refund_id: String, reason: &str) -> RefundRequest {
        RefundRequest { payment_id: order.payment_id.clone(), refund_id, reason: reason.to_owned(), amount: None }
    }

    async fn refund(&self, order: &mut Order) -> Result<Next, Error> {
        let request = Self::refund_request(order, domain::compensation_refund_id(&order.id), "checkout compensation");
        let ports = &self.inner.ports;
        match self.call("refund", &order.id, || ports.refund(&request)).await {
            Ok(_) => {
                self.refunded_in_full(order).await?;
                self.advance(order, Change::to(Status::Pending, Step::Release), None, "payment refunded").await
            }
            Err(error) => {
                // Money is at stake: never give up silently. The order stays here, resumed periodically, and
                // `audit` lists it once it is older than the threshold.
                tracing::error!(order_id = %order.id, %error, "refunding a compensated checkout failed");
                Ok(Next::Stop)
            }
        }
    }

    async fn release(&self, order: &mut Order) -> Result<Next, Error> {
        let ports = &self.inner.ports;
        match self.call("release", &order.id, || ports.release(&order.id)).await {
            Ok(()) => {}
            Err(error @ PortError::Transient(_)) => return Ok(Self::stalled(order, &error)),
            Err(error) => tracing::error!(order_id = %order.id, %error, "releasing stock failed; failing the order"),
        }
        let reason = if order.failure_reason.is_empty() {
            domain::RESERVE_FAILED.to_owned()
        } else {
            order.failure_reason.clone()
        };
        self.fail(order, &reason, "stock released").await
    }

    async fn cancel(&self, order: &mut Order) -> Result<Next, Error> {
        let reason = if order.cancel_reason.is_empty() { "order cancelled" } else { order.cancel_reason.as_str() };
        let ports = &self.inner.ports;
        // The shipment first: goods handed to the carrier are not refunded as if they never left.
        match self.call("cancel_shipment", &order.id, || ports.cancel_shipment(&order.id, reason)).await {
            Ok(ShipmentCancel::Cancelled) => {}
            Ok(ShipmentCancel::Dispatched) => {
                let change = Change { cancel_reason: Some(String::new()), ..Change::to(Status::Confirmed, Step::Done) };
                return self.advance(order, change, None, domain::CANCEL_REFUSED_SHIPPED).await;
            }
            Err(error @ PortError::Transient(_)) => return Ok(Self::stalled(order, &error)),
            Err(error) => {
                tracing::error!(order_id = %order.id, %error, "cancelling the shipment of a cancelled order failed");
                return Ok(Next::Stop);
            }
        }
        let request = Self::refund_request(order, domain::cancel_refund_id(&order.id), reason);
        match self.call("cancel", &order.id, || ports.refund(&request)).await {
            Ok(refunded_minor) => {
                self.refunded_in_full(order).await?;
                // What the cancellation gave back: the total, less what staff refunded before.
                let event = events::cancelled(order, refunded_minor);
                self.advance(order, Change::to(Status::Cancelled, Step::Done), Some(event), "refunded on cancel").await
            }
            Err(error) => {
                tracing::error!(order_id = %order.id, %error, "refunding a cancelled order failed");
                Ok(Next::Stop)
            }
        }
    }
}

/// Arms the saga's fail points from `FAILPOINTS` (`<name>=<actions>;...`, the `fail` crate's syntax), once per
/// process. Only in builds with the `failpoints` feature, which the crash tests of crates/mercato turn on:
/// there `FAILPOINTS=orders::pay::answered=return` aborts the process the moment the payment call answered
/// (`orders::<step>::answered`), or right after a step's move is stored (`orders::<step>::stored`) — what a
/// `kill -9` at that instant would do. Normal builds compile the points to nothing and never read the variable.
#[cfg(feature = "failpoints")]
fn arm_failpoints() {
    static ARMED: std::sync::Once = std::sync::Once::new();
    ARMED.call_once(|| {
        let Ok(spec) = std::env::var("FAILPOINTS") else { return };
        for entry in spec.split(';').map(str::trim).filter(|entry| !entry.is_empty()) {
            let armed = match entry.split_once('=') {
                Some((name, actions)) => fail::cfg(name.trim(), actions.trim()),
                None => Err("not <name>=<actions>".to_owned()),
            };
            match armed {
                Ok(()) => tracing::warn!(failpoint = entry, "fail point armed"),
                Err(error) => tracing::error!(failpoint = entry, %error, "unusable FAILPOINTS entry"),
            }
        }
    });
}

/// Counts settled orders by final status (`mercato_orders_total{status}`).
fn metrics_count(status: Status) {
    metrics::counter!("mercato_orders_total", "status" => status.as_str()).increment(1);
}
