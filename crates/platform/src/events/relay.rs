//! The outbox relay of one service: publishes unsent rows in order, a batch at a time, and marks each sent
//! only after the bus accepted it. A failed publish leaves the row (and every later one of the batch) in
//! place and is retried with backoff. Of several replicas' relays on one PostgreSQL outbox, one publishes at a
//! time (see [`super::claim`]).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::FutureExt;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use super::claim::{self, Leadership, OutboxRow};
use super::{DATA_CONTENT_TYPE, EventBus, EventEnvelope};
use crate::db::Db;

/// How often the relay looks at the outbox when nobody woke it.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long a woken relay waits for more commits before it reads the outbox, as Kafka's producers linger: under
/// load a round then takes several commits' events, and each consumer a larger batch, for a few milliseconds more
/// between a commit and its delivery.
const LINGER: Duration = Duration::from_millis(5);
/// Longest pause between retries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Rows read per round.
const BATCH: i64 = 100;
/// How long a sent event stays in its outbox, for operators looking into what a service published, before the
/// relay deletes it: without a limit every outbox would grow with every event ever written.
pub const SENT_EVENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the relay deletes the sent events past their retention (and once when it starts).
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// Rows deleted per statement of a purge, so that no statement holds many row locks or runs long. A running
/// relay deletes one batch between two publishing rounds, and the next batch in the round after when this one was
/// full: a large backlog of old rows (the first purge of an outbox that was never purged) does not hold up
/// publishing.
const PURGE_BATCH: i64 = 1000;

/// Wakes the relay right after a commit that wrote events, so delivery does not wait for the next poll.
#[derive(Debug, Clone, Default)]
pub struct RelayHandle(Arc<Notify>);

impl RelayHandle {
    /// Asks the relay to look at the outbox now.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// The relay of one service's outbox.
pub struct Relay {
    db: Db,
    bus: Arc<dyn EventBus>,
    wake: RelayHandle,
    service: &'static str,
    /// Whether this relay leads a PostgreSQL outbox (unused on SQLite).
    leadership: Mutex<Leadership>,
    /// How long sent events are kept.
    retention: Duration,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("service", &self.service).finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay publishing `service`'s outbox in `db` to `bus`.
    pub fn new(service: &'static str, db: Db, bus: Arc<dyn EventBus>) -> Self {
        Self {
            db,
            bus,
            wake: RelayHandle::default(),
            service,
            leadership: Mutex::default(),
            retention: SENT_EVENT_RETENTION,
        }
    }

    /// Keeps sent events for `retention` instead of [`SENT_EVENT_RETENTION`].
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The handle that wakes this relay.
    pub fn handle(&self) -> RelayHandle {
        self.wake.clone()
    }

    /// Runs until `shutdown` is cancelled, then steps down, so that another replica's relay leads at once.
    pub async fn run(self, shutdown: CancellationToken) {
        self.serve(&shutdown).await;
        self.leadership.lock().await.step_down().await;
    }

