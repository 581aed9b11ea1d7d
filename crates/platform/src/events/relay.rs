//! The outbox relay of one service: publishes unsent rows in order and marks each sent only after the bus
//! accepted it. A failed publish leaves the row (and every later one) in place and is retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{DATA_CONTENT_TYPE, EventBus, EventEnvelope};
use crate::db::Db;
use crate::with_db;

/// How often the relay looks at the outbox when nobody woke it.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Longest pause between retries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Rows read per round.
const BATCH: i64 = 100;

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: String,
    source: String,
    event_type: String,
    subject: String,
    payload: String,
    traceparent: String,
    create_time: i64,
}

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
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("service", &self.service).finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay publishing `service`'s outbox in `db` to `bus`.
    pub fn new(service: &'static str, db: Db, bus: Arc<dyn EventBus>) -> Self {
        Self { db, bus, wake: RelayHandle::default(), service }
    }

    /// The handle that wakes this relay.
    pub fn handle(&self) -> RelayHandle {
        self.wake.clone()
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
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
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.0.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Publishes unsent rows in order, oldest first; stops at the first failure so order is kept.
    pub async fn publish_pending(&self) -> Result<usize, String> {
        let rows: Vec<OutboxRow> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, source, event_type, subject, payload, traceparent, create_time FROM outbox \
                 WHERE sent_time IS NULL ORDER BY create_time, id LIMIT $1",
            )
            .bind(BATCH)
            .fetch_all(pool)
            .await
        })
        .map_err(|e| format!("reading the outbox: {e}"))?;
        let mut published = 0;
        for row in rows {
            let id = row.id.clone();
            let span = super::producer_span(&row.event_type, &row.id, &row.traceparent);
            let envelope = EventEnvelope {
                traceparent: crate::trace_context::traceparent(&span),
                id: row.id,
                source: row.source,
                r#type: row.event_type,
                subject: row.subject,
                time: Some(crate::time::timestamp(row.create_time)),
                data_content_type: DATA_CONTENT_TYPE.to_owned(),
                data: STANDARD.decode(row.payload).map_err(|e| format!("outbox row {id} is corrupt: {e}"))?,
            };
            let outcome = self.bus.publish(envelope).instrument(span.clone()).await;
            if let Err(error) = &outcome {
                span.record("otel.status_code", "error");
                span.in_scope(|| tracing::debug!(%error, "publishing failed"));
            }
            outcome.map_err(|e| e.to_string())?;
            with_db!(&self.db, pool => {
                sqlx::query("UPDATE outbox SET sent_time = $1 WHERE id = $2")
                    .bind(crate::time::now_micros())
                    .bind(&id)
                    .execute(pool)
                    .await
                    .map(|_| ())
            })
            .map_err(|e| format!("marking {id} sent: {e}"))?;
            metrics::counter!("mercato_outbox_published_total", "service" => self.service).increment(1);
            published += 1;
        }
        if let Ok(depth) = super::unsent_count(&self.db).await {
            metrics::gauge!("mercato_outbox_depth", "service" => self.service).set(depth as f64);
        }
        Ok(published)
    }
}
