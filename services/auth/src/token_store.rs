//! The SQL shared by the single-use tokens mailed to an account's address: password resets and email
//! verifications. Each has its own table of the same shape; what tells them apart is [`TokenPurpose`]. Email
//! changes' tokens carry their new address too, so they have SQL of their own ([`crate::email_change_store`]).

use platform::db::BeginWrite;
use platform::events::{self, NewEvent};
use platform::with_db;

use crate::domain;
use crate::error::Error;
use crate::store::Store;

/// What a mailed token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// It sets a new password (`password_resets`).
    PasswordReset,
    /// It verifies the account's address (`email_verifications`).
    EmailVerification,
}

/// Every table of tokens mailed to an address, for what is done to all alike (deleting the expired ones): those
/// of the [`TokenPurpose`]s, and `email_changes` and `email_change_reverts`, whose tokens also carry an address
/// ([`crate::email_change_store`]).
pub const MAILED_TOKEN_TABLES: [&str; 4] =
    ["password_resets", "email_verifications", "email_changes", "email_change_reverts"];

impl TokenPurpose {
    /// Its table.
    pub fn table(self) -> &'static str {
        match self {
            Self::PasswordReset => "password_resets",
            Self::EmailVerification => "email_verifications",
        }
    }

    /// What the account must still be for a token to be mailed, as a condition on its `users` row.
    fn account_condition(self) -> &'static str {
        match self {
            Self::PasswordReset => "TRUE",
            // A verified address needs no more codes.
            Self::EmailVerification => "email_verify_time IS NULL",
        }
    }

    /// The statement storing a [`MailedToken`]: id, user id, token hash, expiry, creation time.
    pub(crate) fn insert_sql(self) -> String {
        format!(
            "INSERT INTO {} (id, user_id, token_hash, expires_at, create_time) VALUES ($1, $2, $3, $4, $5)",
            self.table()
        )
    }
}

/// Binds a [`MailedToken`] to a statement's next five parameters: id, user id, token hash, expiry, creation time
/// (a macro, so that it binds to either engine's statement inside `with_db!`).
macro_rules! bind_mailed_token {
    ($query:expr, $token:expr) => {
        $query
            .bind(&$token.id)
            .bind(&$token.user_id)
            .bind(&$token.token_hash)
            .bind($token.expires_at)
            .bind($token.create_time)
    };
}
pub(crate) use bind_mailed_token;

/// A single-use token to store (hashed) for an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailedToken {
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
}

impl MailedToken {
    /// `token` for `user_id`, made at `now` and working for `ttl_micros`.
    pub fn new(user_id: &str, token: &str, now: i64, ttl_micros: i64) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user_id.to_owned(),
            token_hash: domain::hash_opaque_token(token),
            expires_at: now + ttl_micros,
            create_time: now,
        }
    }
}

impl Store {
    /// Stores `token` for its account and, in the same transaction, `mailed`, the event that mails it; or nothing
    /// (false) when the account was sent one for the same purpose after `resent_after`, is no longer what the
    /// purpose needs (an address verified meanwhile) or no longer exists. The account's row is written first, so
    /// concurrent requests for one account take their turns and at most one mails it.
    pub async fn insert_mailed_token(
        &self,
        purpose: TokenPurpose,
        token: &MailedToken,
        mailed: &NewEvent,
        resent_after: i64,
    ) -> Result<bool, Error> {
        let lock =
            format!("UPDATE users SET create_time = create_time WHERE id = $1 AND {}", purpose.account_condition());
        let recent = format!("SELECT COUNT(*) FROM {} WHERE user_id = $1 AND create_time > $2", purpose.table());
        let insert = purpose.insert_sql();
        let inserted = with_db!(self.db(), pool => {
            let mut tx = pool.begin_write().await?;
            let account =
                sqlx::query(sqlx::AssertSqlSafe(lock.as_str())).bind(&token.user_id).execute(&mut *tx).await?;
            let recent: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(recent.as_str()))
                .bind(&token.user_id)
                .bind(resent_after)
                .fetch_one(&mut *tx)
                .await?;
            if account.rows_affected() == 0 || recent > 0 {
                tx.rollback().await?;
                false
            } else {
                bind_mailed_token!(sqlx::query(sqlx::AssertSqlSafe(insert.as_str())), token).execute(&mut *tx).await?;
                events::enqueue(&mut *tx, crate::NAME, mailed).await?;
                tx.commit().await?;
                true
            }
        });
        Ok(inserted)
    }

    /// Deletes the tokens of `table` (one of [`MAILED_TOKEN_TABLES`]) that expired before `before`; returns how
    /// many.
    pub async fn delete_expired_tokens(&self, table: &str, before: i64) -> Result<u64, Error> {
        let sql = format!("DELETE FROM {table} WHERE expires_at < $1");
        let deleted = with_db!(self.db(), pool => {
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).bind(before).execute(pool).await?.rows_affected()
        });
        Ok(deleted)
    }
}
