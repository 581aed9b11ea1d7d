//! The client side of a call to another service: a [`Channel`] that sends each gRPC call over HTTP/2 (the
//! `h2` crate) straight from the calling task, balanced round-robin over the service's replicas.
//!
//! Why not `tonic::transport::Channel`: it queues every call to a buffer task, which hands it to hyper's
//! connection task, which spawns one more task to send the request body — three task hops and their wake-ups
//! per call before a byte is written (measured in `bench/gateway.md`). Here the calling task opens the stream
//! and writes its frames itself; the connection's own task only does the socket I/O.
//!
//! The parts: [`targets`] turns the given addresses into replicas (looking host names up), [`replica`] keeps
//! each replica's connection, [`call`] makes one call on a connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use h2::client::SendRequest;
use tokio_rustls::rustls::ClientConfig;
use tonic::Status;

mod call;
mod replica;
mod targets;

use targets::{Resolve, Target};

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
/// A host name is looked up again this often (Kubernetes' DNS keeps a headless service's records 30 s).
const LOOKUP_EVERY: Duration = Duration::from_secs(30);

/// A service's address could not be used as a channel's.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The address is not an `http://host:port` URL (or `https://` with TLS).
    #[error("service address {url:?}: {reason}")]
    InvalidUrl {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The files of TLS between services are unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A gRPC client channel to one service. Its addresses (`http://host:port`, or `https://` over TLS) name the
/// replicas: an IP address is
/// one, a host name one per address it resolves to (looked up again every 30 s; a name that resolved to nothing
/// after a second, its calls failing at once with the lookup's error meanwhile). Calls go round-robin over them,
/// each replica reached over one HTTP/2 connection made on first use, pinged every 15 s, and remade when it ends.
/// A replica that cannot be reached is skipped for a second while another one answers, and a call that could not
/// be sent to one replica goes to the next. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let targets: Vec<&str> = self.shared.targets.iter().map(|t| t.authority.as_str()).collect();
        f.debug_struct("Channel").field("targets", &targets).finish()
    }
}

struct Shared {
    targets: Box<[Target]>,
    next: AtomicUsize,
    /// When the channel was made: the clock that replicas' down-times and lookups count from.
    epoch: Instant,
    options: Options,
}

/// How often each connection is pinged, and how long the answer may take.
#[derive(Debug, Clone, Copy)]
struct Keepalive {
    every: Duration,
    timeout: Duration,
}

/// What tests change of a channel's timing and name lookups.
struct Options {
    keepalive: Keepalive,
    lookup_every: Duration,
    resolve: Resolve,
}

impl Channel {
    /// A channel to the replicas at `urls` (`http://host:port` each; at least one). Connects on first use.
    pub fn new(urls: &[String]) -> Result<Self, ChannelError> {
        Self::with_tls(urls, None)
    }

    /// A channel to the replicas at `urls`, where `https://` ones are called over TLS configured by `tls`
    /// (without it, only `http://` URLs are accepted). Connects on first use.
    pub fn with_tls(urls: &[String], tls: Option<Arc<ClientConfig>>) -> Result<Self, ChannelError> {
        let options = Options {
            keepalive: Keepalive { every: KEEPALIVE_EVERY, timeout: KEEPALIVE_TIMEOUT },
            lookup_every: LOOKUP_EVERY,
            resolve: targets::system_resolver(),
        };
        Self::with_options(urls, tls, options)
    }

    fn with_options(urls: &[String], tls: Option<Arc<ClientConfig>>, options: Options) -> Result<Self, ChannelError> {
        let targets = urls.iter().map(|url| Target::parse(url, tls.as_ref())).collect::<Result<Box<[_]>, _>>()?;
        if targets.is_empty() {
            return Err(ChannelError::InvalidUrl { url: String::new(), reason: "no address given" });
        }
        let shared = Shared { targets, next: AtomicUsize::new(0), epoch: Instant::now(), options };
        Ok(Self { shared: Arc::new(shared) })
    }

