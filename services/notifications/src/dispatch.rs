//! The dispatcher: picks PENDING notifications whose time has come, sends each through its channel, and
//! stores the outcome — SENT (publishing `notification.sent`), LOGGED, or the next attempt after an
//! exponential backoff, until the last attempt fails and the notification is FAILED (publishing
//! `notification.failed`).
//!
//! Claims are leases (see [`Store::claim_due`]): replicas never pick the same rows, and rows of a process
//! that died mid-send are tried again once the lease ends. Delivery is therefore at least once.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use platform::events::{BatchRecorder, GroupCommit, RelayHandle};
use platform::time::now_micros;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::channels::{Delivered, Mailer, OutgoingEmail, SendError, Webhooks};
use crate::domain::{self, AfterFailure, Channel, ListUnsubscribe};
use crate::store::{Due, Finished, Outcome, Store};

/// Notifications claimed per round.
const BATCH: i64 = 32;
/// Attempts in flight at once.
const CONCURRENCY: usize = 8;
/// How long a claim keeps others away: longer than any attempt can take (SMTP's own timeout is 30 s).
const LEASE: Duration = Duration::from_secs(120);

/// How the dispatcher retries and paces itself.
#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// The wait after the first failed attempt; doubled after each further one.
    pub backoff_base: Duration,
    /// Attempts before a notification is FAILED.
    pub max_attempts: u32,
    /// Longest pause between two looks at the queue when nothing wakes the dispatcher.
    pub poll_interval: Duration,
    /// Longest a webhook endpoint may take to answer.
    pub webhook_timeout: Duration,
    /// Whether webhooks may go to loopback, private and link-local addresses (tests, a private deployment);
    /// off by default, so an endpoint URL cannot reach inside the network (server-side request forgery).
    pub allow_private_networks: bool,
    /// The mailbox told of every new support ticket (`MERCATO_SUPPORT_EMAIL`); `ticket.created` is SKIPPED
    /// without one.
    pub support_inbox: Option<String>,
    /// The shop's web front (`MERCATO_STOREFRONT_URL`): mails carrying a token link to its pages.
    pub storefront_url: Option<String>,
    /// The gateway as mail recipients reach it (`MERCATO_PUBLIC_API_URL`): newsletters offer a one-click
    /// unsubscribe through it.
    pub public_api_url: Option<String>,
    /// Where customers send returns (`MERCATO_RETURN_ADDRESS`), line by line: the approval mail shows it.
    pub return_address: Vec<String>,
    /// How long the delivery log keeps a notification that is done with (sent, logged, skipped or failed) after
    /// it was made (`MERCATO_NOTIFICATION_RETENTION_DAYS`): long enough to answer "did the customer get the
    /// mail?", and no longer, since each holds an address and a mail's text; `None`: for ever. PENDING ones
    /// stay until they end.
    pub retention: Option<Duration>,
}

impl Default for DispatchOptions {
    /// One minute doubling over six attempts (the last about half an hour after the first), polled every
    /// second, webhooks answering within 10 s, public addresses only.
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(60),
            max_attempts: 6,
            poll_interval: Duration::from_secs(1),
            webhook_timeout: Duration::from_secs(10),
            allow_private_networks: false,
            support_inbox: None,
            storefront_url: None,
            public_api_url: None,
            return_address: Vec::new(),
            retention: Some(Duration::from_secs(platform::config::DEFAULT_NOTIFICATION_RETENTION_DAYS * 24 * 3600)),
        }
    }
}

/// Outcomes stored at most per transaction (or statement, when they end alike).
const MAX_OUTCOMES: usize = 64;

/// The dispatcher of one process.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    store: Store,
    mailer: Mailer,
    webhooks: Webhooks,
    options: DispatchOptions,
    wake: Arc<Notify>,
    relay: RelayHandle,
    outcomes: GroupCommit<Finished, bool>,
}

/// Stores the outcomes of attempts that end together in one go ([`Store::finish_attempts`]).
struct Outcomes(Store);

impl BatchRecorder for Outcomes {
    type Item = Finished;
    type Outcome = bool;
    type Error = crate::Error;

    async fn record_batch(&self, finished: &[Finished]) -> Result<Vec<bool>, crate::Error> {
        self.0.finish_attempts(finished, now_micros()).await
    }
}

impl Dispatcher {
    /// A dispatcher over `store`, woken through `wake`, waking `relay` after it wrote events. Must be called
    /// inside a Tokio runtime: it starts the task that stores outcomes.
    pub fn new(
        store: Store,
        mailer: Mailer,
        webhooks: Webhooks,
        options: DispatchOptions,
        wake: Arc<Notify>,
        relay: RelayHandle,
    ) -> Self {
        let outcomes = GroupCommit::start(Outcomes(store.clone()), MAX_OUTCOMES);
        Self { store, mailer, webhooks, options, wake, relay, outcomes }
    }

