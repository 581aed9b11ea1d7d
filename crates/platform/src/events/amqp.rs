//! The RabbitMQ bus of the production mode (`MERCATO_AMQP_URL`), on lapin.
//!
//! Topology (declared idempotently, names under a prefix, `mercato` in production):
//!
//! - `<prefix>.events`: durable topic exchange; every event is published there with its type as routing key.
//! - `<prefix>.<consumer>`: one durable quorum queue per consumer, bound to `<prefix>.events` once per event
//!   type it subscribed to, with a delivery limit, single active consumer (events of one subject stay in
//!   order even with several replicas) and at-least-once dead-lettering to `<prefix>.dlx` under the routing
//!   key `<consumer>`.
//! - `<prefix>.dlx`: durable direct exchange of dead letters.
//! - `<prefix>.<consumer>.dead`: durable classic queue of a consumer's dead letters (classic, so that peeking
//!   at it never counts towards a delivery limit).
//!
//! Publishing is persistent with publisher confirms: [`EventBus::publish`] returns Ok only once the broker
//! has taken responsibility for the event, which is when the relay marks the outbox row sent. Consuming is
//! at-least-once: a delivery is acknowledged after the handler returned Ok (its effect and inbox row
//! committed), a failure is returned to the queue after a short pause and dead-lettered once the queue has
//! delivered it more often than the delivery limit. Connections are re-established after an outage: the
//! publisher's lazily on the next publish, each consumer's by its own task with backoff.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{BatchOutcome, BusError, DATA_CONTENT_TYPE, EventBus, EventEnvelope, Handler};

/// How long opening a connection may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long setting up a channel (confirm mode, prefetch, declaring exchanges and queues) may take: a broker
/// that accepts connections while still starting (after a restart, quorum queues wait for their Raft
/// members) may leave such calls unanswered, and a relay or consumer must retry rather than wait forever.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a publish may wait for the broker's confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pause between a consumer's reconnection attempts.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(10);
/// Most dead letters one admin call reads.
const MAX_DEAD_LETTERS: u32 = 10_000;
/// AMQP delivery mode of messages written to disk.
const PERSISTENT: u8 = 2;

/// Settings of an [`AmqpBus`].
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    /// Prefix of every exchange and queue name: `mercato` in production, unique per run in tests.
    pub prefix: String,
    /// Deliveries a consumer may hold unacknowledged (`basic.qos`).
    pub prefetch: u16,
    /// Redeliveries after which a failing event is dead-lettered (`x-delivery-limit` of the quorum queues).
    /// Fixed when a queue is first declared: RabbitMQ refuses to redeclare a queue with other arguments.
    pub delivery_limit: u32,
    /// Pause after a handler failed before the event goes back to the queue, so that a failing consumer
    /// does not spin.
    pub retry_delay: Duration,
}

impl AmqpOptions {
    /// The defaults under `prefix`: prefetch 32, delivery limit 5, one second between attempts.
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned(), prefetch: 32, delivery_limit: 5, retry_delay: Duration::from_secs(1) }
    }

    fn exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    fn queue(&self, consumer: &str) -> String {
        format!("{}.{consumer}", self.prefix)
    }

    fn dead_queue(&self, consumer: &str) -> String {
        format!("{}.{consumer}.dead", self.prefix)
    }
}

/// Talking to RabbitMQ failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AmqpError {
    /// The queue does not exist (its consumer never subscribed), or could not be checked.
    #[error("queue {queue} does not exist")]
    NoQueue {
        /// The queue's name.
        queue: String,
    },
    /// The broker could not be reached or refused the connection.
    #[error("connecting to RabbitMQ at {url}: {source}")]
    Connect {
        /// The broker URL, without its password.
        url: String,
        /// Why.
        source: lapin::Error,
    },
    /// An operation on an open connection failed.
    #[error("RabbitMQ {what}: {source}")]
    Broker {
        /// What was being done.
        what: String,
        /// Why.
        source: lapin::Error,
    },
    /// The broker did not answer in time.
    #[error("RabbitMQ {what}: no answer within {timeout:?}")]
    Timeout {
        /// What was being done.
        what: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The broker answered but did not take the message (negative confirm, or no queue to route it to).
    #[error("RabbitMQ {what}")]
    Refused {
        /// What happened.
        what: String,
    },
}

