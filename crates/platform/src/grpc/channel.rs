//! The client side of a call to another service: a [`Channel`] that sends each gRPC call over HTTP/2 (the
//! `h2` crate) straight from the calling task, balanced round-robin over the service's replicas.
//!
//! Why not `tonic::transport::Channel`: it queues every call to a buffer task, which hands it to hyper's
//! connection task, which spawns one more task to send the request body — three task hops and their wake-ups
//! per call before a byte is written (measured in `bench/gateway.md`). Here the calling task opens the stream
//! and writes its frames itself; the connection's own task only does the socket I/O.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use h2::client::SendRequest;
use http::uri::{Authority, Scheme};
use http_body::{Body as _, Frame};
use tokio::net::TcpStream;
use tonic::Status;

/// How long connecting to a replica may take before the call fails over to another one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a call may wait for its response headers (callers with a deadline set a shorter one).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// A replica that could not be connected to is skipped for this long while another one is up.
const DOWN_FOR: Duration = Duration::from_secs(1);
/// An HTTP/2 PING this often on every connection: a replica whose host vanished (no FIN, no RST) would otherwise
/// keep receiving calls over a connection nothing answers on, until TCP itself gives up many minutes later.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(15);
/// A ping unanswered for this long ends the connection: its calls fail (UNAVAILABLE) and the next ones reconnect.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 flow-control windows, as hyper's client sets them (the protocol's default of 64 KiB would stall
/// large responses on a round trip per window).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// A service's address could not be used as a channel's.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The address is not an `http://host:port` URL.
    #[error("service address {url:?}: {reason}")]
    InvalidUrl {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A gRPC client channel to one service: calls go round-robin over its replicas, each reached over one HTTP/2
/// connection made on first use and remade when it closes. A replica that cannot be reached is skipped for a
/// second while another one answers, and a call that could not be sent to one replica goes to the next.
/// Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let replicas: Vec<&str> = self.shared.replicas.iter().map(|r| r.authority.as_str()).collect();
        f.debug_struct("Channel").field("replicas", &replicas).finish()
    }
}

struct Shared {
    replicas: Box<[Replica]>,
    next: AtomicUsize,
    /// When the channel was made: the clock that [`Replica::down_until_ms`] counts from.
    epoch: Instant,
    keepalive: Keepalive,
}

/// How often each connection is pinged, and how long the answer may take.
#[derive(Debug, Clone, Copy)]
struct Keepalive {
    every: Duration,
    timeout: Duration,
}

/// An HTTP/2 connection to a replica: where to open streams, and whether its I/O task has ended.
struct Connection {
    sender: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

struct Replica {
    authority: Authority,
    /// The open connection, if any.
    connection: Mutex<Option<Connection>>,
    /// One connection attempt at a time.
    connecting: tokio::sync::Mutex<()>,
    /// Milliseconds since the channel's epoch until which the replica counts as down (0: up).
    down_until_ms: AtomicU64,
}

impl Channel {
    /// A channel to the replicas at `urls` (`http://host:port` each; at least one). Connects on first use.
    pub fn new(urls: &[String]) -> Result<Self, ChannelError> {
        Self::with_keepalive(urls, Keepalive { every: KEEPALIVE_EVERY, timeout: KEEPALIVE_TIMEOUT })
    }

