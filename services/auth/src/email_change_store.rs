//! The SQL of changing an account's address: the request (a token mailed to the new address, stored with it),
//! the change itself, which spends what was mailed to the old address and mails it a token that undoes the
//! change, and the undoing ("this wasn't me").

use platform::db::{BeginWrite, is_unique_violation};
use platform::events::{self, NewEvent};
use platform::with_db;

use crate::error::Error;
use crate::store::Store;
use crate::token_store::{MAILED_TOKEN_TABLES, MailedToken, TokenPurpose, bind_mailed_token};

/// A stored email-change token, as its bearer's request finds it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EmailChangeRow {
    /// The account.
    pub user_id: String,
    /// The address the token was mailed to, which the account moves to.
    pub new_email: String,
    /// When it stops working, microseconds.
    pub expires_at: i64,
}

/// A stored token that undoes an email change, as its bearer's request finds it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EmailRevertRow {
    /// The account.
    pub user_id: String,
    /// The address it had, which the token was mailed to and restores.
    pub previous_email: String,
    /// When it stops working, microseconds.
    pub expires_at: i64,
}

/// An account taken back to an address it had, with a new password.
#[derive(Debug, Clone, Copy)]
pub struct EmailRevert<'a> {
    /// The account.
    pub user_id: &'a str,
    /// The hash of the token that proved the address (spent by the revert).
    pub token_hash: &'a str,
    /// The address it gets back.
    pub previous_email: &'a str,
    /// The new password's Argon2id PHC string.
    pub password_hash: &'a str,
    /// `user.email_changed` (back to `previous_email`).
    pub changed: &'a NewEvent,
    /// `user.password_changed`.
    pub password_changed: &'a NewEvent,
    /// When, microseconds: the address's verification time.
    pub now: i64,
}

/// The account moving from one address to another with a token mailed there.
#[derive(Debug, Clone, Copy)]
pub struct EmailChange<'a> {
    /// The account.
    pub user_id: &'a str,
    /// Its address as read before the change: the change applies only while it still holds.
    pub previous_email: &'a str,
    /// The address it moves to.
    pub new_email: &'a str,
    /// The hash of the token that proved the new address (kept, so a second click finds it); empty when staff
    /// moved the account.
    pub token_hash: &'a str,
    /// When staff moved the account, nobody proved the new mailbox: the code mailed there to verify it, and
    /// `user.email_verification_requested`, which mails it. None: the token proved it, at `now`.
    pub verification: Option<(&'a MailedToken, &'a NewEvent)>,
    /// `user.email_changed`.
    pub changed: &'a NewEvent,
    /// The token mailed to the previous address that undoes the change.
    pub revert: &'a MailedToken,
    /// `user.email_change_confirmed`, which mails it.
    pub confirmed: &'a NewEvent,
    /// When, microseconds (the new address's verification time, unless `verification` is given).
    pub now: i64,
}

impl Store {
    /// Stores `token`, mailed to `new_email`, and in the same transaction `mailed`, the event that mails it; the
    /// account's earlier requests are dropped (only the newest works). Nothing (false) when the same address was
    /// mailed a token after `resent_after`, or the account no longer exists. The account's row is written
    /// first, so concurrent requests for one account take their turns.
    pub async fn insert_email_change(
        &self,
        token: &MailedToken,
        new_email: &str,
        mailed: &NewEvent,
        resent_after: i64,
    ) -> Result<bool, Error> {
        let inserted = with_db!(self.db(), pool => {
            let mut tx = pool.begin_write().await?;
            let account = sqlx::query("UPDATE users SET create_time = create_time WHERE id = $1")
                .bind(&token.user_id)
                .execute(&mut *tx)
                .await?;
            let recent: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM email_changes WHERE user_id = $1 AND new_email = $2 AND create_time > $3",
            )
            .bind(&token.user_id)
            .bind(new_email)
            .bind(resent_after)
            .fetch_one(&mut *tx)
            .await?;
            if account.rows_affected() == 0 || recent > 0 {
                tx.rollback().await?;
                false
            } else {
                sqlx::query("DELETE FROM email_changes WHERE user_id = $1")
                    .bind(&token.user_id)
                    .execute(&mut *tx)
                    .await?;
                let insert = sqlx::query(
                    "INSERT INTO email_changes (id, user_id, token_hash, expires_at, create_time, new_email) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                );
                bind_mailed_token!(insert, token).bind(new_email).execute(&mut *tx).await?;
                events::enqueue(&mut *tx, crate::NAME, mailed).await?;
                tx.commit().await?;
                true
            }
        });
        Ok(inserted)
    }

