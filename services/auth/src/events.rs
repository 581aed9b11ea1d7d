//! What the auth service publishes.

use api::auth::{PasswordChangeMethod, PasswordChanged, PasswordResetRequested, UserDeleted, UserRegistered};
use platform::events::NewEvent;
use platform::time::timestamp;

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

/// Event type published when a password reset is asked for (payload `mercato.auth.v1.PasswordResetRequested`):
/// notifications mails its token to the account's address.
pub const PASSWORD_RESET_REQUESTED: &str = "user.password_reset_requested";

/// Event type published when a password was changed (payload `mercato.auth.v1.PasswordChanged`), so the owner
/// learns of it.
pub const PASSWORD_CHANGED: &str = "user.password_changed";

/// The `user.password_reset_requested` event carrying `token` (valid until `expires_at`) to `user`. Its subject
/// is the account's id: subjects show in logs, the token must not.
pub fn password_reset_requested(user: &UserRow, token: &str, expires_at: i64) -> NewEvent {
    let payload = PasswordResetRequested {
        user_id: user.id.clone(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        locale: user.locale.clone(),
        token: token.to_owned(),
        expire_time: Some(timestamp(expires_at)),
    };
    NewEvent::new(PASSWORD_RESET_REQUESTED, user.id.clone(), &payload)
}

/// The `user.password_changed` event of `user`'s password, changed `how` at `now`.
pub fn password_changed(user: &UserRow, how: PasswordChangeMethod, now: i64) -> NewEvent {
    let payload = PasswordChanged {
        user_id: user.id.clone(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        locale: user.locale.clone(),
        method: how.into(),
        change_time: Some(timestamp(now)),
    };
    NewEvent::new(PASSWORD_CHANGED, user.id.clone(), &payload)
}

/// Event type published when an account was deleted (payload `mercato.auth.v1.UserDeleted`): services erase what
/// they keep of the user.
pub const USER_DELETED: &str = "user.deleted";

/// The `user.deleted` event of `user`, deleted at `now`.
pub fn user_deleted(user: &UserRow, now: i64) -> NewEvent {
    let payload = UserDeleted {
        user_id: user.id.clone(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        locale: user.locale.clone(),
        delete_time: Some(timestamp(now)),
    };
    NewEvent::new(USER_DELETED, user.id.clone(), &payload)
}
