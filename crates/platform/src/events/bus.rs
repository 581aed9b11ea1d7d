//! The bus the relay publishes to. In the embedded mode it is [`InProcessBus`]: publishing runs every
//! subscribed consumer's handler (concurrently) and succeeds only when all of them did, so an outbox row is
//! marked sent only once every consumer has committed its effect — at-least-once delivery, even across a crash.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use futures::future::BoxFuture;

use super::EventEnvelope;

/// A consumer's handler: Ok once the effect is committed (with the event id in its inbox).
pub type Handler = Arc<dyn Fn(Arc<EventEnvelope>) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Subscribes `consumer` on `bus` to `event_types`, each delivery handled by `handle` with its own clone of
/// `state` (a service's store, usually): the consumer most services have, without spelling out the [`Handler`].
pub fn subscribe_with<S, F, Fut>(bus: &dyn EventBus, consumer: &str, event_types: &[&str], state: S, handle: F)
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Arc<EventEnvelope>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    bus.subscribe(consumer, event_types, Arc::new(move |envelope| Box::pin(handle(state.clone(), envelope))));
}

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
    /// No consumer of this name has subscribed on the broker (it has no queues).
    #[error("no consumer {0} is known to the broker")]
    UnknownConsumer(String),
}

/// What publishing a batch achieved: the first `confirmed` events were accepted, in order; `error` says why
/// the next one was not (events after it may or may not have been accepted and must be published again).
#[derive(Debug)]
pub struct BatchOutcome {
    /// How many events, from the start of the batch, the bus accepted.
    pub confirmed: usize,
    /// Why the event after them was not accepted; `None` when the whole batch was.
    pub error: Option<BusError>,
}

/// Where events go.
pub trait EventBus: Send + Sync + 'static {
    /// Publishes one event; Ok means it will reach every consumer (or already has).
    fn publish(&self, envelope: EventEnvelope) -> BoxFuture<'_, Result<(), BusError>>;

    /// Publishes `envelopes` in order and reports the accepted prefix. The default publishes one at a time
    /// and stops at the first failure; a broker bus pipelines them (publish all, then await the confirms).
    fn publish_batch(&self, envelopes: Vec<EventEnvelope>) -> BoxFuture<'_, BatchOutcome> {
        Box::pin(async move {
            let mut confirmed = 0;
            for envelope in envelopes {
                if let Err(error) = self.publish(envelope).await {
                    return BatchOutcome { confirmed, error: Some(error) };
                }
                confirmed += 1;
            }
            BatchOutcome { confirmed, error: None }
        })
    }

    /// Registers `consumer` for events of the given types.
    fn subscribe(&self, consumer: &str, event_types: &[&str], handler: Handler);

    /// The events `consumer` gave up on (dead letters), oldest first, left where they are. A bus that keeps
    /// none (the in-process bus: a failed event stays in its outbox and is retried) has none.
    fn dead_letters(&self, consumer: &str) -> BoxFuture<'_, Result<Vec<EventEnvelope>, BusError>> {
        let _ = consumer;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Gives `consumer`'s dead letters to it again; returns how many.
    fn requeue_dead_letters(&self, consumer: &str) -> BoxFuture<'_, Result<usize, BusError>> {
        let _ = consumer;
        Box::pin(async { Ok(0) })
    }
}

/// How many subjects of a batch [`InProcessBus`] delivers at the same time.
const SUBJECTS_AT_ONCE: usize = 16;

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
            // The consumers are independent (each has its own inbox), so they handle the event side by side;
            // a failure of one does not undo the others, whose inboxes make the redelivery a no-op for them.
            let outcomes = futures::future::join_all(matching.iter().map(|subscription| {
                super::handle_traced(&subscription.consumer, &subscription.handler, envelope.clone())
            }))
            .await;
            let failed = matching.iter().zip(outcomes).find_map(|(sub, outcome)| Some((sub, outcome.err()?)));
            match failed {
                Some((subscription, error)) => Err(BusError::Handler {
                    consumer: subscription.consumer.clone(),
                    event_id: envelope.id.clone(),
                    error,
                }),
                None => Ok(()),
            }
        })
    }

    /// Delivers the events of each subject in order, one after the other, and the subjects side by side (at
    /// most `SUBJECTS_AT_ONCE`): consumers that record deliveries in groups (analytics) then get many at once.
    fn publish_batch(&self, envelopes: Vec<EventEnvelope>) -> BoxFuture<'_, BatchOutcome> {
        Box::pin(async move {
            let count = envelopes.len();
            let mut subjects: Vec<Vec<(usize, EventEnvelope)>> = Vec::new();
            for (position, envelope) in envelopes.into_iter().enumerate() {
                match subjects.iter_mut().find(|events| events[0].1.subject == envelope.subject) {
                    Some(events) => events.push((position, envelope)),
                    None => subjects.push(vec![(position, envelope)]),
                }
            }
            let delivered: Vec<Vec<(usize, Result<(), BusError>)>> = futures::stream::iter(subjects)
                .map(|events| async move {
                    let mut outcomes = Vec::with_capacity(events.len());
                    for (position, envelope) in events {
                        let outcome = self.publish(envelope).await;
                        let failed = outcome.is_err();
                        outcomes.push((position, outcome));
                        if failed {
                            // The subject's later events must not overtake this one.
                            break;
                        }
                    }
                    outcomes
                })
                .buffer_unordered(SUBJECTS_AT_ONCE)
                .collect()
                .await;
            let mut outcomes: Vec<Option<Result<(), BusError>>> = (0..count).map(|_| None).collect();
            for (position, outcome) in delivered.into_iter().flatten() {
                outcomes[position] = Some(outcome);
            }
            // The accepted prefix ends at the first event not delivered: a failure, or (after a failure of its
            // subject) an event never tried, which always comes after that failure.
            let confirmed = outcomes.iter().take_while(|outcome| matches!(outcome, Some(Ok(())))).count();
            let error = outcomes.into_iter().flatten().find_map(Result::err);
            BatchOutcome { confirmed, error: if confirmed == count { None } else { error } }
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

    fn publish_batch(&self, envelopes: Vec<EventEnvelope>) -> BoxFuture<'_, BatchOutcome> {
        let mut open = self.open.subscribe();
        Box::pin(async move {
            if open.wait_for(|open| *open).await.is_err() {
                let error = BusError::Broker("the bus was dropped".to_owned());
                return BatchOutcome { confirmed: 0, error: Some(error) };
            }
            self.inner.publish_batch(envelopes).await
        })
    }

    fn subscribe(&self, consumer: &str, event_types: &[&str], handler: Handler) {
        self.inner.subscribe(consumer, event_types, handler);
    }

    fn dead_letters(&self, consumer: &str) -> BoxFuture<'_, Result<Vec<EventEnvelope>, BusError>> {
        self.inner.dead_letters(consumer)
    }

    fn requeue_dead_letters(&self, consumer: &str) -> BoxFuture<'_, Result<usize, BusError>> {
        self.inner.requeue_dead_letters(consumer)
    }
}
