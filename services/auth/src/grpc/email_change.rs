//! Moving an account to another address: the owner names it and proves the password; a token mailed there
//! proves the new mailbox, and only its return moves the account. The address left is mailed a token that undoes
//! the move ("this wasn't me"), with a new password.

use api::auth::PasswordChangeMethod;
use platform::error::FieldViolation;
use platform::events::NewEvent;
use platform::time::now_micros;

use super::Service;
use crate::domain;
use crate::email_change_store::{EmailChange, EmailRevert};
use crate::error::{Error, MailedCode};
use crate::events;
use crate::store::UserRow;
use crate::token_store::MailedToken;

/// The token that undoes `moved`'s move from `previous_email` at `now`, and `user.email_change_confirmed`, which
/// mails it to that address.
pub(super) fn undo_offer(moved: &UserRow, previous_email: &str, now: i64) -> (MailedToken, NewEvent) {
    let token = domain::new_opaque_token();
    let stored = MailedToken::new(&moved.id, &token, now, domain::EMAIL_CHANGE_REVERT_TTL_MICROS);
    let confirmed = events::email_change_confirmed(moved, previous_email, &token, stored.expires_at, now);
    (stored, confirmed)
}

impl Service {
    /// Mails a token that moves `user_id`'s account to `new_email` once `password` is proven, unless that
    /// address has an account or was mailed a token moments ago (nothing is sent: the earlier token still works).
    /// Returns when the token mailed, or the earlier one, stops working.
    pub(super) async fn mail_email_change_token(
        &self,
        user_id: &str,
        new_email: &str,
        password: String,
    ) -> Result<i64, Error> {
        let user = self.store.user_by_id(user_id).await?.ok_or(Error::UserNotFound)?;
        let new_email = domain::validate_email_change(&user.email, new_email, &password).map_err(Error::Invalid)?;
        // The password first: whether an address has an account is told only to whoever knows it.
        self.prove_password(&user, "password", password).await?;
        if self.store.user_by_email(&new_email).await?.is_some() {
            return Err(Error::EmailTaken);
        }
        let now = now_micros();
        let token = domain::new_opaque_token();
        let stored = MailedToken::new(&user.id, &token, now, domain::EMAIL_CHANGE_TTL_MICROS);
        let requested = events::email_change_requested(&user, &new_email, &token, stored.expires_at);
        let resent_after = now - domain::EMAIL_CHANGE_RESEND_MICROS;
        if self.store.insert_email_change(&stored, &new_email, &requested, resent_after).await? {
            self.relay.wake();
            tracing::info!(user_id = %user.id, "email change mailed to the new address");
            return Ok(stored.expires_at);
        }
        tracing::info!(user_id = %user.id, "email change not mailed again so soon");
        let latest = self.store.latest_email_change(&user.id).await?.ok_or(Error::UserNotFound)?;
        Ok(latest.expires_at)
    }

    /// Moves the account `token` was mailed for to the address it was mailed to; the account as it is now. A
    /// token whose change is made already (a second click) answers the same, whatever its age.
    pub(super) async fn apply_email_change(&self, token: &str) -> Result<UserRow, Error> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::Invalid(vec![FieldViolation::new("token", "is required")]));
        }
        let token_hash = domain::hash_opaque_token(token);
        let row = self.store.email_change(&token_hash).await?.ok_or(Error::TokenNotFound(MailedCode::EmailChange))?;
        let user = self.store.user_by_id(&row.user_id).await?.ok_or(Error::TokenNotFound(MailedCode::EmailChange))?;
        if user.email == row.new_email {
            return Ok(user);
        }
        let now = now_micros();
        if row.expires_at <= now {
            return Err(Error::TokenExpired(MailedCode::EmailChange));
        }
        // The holder proved the new mailbox, not the account: a disabled account stays as staff left it.
        if user.disable_time.is_some() {
            return Err(Error::AccountDisabled);
        }
        let moved = UserRow { email: row.new_email.clone(), email_verify_time: Some(now), ..user.clone() };
        let changed = events::email_changed(&moved, &user.email, "", now);
        let (revert, confirmed) = undo_offer(&moved, &user.email, now);
        let change = EmailChange {
            user_id: &user.id,
            previous_email: &user.email,
            new_email: &row.new_email,
            token_hash: &token_hash,
            verification: None,
            changed: &changed,
            revert: &revert,
            confirmed: &confirmed,
            now,
        };
        if self.store.change_email(change).await? {
            self.relay.wake();
            tracing::info!(user_id = %user.id, "email address changed");
            return Ok(moved);
        }
        // Moved meanwhile: by this token in a concurrent click (answer the same), or by another request, which
        // replaced this one.
        let now_user = self.store.user_by_id(&user.id).await?.ok_or(Error::TokenNotFound(MailedCode::EmailChange))?;
        if now_user.email == row.new_email { Ok(now_user) } else { Err(Error::TokenNotFound(MailedCode::EmailChange)) }
    }

    /// Takes the account `token` was mailed for back to the address it was mailed to, with `new_password`,
    /// signing out every session and revoking every API key; the account as it is then.
    pub(super) async fn revert_email_change(&self, token: &str, new_password: String) -> Result<UserRow, Error> {
        domain::validate_password_reset(token, &new_password).map_err(Error::Invalid)?;
        let token_hash = domain::hash_opaque_token(token.trim());
        let row = self.store.email_revert(&token_hash).await?.ok_or(Error::TokenNotFound(MailedCode::EmailRevert))?;
        if row.expires_at <= now_micros() {
            return Err(Error::TokenExpired(MailedCode::EmailRevert));
        }
        let user = self.store.user_by_id(&row.user_id).await?.ok_or(Error::TokenNotFound(MailedCode::EmailRevert))?;
        // The holder proved the old mailbox, not the account: a disabled account stays as staff left it.
        if user.disable_time.is_some() {
            return Err(Error::AccountDisabled);
        }
        if self.store.user_by_email(&row.previous_email).await?.is_some_and(|other| other.id != user.id) {
            return Err(Error::EmailTaken);
        }
        let password_hash = self.hasher.hash(new_password).await?;
        let now = now_micros();
        let restored = UserRow {
            email: row.previous_email.clone(),
            email_verify_time: Some(now),
            password_hash: password_hash.clone(),
            ..user.clone()
        };
        let changed = events::email_changed(&restored, &user.email, "", now);
        // Told as a reset: the password was set with a token mailed to the account's address.
        let password_changed = events::password_changed(&restored, PasswordChangeMethod::Reset, now);
        let revert = EmailRevert {
            user_id: &user.id,
            token_hash: &token_hash,
            previous_email: &row.previous_email,
            password_hash: &password_hash,
            changed: &changed,
            password_changed: &password_changed,
            now,
        };
        // Used (or expired) while the new password was being hashed.
        if !self.store.revert_email_change(revert).await? {
            return Err(Error::TokenNotFound(MailedCode::EmailRevert));
        }
        self.relay.wake();
        tracing::info!(user_id = %user.id, "email change undone; every session signed out, every API key revoked");
        Ok(restored)
    }
}
