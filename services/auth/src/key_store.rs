//! The SQL of API keys (kept beside `store.rs`, which holds accounts, refresh tokens and signing keys).

use platform::with_db;

use crate::error::Error;
use crate::store::Store;

/// An API key as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRow {
    /// Id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Name.
    pub name: String,
    /// Shown prefix of the secret.
    pub prefix: String,
    /// SHA-256 hex of the secret.
    pub key_hash: String,
    /// Space-separated scopes.
    pub scopes: String,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// Microseconds since the epoch.
    pub expire_time: i64,
    /// Microseconds since the epoch, when revoked.
    pub revoke_time: Option<i64>,
}

const COLUMNS: &str = "id, user_id, name, prefix, key_hash, scopes, create_time, expire_time, revoke_time";

impl Store {
    /// Stores a new key.
    pub async fn insert_api_key(&self, key: &ApiKeyRow) -> Result<(), Error> {
        with_db!(self.db(), pool => {
            sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")))
                .bind(&key.id)
                .bind(&key.user_id)
                .bind(&key.name)
                .bind(&key.prefix)
                .bind(&key.key_hash)
                .bind(&key.scopes)
                .bind(key.create_time)
                .bind(key.expire_time)
                .bind(key.revoke_time)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The keys of a user, newest first.
    pub async fn api_keys_of(&self, user_id: &str) -> Result<Vec<ApiKeyRow>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY create_time DESC, id DESC");
        Ok(with_db!(self.db(), pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user_id).fetch_all(pool).await?))
    }

    /// The key with this secret hash.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRow>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1");
        Ok(
            with_db!(self.db(), pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(key_hash).fetch_optional(pool).await?),
        )
    }

    /// Revokes a key of `user_id` (a second revoke keeps the first time); `None` when the user has no such key.
    pub async fn revoke_api_key(&self, user_id: &str, id: &str, now: i64) -> Result<Option<ApiKeyRow>, Error> {
        let sql = format!(
            "UPDATE api_keys SET revoke_time = COALESCE(revoke_time, $1) WHERE id = $2 AND user_id = $3 \
             RETURNING {COLUMNS}"
        );
        Ok(
            with_db!(self.db(), pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).bind(id).bind(user_id).fetch_optional(pool).await?),
        )
    }
}
