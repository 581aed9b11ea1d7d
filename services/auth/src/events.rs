//! What the auth service publishes.

use api::auth::{
    EmailChangeConfirmed, EmailChangeRequested, EmailChanged, EmailVerificationRequested, EmailVerified,
    PasswordChangeMethod, PasswordChanged, PasswordResetRequested, UserDeleted, UserDisabled, UserEnabled,
    UserRegistered, UserRolesChanged,
};
use platform::events::NewEvent;
use platform::time::timestamp;

use crate::domain;
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

/// Event type published when an account's address is to be verified (payload
/// `mercato.auth.v1.EmailVerificationRequested`): notifications mails its token to the address.
pub const EMAIL_VERIFICATION_REQUESTED: &str = "user.email_verification_requested";

/// Event type published when an account's address was verified (payload `mercato.auth.v1.EmailVerified`).
pub const EMAIL_VERIFIED: &str = "user.email_verified";

/// The `user.email_verification_requested` event carrying `token` (valid until `expires_at`) to `user`'s
/// address. Its subject is the account's id: subjects show in logs, the token must not.
pub fn email_verification_requested(user: &UserRow, token: &str, expires_at: i64) -> NewEvent {
    let payload = EmailVerificationRequested {
        user_id: user.id.clone(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        locale: user.locale.clone(),
        token: token.to_owned(),
        expire_time: Some(timestamp(expires_at)),
    };
    NewEvent::new(EMAIL_VERIFICATION_REQUESTED, user.id.clone(), &payload)
}

/// The `user.email_verified` event of `user`'s address, verified at `now`.
pub fn email_verified(user: &UserRow, now: i64) -> NewEvent {
    let payload =
        EmailVerified { user_id: user.id.clone(), email: user.email.clone(), verify_time: Some(timestamp(now)) };
    NewEvent::new(EMAIL_VERIFIED, user.id.clone(), &payload)
}

/// Event type published when an account's owner asked to move it to another address (payload
/// `mercato.auth.v1.EmailChangeRequested`): notifications mails its token to the new address.
pub const EMAIL_CHANGE_REQUESTED: &str = "user.email_change_requested";

/// Event type published when an account moved to another address (payload `mercato.auth.v1.EmailChanged`).
pub const EMAIL_CHANGED: &str = "user.email_changed";

/// The `user.email_change_requested` event carrying `token` (valid until `expires_at`) to `new_email`, the
/// address `user` asked to move to. Its subject is the account's id: subjects show in logs, the token must not.
pub fn email_change_requested(user: &UserRow, new_email: &str, token: &str, expires_at: i64) -> NewEvent {
    let payload = EmailChangeRequested {
        user_id: user.id.clone(),
        email: new_email.to_owned(),
        display_name: user.display_name.clone(),
        locale: user.locale.clone(),
        token: token.to_owned(),
        expire_time: Some(timestamp(expires_at)),
        current_email: user.email.clone(),
    };
    NewEvent::new(EMAIL_CHANGE_REQUESTED, user.id.clone(), &payload)
}

/// The `user.email_changed` event of `user`, now at its new address, moved from `previous_email` at `now` by
/// staff member `changed_by` (empty: by the owner).
pub fn email_changed(user: &UserRow, previous_email: &str, changed_by: &str, now: i64) -> NewEvent {
    let payload = EmailChanged {
        user_id: user.id.clone(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        locale: user.locale.clone(),
        previous_email: previous_email.to_owned(),
        change_time: Some(timestamp(now)),
        changed_by: changed_by.to_owned(),
    };
    NewEvent::new(EMAIL_CHANGED, user.id.clone(), &payload)
}

/// Event type published when an account moved to another address, for the address it had (payload
/// `mercato.auth.v1.EmailChangeConfirmed`): notifications mails it the token that undoes the change.
pub const EMAIL_CHANGE_CONFIRMED: &str = "user.email_change_confirmed";

/// The `user.email_change_confirmed` event of `user`, now at its new address, telling `previous_email` with
/// `token` (valid until `expires_at`) that undoes the change made at `now`. Its subject is the account's id.
pub fn email_change_confirmed(
    user: &UserRow,
    previous_email: &str,
    token: &str,
    expires_at: i64,
    now: i64,
) -> NewEvent {
    let payload = EmailChangeConfirmed {
        user_id: user.id.clone(),
        previous_email: previous_email.to_owned(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        locale: user.locale.clone(),
        token: token.to_owned(),
        expire_time: Some(timestamp(expires_at)),
        change_time: Some(timestamp(now)),
    };
    NewEvent::new(EMAIL_CHANGE_CONFIRMED, user.id.clone(), &payload)
}

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

/// Event type published when staff changed an account's roles (payload `mercato.auth.v1.UserRolesChanged`).
pub const USER_ROLES_CHANGED: &str = "user.roles_changed";

/// Event type published when staff disabled an account (payload `mercato.auth.v1.UserDisabled`).
pub const USER_DISABLED: &str = "user.disabled";

/// Event type published when staff enabled a disabled account again (payload `mercato.auth.v1.UserEnabled`).
pub const USER_ENABLED: &str = "user.enabled";

/// The `user.roles_changed` event of an account whose roles went from `before`'s to `after`'s, changed by staff
/// account `by` at `now`; none when they are the same roles (setting them again changes nothing).
pub fn roles_changed(before: &UserRow, after: &UserRow, by: &str, now: i64) -> Option<NewEvent> {
    let (previous, roles) = (domain::parse_roles(&before.roles), domain::parse_roles(&after.roles));
    let set = |roles: &[String]| roles.iter().cloned().collect::<std::collections::BTreeSet<_>>();
    if set(&previous) == set(&roles) {
        return None;
    }
    let payload = UserRolesChanged {
        user_id: after.id.clone(),
        email: after.email.clone(),
        display_name: after.display_name.clone(),
        locale: after.locale.clone(),
        roles,
        previous_roles: previous,
        changed_by: by.to_owned(),
        change_time: Some(timestamp(now)),
    };
    Some(NewEvent::new(USER_ROLES_CHANGED, after.id.clone(), &payload))
}

/// The `user.disabled` or `user.enabled` event of an account that went from `before` to `after`, by staff
/// account `by` at `now`; none when it was disabled (or enabled) already.
pub fn disabled_or_enabled(before: &UserRow, after: &UserRow, by: &str, now: i64) -> Option<NewEvent> {
    match (before.disable_time, after.disable_time) {
        (None, Some(disabled_at)) => {
            let payload = UserDisabled {
                user_id: after.id.clone(),
                email: after.email.clone(),
                display_name: after.display_name.clone(),
                locale: after.locale.clone(),
                disabled_by: by.to_owned(),
                disable_time: Some(timestamp(disabled_at)),
            };
            Some(NewEvent::new(USER_DISABLED, after.id.clone(), &payload))
        }
        (Some(_), None) => {
            let payload = UserEnabled {
                user_id: after.id.clone(),
                email: after.email.clone(),
                display_name: after.display_name.clone(),
                locale: after.locale.clone(),
                enabled_by: by.to_owned(),
                enable_time: Some(timestamp(now)),
            };
            Some(NewEvent::new(USER_ENABLED, after.id.clone(), &payload))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn user(roles: &str, disable_time: Option<i64>) -> UserRow {
        UserRow {
            id: "u-1".into(),
            email: "ann@example.com".into(),
            password_hash: String::new(),
            display_name: "Ann".into(),
            roles: roles.into(),
            locale: "de".into(),
            create_time: 1,
            disable_time,
            email_verify_time: None,
        }
    }

    #[test]
    fn only_a_real_change_of_roles_is_announced() {
        let event = roles_changed(&user("customer", None), &user("customer catalog", None), "u-admin", 7)
            .expect("a role was added");
        assert_eq!((event.event_type, event.subject.as_str()), (USER_ROLES_CHANGED, "u-1"));
        let payload = UserRolesChanged::decode(event.payload.as_slice()).expect("payload");
        assert_eq!(
            (payload.roles, payload.previous_roles),
            (vec!["customer".into(), "catalog".into()], vec!["customer".into()])
        );
        assert_eq!((payload.changed_by.as_str(), payload.locale.as_str()), ("u-admin", "de"));
        assert!(
            roles_changed(&user("customer catalog", None), &user("catalog customer", None), "u-admin", 7).is_none()
        );
    }

    #[test]
    fn disabling_and_enabling_are_announced_once_each() {
        let (enabled, disabled) = (user("customer", None), user("customer", Some(5)));
        let event = disabled_or_enabled(&enabled, &disabled, "u-admin", 9).expect("disabled");
        assert_eq!(event.event_type, USER_DISABLED);
        let payload = UserDisabled::decode(event.payload.as_slice()).expect("payload");
        assert_eq!((payload.disabled_by.as_str(), payload.disable_time.map(|t| t.nanos)), ("u-admin", Some(5_000)));
        assert_eq!(disabled_or_enabled(&disabled, &enabled, "u-admin", 9).expect("enabled").event_type, USER_ENABLED);
        assert!(disabled_or_enabled(&disabled, &disabled, "u-admin", 9).is_none(), "disabled already");
        assert!(disabled_or_enabled(&enabled, &enabled, "u-admin", 9).is_none(), "enabled already");
    }
}