fn broker(what: impl Into<String>) -> impl FnOnce(lapin::Error) -> AmqpError {
    let what = what.into();
    move |source| AmqpError::Broker { what, source }
}

/// `url` with its password replaced, for messages and logs.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

async fn open(url: &str, name: String) -> Result<Connection, AmqpError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(AmqpError::Connect { url: redact(url), source }),
        Err(_) => Err(AmqpError::Timeout { what: format!("connect to {}", redact(url)), timeout: CONNECT_TIMEOUT }),
    }
}

/// Runs one setup step of the broker conversation within [`SETUP_TIMEOUT`].
async fn within<T>(what: &str, step: impl Future<Output = Result<T, AmqpError>>) -> Result<T, AmqpError> {
    match tokio::time::timeout(SETUP_TIMEOUT, step).await {
        Ok(result) => result,
        Err(_) => Err(AmqpError::Timeout { what: what.to_owned(), timeout: SETUP_TIMEOUT }),
    }
}

/// Closes `connection` with `reason`, waiting for the broker's answer at most [`SETUP_TIMEOUT`]: an answer that
/// never comes (a broker restarting, a lost packet) must not hold up a shutdown or an admin call for ever. A close
/// that fails or times out leaves nothing to do: the socket goes with the connection.
async fn close(connection: &Connection, reason: &str) {
    let closing = connection.close(200, reason.into());
    if tokio::time::timeout(SETUP_TIMEOUT, closing).await.is_err() {
        tracing::warn!(reason, timeout_s = SETUP_TIMEOUT.as_secs(), "closing a broker connection timed out");
    }
}

async fn declare_exchanges(channel: &Channel, options: &AmqpOptions) -> Result<(), AmqpError> {
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    let exchange = options.exchange();
    channel
        .exchange_declare(exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
        .await
        .map_err(broker(format!("declaring exchange {exchange}")))?;
    let dlx = options.dead_letter_exchange();
    channel
        .exchange_declare(dlx.as_str().into(), ExchangeKind::Direct, durable, FieldTable::default())
        .await
        .map_err(broker(format!("declaring exchange {dlx}")))
}

/// Declares `consumer`'s queue, its bindings and its dead-letter queue (the exchanges must exist).
async fn declare_consumer(
    channel: &Channel,
    options: &AmqpOptions,
    consumer: &str,
    event_types: &[String],
) -> Result<(), AmqpError> {
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    let dead = options.dead_queue(consumer);
    channel
        .queue_declare(dead.as_str().into(), durable, FieldTable::default())
        .await
        .map_err(broker(format!("declaring queue {dead}")))?;
    channel
        .queue_bind(
            dead.as_str().into(),
            options.dead_letter_exchange().into(),
            consumer.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker(format!("binding queue {dead}")))?;

    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(options.delivery_limit)));
    arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(options.dead_letter_exchange().into()));
    arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(consumer.into()));
    // At-least-once dead-lettering (RabbitMQ 3.10+) keeps a message in its queue until the dead-letter queue
    // confirmed it; it requires the reject-publish overflow mode (there is no length limit anyway).
    arguments.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
    arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    let queue = options.queue(consumer);
    channel
        .queue_declare(queue.as_str().into(), durable, arguments)
        .await
        .map_err(broker(format!("declaring queue {queue}")))?;
    for event_type in event_types {
        channel
            .queue_bind(
                queue.as_str().into(),
                options.exchange().into(),
                event_type.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker(format!("binding queue {queue} to {event_type}")))?;
    }
    Ok(())
}

/// A consumer of this bus: its queue, and what handles each delivery.
struct Subscription {
    queue: Arc<ConsumerQueue>,
    handler: Handler,
}

