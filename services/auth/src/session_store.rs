//! The SQL of sessions. A session is a refresh-token family (a sign-in and its refreshes); its access tokens carry
//! its id as `sid`. Here: a user's live sessions, and the ended ones (`revoked_sessions`): the statements that
//! record them, run in the transaction of the change that ends them (sign-out, password change or reset, the
//! account deleted or disabled, a role taken away, a refresh token reused, the owner ending one), and the listing
//! verifiers poll.

use platform::with_db;

use crate::error::Error;
use crate::store::Store;

/// The start of every statement that ends sessions: each live family the condition selects (`$1` is now) is
/// listed as ended at `$1`. Run before the family's tokens are revoked or deleted, which the condition relies on;
/// a family listed already keeps its first time.
macro_rules! end_sessions_where {
    ($condition:literal) => {
        concat!(
            "INSERT INTO revoked_sessions (session_id, revoke_time) \
             SELECT DISTINCT family_id, $1 FROM refresh_tokens \
             WHERE revoked_at IS NULL AND expires_at > $1 AND ",
            $condition,
            " ON CONFLICT (session_id) DO NOTHING"
        )
    };
}

/// Ends every live session of user `$2`.
pub(crate) const END_SESSIONS_OF_USER: &str = end_sessions_where!("user_id = $2");
/// Ends session (family) `$2`.
pub(crate) const END_SESSION: &str = end_sessions_where!("family_id = $2");
/// Ends session `$2` if it is user `$3`'s.
const END_OWN_SESSION: &str = end_sessions_where!("family_id = $2 AND user_id = $3");
/// Ends every session of user `$2` but `$3`.
const END_OTHER_SESSIONS: &str = end_sessions_where!("user_id = $2 AND family_id <> $3");
/// Ends the session of the refresh token hashed as `$2`.
pub(crate) const END_SESSION_OF_TOKEN: &str =
    end_sessions_where!("family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $2)");

/// Revokes the refresh tokens of every session of user `$2` at `$1`; after [`END_SESSIONS_OF_USER`], which reads
/// the live ones.
pub(crate) const REVOKE_SESSIONS_OF_USER: &str =
    "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL";

/// A live session, as its owner lists it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRow {
    /// The refresh-token family.
    pub session_id: String,
    /// The sign-in, microseconds.
    pub create_time: i64,
    /// The latest refresh (the sign-in if none), microseconds.
    pub refresh_time: i64,
    /// When its latest refresh token expires, microseconds.
    pub expire_time: i64,
}

/// A row of `revoked_sessions`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RevokedSessionRow {
    /// The refresh-token family, the `sid` of its access tokens.
    pub session_id: String,
    /// When it ended, microseconds.
    pub revoke_time: i64,
}

impl Store {
    /// User `user_id`'s live sessions at `now`, oldest first (family ids are UUIDv7), after session `after`; at most
    /// `limit`.
    pub async fn sessions_of(
        &self,
        user_id: &str,
        now: i64,
        after: &str,
        limit: i64,
    ) -> Result<Vec<SessionRow>, Error> {
        let rows = with_db!(self.db(), pool => {
            sqlx::query_as::<_, SessionRow>(
                "SELECT family_id AS session_id, MIN(create_time) AS create_time, MAX(create_time) AS refresh_time, \
                 MAX(expires_at) AS expire_time FROM refresh_tokens \
                 WHERE user_id = $1 AND revoked_at IS NULL AND family_id > $3 \
                 GROUP BY family_id HAVING MAX(expires_at) > $2 ORDER BY family_id LIMIT $4",
            )
            .bind(user_id)
            .bind(now)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Ends session `session_id` of user `user_id` (listed as ended, its refresh tokens revoked); false when the
    /// user has no such live session.
    pub async fn end_own_session(&self, user_id: &str, session_id: &str, now: i64) -> Result<bool, Error> {
        let ended = with_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            let listed = sqlx::query(END_OWN_SESSION).bind(now).bind(session_id).bind(user_id).execute(&mut *tx).await?;
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND user_id = $3 AND revoked_at IS NULL")
                .bind(now)
                .bind(session_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            listed.rows_affected() > 0
        });
        Ok(ended)
    }

    /// Ends every live session of user `user_id` but `keep`; returns how many ended.
    pub async fn end_other_sessions(&self, user_id: &str, keep: &str, now: i64) -> Result<u64, Error> {
        let ended = with_db!(self.db(), pool => {
            let mut tx = pool.begin().await?;
            let listed = sqlx::query(END_OTHER_SESSIONS).bind(now).bind(user_id).bind(keep).execute(&mut *tx).await?;
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND family_id <> $3 AND revoked_at IS NULL")
                .bind(now)
                .bind(user_id)
                .bind(keep)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            listed.rows_affected()
        });
        Ok(ended)
    }

    /// Sessions ended at or after `since`, oldest first (ties by id), after the row `after` (the last of the previous
    /// page) if given; at most `limit`.
    pub async fn revoked_sessions(
        &self,
        since: i64,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<RevokedSessionRow>, Error> {
        let (after_time, after_id) = after.unwrap_or((i64::MIN, ""));
        let rows = with_db!(self.db(), pool => {
            sqlx::query_as::<_, RevokedSessionRow>(
                "SELECT session_id, revoke_time FROM revoked_sessions \
                 WHERE revoke_time >= $1 AND (revoke_time > $2 OR (revoke_time = $2 AND session_id > $3)) \
                 ORDER BY revoke_time, session_id LIMIT $4",
            )
            .bind(since)
            .bind(after_time)
            .bind(after_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Forgets the sessions that ended before `before`; returns how many.
    pub async fn delete_old_revoked_sessions(&self, before: i64) -> Result<u64, Error> {
        let deleted = with_db!(self.db(), pool => {
            sqlx::query("DELETE FROM revoked_sessions WHERE revoke_time < $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted)
    }
}
