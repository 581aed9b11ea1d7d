//! The SQL of sessions. A session is a refresh-token family (a sign-in and its refreshes); its access tokens carry
//! its id as `sid`. Here: a user's live sessions, and the ended ones (`revoked_sessions`): the statements that
//! record them, run in the transaction of the change that ends them (sign-out, password change or reset, the
//! account deleted or disabled, a role taken away, a refresh token reused, the owner ending one), and the listing
//! verifiers poll.

use platform::db::{BeginWrite, retry_conflicts};
use platform::with_db;

use crate::error::Error;
use crate::store::Store;

/// The two statements that sign out the live sessions (refresh-token families) a condition selects, at `$1`
/// (now): the first lists each as ended (a family listed already keeps its first time), the second revokes its
/// refresh tokens. Run in this order, in one transaction: the listing reads the tokens the revocation changes.
/// Every sign-out takes its rows in this order (the account's row first where it changes the account, then the
/// listing, by session id, then the tokens), so two at once queue rather than deadlock; should PostgreSQL still
/// abort one to break a deadlock, it runs again (`platform::db::retry_conflicts`).
macro_rules! sign_out_where {
    ($condition:literal) => {
        [
            concat!(
                "INSERT INTO revoked_sessions (session_id, revoke_time) \
                 SELECT DISTINCT family_id, $1 FROM refresh_tokens \
                 WHERE revoked_at IS NULL AND expires_at > $1 AND ",
                $condition,
                " ORDER BY family_id ON CONFLICT (session_id) DO NOTHING"
            ),
            concat!("UPDATE refresh_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND ", $condition),
        ]
    };
}

/// Signs out every session of user `$2`.
pub(crate) const SIGN_OUT_USER: [&str; 2] = sign_out_where!("user_id = $2");
/// Signs out session (family) `$2`.
pub(crate) const SIGN_OUT_SESSION: [&str; 2] = sign_out_where!("family_id = $2");
/// Signs out the session of the refresh token hashed as `$2`.
pub(crate) const SIGN_OUT_SESSION_OF_TOKEN: [&str; 2] =
    sign_out_where!("family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $2)");
/// Signs out session `$2` if it is user `$3`'s.
const SIGN_OUT_OWN_SESSION: [&str; 2] = sign_out_where!("family_id = $2 AND user_id = $3");
/// Signs out every session of user `$2` but `$3`.
const SIGN_OUT_OTHER_SESSIONS: [&str; 2] = sign_out_where!("user_id = $2 AND family_id <> $3");

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

    /// Ends session `session_id` of user `user_id`; false when the user has no such live session.
    pub async fn end_own_session(&self, user_id: &str, session_id: &str, now: i64) -> Result<bool, Error> {
        Ok(self.sign_out(SIGN_OUT_OWN_SESSION, now, &[session_id, user_id]).await? > 0)
    }

    /// Ends every live session of user `user_id` but `keep`; returns how many ended.
    pub async fn end_other_sessions(&self, user_id: &str, keep: &str, now: i64) -> Result<u64, Error> {
        self.sign_out(SIGN_OUT_OTHER_SESSIONS, now, &[user_id, keep]).await
    }

    /// Ends session `session_id`, whoever's it is (a refresh token of it was reused); false when it had ended.
    pub async fn end_session(&self, session_id: &str, now: i64) -> Result<bool, Error> {
        Ok(self.sign_out(SIGN_OUT_SESSION, now, &[session_id]).await? > 0)
    }

    /// Runs a sign-out pair with `$2`, `$3`, … from `parameters` in a transaction of its own; returns how many
    /// sessions ended.
    async fn sign_out(&self, statements: [&'static str; 2], now: i64, parameters: &[&str]) -> Result<u64, Error> {
        let [end, revoke] = statements;
        retry_conflicts(crate::NAME, || async move {
            let ended = with_db!(self.db(), pool => {
                let mut tx = pool.begin_write().await?;
                let mut listed = sqlx::query(end).bind(now);
                let mut revoked = sqlx::query(revoke).bind(now);
                for parameter in parameters {
                    listed = listed.bind(*parameter);
                    revoked = revoked.bind(*parameter);
                }
                let listed = listed.execute(&mut *tx).await?;
                revoked.execute(&mut *tx).await?;
                tx.commit().await?;
                listed.rows_affected()
            });
            Ok(ended)
        })
        .await
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