/// A consumer's queue and the event types bound to it, which the publisher declares before its next publish:
/// of a subscription on this bus, or of a consumer in another process ([`AmqpBus::expect_consumer`]).
struct ConsumerQueue {
    consumer: String,
    event_types: Vec<String>,
}

impl ConsumerQueue {
    fn new(consumer: &str, event_types: &[&str]) -> Arc<Self> {
        Arc::new(Self {
            consumer: consumer.to_owned(),
            event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
        })
    }
}

/// The publishing connection, with a confirm-mode channel.
struct Publisher {
    connection: Connection,
    channel: Channel,
    /// Increases with every new connection, so a failure only discards the connection it happened on.
    generation: u64,
    /// Consumers whose queues were declared on this connection.
    declared: HashSet<String>,
}

/// The bus on RabbitMQ: a topic exchange, a quorum queue per consumer and dead-letter queues.
///
/// Dropping it (or [`AmqpBus::shutdown`]) stops its consumers; deliveries they had not acknowledged go back
/// to their queues.
pub struct AmqpBus {
    url: String,
    options: Arc<AmqpOptions>,
    runtime: tokio::runtime::Handle,
    publisher: tokio::sync::Mutex<Option<Publisher>>,
    generations: std::sync::atomic::AtomicU64,
    queues: Mutex<Vec<Arc<ConsumerQueue>>>,
    consumers: Mutex<Vec<JoinHandle<()>>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for AmqpBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBus")
            .field("url", &redact(&self.url))
            .field("prefix", &self.options.prefix)
            .finish_non_exhaustive()
    }
}

