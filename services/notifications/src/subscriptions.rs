//! Which event types the webhook endpoints subscribe to, kept in memory.
//!
//! Most events of a checkout (`order.placed`, `payment.captured`, `inventory.adjusted`, ...) are consumed for
//! webhooks only: with no endpoint subscribed to them they write nothing. Knowing that without asking the
//! database lets the consumer acknowledge them at once, with no transaction. The copy is read again every
//! [`REFRESH`] and at once after this replica creates or deletes an endpoint, so an endpoint created on another
//! replica hears of events handled here from about a second later. The database stays the authority on what is
//! written: an event let through is recorded against the endpoints stored at that moment.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{EndpointRow, Store};

/// How often the subscribed types are read again.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The event types some webhook endpoint receives, as last read; unknown until the first read succeeds (and
/// after a failed one), in which case every event goes to the database.
#[derive(Debug, Default)]
pub struct Subscriptions {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `None`: not known.
    types: Option<HashSet<String>>,
    /// Reads handed out so far.
    started: u64,
    /// The read whose result `types` holds.
    applied: u64,
}

impl Subscriptions {
    /// Whether some endpoint may receive events of `event_type`; true while that is not known.
    pub fn may_receive(&self, event_type: &str) -> bool {
        match &self.lock().types {
            Some(types) => types.contains(event_type),
            None => true,
        }
    }

    /// Reads the endpoints' types from `store`; a failure leaves them unknown until the next read succeeds.
    pub async fn refresh(&self, store: &Store) {
        let read = self.start_read();
        let types = match store.endpoints().await {
            Ok(endpoints) => Some(endpoints.iter().flat_map(EndpointRow::received_types).map(str::to_owned).collect()),
            Err(error) => {
                tracing::warn!(%error, "reading the webhook endpoints' event types failed");
                None
            }
        };
        self.finish_read(read, types);
    }

    /// Refreshes every [`REFRESH`] until `shutdown` is cancelled.
    pub async fn run(&self, store: Store, shutdown: CancellationToken) {
        platform::shutdown::every(REFRESH, &shutdown, || self.refresh(&store)).await;
    }

    /// Numbers a read before it starts, so that its result can be ordered against the others'.
    fn start_read(&self) -> u64 {
        let mut state = self.lock();
        state.started += 1;
        state.started
    }

    /// Keeps the result of read `read` unless a read started after it has finished first: that one saw every
    /// endpoint this one saw, and perhaps one created in between (the poller's read racing a creation's).
    fn finish_read(&self, read: u64, types: Option<HashSet<String>>) {
        let mut state = self.lock();
        if read > state.applied {
            state.types = types;
            state.applied = read;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is replaced whole under the lock: a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(names: &[&str]) -> Option<HashSet<String>> {
        Some(names.iter().map(|t| (*t).to_owned()).collect())
    }

    #[test]
    fn unknown_types_may_all_be_received() {
        let subscriptions = Subscriptions::default();
        assert!(subscriptions.may_receive("order.placed"));
        let read = subscriptions.start_read();
        subscriptions.finish_read(read, types(&["shipment.created"]));
        assert!(!subscriptions.may_receive("order.placed"));
        assert!(subscriptions.may_receive("shipment.created"));
        // A failed read forgets what was known rather than keep a copy that may be stale.
        let read = subscriptions.start_read();
        subscriptions.finish_read(read, None);
        assert!(subscriptions.may_receive("order.placed"));
    }

    #[test]
    fn a_read_finishing_after_a_later_one_is_dropped() {
        let subscriptions = Subscriptions::default();
        let poller = subscriptions.start_read(); // before an endpoint is created
        let creation = subscriptions.start_read(); // after
        subscriptions.finish_read(creation, types(&["order.placed"]));
        subscriptions.finish_read(poller, types(&[]));
        assert!(subscriptions.may_receive("order.placed"), "the newer read stands");
    }
}
