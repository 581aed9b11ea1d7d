//! The SQL of password changes and resets, and of deleting an account (kept beside `store.rs`, which holds
//! accounts, refresh tokens and signing keys).

use platform::db::{BeginWrite, retry_conflicts};
use platform::events::{self, NewEvent};
use platform::with_db;

use crate::error::Error;
use crate::store::{NewRefreshToken, Store};

/// A stored reset token, as its bearer's request finds it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PasswordResetRow {
    /// The account.
    pub user_id: String,
    /// When it stops working, microseconds.
    pub expires_at: i64,
    /// When it (or another token of the account) set a password.
    pub used_at: Option<i64>,
}

/// What must still hold for a new password to be written: the change's guard against a concurrent one.
#[derive(Debug, Clone, Copy)]
pub enum Guard<'a> {
    /// The account's password is still the one the caller proved they know (this stored hash).
    CurrentHash(&'a str),
    /// This reset token (its hash) is still unspent and unexpired.
    ResetToken(&'a str),
}

/// A new password to write.
#[derive(Debug, Clone, Copy)]
pub struct NewPassword<'a> {
    /// The account.
    pub user_id: &'a str,
    /// The new password's Argon2id PHC string.
    pub password_hash: &'a str,
    /// What must still hold.
    pub guard: Guard<'a>,
    /// The caller's new session (the first refresh token of a new family), if it keeps one.
    pub session: Option<&'a NewRefreshToken>,
    /// `user.password_changed`.
    pub changed: &'a NewEvent,
    /// Microseconds since the epoch.
    pub now: i64,
}

impl Store {
    /// The reset token hashed as `token_hash`.
    pub async fn password_reset(&self, token_hash: &str) -> Result<Option<PasswordResetRow>, Error> {
        let row = with_db!(self.db(), pool => {
            sqlx::query_as::<_, PasswordResetRow>(
                "SELECT user_id, expires_at, used_at FROM password_resets WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// Writes a new password, if its guard still holds (false if not: a concurrent change won), in one
    /// transaction with its effects: every reset token of the account spent, every session (refresh token)
    /// revoked, the caller's new session stored, and `user.password_changed` in the outbox. The guarded
    /// statement comes first, so of two concurrent changes only one can win.
    pub async fn set_password(&self, change: NewPassword<'_>) -> Result<bool, Error> {
        let NewPassword { user_id, password_hash, guard, session, changed, now } = change;
        retry_conflicts(crate::NAME, || async move {
            let applied = with_db!(self.db(), pool => {
                let mut tx = pool.begin_write().await?;
                let guarded = match guard {
                    Guard::CurrentHash(current) => {
                        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
                            .bind(password_hash)
                            .bind(user_id)
                            .bind(current)
                            .execute(&mut *tx)
                            .await?
                    }
                    Guard::ResetToken(token_hash) => {
                        sqlx::query(
                            "UPDATE password_resets SET used_at = $1 \
                             WHERE token_hash = $2 AND user_id = $3 AND used_at IS NULL AND expires_at > $1",
                        )
                        .bind(now)
                        .bind(token_hash)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?
                    }
                };
                if guarded.rows_affected() == 0 {
                    tx.rollback().await?;
                    false
                } else {
                    if let Guard::ResetToken(_) = guard {
                        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                            .bind(password_hash)
                            .bind(user_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::query("UPDATE password_resets SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
                        .bind(now)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                    for statement in crate::session_store::SIGN_OUT_USER {
                        sqlx::query(statement).bind(now).bind(user_id).execute(&mut *tx).await?;
                    }
                    if let Some(token) = session {
                        sqlx::query(
                            "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at, create_time) \
                             VALUES ($1, $1, $2, $3, $4, $5)",
                        )
                        .bind(&token.id)
                        .bind(user_id)
                        .bind(&token.token_hash)
                        .bind(token.expires_at)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    events::enqueue(&mut *tx, crate::NAME, changed).await?;
                    tx.commit().await?;
                    true
                }
            });
            Ok(applied)
        })
        .await
    }

    /// Deletes account `user_id` with everything auth keeps of it (sessions, listed as ended; API keys, reset
    /// tokens), if its password is still `password_hash` (false if not, or if it is gone already), and writes
    /// `user.deleted` in the same transaction. The account's row is locked first, so a concurrent change of the password makes this fail.
    pub async fn delete_user(
        &self,
        user_id: &str,
        password_hash: &str,
        deleted: &NewEvent,
        now: i64,
    ) -> Result<bool, Error> {
        retry_conflicts(crate::NAME, || async move {
            let removed = with_db!(self.db(), pool => {
                let mut tx = pool.begin_write().await?;
                // The guard, and the row lock that orders this after (or before) a concurrent password change; the row
                // itself goes last, as deleting it would take its sessions with it (ON DELETE CASCADE) before they are
                // listed as ended.
                let account = sqlx::query("UPDATE users SET password_hash = password_hash WHERE id = $1 AND password_hash = $2")
                    .bind(user_id)
                    .bind(password_hash)
                    .execute(&mut *tx)
                    .await?;
                if account.rows_affected() == 0 {
                    tx.rollback().await?;
                    false
                } else {
                    // Listed as ended before the refresh tokens go (the listing reads them).
                    let [end_sessions, _] = crate::session_store::SIGN_OUT_USER;
                    sqlx::query(end_sessions).bind(now).bind(user_id).execute(&mut *tx).await?;
                    // Named rather than left to ON DELETE CASCADE, which SQLite applies only where foreign keys are
                    // switched on (sqlx does; other tools opening the file do not).
                    for table in ["refresh_tokens", "api_keys"].into_iter().chain(crate::token_store::MAILED_TOKEN_TABLES) {
                        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE user_id = $1")))
                            .bind(user_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::query("DELETE FROM users WHERE id = $1").bind(user_id).execute(&mut *tx).await?;
                    events::enqueue(&mut *tx, crate::NAME, deleted).await?;
                    tx.commit().await?;
                    true
                }
            });
            Ok(removed)
        })
        .await
    }
}
