//! TLS termination at the gateway, from PEM files (`MERCATO_GATEWAY_TLS_CERT`, `MERCATO_GATEWAY_TLS_KEY`).
//!
//! ALPN offers `h2` and `http/1.1`; the connection builder then serves whichever the client speaks. Handshakes
//! run in tasks of their own, bounded in time, so a slow or failing client holds up no one else; a finished
//! handshake is handed to `axum::serve` through [`TlsListener`], which keeps its graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use platform::config::TlsFiles;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const QUEUE: usize = 64;

use platform::tls::ReloadingIdentity;
pub use platform::tls::TlsError;

/// The rustls server configuration of `files`: the certificate chain and its key (read again when the files
/// change, so a renewed certificate is served without a restart), ALPN `h2` then `http/1.1`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let identity = ReloadingIdentity::load(files, "MERCATO_GATEWAY_TLS_CERT", "MERCATO_GATEWAY_TLS_KEY")?;
    let mut config = ServerConfig::builder_with_provider(platform::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(identity));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener of TLS connections for `axum::serve`: TCP connections are accepted and their handshakes run in
/// the background; `accept` yields those that completed. Dropping it stops accepting (the port closes) and
/// abandons the handshakes under way.
pub struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Terminates TLS with `config` on the connections of `listener` (a `TcpListener`, or a worker's share of
    /// one).
    pub fn new<L>(listener: L, config: Arc<ServerConfig>) -> io::Result<Self>
    where
        L: Listener<Io = TcpStream, Addr = SocketAddr>,
    {
        let local_addr = listener.local_addr()?;
        let (sender, handshaken) = mpsc::channel(QUEUE);
        let acceptor = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), sender));
        Ok(Self { handshaken, local_addr, acceptor })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when this listener is dropped, which cannot be while it is borrowed.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Sends small writes (HTTP/2 frames, streamed lines) at once. Also, through `tap_io`, what gives a
/// [`TlsListener`] the `ConnectInfo<SocketAddr>` axum provides for tapped listeners.
pub fn set_nodelay(tls: &mut TlsStream<TcpStream>) {
    set_tcp_nodelay(tls.get_mut().0);
}

/// Sends small writes at once on a plain TCP connection (the listener without TLS taps its streams with it).
pub fn set_tcp_nodelay(tcp: &mut TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// Accepts TCP connections and runs each handshake in a task of its own; the tasks are aborted with the loop.
/// (`accept` of axum's `Listener` skips a failed connection, and pauses after other errors rather than spin.)
async fn accept_loop<L>(
    mut listener: L,
    acceptor: TlsAcceptor,
    handshaken: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) where
    L: Listener<Io = TcpStream, Addr = SocketAddr>,
{
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            (tcp, peer) = listener.accept() => {
                let (acceptor, handshaken) = (acceptor.clone(), handshaken.clone());
                handshakes.spawn(handshake(acceptor, tcp, peer, handshaken));
            }
            // Reaps finished handshakes, so the set holds only those under way.
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    handshaken: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            // Fails only when the server stopped: the connection is dropped.
            let _ = handshaken.send((tls, peer)).await;
        }
        // One client's failure is its own: logged for the operator, nothing else is affected.
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}
