//! All SQL of the auth service, written once for SQLite and PostgreSQL and run through `with_db!`.

use platform::db::{BeginWrite, Db, is_unique_violation, retry_conflicts};
use platform::events::{self, NewEvent};
use platform::with_db;

use crate::error::Error;
use crate::keys::StoredKey;
use crate::token_store::{MailedToken, TokenPurpose, bind_mailed_token};

/// A row of `users`.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRow {
    /// UUIDv7.
    pub id: String,
    /// Normalised email, unique.
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Name shown to people.
    pub display_name: String,
    /// Space-separated roles.
    pub roles: String,
    /// BCP 47 language tag for messages to the user.
    pub locale: String,
    /// Microseconds since the epoch.
    pub create_time: i64,
    /// When staff disabled the account, microseconds; `None` while it is enabled.
    pub disable_time: Option<i64>,
    /// When the owner verified the address, microseconds; `None` until then.
    pub email_verify_time: Option<i64>,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("display_name", &self.display_name)
            .field("roles", &self.roles)
            .field("locale", &self.locale)
            .field("create_time", &self.create_time)
            .field("disable_time", &self.disable_time)
            .field("email_verify_time", &self.email_verify_time)
            .finish_non_exhaustive()
    }
}

/// A refresh token to store (hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefreshToken {
    /// UUIDv7 of the row.
    pub id: String,
    /// SHA-256 hex of the token.
    pub token_hash: String,
    /// When it stops being accepted, microseconds.
    pub expires_at: i64,
}

/// What happened to a refresh token presented for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live and is now spent; its successor is stored.
    Rotated {
        /// The token's user as of now.
        user: Box<UserRow>,
        /// The session (family) the token belongs to.
        session_id: String,
    },
    /// The token had already been spent or revoked: its whole family is now revoked.
    Reused,
    /// Unknown or expired.
    Invalid,
}

/// The outcome of a rotation's first transaction: final, or a reuse whose session is yet to be signed out.
enum Spend {
    /// Rotated, or refused (unknown, expired, its account gone or disabled).
    Done(Rotation),
    /// A reuse of a token of this family.
    Reused { family_id: String },
}

/// The columns of a [`UserRow`], in its order.
pub(crate) const USER_COLUMNS: &str =
    "id, email, password_hash, display_name, roles, locale, create_time, disable_time, email_verify_time";

