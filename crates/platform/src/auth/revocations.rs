//! Sessions that ended before their access tokens expired: signed out, signed out everywhere by a password
//! change, the account deleted. An access token names its session (`sid`); a verifier keeps the list of ended
//! sessions the auth service publishes (`AuthService/ListRevokedSessions`), polled every few seconds while tokens
//! are being verified, and refuses their tokens. Without it a stolen token would be honoured for its whole life
//! (15 minutes) after its owner changed the password.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use api::auth::ListRevokedSessionsRequest;
use api::auth::auth_service_client::AuthServiceClient;
use futures::future::BoxFuture;

/// How often a verifier asks which sessions ended: about the longest an ended session's token is still honoured.
pub const REVOCATION_POLL: Duration = Duration::from_secs(5);
/// How far back a verifier's first poll looks, and how long it remembers an ended session: longer than any
/// access token lives, so every token of an ended session expires before it is forgotten.
pub const REVOCATION_MEMORY: Duration = Duration::from_secs(3600);
/// Each poll reads again the last few seconds of the previous one: an ending is stamped before its transaction
/// commits, so it can appear after a poll that already read past its time.
const POLL_OVERLAP_MICROS: i64 = 5_000_000;
/// Counts the failed reads of the ended sessions: while they fail, tokens of signed-out sessions are honoured
/// until they expire (an alert watches it).
pub const READ_FAILURES_METRIC: &str = "mercato_revocation_read_failures_total";
/// A poll that takes longer is abandoned (and tried again at the next interval); a request that waits for a
/// poll waits at most this.
const POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// A session that ended, as a [`RevocationSource`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    /// The session: the `sid` of its access tokens.
    pub session_id: String,
    /// When it ended, microseconds since the epoch.
    pub revoke_time: i64,
}

/// Where a verifier learns which sessions ended.
pub trait RevocationSource: Send + Sync + 'static {
    /// Every session that ended at or after `since` (microseconds since the epoch).
    fn ended_since(&self, since: i64) -> BoxFuture<'_, Result<Vec<EndedSession>, String>>;
}

/// Reads the ended sessions from the auth service over gRPC (`AuthService/ListRevokedSessions`), every page.
#[derive(Debug, Clone)]
pub struct GrpcRevocationSource {
    channel: crate::grpc::Channel,
}

impl GrpcRevocationSource {
    /// A source reading from the auth service behind `channel`.
    pub fn new(channel: crate::grpc::Channel) -> Self {
        Self { channel }
    }
}

impl RevocationSource for GrpcRevocationSource {
    fn ended_since(&self, since: i64) -> BoxFuture<'_, Result<Vec<EndedSession>, String>> {
        Box::pin(async move {
            let mut client = AuthServiceClient::new(crate::grpc::TracedChannel::new(self.channel.clone()));
            let mut ended = Vec::new();
            let mut page_token = String::new();
            loop {
                let request =
                    ListRevokedSessionsRequest { since: Some(crate::time::timestamp(since)), page_size: 0, page_token };
                let page =
                    client.list_revoked_sessions(request).await.map_err(|s| s.message().to_owned())?.into_inner();
                ended.extend(page.sessions.into_iter().map(|s| EndedSession {
                    revoke_time: s.revoke_time.as_ref().and_then(crate::time::micros).unwrap_or_default(),
                    session_id: s.session_id,
                }));
                if page.next_page_token.is_empty() {
                    return Ok(ended);
                }
                page_token = page.next_page_token;
            }
        })
    }
}

/// The ended sessions a verifier knows of, and when to ask again.
pub(super) struct Revocations {
    source: Arc<dyn RevocationSource>,
    poll_every: Duration,
    ended: RwLock<HashMap<String, i64>>,
    /// The latest `revoke_time` seen (0 before the first poll).
    newest: AtomicI64,
    /// When the list was last read (`None` before the first read), and whether that read succeeded.
    last_poll: Mutex<Option<(Instant, bool)>>,
    /// One poll at a time.
    polling: tokio::sync::Mutex<()>,
    /// A background poll is on its way.
    spawned: AtomicBool,
}

impl Revocations {
    pub(super) fn new(source: Arc<dyn RevocationSource>, poll_every: Duration) -> Self {
        Self {
            source,
            poll_every,
            ended: RwLock::default(),
            newest: AtomicI64::new(0),
            last_poll: Mutex::new(None),
            polling: tokio::sync::Mutex::new(()),
            spawned: AtomicBool::new(false),
        }
    }

    /// Whether `session_id` ended, by a list at most `poll_every` old: under steady traffic the list is read
    /// again in the background from half that age, so no request waits; a request that finds it older (the first
    /// one, or the first after a quiet spell) waits for a fresh read, so a token stolen and used after a quiet hour
    /// is not let through once. While the auth service does not answer, the last list serves and nobody waits
    /// (after the one request that found out).
    pub(super) async fn has_ended(self: &Arc<Self>, session_id: &str) -> bool {
        match self.last_poll() {
            None => self.poll_if_older_than(Duration::ZERO).await,
            Some((at, healthy)) if healthy && at.elapsed() >= self.poll_every => {
                self.poll_if_older_than(self.poll_every).await;
            }
            Some((at, _)) if at.elapsed() >= self.poll_every / 2 && !self.spawned.swap(true, Ordering::AcqRel) => {
                let revocations = Arc::clone(self);
                tokio::spawn(async move {
                    revocations.poll_if_older_than(revocations.poll_every / 2).await;
                    revocations.spawned.store(false, Ordering::Release);
                });
            }
            Some(_) => {}
        }
        !session_id.is_empty() && self.ended.read().unwrap_or_else(|p| p.into_inner()).contains_key(session_id)
    }

    fn last_poll(&self) -> Option<(Instant, bool)> {
        *self.last_poll.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the list unless another caller read it within `age` while this one waited for its turn.
    async fn poll_if_older_than(&self, age: Duration) {
        let _turn = self.polling.lock().await;
        let fresh = self.last_poll().is_some_and(|(at, _)| at.elapsed() < age || age.is_zero());
        if !fresh {
            self.poll().await;
        }
    }

    /// Asks the source for the sessions ended since the last poll (with an overlap) and forgets those older than
    /// [`REVOCATION_MEMORY`]. A failure keeps the list as it was: tokens are still verified while the auth
    /// service is away, as they are with the cached keys.
    async fn poll(&self) {
        let now = crate::time::now_micros();
        let memory = i64::try_from(REVOCATION_MEMORY.as_micros()).unwrap_or(i64::MAX);
        let oldest_kept = now.saturating_sub(memory);
        let since = match self.newest.load(Ordering::Acquire) {
            0 => oldest_kept,
            newest => newest.saturating_sub(POLL_OVERLAP_MICROS).max(oldest_kept),
        };
        let healthy = match tokio::time::timeout(POLL_TIMEOUT, self.source.ended_since(since)).await {
            Ok(Ok(sessions)) => {
                let mut ended = self.ended.write().unwrap_or_else(|p| p.into_inner());
                for session in sessions {
                    self.newest.fetch_max(session.revoke_time, Ordering::AcqRel);
                    ended.insert(session.session_id, session.revoke_time);
                }
                ended.retain(|_, revoke_time| *revoke_time >= oldest_kept);
                true
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "reading the ended sessions failed; the last list is kept");
                false
            }
            Err(_) => {
                tracing::warn!("reading the ended sessions timed out; the last list is kept");
                false
            }
        };
        if !healthy {
            metrics::counter!(READ_FAILURES_METRIC).increment(1);
        }
        *self.last_poll.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), healthy));
    }
}
