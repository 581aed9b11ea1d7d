//! What the auth service publishes.

use api::auth::UserRegistered;
use platform::events::NewEvent;

use crate::store::UserRow;

/// Event type published when an account is created (payload `mercato.auth.v1.UserRegistered`).
pub const USER_REGISTERED: &str = "user.registered";

/// The `user.registered` event of a new account.
pub fn user_registered(user: &UserRow) -> NewEvent {
    let payload = UserRegistered {
        user_id: user.id.clone(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        locale: user.locale.clone(),
    };
    NewEvent::new(USER_REGISTERED, user.id.clone(), &payload)
}