impl AmqpBus {
    /// Connects to the broker at `url` (`amqp://user:pass@host:port/vhost`) with the default
    /// [`AmqpOptions`] under `prefix` and declares the exchanges. Must run inside a Tokio runtime, which
    /// the consumers of later [`EventBus::subscribe`] calls run on.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, AmqpError> {
        Self::connect_with(url, AmqpOptions::new(prefix)).await
    }

    /// Connects with explicit options; see [`AmqpBus::connect`].
    pub async fn connect_with(url: &str, options: AmqpOptions) -> Result<Self, AmqpError> {
        let bus = Self {
            url: url.to_owned(),
            options: Arc::new(options),
            runtime: tokio::runtime::Handle::current(),
            publisher: tokio::sync::Mutex::new(None),
            generations: std::sync::atomic::AtomicU64::new(0),
            queues: Mutex::new(Vec::new()),
            consumers: Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
        };
        bus.publisher_channel().await?;
        Ok(bus)
    }

    /// Declares `consumer`'s queue, bound to `event_types`, before this bus publishes anything more, for a
    /// consumer that runs in another process: an event published before that consumer first starts then waits
    /// in its queue, where the exchange would otherwise drop it for want of a bound queue. The declaration is
    /// the one the consumer makes itself (same queue, arguments and bindings), so either may come first.
    pub fn expect_consumer(&self, consumer: &str, event_types: &[&str]) {
        self.remember_queue(ConsumerQueue::new(consumer, event_types));
    }

    /// Adds a consumer's queue to those the publisher declares (once per connection), unless it is there.
    fn remember_queue(&self, queue: Arc<ConsumerQueue>) {
        if let Ok(mut queues) = self.queues.lock()
            && !queues.iter().any(|q| q.consumer == queue.consumer)
        {
            queues.push(queue);
        }
    }

    /// The options this bus runs with.
    pub fn options(&self) -> &AmqpOptions {
        &self.options
    }

    /// Stops every consumer (their unacknowledged deliveries go back to the queues) and closes the
    /// publishing connection. Publishing afterwards reconnects; consumers do not restart.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let tasks: Vec<JoinHandle<()>> = self.consumers.lock().map(|mut c| c.drain(..).collect()).unwrap_or_default();
        for task in tasks {
            let _ = task.await;
        }
        if let Some(publisher) = self.publisher.lock().await.take() {
            close(&publisher.connection, "shutdown").await;
        }
    }

    /// The dead letters of `consumer`, oldest first (at most 10,000), left in their queue. Bodies that are
    /// not envelopes are skipped (and logged).
    pub async fn dead_letters(&self, consumer: &str) -> Result<Vec<EventEnvelope>, AmqpError> {
        let (connection, channel, count) = self.open_dead_queue(consumer).await?;
        let dead = self.options.dead_queue(consumer);
        let mut envelopes = Vec::new();
        let mut last_tag = None;
        let result = async {
            for _ in 0..count.min(MAX_DEAD_LETTERS) {
                let Some(message) = channel
                    .basic_get(dead.as_str().into(), BasicGetOptions::default())
                    .await
                    .map_err(broker(format!("reading {dead}")))?
                else {
                    break;
                };
                last_tag = Some(message.delivery.delivery_tag);
                match EventEnvelope::decode(message.delivery.data.as_slice()) {
                    Ok(envelope) => envelopes.push(envelope),
                    Err(error) => tracing::warn!(queue = %dead, %error, "a dead letter is not an event envelope"),
                }
            }
            // Everything read goes back, in its place.
            if let Some(tag) = last_tag {
                channel
                    .basic_nack(tag, BasicNackOptions { multiple: true, requeue: true })
                    .await
                    .map_err(broker(format!("returning messages to {dead}")))?;
            }
            Ok(())
        }
        .await;
        close(&connection, "done").await;
        result.map(|()| envelopes)
    }

    /// Moves the dead letters of `consumer` (those present when called, at most 10,000) back to its queue
    /// and returns how many moved. Each is published straight to the consumer's queue, not through the
    /// topic exchange, so other consumers of the same event type do not see it again; it is removed from
    /// the dead-letter queue only after the broker confirmed the copy.
    pub async fn requeue_dead_letters(&self, consumer: &str) -> Result<usize, AmqpError> {
        let (connection, channel, count) = self.open_dead_queue(consumer).await?;
        let dead = self.options.dead_queue(consumer);
        let queue = self.options.queue(consumer);
        let result = async {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(broker("enabling publisher confirms"))?;
            let mut moved = 0;
            for _ in 0..count.min(MAX_DEAD_LETTERS) {
                let Some(message) = channel
                    .basic_get(dead.as_str().into(), BasicGetOptions::default())
                    .await
                    .map_err(broker(format!("reading {dead}")))?
                else {
                    break;
                };
                let delivery = message.delivery;
                let mut properties = BasicProperties::default()
                    .with_delivery_mode(PERSISTENT)
                    .with_content_type(DATA_CONTENT_TYPE.into());
                if let Some(id) = delivery.properties.message_id() {
                    properties = properties.with_message_id(id.clone());
                }
                if let Some(kind) = delivery.properties.kind() {
                    properties = properties.with_type(kind.clone());
                }
                let confirmation = channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                        &delivery.data,
                        properties,
                    )
                    .await
                    .map_err(broker(format!("publishing to {queue}")))?;
                match confirm(confirmation, &format!("requeue to {queue}")).await? {
                    Confirmation::Ack(None) => {}
                    Confirmation::Ack(Some(_)) => {
                        return Err(AmqpError::Refused { what: format!("has no queue {queue}") });
                    }
                    _ => return Err(AmqpError::Refused { what: format!("refused a message for {queue}") }),
                }
                delivery.ack(BasicAckOptions::default()).await.map_err(broker(format!("acknowledging in {dead}")))?;
                moved += 1;
            }
            Ok(moved)
        }
        .await;
        // Closing returns whatever was read but not moved.
        close(&connection, "done").await;
        result
    }

    /// How many consumers the broker counts on `consumer`'s queue (for a single-active-consumer queue, the
    /// active one); an error when the queue does not exist yet. A consumer attaches only after its queue is
    /// declared and bound, so from a count of one on, events published are routed to it.
    pub async fn consumer_count(&self, consumer: &str) -> Result<u32, AmqpError> {
        let (connection, _, queue) =
            self.open_queue(self.options.queue(consumer), "checking a consumer's queue").await?;
        close(&connection, "done").await;
        Ok(queue.consumer_count())
    }

    /// How many events wait in `consumer`'s queue, not yet delivered; an error when the queue does not exist yet.
    pub async fn queued(&self, consumer: &str) -> Result<u32, AmqpError> {
        let (connection, _, queue) =
            self.open_queue(self.options.queue(consumer), "counting a consumer's queue").await?;
        close(&connection, "done").await;
        Ok(queue.message_count())
    }

    /// Opens a connection for an admin call and declares `consumer`'s dead-letter queue; returns how many
    /// messages it holds.
    async fn open_dead_queue(&self, consumer: &str) -> Result<(Connection, Channel, u32), AmqpError> {
        let (connection, channel, queue) =
            self.open_queue(self.options.dead_queue(consumer), "opening a dead-letter queue").await?;
        Ok((connection, channel, queue.message_count()))
    }

    /// Opens a connection for an admin call and declares `queue` passively (an admin's typo must not create a
    /// queue; every consumer declared its own at subscribe), the exchanges too, for requeueing.
    async fn open_queue(&self, queue: String, what: &str) -> Result<(Connection, Channel, lapin::Queue), AmqpError> {
        let connection = open(&self.url, format!("{} admin", self.options.prefix)).await?;
        let result = within(what, async {
            let channel = connection.create_channel().await.map_err(broker("opening a channel"))?;
            declare_exchanges(&channel, &self.options).await?;
            let passive = QueueDeclareOptions { passive: true, durable: true, ..QueueDeclareOptions::default() };
            let declared = channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
                .map_err(|_| AmqpError::NoQueue { queue: queue.clone() })?;
            Ok((channel, declared))
        })
        .await;
        match result {
            Ok((channel, declared)) => Ok((connection, channel, declared)),
            Err(error) => {
                close(&connection, "failed").await;
                Err(error)
            }
        }
    }

    /// The channel to publish on, connecting first when there is none (or it broke), and declaring the
    /// queues of consumers subscribed since, so no event published after `subscribe` returned is lost.
    async fn publisher_channel(&self) -> Result<(Channel, u64), AmqpError> {
        let mut guard = self.publisher.lock().await;
        if guard.as_ref().is_some_and(|p| !p.channel.status().connected() || !p.connection.status().connected()) {
            *guard = None;
        }
        let publisher = match guard.as_mut() {
            Some(publisher) => publisher,
            None => {
                let connection = open(&self.url, format!("{} publisher", self.options.prefix)).await?;
                let channel = within("setting up the publishing channel", async {
                    let channel = connection.create_channel().await.map_err(broker("opening a channel"))?;
                    channel
                        .confirm_select(ConfirmSelectOptions::default())
                        .await
                        .map_err(broker("enabling publisher confirms"))?;
                    declare_exchanges(&channel, &self.options).await?;
                    Ok::<_, AmqpError>(channel)
                })
                .await;
                let channel = match channel {
                    Ok(channel) => channel,
                    Err(error) => {
                        close(&connection, "failed").await;
                        return Err(error);
                    }
                };
                let generation = self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                guard.insert(Publisher { connection, channel, generation, declared: HashSet::new() })
            }
        };
        let pending: Vec<Arc<ConsumerQueue>> = self
            .queues
            .lock()
            .map(|queues| queues.iter().filter(|q| !publisher.declared.contains(&q.consumer)).cloned().collect())
            .unwrap_or_default();
        for queue in pending {
            let declared = within(
                &format!("declaring the queues of {}", queue.consumer),
                declare_consumer(&publisher.channel, &self.options, &queue.consumer, &queue.event_types),
            )
            .await;
            if let Err(error) = declared {
                // The channel may be wedged: the next publish starts over on a new connection.
                if let Some(publisher) = guard.take() {
                    close(&publisher.connection, "failed").await;
                }
                return Err(error);
            }
            publisher.declared.insert(queue.consumer.clone());
        }
        Ok((publisher.channel.clone(), publisher.generation))
    }

    /// Forgets the publishing connection of `generation` after a failure on it; the next publish reconnects.
    async fn discard_publisher(&self, generation: u64) {
        let mut guard = self.publisher.lock().await;
        if guard.as_ref().is_some_and(|p| p.generation == generation)
            && let Some(publisher) = guard.take()
        {
            close(&publisher.connection, "failed").await;
        }
    }

    /// Publishes `envelopes` in order on the one confirm-mode channel, then awaits their confirms in order:
    /// one round trip for the batch instead of one per event. Returns how many, from the start, the broker
    /// confirmed, and the first failure. The broker handles a channel's messages in order, so consumers see
    /// them in publish order; a failure leaves the unconfirmed rest for the relay to publish again (the
    /// broker may hold some of them already: consumers' inboxes absorb such duplicates).
    async fn publish_all(&self, envelopes: &[EventEnvelope]) -> (usize, Option<AmqpError>) {
        let (channel, generation) = match self.publisher_channel().await {
            Ok(publisher) => publisher,
            Err(error) => return (0, Some(error)),
        };
        let mut failure = None;
        let mut confirms = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let properties = BasicProperties::default()
                .with_delivery_mode(PERSISTENT)
                .with_content_type(DATA_CONTENT_TYPE.into())
                .with_message_id(envelope.id.as_str().into())
                .with_type(envelope.r#type.as_str().into());
            let published = channel
                .basic_publish(
                    self.options.exchange().into(),
                    envelope.r#type.as_str().into(),
                    BasicPublishOptions::default(),
                    &envelope.encode_to_vec(),
                    properties,
                )
                .await;
            match published {
                Ok(confirmation) => confirms.push(confirmation),
                Err(source) => {
                    failure = Some(AmqpError::Broker { what: format!("publishing event {}", envelope.id), source });
                    break;
                }
            }
        }
        let mut confirmed = 0;
        for (envelope, confirmation) in envelopes.iter().zip(confirms) {
            let outcome = match confirm(confirmation, &format!("confirm of event {}", envelope.id)).await {
                Ok(Confirmation::Ack(_)) => Ok(()),
                Ok(Confirmation::Nack(_)) => {
                    Err(AmqpError::Refused { what: format!("refused event {} (negative confirm)", envelope.id) })
                }
                Ok(Confirmation::NotRequested) => {
                    Err(AmqpError::Refused { what: "did not confirm (confirms not enabled)".to_owned() })
                }
                Err(error) => Err(error),
            };
            if let Err(error) = outcome {
                // The earliest failure is the one to report; later confirms no longer matter.
                failure = Some(error);
                break;
            }
            confirmed += 1;
        }
        if let Some(AmqpError::Broker { .. } | AmqpError::Timeout { .. }) = &failure {
            self.discard_publisher(generation).await;
        }
        (confirmed, failure)
    }
}

