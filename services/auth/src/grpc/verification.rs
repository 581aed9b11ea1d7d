//! Verifying an account's address: a token mailed to it (at registration, and again on request) proves the
//! mailbox is the owner's.

use platform::events::NewEvent;
use platform::time::now_micros;

use super::Service;
use crate::domain;
use crate::error::{Error, MailedCode};
use crate::events;
use crate::store::UserRow;
use crate::token_store::{MailedToken, TokenPurpose};

impl Service {
    /// A new verification token for `user` (valid from `now` for a day), with the event that mails it.
    pub(super) fn new_verification(user: &UserRow, now: i64) -> (MailedToken, NewEvent) {
        let token = domain::new_opaque_token();
        let stored = MailedToken::new(&user.id, &token, now, domain::EMAIL_VERIFICATION_TTL_MICROS);
        let requested = events::email_verification_requested(user, &token, stored.expires_at);
        (stored, requested)
    }

    /// Mails `user_id`'s address a new verification token, unless it is verified already (an error) or was
    /// mailed one moments ago (nothing is sent: the earlier mail's token still works). Returns when the token
    /// mailed, or the earlier one, stops working.
    pub(super) async fn mail_verification_token(&self, user_id: &str) -> Result<i64, Error> {
        let user = self.store.user_by_id(user_id).await?.ok_or(Error::UserNotFound)?;
        if user.email_verify_time.is_some() {
            return Err(Error::EmailAlreadyVerified);
        }
        let now = now_micros();
        let (token, requested) = Self::new_verification(&user, now);
        let resent_after = now - domain::EMAIL_VERIFICATION_RESEND_MICROS;
        let purpose = TokenPurpose::EmailVerification;
        if self.store.insert_mailed_token(purpose, &token, &requested, resent_after).await? {
            self.relay.wake();
            tracing::info!(user_id = %user.id, "email verification mailed");
            return Ok(token.expires_at);
        }
        // Verified meanwhile, or mailed moments ago: say which.
        let user = self.store.user_by_id(user_id).await?.ok_or(Error::UserNotFound)?;
        if user.email_verify_time.is_some() {
            return Err(Error::EmailAlreadyVerified);
        }
        tracing::info!(user_id = %user.id, "email verification not mailed again so soon");
        let latest = self.store.latest_email_verification(&user.id).await?;
        Ok(latest.map_or(token.expires_at, |row| row.expires_at))
    }

    /// Verifies the address of the account `token` was mailed to; the account as it is now. A token of an
    /// account verified already (a second click) confirms it again, whatever its age.
    pub(super) async fn verify_email(&self, token: &str) -> Result<UserRow, Error> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::Invalid(vec![platform::error::FieldViolation::new("token", "is required")]));
        }
        let token_hash = domain::hash_opaque_token(token);
        let row = self
            .store
            .email_verification(&token_hash)
            .await?
            .ok_or(Error::TokenNotFound(MailedCode::EmailVerification))?;
        let user =
            self.store.user_by_id(&row.user_id).await?.ok_or(Error::TokenNotFound(MailedCode::EmailVerification))?;
        if user.email_verify_time.is_some() {
            return Ok(user);
        }
        let now = now_micros();
        if row.expires_at <= now {
            return Err(Error::TokenExpired(MailedCode::EmailVerification));
        }
        if self.store.verify_email(&user.id, &events::email_verified(&user, now), now).await? {
            self.relay.wake();
            tracing::info!(user_id = %user.id, "email address verified");
            return Ok(UserRow { email_verify_time: Some(now), ..user });
        }
        // Verified meanwhile by a concurrent confirmation (another of the account's tokens): read when.
        self.store.user_by_id(&user.id).await?.ok_or(Error::TokenNotFound(MailedCode::EmailVerification))
    }
}
