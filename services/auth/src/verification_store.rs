//! The SQL of email verification: finding a token mailed to an account's address (stored with
//! [`crate::token_store`]), and the account marked verified.

use platform::db::BeginWrite;
use platform::events::{self, NewEvent};
use platform::with_db;

use crate::error::Error;
use crate::store::Store;

/// A stored verification token, as its bearer's request finds it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EmailVerificationRow {
    /// The account.
    pub user_id: String,
    /// When it stops working, microseconds.
    pub expires_at: i64,
}

impl Store {
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
}