    /// Runs until `shutdown` is cancelled; attempts in flight then stop where they are (their lease makes
    /// them due again later).
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let claimed = tokio::select! {
                () = shutdown.cancelled() => return,
                claimed = self.round() => claimed,
            };
            if claimed == Some(BATCH as usize) {
                continue;
            }
            let pause = self.pause().await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Until the next notification is due, at most the poll interval.
    async fn pause(&self) -> Duration {
        let poll = self.options.poll_interval;
        match self.store.next_due().await {
            Ok(Some(due)) => {
                let wait = u64::try_from(due.saturating_sub(now_micros())).unwrap_or(0);
                Duration::from_micros(wait).min(poll)
            }
            _ => poll,
        }
    }

    /// Claims and attempts one batch; `None` when the claim failed.
    async fn round(&self) -> Option<usize> {
        let now = now_micros();
        let lease_until = now.saturating_add(i64::try_from(LEASE.as_micros()).unwrap_or(i64::MAX));
        let due = match self.store.claim_due(now, lease_until, BATCH).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "claiming due notifications failed");
                return None;
            }
        };
        let claimed = due.len();
        futures::stream::iter(due).for_each_concurrent(CONCURRENCY, |due| async move { self.attempt(due).await }).await;
        Some(claimed)
    }

    /// One attempt at `due`, its outcome stored.
    async fn attempt(&self, due: Due) {
        let sent = match Channel::parse(&due.channel) {
            Some(Channel::Email) => {
                let list_unsubscribe = (!due.list_unsubscribe.is_empty()).then(|| ListUnsubscribe {
                    url: due.list_unsubscribe.clone(),
                    one_click: due.list_unsubscribe_one_click != 0,
                });
                let email = OutgoingEmail {
                    id: &due.id,
                    to: &due.recipient,
                    subject: &due.subject,
                    text: &due.body_text,
                    html: &due.body_html,
                    newsletter: due.event_type == domain::NEWSLETTER_ISSUED,
                    list_unsubscribe: list_unsubscribe.as_ref(),
                    // Answers to a mail from a no-reply sender reach the shop's support inbox, if it has one;
                    // the mails to the inbox itself (new tickets, low stock) need no such pointer.
                    reply_to: self
                        .options
                        .support_inbox
                        .as_deref()
                        .filter(|_| !domain::TO_THE_SHOP.contains(&due.event_type.as_str())),
                };
                self.mailer.send(email).await.map(Some)
            }
            Some(Channel::Webhook) => self.post_webhook(&due).await,
            None => Err(SendError { message: format!("unknown channel {}", due.channel), permanent: true }),
        };
        let attempts = due.attempts.saturating_add(1);
        let (outcome, event) = match sent {
            Ok(Some(Delivered::Sent)) => (Outcome::Sent, Some(crate::events::sent(&due, attempts))),
            Ok(Some(Delivered::Logged)) => (Outcome::Logged, None),
            Ok(None) => (Outcome::Skipped("the webhook endpoint was deleted".to_owned()), None),
            Err(error) => {
                let tried = u32::try_from(attempts).unwrap_or(u32::MAX);
                match domain::after_failure(
                    self.options.backoff_base,
                    tried,
                    self.options.max_attempts,
                    error.permanent,
                ) {
                    AfterFailure::RetryIn(wait) => {
                        let at = now_micros().saturating_add(i64::try_from(wait.as_micros()).unwrap_or(i64::MAX));
                        tracing::info!(notification_id = %due.id, attempts, error = %error.message, retry_in_ms = wait.as_millis() as u64, "delivery failed, will retry");
                        (Outcome::Retry { error: error.message, at }, None)
                    }
                    AfterFailure::GiveUp => {
                        tracing::warn!(notification_id = %due.id, attempts, error = %error.message, "delivery failed for good");
                        let event = crate::events::failed(&due, attempts, &error.message);
                        (Outcome::Failed(error.message), Some(event))
                    }
                }
            }
        };
        let publishes = event.is_some();
        // Stored with the outcomes of the attempts that end meanwhile (a group commit).
        match self.outcomes.record(Finished { id: due.id.clone(), outcome, event }).await {
            Ok(true) if publishes => self.relay.wake(),
            Ok(_) => {}
            // The lease runs out and the notification is tried again: at least once, never lost.
            Err(error) => tracing::error!(notification_id = %due.id, %error, "storing a delivery outcome failed"),
        }
    }

    /// POSTs a webhook delivery; `Ok(None)` when its endpoint no longer exists.
    async fn post_webhook(&self, due: &Due) -> Result<Option<Delivered>, SendError> {
        let secret = self
            .store
            .endpoint_secret(&due.endpoint_id)
            .await
            .map_err(|e| SendError { message: format!("reading the endpoint: {e}"), permanent: false })?;
        let Some(secret) = secret else { return Ok(None) };
        self.webhooks.post(&due.recipient, &secret, &due.payload, platform::time::now_secs()).await?;
        Ok(Some(Delivered::Sent))
    }
}
