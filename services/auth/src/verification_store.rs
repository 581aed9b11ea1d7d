//! The SQL of email verification: the tokens mailed to an account's address, and the account marked verified.

use platform::db::BeginWrite;
use platform::events::{self, NewEvent};
use platform::with_db;

use crate::error::Error;
use crate::store::Store;

/// An email-verification token to store (hashed), and the event that mails it.
#[derive(Debug, Clone)]
pub struct NewEmailVerification {
    /// UUIDv7 of the row.
    pub id: String,
    /// The account.
    pub user_id: String,
    /// SHA-256 hex of the token.
    pub token_hash: String,
    /// When it stops working, microseconds.
    pub expires_at: i64,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// `user.email_verification_requested`, carrying the token to the address.
    pub requested: NewEvent,
}

/// Stores a [`NewEmailVerification`]: id, user id, token hash, expiry, creation time.
pub(crate) const INSERT_EMAIL_VERIFICATION: &str =
    "INSERT INTO email_verifications (id, user_id, token_hash, expires_at, create_time) VALUES ($1, $2, $3, $4, $5)";

/// A stored verification token, as its bearer's request finds it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EmailVerificationRow {
    /// The account.
    pub user_id: String,
    /// When it stops working, microseconds.
    pub expires_at: i64,
}

impl Store {
    /// Stores a verification token for its account and, in the same transaction, the event that mails it; or
    /// nothing (false) when the account was sent one after `resent_after`, is verified already, or no longer
    /// exists. The account's row is written first, so concurrent requests for one account take their turns.
    pub async fn insert_email_verification(
        &self,
        verification: &NewEmailVerification,
        resent_after: i64,
    ) -> Result<bool, Error> {
        let inserted = with_db!(self.db(), pool => {
            let mut tx = pool.begin_write().await?;
            let account = sqlx::query(
                "UPDATE users SET create_time = create_time WHERE id = $1 AND email_verify_time IS NULL",
            )
            .bind(&verification.user_id)
            .execute(&mut *tx)
            .await?;
            let recent: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM email_verifications WHERE user_id = $1 AND create_time > $2",
            )
            .bind(&verification.user_id)
            .bind(resent_after)
            .fetch_one(&mut *tx)
            .await?;
            if account.rows_affected() == 0 || recent > 0 {
                tx.rollback().await?;
                false
            } else {
                sqlx::query(INSERT_EMAIL_VERIFICATION)
                .bind(&verification.id)
                .bind(&verification.user_id)
                .bind(&verification.token_hash)
                .bind(verification.expires_at)
                .bind(verification.create_time)
                .execute(&mut *tx)
                .await?;
                events::enqueue(&mut *tx, crate::NAME, &verification.requested).await?;
                tx.commit().await?;
                true
            }
        });
        Ok(inserted)
    }

    /// The verification token hashed as `token_hash`.
    pub async fn email_verification(&self, token_hash: &str) -> Result<Option<EmailVerificationRow>, Error> {
        let row = with_db!(self.db(), pool => {
            sqlx::query_as::<_, EmailVerificationRow>(
                "SELECT user_id, expires_at FROM email_verifications WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// The newest verification token of `user_id`.
    pub async fn latest_email_verification(&self, user_id: &str) -> Result<Option<EmailVerificationRow>, Error> {
        let row = with_db!(self.db(), pool => {
            sqlx::query_as::<_, EmailVerificationRow>(
                "SELECT user_id, expires_at FROM email_verifications WHERE user_id = $1 \
                 ORDER BY create_time DESC LIMIT 1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// Marks `user_id`'s address verified at `now` and enqueues `verified`, in one transaction; false (nothing
    /// written) when it was verified already or the account is gone.
    pub async fn verify_email(&self, user_id: &str, verified: &NewEvent, now: i64) -> Result<bool, Error> {
        let applied = with_db!(self.db(), pool => {
            let mut tx = pool.begin_write().await?;
            let marked =
                sqlx::query("UPDATE users SET email_verify_time = $1 WHERE id = $2 AND email_verify_time IS NULL")
                    .bind(now)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            if marked.rows_affected() == 0 {
                tx.rollback().await?;
                false
            } else {
                events::enqueue(&mut *tx, crate::NAME, verified).await?;
                tx.commit().await?;
                true
            }
        });
        Ok(applied)
    }

    /// Deletes the verification tokens that expired before `before`; returns how many.
    pub async fn delete_expired_email_verifications(&self, before: i64) -> Result<u64, Error> {
        let deleted = with_db!(self.db(), pool => {
            sqlx::query("DELETE FROM email_verifications WHERE expires_at < $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted)
    }
}
