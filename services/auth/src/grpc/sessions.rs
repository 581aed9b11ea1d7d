//! A user's own sessions: listing them, ending one (a lost phone), ending all but the current one.

use api::auth::Session;
use platform::auth::Claims;
use platform::time::{now_micros, timestamp};

use super::Service;
use crate::error::Error;

impl Service {
    /// A page of the caller's live sessions, the caller's own marked `current`, and the next page's token.
    pub(super) async fn own_sessions(
        &self,
        caller: &Claims,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<Session>, String), Error> {
        let (limit, after) = platform::paging::id_page(page_size, page_token).map_err(Error::Invalid)?;
        let rows = self.store.sessions_of(&caller.sub, now_micros(), after, limit + 1).await?;
        let (rows, next_page_token) = platform::paging::page(rows, limit, |s| s.session_id.clone());
        let sessions = rows
            .into_iter()
            .map(|s| Session {
                current: s.session_id == caller.sid,
                id: s.session_id,
                create_time: Some(timestamp(s.create_time)),
                refresh_time: Some(timestamp(s.refresh_time)),
                expire_time: Some(timestamp(s.expire_time)),
            })
            .collect();
        Ok((sessions, next_page_token))
    }

    /// Ends the caller's session `id`; NOT_FOUND when the caller has no such live session.
    pub(super) async fn end_session(&self, caller: &Claims, id: &str) -> Result<(), Error> {
        platform::error::check_id("id", id).map_err(|v| Error::Invalid(vec![v]))?;
        if !self.store.end_own_session(&caller.sub, id, now_micros()).await? {
            return Err(Error::SessionNotFound);
        }
        tracing::info!(user_id = %caller.sub, session_id = %id, "session ended by its owner");
        Ok(())
    }

    /// Ends every session of the caller but the one its token belongs to; returns how many.
    pub(super) async fn end_other_sessions(&self, caller: &Claims) -> Result<u64, Error> {
        let ended = self.store.end_other_sessions(&caller.sub, &caller.sid, now_micros()).await?;
        tracing::info!(user_id = %caller.sub, ended, "other sessions ended by their owner");
        Ok(ended)
    }
}
