//! What the users service consumes: `user.registered`, which makes the new account's profile with the name
//! and language given at registration, `user.email_changed`, which copies the account's new address into it,
//! and `user.deleted`, which erases the profile and the address book. It publishes nothing.

use api::mercato::auth::v1::{EmailChanged, UserDeleted, UserRegistered};
use platform::events::{EventBus, EventEnvelope};
use prost::Message;

use crate::store::{Registration, Store};

/// The service's consumer name (its inbox and, on RabbitMQ, its queue).
pub const CONSUMER: &str = "users";
/// Event type of a new account.
pub const USER_REGISTERED: &str = "user.registered";
/// Event type of an account moved to another address.
pub const USER_EMAIL_CHANGED: &str = "user.email_changed";
/// Event type of a deleted account.
pub const USER_DELETED: &str = "user.deleted";

/// The event types the consumer takes: what it subscribes to, and its queue's bindings on RabbitMQ, which a
/// publisher in another process declares too (`AmqpBus::expect_consumer`).
pub fn event_types() -> Vec<&'static str> {
    vec![USER_REGISTERED, USER_EMAIL_CHANGED, USER_DELETED]
}

/// Subscribes the service's consumer on `bus`.
pub fn subscribe(bus: &dyn EventBus, store: Store) {
    platform::events::subscribe_with(bus, CONSUMER, &event_types(), store, |store, envelope| async move {
        match envelope.r#type.as_str() {
            USER_DELETED => erase(&store, &envelope).await,
            USER_EMAIL_CHANGED => copy_email(&store, &envelope).await,
            _ => make_profile(&store, &envelope).await,
        }
    });
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

async fn copy_email(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
    let e = EmailChanged::decode(envelope.data.as_slice()).map_err(|e| format!("bad payload: {e}"))?;
    if e.user_id.is_empty() || e.email.is_empty() {
        return Err("user.email_changed names no user or no address".to_owned());
    }
    store
        .change_email(&envelope.id, &e.user_id, &e.email, platform::time::now_micros())
        .await
        .map_err(|error| format!("changing the email of user {}: {error}", e.user_id))?;
    Ok(())
}

async fn erase(store: &Store, envelope: &EventEnvelope) -> Result<(), String> {
    let e = UserDeleted::decode(envelope.data.as_slice()).map_err(|e| format!("bad payload: {e}"))?;
    if e.user_id.is_empty() {
        return Err("user.deleted names no user".to_owned());
    }
    if store.erase(&envelope.id, &e.user_id).await.map_err(|error| format!("erasing user {}: {error}", e.user_id))? {
        tracing::info!(user_id = %e.user_id, "profile and address book erased");
    }
    Ok(())
}