async fn confirm(confirmation: lapin::PublisherConfirm, what: &str) -> Result<Confirmation, AmqpError> {
    match tokio::time::timeout(CONFIRM_TIMEOUT, confirmation).await {
        Ok(result) => result.map_err(broker(what)),
        Err(_) => Err(AmqpError::Timeout { what: what.to_owned(), timeout: CONFIRM_TIMEOUT }),
    }
}

impl Drop for AmqpBus {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl EventBus for AmqpBus {
    fn publish(&self, envelope: EventEnvelope) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            match self.publish_all(std::slice::from_ref(&envelope)).await {
                (_, Some(error)) => Err(BusError::Broker(error.to_string())),
                (_, None) => Ok(()),
            }
        })
    }

    fn publish_batch(&self, envelopes: Vec<EventEnvelope>) -> BoxFuture<'_, BatchOutcome> {
        Box::pin(async move {
            let (confirmed, error) = self.publish_all(&envelopes).await;
            BatchOutcome { confirmed, error: error.map(|e| BusError::Broker(e.to_string())) }
        })
    }

    /// Declares `consumer`'s queue before the next publish and starts consuming it in a task that
    /// reconnects after outages.
    fn subscribe(&self, consumer: &str, event_types: &[&str], handler: Handler) {
        let queue = ConsumerQueue::new(consumer, event_types);
        self.remember_queue(queue.clone());
        let subscription = Arc::new(Subscription { queue, handler });
        let task = self.runtime.spawn(consume(self.url.clone(), self.options.clone(), subscription, self.stop.clone()));
        if let Ok(mut consumers) = self.consumers.lock() {
            consumers.push(task);
        }
    }

    fn dead_letters(&self, consumer: &str) -> BoxFuture<'_, Result<Vec<EventEnvelope>, BusError>> {
        let consumer = consumer.to_owned();
        Box::pin(async move { AmqpBus::dead_letters(self, &consumer).await.map_err(|e| admin_error(&consumer, e)) })
    }

    fn requeue_dead_letters(&self, consumer: &str) -> BoxFuture<'_, Result<usize, BusError>> {
        let consumer = consumer.to_owned();
        Box::pin(
            async move { AmqpBus::requeue_dead_letters(self, &consumer).await.map_err(|e| admin_error(&consumer, e)) },
        )
    }
}

