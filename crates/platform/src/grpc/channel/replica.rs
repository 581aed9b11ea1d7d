//! One replica of a service, at one socket address: its HTTP/2 connection, made on first use, pinged to
//! notice a host that vanished, and remade when it ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::Status;

use super::targets::TlsTarget;
use super::{CONNECT_TIMEOUT, DOWN_FOR, Keepalive};

/// HTTP/2 flow-control windows, as hyper's client sets them (the protocol's default of 64 KiB would stall
/// large responses on a round trip per window).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// A replica: where it listens, its connection, and whether it counts as down.
pub(super) struct Replica {
    pub(super) address: SocketAddr,
    /// The open connection, if any.
    connection: Mutex<Option<Connection>>,
    /// One connection attempt at a time.
    connecting: tokio::sync::Mutex<()>,
    /// Milliseconds since the channel's epoch until which the replica counts as down (0: up).
    down_until_ms: AtomicU64,
}

/// An HTTP/2 connection to a replica: where to open streams, and whether its I/O task has ended.
struct Connection {
    sender: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Replica {
    pub(super) fn new(address: SocketAddr) -> Self {
        Self {
            address,
            connection: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            down_until_ms: AtomicU64::new(0),
        }
    }

    /// Whether the replica counts as up at `now_ms` (milliseconds since the channel's epoch).
    pub(super) fn is_up(&self, now_ms: u64) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// Whether the replica has a connection whose task is still running.
    #[cfg(test)]
    pub(super) fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    fn current(&self) -> Option<SendRequest<Bytes>> {
        let connection = self.connection.lock().unwrap_or_else(PoisonError::into_inner);
        connection.as_ref().filter(|c| !c.closed.load(Ordering::Acquire)).map(|c| c.sender.clone())
    }

    /// A sender that may open one more stream, on the open connection or a new one (over TLS with `tls`). A
    /// failed connection attempt marks the replica down for [`DOWN_FOR`].
    pub(super) async fn ready_sender(
        &self,
        epoch: Instant,
        keepalive: Keepalive,
        tls: Option<&TlsTarget>,
    ) -> Result<SendRequest<Bytes>, Status> {
        if let Some(sender) = self.current()
            && let Ok(ready) = sender.ready().await
        {
            return Ok(ready);
        }
        let _one_at_a_time = self.connecting.lock().await;
        // Another call may have connected while this one waited.
        if let Some(sender) = self.current()
            && let Ok(ready) = sender.ready().await
        {
            return Ok(ready);
        }
        match self.connect(keepalive, tls).await {
            Ok(sender) => {
                self.down_until_ms.store(0, Ordering::Relaxed);
                sender.ready().await.map_err(|e| self.unavailable(&e))
            }
            Err(status) => {
                let until = epoch.elapsed() + DOWN_FOR;
                self.down_until_ms.store(until.as_millis() as u64, Ordering::Relaxed);
                Err(status)
            }
        }
    }

    /// Opens a new connection (with a TLS handshake first with `tls`), spawns its I/O task, and keeps its sender
    /// for the next calls.
    async fn connect(&self, keepalive: Keepalive, tls: Option<&TlsTarget>) -> Result<SendRequest<Bytes>, Status> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(self.unavailable(&e)),
            Err(_) => return Err(self.unavailable(&"connect timed out")),
        };
        // Small writes (a call is often one frame) go out at once.
        stream.set_nodelay(true).map_err(|e| self.unavailable(&e))?;
        let Some(tls) = tls else { return self.start_http2(stream, keepalive).await };
        let handshake = tls.connector.connect(tls.server_name.clone(), stream);
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(stream)) => self.start_http2(stream, keepalive).await,
            Ok(Err(e)) => Err(self.unavailable(&format!("TLS handshake failed: {e}"))),
            Err(_) => Err(self.unavailable(&"TLS handshake timed out")),
        }
    }

    /// Starts HTTP/2 on `stream` and spawns the connection's I/O task.
    async fn start_http2<T>(&self, stream: T, keepalive: Keepalive) -> Result<SendRequest<Bytes>, Status>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(stream);
        let (sender, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(self.unavailable(&e)),
            Err(_) => return Err(self.unavailable(&"HTTP/2 handshake timed out")),
        };
        let closed = Arc::new(AtomicBool::new(false));
        let address = self.address;
        let closed_by_task = closed.clone();
        tokio::spawn(async move {
            match drive(connection, keepalive).await {
                Ok(()) => {}
                Err(Ended::Failed(e)) => tracing::debug!(upstream = %address, error = %e, "HTTP/2 connection closed"),
                Err(Ended::Unanswered) => tracing::warn!(upstream = %address,
                    timeout_ms = keepalive.timeout.as_millis() as u64, "keepalive ping unanswered: connection dropped"),
            }
            closed_by_task.store(true, Ordering::Release);
        });
        let kept = Connection { sender: sender.clone(), closed };
        *self.connection.lock().unwrap_or_else(PoisonError::into_inner) = Some(kept);
        Ok(sender)
    }

    fn unavailable(&self, error: &dyn std::fmt::Display) -> Status {
        Status::unavailable(format!("{} is unavailable: {error}", self.address))
    }
}

/// Why a connection's task ended other than by the connection closing cleanly.
enum Ended {
    /// The connection failed.
    Failed(h2::Error),
    /// A keepalive ping went unanswered: the connection was dropped, failing its open streams.
    Unanswered,
}

/// Runs a connection's I/O until it closes, pinging it every `keepalive.every`; gives up on it when a ping is not
/// answered within `keepalive.timeout`.
async fn drive<T>(mut connection: h2::client::Connection<T, Bytes>, keepalive: Keepalive) -> Result<(), Ended>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let Some(mut pings) = connection.ping_pong() else {
        return connection.await.map_err(Ended::Failed);
    };
    let mut connection = std::pin::pin!(connection);
    loop {
        tokio::select! {
            ended = &mut connection => return ended.map_err(Ended::Failed),
            () = tokio::time::sleep(keepalive.every) => {}
        }
        // The pong arrives through the connection's I/O, so the connection keeps being driven meanwhile.
        let pong = tokio::select! {
            ended = &mut connection => return ended.map_err(Ended::Failed),
            pong = tokio::time::timeout(keepalive.timeout, pings.ping(h2::Ping::opaque())) => pong,
        };
        match pong {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Ended::Failed(e)),
            Err(_) => return Err(Ended::Unanswered),
        }
    }
}
