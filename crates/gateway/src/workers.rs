//! The gateway on worker threads of its own, the way Envoy and nginx serve: each worker is a single-threaded
//! Tokio runtime that serves the connections it is given to the end, with its own upstream connections, so a
//! request never changes threads. On Tokio's work-stealing runtime a request's tasks (the HTTP connection, the
//! upstream connection's I/O) were woken across threads, and those wake-ups and task switches cost a fifth to a
//! third of the gateway's CPU per request (`bench/gateway.md`).
//!
//! One dealer accepts every connection and hands them to the workers in turn: workers accepting from a shared
//! socket race for it, and one woken first drains the whole backlog, so a burst of connections (a load
//! balancer's pool opening) can land on a single worker and stay there. A connection crosses threads once, when
//! it is handed over; its requests do not.
//!
//! What the workers share: the route table, the OpenAPI document and the rate limiter (so a budget is one
//! budget, whichever worker a request lands on). What each has of its own: its connections to the services and
//! to auth, and the caches behind them (verified tokens, API keys).

use std::io;
use std::net::SocketAddr;

use axum::serve::Listener;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use platform::Settings;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{Gateway, GatewayError, serve_gateway};

/// Connections handed to a worker and not yet taken by it.
const QUEUE: usize = 64;

/// A connection on its way to a worker, as a std socket: it joins the worker's runtime when taken.
type Handover = (std::net::TcpStream, SocketAddr);

/// Serves the gateway the settings describe on `listener` with `workers` worker threads (at least one) until
/// `shutdown` is cancelled; in-flight requests finish first. A worker that fails stops the others, and its
/// error is returned.
pub async fn serve_on_workers(
    listener: TcpListener,
    settings: &Settings,
    workers: usize,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let gateway = Gateway::new(settings)?;
    let local_addr = listener.local_addr()?;
    // A worker's failure stops its siblings without cancelling the caller's token.
    let stop = shutdown.child_token();
    let mut queues = Vec::new();
    let mut finished = FuturesUnordered::new();
    let mut first_error = None;
    for index in 0..workers.max(1) {
        let (queue, connections) = mpsc::channel(QUEUE);
        match start_worker(index, &gateway, WorkerListener { connections, local_addr }, settings, stop.clone()) {
            Ok(outcome) => {
                queues.push(queue);
                finished.push(outcome);
            }
            Err(error) => {
                stop.cancel();
                first_error = Some(error);
                break;
            }
        }
    }
    // The dealer owns the listener: the port closes when it returns, at the stop.
    let dealer = tokio::spawn(deal(listener, queues, stop.clone()));
    while let Some(outcome) = finished.next().await {
        // A worker whose thread ended without a word panicked.
        let outcome = outcome.unwrap_or_else(|_| Err(io::Error::other("a gateway worker panicked").into()));
        if let Err(error) = outcome {
            stop.cancel();
            first_error.get_or_insert(error);
        }
    }
    stop.cancel();
    let _ = dealer.await;
    first_error.map_or(Ok(()), Err)
}

/// Starts worker `index` on a thread of its own; what it ended with arrives on the returned receiver.
fn start_worker(
    index: usize,
    gateway: &Gateway,
    listener: WorkerListener,
    settings: &Settings,
    stop: CancellationToken,
) -> Result<oneshot::Receiver<Result<(), GatewayError>>, GatewayError> {
    let worker = gateway.with_own_connections(settings)?;
    let settings = settings.clone();
    let (done, outcome) = oneshot::channel();
    std::thread::Builder::new().name(format!("gateway-{index}")).spawn(move || {
        let served = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(GatewayError::from)
            .and_then(|runtime| runtime.block_on(serve_gateway(listener, worker, &settings, stop)));
        let _ = done.send(served);
    })?;
    Ok(outcome)
}

/// Accepts connections until `stop` and hands them to the workers in turn.
async fn deal(mut listener: TcpListener, queues: Vec<mpsc::Sender<Handover>>, stop: CancellationToken) {
    for queue in queues.iter().cycle() {
        // `Listener::accept` skips a failed connection and pauses after other errors rather than spin.
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = Listener::accept(&mut listener) => accepted,
        };
        // Leaves this runtime's reactor (staying non-blocking) to join the worker's.
        let Ok(tcp) = tcp.into_std() else { continue };
        tokio::select! {
            () = stop.cancelled() => return,
            sent = queue.send((tcp, peer)) => if sent.is_err() { return },
        }
    }
}

/// A worker's share of the listener: the connections the dealer hands it.
struct WorkerListener {
    connections: mpsc::Receiver<Handover>,
    local_addr: SocketAddr,
}

impl Listener for WorkerListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some((tcp, peer)) = self.connections.recv().await else {
                // The dealer stopped: so did this worker's server, which stops asking.
                return std::future::pending().await;
            };
            match TcpStream::from_std(tcp) {
                Ok(tcp) => return (tcp, peer),
                Err(error) => tracing::warn!(%peer, %error, "a handed-over connection could not be served"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