    /// The email-change token hashed as `token_hash`.
    pub async fn email_change(&self, token_hash: &str) -> Result<Option<EmailChangeRow>, Error> {
        let row = with_db!(self.db(), pool => {
            sqlx::query_as::<_, EmailChangeRow>(
                "SELECT user_id, new_email, expires_at FROM email_changes WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// The newest email-change token of `user_id`.
    pub async fn latest_email_change(&self, user_id: &str) -> Result<Option<EmailChangeRow>, Error> {
        let row = with_db!(self.db(), pool => {
            sqlx::query_as::<_, EmailChangeRow>(
                "SELECT user_id, new_email, expires_at FROM email_changes WHERE user_id = $1 \
                 ORDER BY create_time DESC LIMIT 1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// Moves the account to its new address (verified by the token) and enqueues `user.email_changed`, in one
    /// transaction: the account's other email-change tokens, and the password-reset and verification tokens
    /// mailed to the old address, are deleted; the token that undoes the change is stored and
    /// `user.email_change_confirmed` mails it to the old address. False (nothing written) when the account is gone or its address
    /// is no longer `previous_email`; [`Error::EmailTaken`] when another account has the new address by now.
    pub async fn change_email(&self, change: EmailChange<'_>) -> Result<bool, Error> {
        let result: Result<bool, sqlx::Error> = with_db!(self.db(), pool => {
            async {
                let mut tx = pool.begin_write().await?;
                let moved =
                    sqlx::query("UPDATE users SET email = $1, email_verify_time = $2 WHERE id = $3 AND email = $4")
                        .bind(change.new_email)
                        .bind(change.verification.is_none().then_some(change.now))
                        .bind(change.user_id)
                        .bind(change.previous_email)
                        .execute(&mut *tx)
                        .await?;
                if moved.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                sqlx::query("DELETE FROM email_changes WHERE user_id = $1 AND token_hash <> $2")
                    .bind(change.user_id)
                    .bind(change.token_hash)
                    .execute(&mut *tx)
                    .await?;
                // Mailed to the old address: whoever reads that mailbox from now on must not reset the password
                // or verify an address that is not theirs.
                for table in ["password_resets", "email_verifications"] {
                    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE user_id = $1")))
                        .bind(change.user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                let insert = sqlx::query(
                    "INSERT INTO email_change_reverts (id, user_id, token_hash, expires_at, create_time, \
                     previous_email) VALUES ($1, $2, $3, $4, $5, $6)",
                );
                bind_mailed_token!(insert, change.revert).bind(change.previous_email).execute(&mut *tx).await?;
                if let Some((token, mailed)) = change.verification {
                    let insert = TokenPurpose::EmailVerification.insert_sql();
                    bind_mailed_token!(sqlx::query(sqlx::AssertSqlSafe(insert)), token).execute(&mut *tx).await?;
                    events::enqueue(&mut *tx, crate::NAME, mailed).await?;
                }
                events::enqueue(&mut *tx, crate::NAME, change.changed).await?;
                events::enqueue(&mut *tx, crate::NAME, change.confirmed).await?;
                tx.commit().await?;
                Ok(true)
            }
            .await
        });
        match result {
            Err(e) if is_unique_violation(&e) => Err(Error::EmailTaken),
            other => Ok(other?),
        }
    }

    /// The token hashed as `token_hash` that undoes an email change.
    pub async fn email_revert(&self, token_hash: &str) -> Result<Option<EmailRevertRow>, Error> {
        let row = with_db!(self.db(), pool => {
            sqlx::query_as::<_, EmailRevertRow>(
                "SELECT user_id, previous_email, expires_at FROM email_change_reverts WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// Takes the account back to `previous_email` (verified) with a new password, spending the token, in one
    /// transaction: every session ends, every API key is revoked, the account's other mailed tokens (its
    /// later changes' undo tokens among them) are deleted, and `user.email_changed` and `user.password_changed`
    /// are enqueued. The token's row is deleted first, so of two concurrent uses only one wins: false (nothing
    /// written) when it is gone or expired by now; [`Error::EmailTaken`] when another account has the address.
    pub async fn revert_email_change(&self, revert: EmailRevert<'_>) -> Result<bool, Error> {
        let result: Result<bool, sqlx::Error> = with_db!(self.db(), pool => {
            async {
                let mut tx = pool.begin_write().await?;
                let spent = sqlx::query(
                    "DELETE FROM email_change_reverts WHERE token_hash = $1 AND user_id = $2 AND expires_at > $3",
                )
                .bind(revert.token_hash)
                .bind(revert.user_id)
                .bind(revert.now)
                .execute(&mut *tx)
                .await?;
                if spent.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                sqlx::query("UPDATE users SET email = $1, email_verify_time = $2, password_hash = $3 WHERE id = $4")
                    .bind(revert.previous_email)
                    .bind(revert.now)
                    .bind(revert.password_hash)
                    .bind(revert.user_id)
                    .execute(&mut *tx)
                    .await?;
                for table in MAILED_TOKEN_TABLES {
                    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE user_id = $1")))
                        .bind(revert.user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                for statement in crate::session_store::SIGN_OUT_USER {
                    sqlx::query(statement).bind(revert.now).bind(revert.user_id).execute(&mut *tx).await?;
                }
                sqlx::query("UPDATE api_keys SET revoke_time = $1 WHERE user_id = $2 AND revoke_time IS NULL")
                    .bind(revert.now)
                    .bind(revert.user_id)
                    .execute(&mut *tx)
                    .await?;
                events::enqueue(&mut *tx, crate::NAME, revert.changed).await?;
                events::enqueue(&mut *tx, crate::NAME, revert.password_changed).await?;
                tx.commit().await?;
                Ok(true)
            }
            .await
        });
        match result {
            Err(e) if is_unique_violation(&e) => Err(Error::EmailTaken),
            other => Ok(other?),
        }
    }
}
