//! Changing a password, resetting a forgotten one with a token mailed to the account's address, and deleting
//! the account (which needs the password too).

use api::auth::PasswordChangeMethod;
use platform::error::FieldViolation;
use platform::time::now_micros;

use super::{Service, TokenPair};
use crate::domain::{self, ResetTokenState};
use crate::error::{Error, MailedCode};
use crate::events;
use crate::password_store::{Guard, NewPassword};
use crate::store::UserRow;
use crate::token_store::{MailedToken, TokenPurpose};

impl Service {
    /// Ok when `password` (given as `field`) is `user`'s; else INVALID_ARGUMENT naming the field.
    pub(super) async fn prove_password(&self, user: &UserRow, field: &str, password: String) -> Result<(), Error> {
        // Longer than any accepted password: it cannot be the account's, and Argon2 is not spent on it.
        let plausible = password.chars().count() <= domain::MAX_PASSWORD_CHARS;
        if plausible && self.hasher.verify(password, Some(user.password_hash.clone())).await? {
            return Ok(());
        }
        Err(Error::Invalid(vec![FieldViolation::new(field, "is not the account's password")]))
    }

    /// Sets `user_id`'s new password once `current` is proven, signs out every session and opens a new one.
    pub(super) async fn set_new_password(
        &self,
        user_id: &str,
        current: String,
        new: String,
    ) -> Result<TokenPair, Error> {
        domain::validate_password_change(&current, &new).map_err(Error::Invalid)?;
        let user = self.store.user_by_id(user_id).await?.ok_or(Error::UserNotFound)?;
        self.prove_password(&user, "current_password", current).await?;
        let password_hash = self.hasher.hash(new).await?;
        let now = now_micros();
        let (refresh_token, session) = Self::new_refresh_token(now);
        let changed = events::password_changed(&user, PasswordChangeMethod::Change, now);
        let change = NewPassword {
            user_id: &user.id,
            password_hash: &password_hash,
            guard: Guard::CurrentHash(&user.password_hash),
            session: Some(&session),
            changed: &changed,
            now,
        };
        if !self.store.set_password(change).await? {
            return Err(Error::PasswordChangedMeanwhile);
        }
        self.relay.wake();
        tracing::info!(user_id = %user.id, "password changed; other sessions signed out");
        Ok(TokenPair { access_token: self.access_token(&user, &session.id, now)?, refresh_token })
    }

    /// Deletes `user_id`'s account once `password` is proven.
    pub(super) async fn erase_account(&self, user_id: &str, password: String) -> Result<(), Error> {
        if password.is_empty() {
            return Err(Error::Invalid(vec![FieldViolation::new("password", "is required")]));
        }
        let user = self.store.user_by_id(user_id).await?.ok_or(Error::UserNotFound)?;
        self.prove_password(&user, "password", password).await?;
        let now = now_micros();
        let deleted = events::user_deleted(&user, now);
        if !self.store.delete_user(&user.id, &user.password_hash, &deleted, now).await? {
            return Err(Error::PasswordChangedMeanwhile);
        }
        self.relay.wake();
        tracing::info!(user_id = %user.id, "account deleted");
        Ok(())
    }

    /// Mails a reset token to the account of `email`, if there is one, it is not disabled and it was not mailed
    /// one moments ago.
    /// Says nothing either way: the caller must not learn whether the address has an account.
    pub(super) async fn mail_reset_token(&self, email: &str) -> Result<(), Error> {
        let email = domain::normalize_email(email);
        if let Some(problem) = domain::email_problem(&email) {
            return Err(Error::Invalid(vec![FieldViolation::new("email", problem)]));
        }
        let Some(user) = self.store.user_by_email(&email).await? else {
            tracing::info!("password reset asked for an address without an account");
            return Ok(());
        };
        if user.disable_time.is_some() {
            // Its sign-in is refused whatever the password: a new one would change nothing but the account.
            tracing::info!(user_id = %user.id, "password reset asked for a disabled account: not mailed");
            return Ok(());
        }
        let now = now_micros();
        let token = domain::new_opaque_token();
        let reset = MailedToken::new(&user.id, &token, now, domain::PASSWORD_RESET_TTL_MICROS);
        let requested = events::password_reset_requested(&user, &token, reset.expires_at);
        let resent_after = now - domain::PASSWORD_RESET_RESEND_MICROS;
        if self.store.insert_mailed_token(TokenPurpose::PasswordReset, &reset, &requested, resent_after).await? {
            self.relay.wake();
            tracing::info!(user_id = %user.id, "password reset mailed");
        } else {
            tracing::info!(user_id = %user.id, "password reset not mailed again so soon");
        }
        Ok(())
    }

    /// Sets a new password with a reset token, spending it (and every other of the account's) and signing out
    /// every session.
    pub(super) async fn reset_password(&self, token: &str, new: String) -> Result<(), Error> {
        domain::validate_password_reset(token, &new).map_err(Error::Invalid)?;
        let token_hash = domain::hash_opaque_token(token.trim());
        let reset =
            self.store.password_reset(&token_hash).await?.ok_or(Error::TokenNotFound(MailedCode::PasswordReset))?;
        let now = now_micros();
        match domain::reset_token_state(reset.expires_at, reset.used_at, now) {
            ResetTokenState::Usable => {}
            ResetTokenState::Used => return Err(Error::ResetTokenUsed),
            ResetTokenState::Expired => return Err(Error::TokenExpired(MailedCode::PasswordReset)),
        }
        let user =
            self.store.user_by_id(&reset.user_id).await?.ok_or(Error::TokenNotFound(MailedCode::PasswordReset))?;
        // A token mailed before staff disabled the account; the holder proved the mailbox, so may know why.
        if user.disable_time.is_some() {
            return Err(Error::AccountDisabled);
        }
        let password_hash = self.hasher.hash(new).await?;
        let now = now_micros();
        let changed = events::password_changed(&user, PasswordChangeMethod::Reset, now);
        let change = NewPassword {
            user_id: &user.id,
            password_hash: &password_hash,
            guard: Guard::ResetToken(&token_hash),
            session: None,
            changed: &changed,
            now,
        };
        // Spent (or expired) while the new password was being hashed.
        if !self.store.set_password(change).await? {
            return Err(Error::ResetTokenUsed);
        }
        self.relay.wake();
        tracing::info!(user_id = %user.id, "password reset; every session signed out");
        Ok(())
    }
}
