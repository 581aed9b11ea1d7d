//! The bus the relay publishes to. In the embedded mode it is [`InProcessBus`]: publishing runs every
//! subscribed consumer's handler and succeeds only when all of them did, so an outbox row is marked sent only
//! once every consumer has committed its effect — at-least-once delivery, even across a crash.

use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;

use super::EventEnvelope;

/// A consumer's handler: Ok once the effect is committed (with the event id in its inbox).
pub type Handler = Arc<dyn Fn(Arc<EventEnvelope>) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Publishing failed; the relay keeps the event and tries again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// A consumer's handler failed.
    #[error("consumer {consumer} failed on event {event_id}: {error}")]
    Handler {
        /// The consumer.
        consumer: String,
        /// The event.
        event_id: String,
        /// Why.
        error: String,
    },
    /// The broker did not accept the event.
    #[error("broker: {0}")]
    Broker(String),
}

/// Where events go.
pub trait EventBus: Send + Sync + 'static {
    /// Publishes one event; Ok means it will reach every consumer (or already has).
    fn publish(&self, envelope: EventEnvelope) -> BoxFuture<'_, Result<(), BusError>>;
    /// Registers `consumer` for events of the given types.
    fn subscribe(&self, consumer: &str, event_types: &[&str], handler: Handler);
}

struct Subscription {
    consumer: String,
    event_types: Vec<String>,
    handler: Handler,
}

/// The bus of one process: every service of `mercato up` publishes and consumes through the same one.
#[derive(Default)]
pub struct InProcessBus {
    subscriptions: RwLock<Vec<Arc<Subscription>>>,
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBus").finish_non_exhaustive()
    }
}

impl InProcessBus {
    /// A bus with no consumers yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl EventBus for InProcessBus {
    fn publish(&self, envelope: EventEnvelope) -> BoxFuture<'_, Result<(), BusError>> {
        let envelope = Arc::new(envelope);
        Box::pin(async move {
            let matching: Vec<Arc<Subscription>> = self
                .subscriptions
                .read()
                .map(|subs| subs.iter().filter(|s| s.event_types.contains(&envelope.r#type)).cloned().collect())
                .unwrap_or_default();
            for subscription in matching {
                super::handle_traced(&subscription.consumer, &subscription.handler, envelope.clone()).await.map_err(
                    |error| BusError::Handler {
                        consumer: subscription.consumer.clone(),
                        event_id: envelope.id.clone(),
                        error,
                    },
                )?;
            }
            Ok(())
        })
    }

    fn subscribe(&self, consumer: &str, event_types: &[&str], handler: Handler) {
        let subscription = Arc::new(Subscription {
            consumer: consumer.to_owned(),
            event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
            handler,
        });
        if let Ok(mut subs) = self.subscriptions.write() {
            subs.push(subscription);
        }
    }
}

/// A bus that holds publishers back until [`open`](Self::open), in front of any other bus.
///
/// `mercato up` opens it once every service has subscribed its consumers, so an event left in an outbox by an
/// earlier run is not published (and marked sent) before the consumer that needs it exists.
pub struct GatedBus {
    inner: Arc<dyn EventBus>,
    open: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for GatedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatedBus").field("open", &*self.open.borrow()).finish_non_exhaustive()
    }
}

impl GatedBus {
    /// A closed gate in front of `inner`.
    pub fn closed(inner: Arc<dyn EventBus>) -> Self {
        Self { inner, open: tokio::sync::watch::Sender::new(false) }
    }

    /// Lets publishers through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

impl EventBus for GatedBus {
    fn publish(&self, envelope: EventEnvelope) -> BoxFuture<'_, Result<(), BusError>> {
        let mut open = self.open.subscribe();
        Box::pin(async move {
            open.wait_for(|open| *open).await.map_err(|_| BusError::Broker("the bus was dropped".to_owned()))?;
            self.inner.publish(envelope).await
        })
    }

    fn subscribe(&self, consumer: &str, event_types: &[&str], handler: Handler) {
        self.inner.subscribe(consumer, event_types, handler);
    }
}
