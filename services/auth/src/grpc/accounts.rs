//! Account administration by staff (`accounts:admin`): listing accounts, setting their roles, changing their
//! address on their owner's behalf, disabling and enabling them.

use platform::auth::Claims;
use platform::time::now_micros;

use super::email_change::undo_offer;
use super::{Service, user_to_wire};
use crate::email_change_store::EmailChange;
use crate::error::Error;
use crate::staff;
use crate::store::UserRow;
use crate::token_store::MailedToken;
use crate::{domain, events};

impl Service {
    /// A page of the accounts matching the filters, and the next page's token.
    pub(super) async fn list_accounts(
        &self,
        email_prefix: &str,
        role: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<api::auth::User>, String), Error> {
        let (filter, page) = (staff::user_filter(email_prefix, role), platform::paging::id_page(page_size, page_token));
        let (filter, (limit, after)) = match (filter, page) {
            (Ok(filter), Ok(page)) => (filter, page),
            (filter, page) => {
                return Err(Error::Invalid(filter.err().into_iter().chain(page.err()).flatten().collect()));
            }
        };
        let rows = self.store.list_users(&filter, after, limit + 1).await?;
        let (rows, next_page_token) = platform::paging::page(rows, limit, |u| u.id.clone());
        Ok((rows.into_iter().map(user_to_wire).collect(), next_page_token))
    }

    /// Sets account `id`'s roles; ends its sessions when a role is taken away. An administrator keeps their own
    /// admin role.
    pub(super) async fn assign_roles(&self, caller: &Claims, id: &str, requested: &[String]) -> Result<UserRow, Error> {
        platform::error::check_id("id", id).map_err(|v| Error::Invalid(vec![v]))?;
        let roles = staff::checked_roles(requested).map_err(Error::Invalid)?;
        if id == caller.sub && !roles.contains(&domain::ROLE_ADMIN) {
            return Err(Error::OwnAccount("an administrator cannot take their own admin role away"));
        }
        let stored = domain::format_roles(&roles);
        let takes_away = |before: &UserRow| staff::takes_a_role_away(&domain::parse_roles(&before.roles), &roles);
        let now = now_micros();
        let announce = |before: &UserRow, after: &UserRow| events::roles_changed(before, after, &caller.sub, now);
        let user = self.store.set_roles(id, &stored, takes_away, announce, now).await?.ok_or(Error::UserNotFound)?;
        self.relay.wake();
        tracing::info!(user_id = %user.id, roles = %user.roles, by = %caller.sub, "roles set");
        Ok(user)
    }

    /// Moves account `id` to `email` on its owner's behalf: at once and unverified, with a verification code to
    /// the new address, and the old address told with a code that undoes the move.
    pub(super) async fn change_account_email(&self, caller: &Claims, id: &str, email: &str) -> Result<UserRow, Error> {
        platform::error::check_id("id", id).map_err(|v| Error::Invalid(vec![v]))?;
        let user = self.store.user_by_id(id).await?.ok_or(Error::UserNotFound)?;
        let new_email =
            domain::validate_new_address("email", &user.email, email).map_err(|v| Error::Invalid(vec![v]))?;
        if self.store.user_by_email(&new_email).await?.is_some() {
            return Err(Error::EmailTaken);
        }
        let now = now_micros();
        let moved = UserRow { email: new_email.clone(), email_verify_time: None, ..user.clone() };
        let changed = events::email_changed(&moved, &user.email, &caller.sub, now);
        let (revert, confirmed) = undo_offer(&moved, &user.email, now);
        let code = domain::new_opaque_token();
        let verification = MailedToken::new(&user.id, &code, now, domain::EMAIL_VERIFICATION_TTL_MICROS);
        let verify = events::email_verification_requested(&moved, &code, verification.expires_at);
        let change = EmailChange {
            user_id: &user.id,
            previous_email: &user.email,
            new_email: &new_email,
            token_hash: "",
            verification: Some((&verification, &verify)),
            changed: &changed,
            revert: &revert,
            confirmed: &confirmed,
            now,
        };
        if !self.store.change_email(change).await? {
            return Err(Error::EmailChangedMeanwhile);
        }
        self.relay.wake();
        tracing::info!(user_id = %user.id, by = %caller.sub, "email address changed by staff");
        Ok(moved)
    }

    /// Disables account `id` (ending its sessions), or enables it again.
    pub(super) async fn set_account_disabled(
        &self,
        caller: &Claims,
        id: &str,
        disabled: bool,
    ) -> Result<UserRow, Error> {
        platform::error::check_id("id", id).map_err(|v| Error::Invalid(vec![v]))?;
        if disabled && id == caller.sub {
            return Err(Error::OwnAccount("an administrator cannot disable their own account"));
        }
        let now = now_micros();
        let announce = |before: &UserRow, after: &UserRow| events::disabled_or_enabled(before, after, &caller.sub, now);
        let disable_at = disabled.then_some(now);
        let user = self.store.set_disabled(id, disable_at, announce).await?.ok_or(Error::UserNotFound)?;
        self.relay.wake();
        let action = if disabled { "account disabled" } else { "account enabled" };
        tracing::info!(user_id = %user.id, by = %caller.sub, "{action}");
        Ok(user)
    }
}
