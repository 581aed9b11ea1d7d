//! The SQL of account administration: listing accounts, setting their roles, disabling and enabling them (kept
//! beside `store.rs`, which holds accounts, refresh tokens and signing keys).

use platform::db::{BeginWrite, retry_conflicts};
use platform::events::{self, NewEvent};
use platform::with_db;

use crate::error::Error;
use crate::session_store::SIGN_OUT_USER;
use crate::staff::UserFilter;
use crate::store::{Store, USER_COLUMNS, UserRow};

impl Store {
    /// Accounts matching `filter`, oldest first (ids are UUIDv7), after id `after`; at most `limit`.
    pub async fn list_users(&self, filter: &UserFilter, after: &str, limit: i64) -> Result<Vec<UserRow>, Error> {
        // Roles are stored space-separated; padding both ends makes ` role ` match whole names only.
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users \
             WHERE email LIKE $1 ESCAPE '\\' AND ($2 = '' OR (' ' || roles || ' ') LIKE ('% ' || $2 || ' %')) \
             AND id > $3 ORDER BY id LIMIT $4"
        );
        let users = with_db!(self.db(), pool => {
            sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
                .bind(&filter.email_pattern)
                .bind(&filter.role)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(users)
    }

    /// Sets user `id`'s roles to `roles` (stored form) and, when `takes_a_role_away` holds for the account as it
    /// was, ends every session of the account, in one transaction with the event `announce` makes of the account
    /// before and after (if any). The account's row is written first, so concurrent changes take turns and each
    /// sees the roles the previous one left. `None` when there is no such account.
    pub async fn set_roles(
        &self,
        id: &str,
        roles: &str,
        takes_a_role_away: impl Fn(&UserRow) -> bool,
        announce: impl Fn(&UserRow, &UserRow) -> Option<NewEvent>,
        now: i64,
    ) -> Result<Option<UserRow>, Error> {
        let lock = format!("UPDATE users SET roles = roles WHERE id = $1 RETURNING {USER_COLUMNS}");
        let write = format!("UPDATE users SET roles = $1 WHERE id = $2 RETURNING {USER_COLUMNS}");
        // Borrowed, as every attempt uses them.
        let (lock, write, takes_a_role_away, announce) = (lock.as_str(), write.as_str(), &takes_a_role_away, &announce);
        retry_conflicts(crate::NAME, || async move {
            let updated = with_db!(self.db(), pool => {
                let mut tx = pool.begin_write().await?;
                match sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(lock)).bind(id).fetch_optional(&mut *tx).await? {
                    None => {
                        tx.rollback().await?;
                        None
                    }
                    Some(before) => {
                        if takes_a_role_away(&before) {
                            for statement in SIGN_OUT_USER {
                                sqlx::query(statement).bind(now).bind(id).execute(&mut *tx).await?;
                            }
                        }
                        let after = sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(write))
                            .bind(roles)
                            .bind(id)
                            .fetch_one(&mut *tx)
                            .await?;
                        if let Some(event) = announce(&before, &after) {
                            events::enqueue(&mut *tx, crate::NAME, &event).await?;
                        }
                        tx.commit().await?;
                        Some(after)
                    }
                }
            });
            Ok(updated)
        })
        .await
    }

    /// Disables user `id` (at `now`; an account disabled already keeps its first time) and ends every session
    /// of it, or enables it again (`now` is `None`), in one transaction with the event `announce` makes of the
    /// account before and after (if any). The row is written first, so a disable and an enable at once take turns
    /// and each sees what the other left. `None` when there is no such account.
    pub async fn set_disabled(
        &self,
        id: &str,
        now: Option<i64>,
        announce: impl Fn(&UserRow, &UserRow) -> Option<NewEvent>,
    ) -> Result<Option<UserRow>, Error> {
        let lock = format!("UPDATE users SET disable_time = disable_time WHERE id = $1 RETURNING {USER_COLUMNS}");
        let write = format!(
            "UPDATE users SET disable_time = CASE WHEN $1 IS NULL THEN NULL ELSE COALESCE(disable_time, $1) END \
             WHERE id = $2 RETURNING {USER_COLUMNS}"
        );
        let (lock, write, announce) = (lock.as_str(), write.as_str(), &announce);
        retry_conflicts(crate::NAME, || async move {
            let updated = with_db!(self.db(), pool => {
                let mut tx = pool.begin_write().await?;
                match sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(lock)).bind(id).fetch_optional(&mut *tx).await? {
                    None => {
                        tx.rollback().await?;
                        None
                    }
                    Some(before) => {
                        let after = sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(write))
                            .bind(now)
                            .bind(id)
                            .fetch_one(&mut *tx)
                            .await?;
                        if let Some(now) = now {
                            for statement in SIGN_OUT_USER {
                                sqlx::query(statement).bind(now).bind(id).execute(&mut *tx).await?;
                            }
                        }
                        if let Some(event) = announce(&before, &after) {
                            events::enqueue(&mut *tx, crate::NAME, &event).await?;
                        }
                        tx.commit().await?;
                        Some(after)
                    }
                }
            });
            Ok(updated)
        })
        .await
    }
}
