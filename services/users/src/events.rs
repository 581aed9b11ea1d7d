//! What the users service consumes: `user.registered`, which makes the new account's profile with the name
//! and language given at registration. It publishes nothing.

use std::sync::Arc;

use api::mercato::auth::v1::UserRegistered;
use platform::events::{EventBus, EventEnvelope};
use prost::Message;

use crate::store::{Registration, Store};

/// The service's consumer name (its inbox and, on RabbitMQ, its queue).
pub const CONSUMER: &str = "users";
/// Event type of a new account.
pub const USER_REGISTERED: &str = "user.registered";

/// The event types the consumer takes: what it subscribes to, and its queue's bindings on RabbitMQ, which a
/// publisher in another process declares too (`AmqpBus::expect_consumer`).
pub fn event_types() -> Vec<&'static str> {
    vec![USER_REGISTERED]
}

/// Subscribes the service's consumer on `bus`.
pub fn subscribe(bus: &dyn EventBus, store: Store) {
    bus.subscribe(
        CONSUMER,
        &event_types(),
        Arc::new(move |envelope: Arc<EventEnvelope>| {
            let store = store.clone();
            Box::pin(async move { make_profile(&store, &envelope).await })
        }),
    );
}

async fn make_profile(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
    let e = UserRegistered::decode(envelope.data.as_slice()).map_err(|e| format!("bad payload: {e}"))?;
    if e.user_id.is_empty() {
        return Err("user.registered names no user".to_owned());
    }
    let registration =
        Registration { user_id: e.user_id, email: e.email, display_name: e.display_name, locale: e.locale };
    store
        .register(&envelope.id, &registration, platform::time::now_micros())
        .await
        .map_err(|e| format!("making the profile of user {}: {e}", registration.user_id))?;
    Ok(())
}