    fn with_keepalive(urls: &[String], keepalive: Keepalive) -> Result<Self, ChannelError> {
        let replicas = urls.iter().map(|url| Replica::new(url)).collect::<Result<Box<[_]>, _>>()?;
        if replicas.is_empty() {
            return Err(ChannelError::InvalidUrl { url: String::new(), reason: "no address given" });
        }
        let shared = Shared { replicas, next: AtomicUsize::new(0), epoch: Instant::now(), keepalive };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// Sends `request` to a replica and returns its response once the headers arrived; the body streams on.
    async fn dispatch(
        &self,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, Status> {
        let (authority, sender) = self.shared.ready_sender().await?;
        send(&authority, sender, request).await
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // Readiness is per replica and connection; `call` waits for it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let channel = self.clone();
        Box::pin(async move { channel.dispatch(request).await })
    }
}

impl Shared {
    /// A sender ready for one more stream, on the next replica that is up; tries each replica once.
    async fn ready_sender(&self) -> Result<(Authority, SendRequest<Bytes>), Status> {
        let count = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        let mut last_error = None;
        // The replicas that are up first, in round-robin order; then the ones marked down, in case they are back.
        for want_up in [true, false] {
            for i in 0..count {
                let replica = &self.replicas[(start + i) % count];
                if (replica.down_until_ms.load(Ordering::Relaxed) <= now) != want_up {
                    continue;
                }
                match replica.ready_sender(self.epoch, self.keepalive).await {
                    Ok(sender) => return Ok((replica.authority.clone(), sender)),
                    Err(status) => last_error = Some(status),
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Status::unavailable("no replica")))
    }
}

impl Replica {
    fn new(url: &str) -> Result<Self, ChannelError> {
        let invalid = |reason| ChannelError::InvalidUrl { url: url.to_owned(), reason };
        let uri: http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(invalid("the scheme must be http (TLS between services is not supported)"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        // `host:port`, with HTTP's default port made explicit for the TCP connect.
        let authority = match authority.port_u16() {
            Some(_) => authority.clone(),
            None => format!("{}:80", authority.host()).parse().map_err(|_| invalid("bad host"))?,
        };
        Ok(Self {
            authority,
            connection: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            down_until_ms: AtomicU64::new(0),
        })
    }

    fn current(&self) -> Option<SendRequest<Bytes>> {
        let connection = self.connection.lock().unwrap_or_else(PoisonError::into_inner);
        connection.as_ref().filter(|c| !c.closed.load(Ordering::Acquire)).map(|c| c.sender.clone())
    }

    async fn ready_sender(&self, epoch: Instant, keepalive: Keepalive) -> Result<SendRequest<Bytes>, Status> {
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
        match self.connect(keepalive).await {
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

    /// Opens a new connection, spawns its I/O task, and keeps its sender for the next calls.
    async fn connect(&self, keepalive: Keepalive) -> Result<SendRequest<Bytes>, Status> {
        let connect = TcpStream::connect(self.authority.as_str());
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(self.unavailable(&e)),
            Err(_) => return Err(self.unavailable(&"connect timed out")),
        };
        // Small writes (a call is often one frame) go out at once.
        stream.set_nodelay(true).map_err(|e| self.unavailable(&e))?;
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
        let authority = self.authority.clone();
        let closed_by_task = closed.clone();
        tokio::spawn(async move {
            match drive(connection, keepalive).await {
                Ok(()) => {}
                Err(Ended::Failed(e)) => tracing::debug!(upstream = %authority, error = %e, "HTTP/2 connection closed"),
                Err(Ended::Unanswered) => tracing::warn!(upstream = %authority,
                    timeout_ms = keepalive.timeout.as_millis() as u64, "keepalive ping unanswered: connection dropped"),
            }
            closed_by_task.store(true, Ordering::Release);
        });
        let kept = Connection { sender: sender.clone(), closed };
        *self.connection.lock().unwrap_or_else(PoisonError::into_inner) = Some(kept);
        Ok(sender)
    }

    fn unavailable(&self, error: &dyn std::fmt::Display) -> Status {
        Status::unavailable(format!("{} is unavailable: {error}", self.authority))
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
async fn drive(mut connection: h2::client::Connection<TcpStream, Bytes>, keepalive: Keepalive) -> Result<(), Ended> {
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

/// Opens a stream for `request` on `sender`, writes its body, and waits for the response headers.
async fn send(
    authority: &Authority,
    mut sender: SendRequest<Bytes>,
    request: http::Request<tonic::body::Body>,
) -> Result<http::Response<tonic::body::Body>, Status> {
    let (mut head, body) = request.into_parts();
    // HTTP/2 requests carry the scheme and authority as pseudo-headers; callers give only the path.
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority.clone());
    uri.path_and_query = head.uri.path_and_query().cloned();
    head.uri = http::Uri::from_parts(uri).map_err(|e| Status::internal(format!("request path: {e}")))?;
    let end_of_stream = body.is_end_stream();
    let (response, stream) =
        sender.send_request(http::Request::from_parts(head, ()), end_of_stream).map_err(call_failed)?;
    if !end_of_stream {
        // A unary or server-streaming call's body is one message, ready now: written here, without a task.
        // A body still streaming goes on in a task of its own.
        let mut writing = Box::pin(write_body(body, stream));
        if (&mut writing).now_or_never().is_none() {
            tokio::spawn(writing);
        }
    }
    let response = match tokio::time::timeout(RESPONSE_TIMEOUT, response).await {
        Ok(response) => response.map_err(call_failed)?,
        Err(_) => return Err(Status::deadline_exceeded(format!("{authority} sent no response in time"))),
    };
    Ok(response.map(|recv| tonic::body::Body::new(ResponseBody { recv, data_done: false })))
}

/// Copies a request body's frames to its stream, ending the stream after the last one.
async fn write_body(mut body: tonic::body::Body, mut stream: h2::SendStream<Bytes>) {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(_) => {
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
        };
        let sent = match frame.into_data() {
            // Unreserved data is buffered until the stream's window lets it out; a gRPC request body is a
            // message or a few, bounded by the message size limit.
            Ok(data) => stream.send_data(data, false),
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    let _ = stream.send_trailers(trailers);
                    return;
                }
                Err(_) => Ok(()),
            },
        };
        if sent.is_err() {
            return;
        }
    }
    let _ = stream.send_data(Bytes::new(), true);
}

/// An h2 call's failure as the status a gRPC client reports: a lost connection is UNAVAILABLE (worth retrying),
/// a stream reset as tonic maps its reason.
fn call_failed(error: h2::Error) -> Status {
    if error.is_io() {
        return Status::unavailable(format!("connection lost: {error}"));
    }
    Status::from_error(Box::new(error))
}

/// A response body read from its HTTP/2 stream: the data frames, then the trailers (where gRPC puts the status).
struct ResponseBody {
    recv: h2::RecvStream,
    data_done: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Read: let the sender send that much more.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tokio_util::sync::CancellationToken;
    use tonic::Code;
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    use super::Channel;

    /// A health service on `listener` whose service `who` reports `status`; stops when the token is cancelled.
    async fn serve_health(
        listener: TcpListener,
        status: ServingStatus,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("who", status).await;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let server = tokio::spawn(async move {
            let incoming = TcpListenerStream::new(listener);
            let shutdown = stopped.cancelled_owned();
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, shutdown);
            served.await.expect("the test server runs");
        });
        (stop, server)
    }

    async fn listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        (listener, address)
    }

    async fn check(channel: &Channel, service: &str) -> Result<i32, tonic::Status> {
        let mut client = HealthClient::new(channel.clone());
        Ok(client.check(HealthCheckRequest { service: service.to_owned() }).await?.into_inner().status)
    }

    #[tokio::test]
    async fn a_call_gets_the_answer_or_the_status_of_the_service() {
        let (listener, address) = listener().await;
        let (stop, server) = serve_health(listener, ServingStatus::Serving).await;
        let channel = Channel::new(&[format!("http://{address}")]).expect("channel");
        for _ in 0..3 {
            assert_eq!(check(&channel, "who").await.expect("answered"), ServingStatus::Serving as i32);
        }
        let unknown = check(&channel, "nobody").await.expect_err("no such service");
        assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
        stop.cancel();
        server.await.expect("stopped");
    }

    #[tokio::test]
    async fn nothing_listening_is_unavailable_with_the_address() {
        let (listener, address) = listener().await;
        drop(listener);
        let channel = Channel::new(&[format!("http://{address}")]).expect("channel");
        let status = check(&channel, "who").await.expect_err("nothing listens");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains(&address.to_string()), "{status:?}");
    }

    #[tokio::test]
    async fn calls_alternate_over_replicas_and_avoid_one_that_stopped() {
        let (first, first_address) = listener().await;
        let (second, second_address) = listener().await;
        let (_stop_first, _first) = serve_health(first, ServingStatus::Serving).await;
        let (stop_second, second_server) = serve_health(second, ServingStatus::NotServing).await;
        let channel =
            Channel::new(&[format!("http://{first_address}"), format!("http://{second_address}")]).expect("channel");
        let mut answers = Vec::new();
        for _ in 0..10 {
            answers.push(check(&channel, "who").await.expect("answered"));
        }
        let from_first = answers.iter().filter(|&&a| a == ServingStatus::Serving as i32).count();
        assert_eq!(from_first, 5, "round robin over two replicas: {answers:?}");

        stop_second.cancel();
        second_server.await.expect("stopped");
        for _ in 0..10 {
            let answer = check(&channel, "who").await.expect("the first replica answers every call");
            assert_eq!(answer, ServingStatus::Serving as i32);
        }
    }

    #[tokio::test]
    async fn a_replica_that_restarted_is_reconnected() {
        let (listener, address) = listener().await;
        let (stop, server) = serve_health(listener, ServingStatus::Serving).await;
        let channel = Channel::new(&[format!("http://{address}")]).expect("channel");
        check(&channel, "who").await.expect("answered");
        stop.cancel();
        server.await.expect("stopped");
        let status = check(&channel, "who").await.expect_err("stopped");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");

        let listener = TcpListener::bind(address).await.expect("the same port again");
        let (stop, server) = serve_health(listener, ServingStatus::Serving).await;
        assert_eq!(check(&channel, "who").await.expect("reconnected"), ServingStatus::Serving as i32);
        stop.cancel();
        server.await.expect("stopped");
    }

    /// A host that vanished: the connection is open, and nothing answers on it.
    #[tokio::test]
    async fn a_connection_that_stops_answering_pings_is_dropped_and_its_calls_fail() {
        let (listener, address) = listener().await;
        let silent = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut sink).await;
        });
        let keepalive = super::Keepalive { every: Duration::from_millis(100), timeout: Duration::from_millis(100) };
        let channel = Channel::with_keepalive(&[format!("http://{address}")], keepalive).expect("channel");
        // Without the keepalive the call would wait 30 s for its response headers.
        let call = tokio::time::timeout(Duration::from_secs(3), check(&channel, "who")).await;
        let status = call.expect("the call ended when the ping went unanswered").expect_err("nothing answered");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        silent.abort();
    }

    #[tokio::test]
    async fn pings_answered_keep_the_connection_serving() {
        let (listener, address) = listener().await;
        let (stop, server) = serve_health(listener, ServingStatus::Serving).await;
        let keepalive = super::Keepalive { every: Duration::from_millis(20), timeout: Duration::from_millis(500) };
        let channel = Channel::with_keepalive(&[format!("http://{address}")], keepalive).expect("channel");
        check(&channel, "who").await.expect("answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(check(&channel, "who").await.expect("answered after pings"), ServingStatus::Serving as i32);
        stop.cancel();
        server.await.expect("stopped");
    }

    #[test]
    fn addresses_must_be_plain_http_urls() {
        for bad in ["catalog:50051", "https://catalog:50051", "http://", ""] {
            assert!(Channel::new(&[bad.to_owned()]).is_err(), "{bad:?} was accepted");
        }
        assert!(Channel::new(&[]).is_err(), "no address was accepted");
        let channel = Channel::new(&["http://catalog".to_owned()]).expect("no port: HTTP's");
        assert_eq!(channel.shared.replicas[0].authority.as_str(), "catalog:80");
    }
}