/// The auth service's database.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// A store over `db` (already migrated).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Inserts a user and, in the same transaction, its `user.registered` event and the token that verifies its
    /// address (with the event mailing it), if any; [`Error::EmailTaken`] when the email already has an account.
    pub async fn insert_user(
        &self,
        user: &UserRow,
        registered: &NewEvent,
        verification: Option<(&MailedToken, &NewEvent)>,
    ) -> Result<(), Error> {
        let insert_token = TokenPurpose::EmailVerification.insert_sql();
        let result: Result<(), sqlx::Error> = with_db!(&self.db, pool => {
            async {
                // The insert comes first so that the transaction takes SQLite's write lock at once.
                let mut tx = pool.begin_write().await?;
                sqlx::query(
                    "INSERT INTO users (id, email, password_hash, display_name, roles, locale, create_time, \
                     email_verify_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&user.id)
                .bind(&user.email)
                .bind(&user.password_hash)
                .bind(&user.display_name)
                .bind(&user.roles)
                .bind(&user.locale)
                .bind(user.create_time)
                .bind(user.email_verify_time)
                .execute(&mut *tx)
                .await?;
                events::enqueue(&mut *tx, crate::NAME, registered).await?;
                if let Some((token, requested)) = verification {
                    bind_mailed_token!(sqlx::query(sqlx::AssertSqlSafe(insert_token.as_str())), token)
                        .execute(&mut *tx)
                        .await?;
                    events::enqueue(&mut *tx, crate::NAME, requested).await?;
                }
                tx.commit().await
            }
            .await
        });
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(Error::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// The user with this (normalised) email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
        let user = with_db!(&self.db, pool => {
            sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql)).bind(email).fetch_optional(pool).await?
        });
        Ok(user)
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let user = with_db!(&self.db, pool => {
            sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?
        });
        Ok(user)
    }

    /// Every signing key, oldest first.
    pub async fn signing_keys(&self) -> Result<Vec<StoredKey>, Error> {
        let keys = with_db!(&self.db, pool => {
            sqlx::query_as::<_, StoredKey>(
                "SELECT kid, private_key_pkcs8, public_key, create_time FROM signing_keys ORDER BY create_time, kid",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(keys)
    }

    /// Stores a signing key.
    pub async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), Error> {
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO signing_keys (kid, private_key_pkcs8, public_key, create_time) VALUES ($1, $2, $3, $4)",
            )
            .bind(&key.kid)
            .bind(&key.private_key_pkcs8)
            .bind(&key.public_key)
            .bind(key.create_time)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Stores the first refresh token of a new family (a login) for `user_id`, unless the account is gone or
    /// disabled (false). The account's row is written first: a sign-in and a concurrent disable take turns, so
    /// either the sign-in sees the account disabled or the disable sees, and ends, the new session.
    pub async fn insert_refresh_token(
        &self,
        token: &NewRefreshToken,
        family_id: &str,
        user_id: &str,
        now: i64,
    ) -> Result<bool, Error> {
        let inserted = with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let enabled = sqlx::query("UPDATE users SET disable_time = disable_time WHERE id = $1 AND disable_time IS NULL")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            if enabled.rows_affected() == 0 {
                tx.rollback().await?;
                false
            } else {
                sqlx::query(
                    "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at, create_time) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&token.id)
                .bind(family_id)
                .bind(user_id)
                .bind(&token.token_hash)
                .bind(token.expires_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                true
            }
        });
        Ok(inserted)
    }

    /// Spends the token hashed as `presented` and stores `successor` in its family, in one transaction.
    ///
    /// The spend is the transaction's first statement and is conditional (live, unspent, unrevoked), so of
    /// two concurrent presentations only one can win; on SQLite it also takes the write lock up front. A
    /// token that exists but was already spent or revoked is a reuse: its whole family is signed out, in a second
    /// transaction.
    pub async fn rotate_refresh_token(
        &self,
        presented: &str,
        successor: &NewRefreshToken,
        now: i64,
    ) -> Result<Rotation, Error> {
        let spend = retry_conflicts(crate::NAME, || async move {
            let spend = with_db!(&self.db, pool => {
                let mut tx = pool.begin_write().await?;
                let spent = sqlx::query(
                    "UPDATE refresh_tokens SET used_at = $1 \
                     WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
                )
                .bind(now)
                .bind(presented)
                .execute(&mut *tx)
                .await?;
                if spent.rows_affected() == 1 {
                    let (family_id, user_id) = sqlx::query_as::<_, (String, String)>(
                        "SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $1",
                    )
                    .bind(presented)
                    .fetch_one(&mut *tx)
                    .await?;
                    let user = sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1")))
                        .bind(&user_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    match user {
                        // Gone, or disabled (its tokens were revoked then; this one was spent concurrently).
                        None | Some(UserRow { disable_time: Some(_), .. }) => {
                            tx.rollback().await?;
                            Spend::Done(Rotation::Invalid)
                        }
                        Some(user) => {
                            sqlx::query(
                                "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at, create_time) \
                                 VALUES ($1, $2, $3, $4, $5, $6)",
                            )
                            .bind(&successor.id)
                            .bind(&family_id)
                            .bind(&user_id)
                            .bind(&successor.token_hash)
                            .bind(successor.expires_at)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                            tx.commit().await?;
                            Spend::Done(Rotation::Rotated { user: Box::new(user), session_id: family_id })
                        }
                    }
                } else {
                    // Only read, in this transaction, which then ends: on PostgreSQL a spend that waited for a
                    // concurrent one keeps the token's row locked though it changed nothing, and signing out while
                    // holding that lock deadlocked with every other sign-out of the session (they take the listing
                    // first, then the tokens).
                    let found = sqlx::query_as::<_, (String, Option<i64>, Option<i64>)>(
                        "SELECT family_id, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
                    )
                    .bind(presented)
                    .fetch_optional(&mut *tx)
                    .await?;
                    tx.rollback().await?;
                    match found {
                        Some((family_id, used_at, revoked_at)) if used_at.is_some() || revoked_at.is_some() => {
                            Spend::Reused { family_id }
                        }
                        _ => Spend::Done(Rotation::Invalid),
                    }
                }
            });
            Ok::<_, Error>(spend)
        })
        .await?;
        match spend {
            Spend::Done(rotation) => Ok(rotation),
            Spend::Reused { family_id } => {
                // A transaction of its own, ordered like every other sign-out.
                self.end_session(&family_id, now).await?;
                tracing::warn!(family_id = %family_id, "refresh token reused: family revoked");
                Ok(Rotation::Reused)
            }
        }
    }

    /// Deletes the refresh tokens that expired before `before`, a thousand per statement so that none holds many
    /// locks or runs long; returns how many.
    pub async fn delete_expired_refresh_tokens(&self, before: i64) -> Result<u64, Error> {
        const DELETE: &str =
            "DELETE FROM refresh_tokens WHERE id IN (SELECT id FROM refresh_tokens WHERE expires_at < $1 LIMIT $2)";
        Ok(platform::db::delete_in_batches(&self.db, DELETE, before, 1000).await?)
    }

    /// Revokes every token of the family of the token hashed as `presented`, and lists the session as ended so its
    /// access tokens are refused too. Nothing happens for an unknown token; revoking twice is harmless.
    pub async fn revoke_family_of(&self, presented: &str, now: i64) -> Result<(), Error> {
        retry_conflicts(crate::NAME, || async move {
            with_db!(&self.db, pool => {
                let mut tx = pool.begin_write().await?;
                for statement in crate::session_store::SIGN_OUT_SESSION_OF_TOKEN {
                    sqlx::query(statement).bind(now).bind(presented).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            });
            Ok(())
        })
        .await
    }
}
