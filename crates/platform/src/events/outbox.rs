//! Writing events into the outbox, inside the caller's transaction.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::Message;

use crate::db::Db;
use crate::with_db;

/// An event to publish: its type, subject and payload message.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Event type from the catalog in `proto/mercato/events/v1/envelope.proto`, e.g. `user.registered`.
    pub event_type: &'static str,
    /// The aggregate it is about (events of one subject are delivered in order).
    pub subject: String,
    /// The encoded payload message.
    pub payload: Vec<u8>,
}

impl NewEvent {
    /// An event of `event_type` about `subject` carrying `message`.
    pub fn new(event_type: &'static str, subject: impl Into<String>, message: &impl Message) -> Self {
        Self { event_type, subject: subject.into(), payload: message.encode_to_vec() }
    }
}

/// Writes `event` into the outbox through `executor` — the transaction of the state change it reports, so
/// that both commit or neither does — with the `traceparent` of the current span, so that publishing and
/// consuming it continue the trace of the request that caused it. Returns the event id.
pub async fn enqueue<'e, E, DB>(executor: E, source: &str, event: &NewEvent) -> Result<String, sqlx::Error>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO outbox (id, source, event_type, subject, payload, traceparent, create_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id.clone())
    .bind(source.to_owned())
    .bind(event.event_type.to_owned())
    .bind(event.subject.clone())
    .bind(STANDARD.encode(&event.payload))
    .bind(crate::trace_context::current_traceparent())
    .bind(crate::time::now_micros())
    .execute(executor)
    .await?;
    Ok(id)
}

/// How many outbox rows wait to be published.
pub async fn unsent_count(db: &Db) -> Result<i64, sqlx::Error> {
    with_db!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_time IS NULL").fetch_one(pool).await)
}
