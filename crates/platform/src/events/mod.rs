//! Events between services: the transactional outbox (a state change and its events are written in one
//! local transaction), a relay that publishes outbox rows to the bus and marks them sent only after the bus
//! accepted them, the in-process bus of the embedded mode, and the inbox that makes consumers' effects
//! exactly-once under at-least-once delivery.
//!
//! A service that publishes adds the `outbox` table to its migrations, a service that consumes the `inbox`
//! table (see [`OUTBOX_TABLE_SQL`] and [`INBOX_TABLE_SQL`] for the portable DDL).

mod amqp;
mod bus;
mod inbox;
mod outbox;
mod relay;

pub use amqp::{AmqpBus, AmqpError, AmqpOptions};
pub use api::mercato::events::v1::EventEnvelope;
pub use bus::{BusError, EventBus, GatedBus, Handler, InProcessBus};
pub use inbox::first_delivery;
pub use outbox::{NewEvent, enqueue, unsent_count};
pub use relay::{Relay, RelayHandle};

/// The `outbox` table every publishing service creates in a migration of its own (portable SQL).
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
CREATE INDEX outbox_unsent ON outbox (sent_time, create_time, id);";

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