/// An admin call's failure as the bus reports it: a missing queue means the consumer is unknown.
fn admin_error(consumer: &str, error: AmqpError) -> BusError {
    match error {
        AmqpError::NoQueue { .. } => BusError::UnknownConsumer(consumer.to_owned()),
        other => BusError::Broker(other.to_string()),
    }
}

/// A consumer's task: consumes its queue until `stop`, reconnecting with backoff after failures.
async fn consume(url: String, options: Arc<AmqpOptions>, subscription: Arc<Subscription>, stop: CancellationToken) {
    let initial = Duration::from_millis(100);
    let mut backoff = initial;
    loop {
        let mut connected = false;
        match consume_once(&url, &options, &subscription, &stop, &mut connected).await {
            Ok(()) => return,
            Err(error) => {
                if connected {
                    backoff = initial;
                }
                tracing::warn!(consumer = %subscription.queue.consumer, %error, retry_in_ms = backoff.as_millis() as u64, "event consumer lost the broker");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
    }
}

/// One connection's worth of consuming: Ok when stopped, Err when the connection or channel failed.
async fn consume_once(
    url: &str,
    options: &AmqpOptions,
    subscription: &Subscription,
    stop: &CancellationToken,
    connected: &mut bool,
) -> Result<(), AmqpError> {
    let consumer = subscription.queue.consumer.as_str();
    let connection = open(url, format!("{} consumer {consumer}", options.prefix)).await?;
    let result = async {
        let queue = options.queue(consumer);
        let (_channel, mut deliveries) = within(&format!("setting up the consumer of {queue}"), async {
            let channel = connection.create_channel().await.map_err(broker("opening a channel"))?;
            channel
                .basic_qos(options.prefetch, BasicQosOptions::default())
                .await
                .map_err(broker("setting prefetch"))?;
            declare_exchanges(&channel, options).await?;
            declare_consumer(&channel, options, consumer, &subscription.queue.event_types).await?;
            let tag = format!("{consumer}-{}", uuid::Uuid::now_v7().simple());
            let deliveries = channel
                .basic_consume(queue.as_str().into(), tag.into(), BasicConsumeOptions::default(), FieldTable::default())
                .await
                .map_err(broker(format!("consuming {queue}")))?;
            Ok((channel, deliveries))
        })
        .await?;
        *connected = true;
        tracing::debug!(consumer, queue = %queue, "event consumer started");
        loop {
            let delivery = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                next = deliveries.next() => next,
            };
            let delivery = match delivery {
                Some(Ok(delivery)) => delivery,
                Some(Err(source)) => return Err(AmqpError::Broker { what: format!("consuming {queue}"), source }),
                None => {
                    return Err(AmqpError::Refused { what: format!("cancelled the consumer of {queue}") });
                }
            };
            tokio::select! {
                // Dropping the handler leaves the delivery unacknowledged: closing the connection returns it.
                () = stop.cancelled() => return Ok(()),
                handled = handle(options, subscription, delivery) => handled?,
            }
        }
    }
    .await;
    close(&connection, "consumer stopped").await;
    result
}

/// How often the queue delivered this message before (the quorum queue's `x-delivery-count` header).
fn delivery_count(properties: &BasicProperties) -> i64 {
    let value = properties.headers().as_ref().and_then(|h| h.inner().get("x-delivery-count").cloned());
    match value {
        Some(AMQPValue::LongLongInt(n)) => n,
        Some(AMQPValue::LongInt(n)) => i64::from(n),
        Some(AMQPValue::LongUInt(n)) => i64::from(n),
        Some(AMQPValue::ShortInt(n)) => i64::from(n),
        Some(AMQPValue::ShortUInt(n)) => i64::from(n),
        Some(AMQPValue::ShortShortInt(n)) => i64::from(n),
        Some(AMQPValue::ShortShortUInt(n)) => i64::from(n),
        _ => 0,
    }
}

/// Counts a dead letter of `consumer` under the labels the alerts and dashboards group by: `service` (a
/// consumer is named after the service it belongs to) and `queue` (the queue it was dead-lettered from).
fn dead_lettered(options: &AmqpOptions, consumer: &str) {
    metrics::counter!("mercato_dead_letters_total", "service" => consumer.to_owned(), "queue" => options.queue(consumer))
        .increment(1);
}

/// Runs the handler on one delivery and settles it: ack on success, requeue after a pause on failure
/// (the queue dead-letters it past the delivery limit), dead-letter right away when it is no envelope.
async fn handle(
    options: &AmqpOptions,
    subscription: &Subscription,
    delivery: lapin::message::Delivery,
) -> Result<(), AmqpError> {
    let consumer = subscription.queue.consumer.clone();
    let envelope = match EventEnvelope::decode(delivery.data.as_slice()) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::error!(consumer, %error, message_id = ?delivery.properties.message_id(), "dead-lettering a message that is not an event envelope");
            metrics::counter!("mercato_events_consumed_total", "consumer" => consumer.clone(), "outcome" => "malformed")
                .increment(1);
            dead_lettered(options, &consumer);
            delivery
                .nack(BasicNackOptions { multiple: false, requeue: false })
                .await
                .map_err(broker("rejecting a malformed message"))?;
            return Ok(());
        }
    };
    let envelope = Arc::new(envelope);
    let outcome =
        AssertUnwindSafe(super::handle_traced(&consumer, &subscription.handler, envelope.clone())).catch_unwind().await;
    let error = match outcome {
        Ok(Ok(())) => {
            metrics::counter!("mercato_events_consumed_total", "consumer" => consumer, "outcome" => "ok").increment(1);
            delivery.ack(BasicAckOptions::default()).await.map_err(broker("acknowledging"))?;
            return Ok(());
        }
        Ok(Err(error)) => error,
        Err(_) => "the handler panicked".to_owned(),
    };
    let deliveries = delivery_count(&delivery.properties) + 1;
    let last = deliveries > i64::from(options.delivery_limit);
    tracing::warn!(consumer, event_id = %envelope.id, event_type = %envelope.r#type, %error, deliveries, dead_letter = last, "event handler failed");
    metrics::counter!("mercato_events_consumed_total", "consumer" => consumer.clone(), "outcome" => "failed")
        .increment(1);
    if last {
        dead_lettered(options, &consumer);
    }
    tokio::time::sleep(options.retry_delay).await;
    delivery.nack(BasicNackOptions { multiple: false, requeue: true }).await.map_err(broker("returning a message"))?;
    Ok(())
}
