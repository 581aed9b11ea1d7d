//! Events between services: the transactional outbox (a state change and its events are written in one
//! local transaction), a relay that publishes outbox rows to the bus and marks them sent only after the bus
//! accepted them, the in-process bus of the embedded mode, and the inbox that makes consumers' effects
//! exactly-once under at-least-once delivery.
//!
//! A service that publishes adds the `outbox` table to its migrations, a service that consumes the `inbox`
//! table (see [`OUTBOX_TABLE_SQL`] and [`INBOX_TABLE_SQL`] for the portable DDL).

mod amqp;
mod bus;
mod claim;
mod group_commit;
mod inbox;
mod outbox;
mod relay;

pub use amqp::{AmqpBus, AmqpError, AmqpOptions};
pub use api::mercato::events::v1::EventEnvelope;
pub use bus::{BatchOutcome, BusError, EventBus, GatedBus, Handler, InProcessBus, subscribe_with};
pub use group_commit::{BatchRecorder, GroupCommit};
pub use inbox::{HANDLED_EVENT_RETENTION, InboxPruner, first_deliveries, first_delivery};
pub use outbox::{NewEvent, OutboxEntry, bind_outbox_entries, enqueue, insert_outbox_entries, unsent_count};
pub use relay::{Relay, RelayHandle, SENT_EVENT_RETENTION};

/// The `outbox` table every publishing service creates in a migration of its own (portable SQL). The relay's
/// index holds only unsent events: marking one sent adds no index entry, and the index stays as small as the
/// backlog however many events the table keeps.
pub const OUTBOX_TABLE_SQL: &str = "\
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    event_type TEXT NOT NULL,
    subject TEXT NOT NULL,
    payload TEXT NOT NULL,
    traceparent TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    sent_time BIGINT
);
CREATE INDEX outbox_unsent ON outbox (create_time, id) WHERE sent_time IS NULL;";

/// The `inbox` table every consuming service creates in a migration of its own (portable SQL).
pub const INBOX_TABLE_SQL: &str = "\
CREATE TABLE inbox (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    handle_time BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);";

/// The content type of every envelope's data.
pub const DATA_CONTENT_TYPE: &str = "application/protobuf";

/// The producer span of publishing one event, a child of the span whose `traceparent` the outbox stored
/// (a new trace when there is none).
fn producer_span(event_type: &str, event_id: &str, traceparent: &str) -> tracing::Span {
    // An explicit root: the relay's own task has no request to belong to.
    let span = tracing::info_span!(
        parent: None,
        "event publish",
        "otel.name" = %format!("publish {event_type}"),
        "otel.kind" = "producer",
        "otel.status_code" = tracing::field::Empty,
        "messaging.operation.type" = "send",
        "messaging.destination.name" = %event_type,
        "messaging.message.id" = %event_id,
    );
    crate::trace_context::adopt_traceparent(&span, traceparent);
    span
}

/// The consumer span of `consumer` handling `envelope`, a child of the producer span named by the envelope's
/// `traceparent`.
fn consumer_span(consumer: &str, envelope: &EventEnvelope) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "event",
        consumer = %consumer,
        event_id = %envelope.id,
        event_type = %envelope.r#type,
        "otel.name" = %format!("process {}", envelope.r#type),
        "otel.kind" = "consumer",
        "otel.status_code" = tracing::field::Empty,
        "messaging.operation.type" = "process",
        "messaging.destination.name" = %envelope.r#type,
        "messaging.consumer.group.name" = %consumer,
        "messaging.message.id" = %envelope.id,
    );
    crate::trace_context::adopt_traceparent(&span, &envelope.traceparent);
    span
}

/// Runs `handler` on `envelope` inside the consumer span of `consumer`; every bus delivers through this.
async fn handle_traced(
    consumer: &str,
    handler: &Handler,
    envelope: std::sync::Arc<EventEnvelope>,
) -> Result<(), String> {
    use tracing::Instrument;
    let span = consumer_span(consumer, &envelope);
    let outcome = handler(envelope).instrument(span.clone()).await;
    if let Err(error) = &outcome {
        span.record("otel.status_code", "error");
        span.in_scope(|| tracing::debug!(%error, "handling the event failed"));
    }
    outcome
}