    /// Sends `request` to a replica and returns its response once the headers arrived; the body streams on.
    async fn dispatch(
        &self,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, Status> {
        let (target, sender) = self.shared.ready_sender().await?;
        call::send(&target.scheme, &target.authority, sender, request).await
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
    async fn ready_sender(&self) -> Result<(&Target, SendRequest<Bytes>), Status> {
        let options = &self.options;
        let mut last_error = None;
        let mut lists = Vec::with_capacity(self.targets.len());
        for target in self.targets.iter() {
            match target.replicas(self.epoch, options.lookup_every, &options.resolve).await {
                Ok(replicas) => lists.push((target, replicas)),
                Err(status) => last_error = Some(status),
            }
        }
        // The n-th replica over every target's list.
        let count: usize = lists.iter().map(|(_, replicas)| replicas.len()).sum();
        let nth = |mut n: usize| {
            for (target, replicas) in &lists {
                match replicas.get(n) {
                    Some(replica) => return Some((*target, replica)),
                    None => n -= replicas.len(),
                }
            }
            None
        };
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        // The replicas that are up first, in round-robin order; then the ones marked down, in case they are back.
        for want_up in [true, false] {
            for i in 0..count {
                let Some((target, replica)) = nth((start + i) % count) else { continue };
                if replica.is_up(now) != want_up {
                    continue;
                }
                match replica.ready_sender(self.epoch, options.keepalive, target.tls.as_ref()).await {
                    Ok(sender) => return Ok((target, sender)),
                    Err(status) => last_error = Some(status),
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Status::unavailable("no replica")))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tokio_util::sync::CancellationToken;
    use tonic::Code;
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    use super::{Channel, Keepalive, Options};

    /// The usual options, with a keepalive of a test's pace.
    fn pinging(every_ms: u64, timeout_ms: u64) -> Options {
        let keepalive =
            Keepalive { every: Duration::from_millis(every_ms), timeout: Duration::from_millis(timeout_ms) };
        Options { keepalive, lookup_every: super::LOOKUP_EVERY, resolve: super::targets::system_resolver() }
    }

    /// Options whose name lookups answer what `answer` holds at the time (an error when it is empty), looked up
    /// again every 20 ms.
    fn looking_up(answer: Arc<Mutex<Vec<SocketAddr>>>) -> Options {
        let resolve: super::Resolve = Arc::new(move |_host, _port| {
            let addresses = answer.lock().expect("answer").clone();
            Box::pin(async move {
                if addresses.is_empty() { Err(std::io::Error::other("no such host")) } else { Ok(addresses) }
            })
        });
        Options { lookup_every: Duration::from_millis(20), resolve, ..pinging(15_000, 5_000) }
    }

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
        let channel = Channel::with_options(&[format!("http://{address}")], None, pinging(100, 100)).expect("channel");
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
        let channel = Channel::with_options(&[format!("http://{address}")], None, pinging(20, 500)).expect("channel");
        check(&channel, "who").await.expect("answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Still the first connection: a dropped one would be remade silently by the next call.
        let replica = channel.shared.targets[0].replicas_now()[0].clone();
        assert!(replica.is_connected(), "the connection ended although every ping was answered");
        assert_eq!(check(&channel, "who").await.expect("answered after pings"), ServingStatus::Serving as i32);
        stop.cancel();
        server.await.expect("stopped");
    }

    /// A name such as a Kubernetes headless service: one replica per address, replicas coming and going.
    #[tokio::test]
    async fn a_host_name_is_a_replica_per_address_it_resolves_to_looked_up_again() {
        let (first, first_address) = listener().await;
        // The same port on another loopback address: a second host behind the name.
        let second_address = SocketAddr::new([127, 0, 0, 2].into(), first_address.port());
        let second = TcpListener::bind(second_address).await.expect("bind 127.0.0.2");
        let (_stop_first, _first) = serve_health(first, ServingStatus::Serving).await;
        let (_stop_second, _second) = serve_health(second, ServingStatus::NotServing).await;
        let answer = Arc::new(Mutex::new(vec![first_address]));
        let url = format!("http://replicas.test:{}", first_address.port());
        let channel = Channel::with_options(&[url], None, looking_up(answer.clone())).expect("channel");
        let answers_of = |n| {
            let channel = channel.clone();
            async move {
                let mut answers = Vec::new();
                for _ in 0..n {
                    answers.push(check(&channel, "who").await.expect("answered"));
                }
                answers
            }
        };
        let serving = ServingStatus::Serving as i32;
        assert!(answers_of(4).await.iter().all(|&a| a == serving), "only the first address is listed");

        *answer.lock().expect("answer") = vec![first_address, second_address];
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _looked_up_again = answers_of(1).await;
        let answers = answers_of(10).await;
        assert_eq!(answers.iter().filter(|&&a| a == serving).count(), 5, "both addresses share the calls: {answers:?}");

        *answer.lock().expect("answer") = vec![second_address];
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _looked_up_again = answers_of(1).await;
        assert!(answers_of(4).await.iter().all(|&a| a != serving), "the first address is no longer listed");

        // A failed lookup keeps the last addresses.
        answer.lock().expect("answer").clear();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(answers_of(3).await.len(), 3);
    }

    #[tokio::test]
    async fn a_host_name_that_does_not_resolve_is_unavailable_naming_it() {
        let answer = Arc::new(Mutex::new(Vec::new()));
        let channel = Channel::with_options(&["http://nowhere.test:50053".to_owned()], None, looking_up(answer))
            .expect("channel");
        let status = check(&channel, "who").await.expect_err("no address");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("nowhere.test"), "{status:?}");
    }

    /// A missing service (its name resolves to nothing) costs one lookup, not one per call: calls at once share
    /// it, calls right after get its answer, and the name is looked up again a little later.
    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_looked_up_once_for_the_calls_meanwhile() {
        let lookups = Arc::new(AtomicUsize::new(0));
        let answer: Arc<Mutex<Vec<SocketAddr>>> = Arc::new(Mutex::new(Vec::new()));
        let resolve: super::Resolve = {
            let (lookups, answer) = (lookups.clone(), answer.clone());
            Arc::new(move |_host, _port| {
                lookups.fetch_add(1, Ordering::SeqCst);
                let addresses = answer.lock().expect("answer").clone();
                Box::pin(async move {
                    // A resolver that takes its time, as one timing out does.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if addresses.is_empty() { Err(std::io::Error::other("no such host")) } else { Ok(addresses) }
                })
            })
        };
        let options = Options { lookup_every: Duration::from_millis(300), resolve, ..pinging(15_000, 5_000) };
        let (listener, address) = listener().await;
        let (stop, server) = serve_health(listener, ServingStatus::Serving).await;
        let url = format!("http://missing.test:{}", address.port());
        let channel = Channel::with_options(&[url], None, options).expect("channel");

        let calls = (0..20).map(|_| check(&channel, "who"));
        for result in futures::future::join_all(calls).await {
            let status = result.expect_err("no address");
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert!(status.message().contains("missing.test"), "{status:?}");
        }
        let status = check(&channel, "who").await.expect_err("still no address");
        assert!(status.message().contains("no such host"), "the lookup's error: {status:?}");
        assert_eq!(lookups.load(Ordering::SeqCst), 1, "one lookup for every call meanwhile");

        // The service appears: the name is looked up again once the failure is old enough.
        *answer.lock().expect("answer") = vec![address];
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(check(&channel, "who").await.expect("answered"), ServingStatus::Serving as i32);
        assert_eq!(lookups.load(Ordering::SeqCst), 2);
        stop.cancel();
        server.await.expect("stopped");
    }

    #[tokio::test]
    async fn the_system_resolver_finds_localhost() {
        let (listener, address) = listener().await;
        let (stop, server) = serve_health(listener, ServingStatus::Serving).await;
        let channel = Channel::new(&[format!("http://localhost:{}", address.port())]).expect("channel");
        assert_eq!(check(&channel, "who").await.expect("answered"), ServingStatus::Serving as i32);
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
        assert_eq!(channel.shared.targets[0].authority.as_str(), "catalog:80");
    }
}
