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

/// The outbox row of an event: what [`enqueue`] writes, and what a PostgreSQL statement of the caller's own
/// writes with [`OutboxEntry::insert_from`] when the change and its event go in one data-modifying statement (one
/// round trip instead of BEGIN, the change, the INSERT and COMMIT).
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    /// The event's id (a version 7 UUID: ids follow creation order).
    pub id: String,
    source: String,
    event_type: &'static str,
    subject: String,
    payload: String,
    traceparent: String,
    create_time: i64,
}

/// The outbox's columns, in the order [`OutboxEntry`] binds them.
const OUTBOX_COLUMNS: &str = "id, source, event_type, subject, payload, traceparent, create_time";

impl OutboxEntry {
    /// The row of `event` from `source`, with the `traceparent` of the current span, so that publishing and
    /// consuming it continue the trace of the request that caused it.
    pub fn new(source: &str, event: &NewEvent) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            source: source.to_owned(),
            event_type: event.event_type,
            subject: event.subject.clone(),
            payload: STANDARD.encode(&event.payload),
            traceparent: crate::trace_context::current_traceparent(),
            create_time: crate::time::now_micros(),
        }
    }

    /// `INSERT INTO outbox (…) SELECT $first, …, $first+6 FROM {from}`: the row once for each row of `from` —
    /// a CTE of the change that returns one row when the change applied and none when it did not (no change, no
    /// event). Its seven values are bound by [`OutboxEntry::bind`] after the statement's first `first - 1`.
    pub fn insert_from(from: &str, first: usize) -> String {
        format!("INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT {} FROM {from}", crate::db::placeholders(first, 7))
    }

    /// Binds the row's seven values, in the order of [`OutboxEntry::insert_from`].
    pub fn bind<'q, DB>(self, query: crate::db::Query<'q, DB>) -> crate::db::Query<'q, DB>
    where
        DB: sqlx::Database,
        String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        query
            .bind(self.id)
            .bind(self.source)
            .bind(self.event_type.to_owned())
            .bind(self.subject)
            .bind(self.payload)
            .bind(self.traceparent)
            .bind(self.create_time)
    }
}

/// `INSERT INTO outbox (…) SELECT * FROM unnest($first::text[], …)` (PostgreSQL): the rows of several events in
/// one statement (a CTE of the caller's), as seven arrays bound by [`bind_outbox_entries`] after the statement's
/// first `first - 1` values.
pub fn insert_outbox_entries(first: usize) -> String {
    let types = ["text", "text", "text", "text", "text", "text", "bigint"];
    let arrays: Vec<String> = types.iter().enumerate().map(|(n, t)| format!("${}::{t}[]", first + n)).collect();
    format!("INSERT INTO outbox ({OUTBOX_COLUMNS}) SELECT * FROM unnest({})", arrays.join(", "))
}

/// Binds `entries` as the seven arrays of [`insert_outbox_entries`], a column each.
pub fn bind_outbox_entries<'q>(
    query: crate::db::Query<'q, sqlx::Postgres>,
    entries: Vec<OutboxEntry>,
) -> crate::db::Query<'q, sqlx::Postgres> {
    let mut columns: [Vec<String>; 6] = Default::default();
    let mut create_times = Vec::with_capacity(entries.len());
    for e in entries {
        let values = [e.id, e.source, e.event_type.to_owned(), e.subject, e.payload, e.traceparent];
        for (column, value) in columns.iter_mut().zip(values) {
            column.push(value);
        }
        create_times.push(e.create_time);
    }
    let mut query = query;
    for column in columns {
        query = query.bind(column);
    }
    query.bind(create_times)
}

/// Writes `event` into the outbox through `executor` — the transaction of the state change it reports, so
/// that both commit or neither does — with the `traceparent` of the current span, so that publishing and
/// consuming it continue the trace of the request that caused it. Returns the event id.
pub async fn enqueue<'e, E, DB>(executor: E, source: &str, event: &NewEvent) -> Result<String, sqlx::Error>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let entry = OutboxEntry::new(source, event);
    let id = entry.id.clone();
    entry.bind(sqlx::query(ENQUEUE_SQL.as_str())).execute(executor).await?;
    Ok(id)
}

static ENQUEUE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("INSERT INTO outbox ({OUTBOX_COLUMNS}) VALUES ({})", crate::db::values_for(OUTBOX_COLUMNS))
});

/// How many outbox rows wait to be published.
pub async fn unsent_count(db: &Db) -> Result<i64, sqlx::Error> {
    with_db!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_time IS NULL").fetch_one(pool).await)
}