    async fn serve(&self, shutdown: &CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut next_purge = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_purge {
                let purged = tokio::select! {
                    () = shutdown.cancelled() => return,
                    purged = self.purge_batch() => purged,
                };
                let wait = match purged {
                    Ok(deleted) if deleted >= PURGE_BATCH as u64 => Duration::ZERO,
                    Ok(_) => PURGE_INTERVAL,
                    Err(error) => {
                        tracing::warn!(service = self.service, %error, "deleting sent events past their retention failed");
                        PURGE_INTERVAL
                    }
                };
                next_purge = tokio::time::Instant::now() + wait;
            }
            // A wake that came before this round is served by it: the round reads the outbox after the wake, and
            // a commit comes before its wake. Dropping it spares the round after this one, which would find
            // nothing (under load most wakes land while a round runs). Wakes during the round still count.
            let _ = self.wake.0.notified().now_or_never();
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.publish_pending() => outcome,
            };
            let pause = match outcome {
                Ok(published) => {
                    backoff = Duration::from_millis(100);
                    if published as i64 == BATCH {
                        continue;
                    }
                    POLL_INTERVAL
                }
                Err(error) => {
                    tracing::warn!(service = self.service, %error, retry_in_ms = backoff.as_millis() as u64, "outbox relay failed");
                    let pause = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    pause
                }
            };
            let woken = tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.0.notified() => true,
                () = tokio::time::sleep(pause) => false,
            };
            if woken {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(LINGER) => {}
                }
            }
        }
    }

    /// Deletes the events sent longer than the retention ago ([`SENT_EVENT_RETENTION`] unless
    /// [`with_retention`](Self::with_retention) said otherwise), a batch at a time; returns how many. Every
    /// replica's relay may do this: it touches no row that is still to publish.
    pub async fn purge_sent(&self) -> Result<u64, String> {
        let mut purged = 0;
        loop {
            let deleted = self.purge_batch().await?;
            purged += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }

    /// Deletes at most [`PURGE_BATCH`] events sent longer than the retention ago; returns how many.
    async fn purge_batch(&self) -> Result<u64, String> {
        let retention = i64::try_from(self.retention.as_micros()).unwrap_or(i64::MAX);
        let before = crate::time::now_micros().saturating_sub(retention);
        let deleted = claim::delete_sent(&self.db, before, PURGE_BATCH)
            .await
            .map_err(|e| format!("deleting sent events: {e}"))?;
        metrics::counter!("mercato_outbox_purged_total", "service" => self.service).increment(deleted);
        Ok(deleted)
    }

    /// Publishes unsent rows in order, oldest first, as one pipelined batch, and marks the confirmed prefix
    /// sent; stops at the first failure so order is kept. On PostgreSQL only the relay that leads the outbox
    /// publishes (see [`super::claim`]): another returns 0 at once.
    pub async fn publish_pending(&self) -> Result<usize, String> {
        let (outcome, left) = match &self.db {
            Db::Sqlite(pool) => {
                let rows = claim::unsent_rows(pool, BATCH).await.map_err(|e| format!("reading the outbox: {e}"))?;
                let (published, failure, left) = self.publish_round(rows).await;
                claim::mark_sent(pool, &published).await.map_err(|e| format!("marking events sent: {e}"))?;
                (self.count(&published, failure), left)
            }
            Db::Postgres(pool) => {
                let mut leadership = self.leadership.lock().await;
                let lead = leadership.lead(pool, POLL_INTERVAL).await;
                let Some(connection) = lead.map_err(|e| format!("taking the outbox's leader lock: {e}"))? else {
                    let seen = leadership.backlog.take();
                    drop(leadership);
                    if seen.is_some() {
                        self.report_backlog(seen).await;
                    }
                    return Ok(0);
                };
                let rows = match claim::unsent_rows(&mut *connection, BATCH).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        leadership.lose();
                        return Err(format!("reading the outbox: {e}"));
                    }
                };
                let (published, failure, left) = self.publish_round(rows).await;
                if let Err(e) = claim::mark_sent(&mut *connection, &published).await {
                    leadership.lose();
                    return Err(format!("marking events sent: {e}"));
                }
                (self.count(&published, failure), left)
            }
        };
        self.report_backlog(left).await;
        outcome
    }

    /// Publishes the rows a round read; returns what [`Self::publish`] does and what is left unsent (None when
    /// the round read a full batch, which may hide more).
    async fn publish_round(&self, rows: Vec<OutboxRow>) -> (Vec<String>, Option<String>, Option<(i64, Option<i64>)>) {
        let seen: Vec<(String, i64)> = rows.iter().map(|r| (r.id.clone(), r.create_time)).collect();
        let full = seen.len() as i64 >= BATCH;
        let (published, failure) = self.publish(rows).await;
        let left = claim::left_after(seen.iter().map(|(id, t)| (id.as_str(), *t)), full, &published);
        (published, failure, left)
    }

    /// Publishes `rows` as one batch; returns the ids the bus confirmed (a prefix of `rows`) and the failure
    /// that stopped it.
    async fn publish(&self, rows: Vec<OutboxRow>) -> (Vec<String>, Option<String>) {
        if rows.is_empty() {
            return (Vec::new(), None);
        }
        let mut ids = Vec::with_capacity(rows.len());
        // Each event's producer span lasts until its confirm: they stay open while the batch is in flight.
        let mut spans = Vec::with_capacity(rows.len());
        let mut envelopes = Vec::with_capacity(rows.len());
        let mut corrupt = None;
        for row in rows {
            let span = super::producer_span(&row.event_type, &row.id, &row.traceparent);
            let data = match STANDARD.decode(&row.payload) {
                Ok(data) => data,
                Err(e) => {
                    // Publishing stops before it, so nothing of its subject overtakes it.
                    corrupt = Some(format!("outbox row {} is corrupt: {e}", row.id));
                    break;
                }
            };
            envelopes.push(EventEnvelope {
                traceparent: crate::trace_context::traceparent(&span),
                id: row.id.clone(),
                source: row.source,
                r#type: row.event_type,
                subject: row.subject,
                time: Some(crate::time::timestamp(row.create_time)),
                data_content_type: DATA_CONTENT_TYPE.to_owned(),
                data,
            });
            ids.push(row.id);
            spans.push(span);
        }
        let outcome = self.bus.publish_batch(envelopes).await;
        ids.truncate(outcome.confirmed);
        let failure = match outcome.error {
            Some(error) => {
                if let Some(span) = spans.get(outcome.confirmed) {
                    span.record("otel.status_code", "error");
                    span.in_scope(|| tracing::debug!(%error, "publishing failed"));
                }
                Some(error.to_string())
            }
            None => corrupt,
        };
        (ids, failure)
    }

    fn count(&self, published: &[String], failure: Option<String>) -> Result<usize, String> {
        metrics::counter!("mercato_outbox_published_total", "service" => self.service)
            .increment(published.len() as u64);
        match failure {
            Some(error) => Err(error),
            None => Ok(published.len()),
        }
    }

    /// Sets the depth and age gauges from what the round left (`left`, when it saw every unsent row), or else
    /// from a count (left as they were when the database does not answer).
    async fn report_backlog(&self, left: Option<(i64, Option<i64>)>) {
        let backlog = match left {
            Some(left) => left,
            None => match claim::backlog(&self.db).await {
                Ok(counted) => counted,
                Err(_) => return,
            },
        };
        let (depth, oldest) = backlog;
        let age = oldest.map_or(0.0, |created| (crate::time::now_micros() - created).max(0) as f64 / 1e6);
        metrics::gauge!("mercato_outbox_depth", "service" => self.service).set(depth as f64);
        metrics::gauge!("mercato_outbox_oldest_age_seconds", "service" => self.service).set(age);
    }
}
