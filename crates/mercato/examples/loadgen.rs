//! A small closed-loop load generator for `bench/gateway.sh`: N connections, each sending its next request as
//! soon as the previous answer arrived, for a fixed duration; every latency is recorded and sorted.
//!
//! Two kinds of target, so the gateway, the catalog and nginx are measured by one client:
//! - `grpc`: `mercato.catalog.v1.CatalogService/GetProduct` with tonic, one HTTP/2 connection per worker; a
//!   call counts as ok only when it ends with grpc-status 0 and carries the product.
//! - `http`: `GET <path>` over HTTP/1.1 keep-alive, one connection per worker, written by hand so the client
//!   spends as little CPU as wrk does; an answer counts as ok only when its status is 200.
//!
//! ```text
//! cargo run --release -p mercato --example loadgen -- grpc http://127.0.0.1:50053 --id <product> \
//!     --token <jwt> --connections 16 --duration 10 --warmup 2
//! cargo run --release -p mercato --example loadgen -- http http://127.0.0.1:8080/v1/products/<id> --token <jwt>
//! ```
//!
//! Prints one line of `key=value` pairs: requests and errors counted in the measured window (after the
//! warm-up), requests per second, latency percentiles in microseconds, and the client's own CPU seconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use api::catalog::GetProductRequest;
use api::catalog::catalog_service_client::CatalogServiceClient;
use clap::{Parser, ValueEnum};
use tokio::net::TcpStream;
use tonic::transport::Endpoint;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Grpc,
    Http,
}

/// Closed-loop load: N connections for a duration, every latency recorded.
#[derive(Debug, Parser)]
struct Args {
    /// `grpc` (GetProduct on a catalog) or `http` (GET on a URL).
    kind: Kind,
    /// `http://host:port` of the catalog (grpc), or the full URL to GET (http).
    url: String,
    /// Product id to ask for (grpc).
    #[arg(long, default_value = "")]
    id: String,
    /// Access token sent as `authorization: Bearer <token>` on every request.
    #[arg(long)]
    token: Option<String>,
    /// Concurrent connections, one request in flight on each.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts (not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
}

/// What one connection saw in the measured window.
#[derive(Debug, Default)]
struct Tally {
    /// Latencies of successful requests, in nanoseconds.
    latencies: Vec<u64>,
    errors: u64,
    /// The first error, to show what went wrong.
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, started: Instant, measure_from: Instant, outcome: anyhow::Result<()>) {
        if started < measure_from {
            return;
        }
        match outcome {
            Ok(()) => self.latencies.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)),
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.connections > 0, "--connections must be at least 1");
    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let authorization = args.token.as_ref().map(|t| format!("Bearer {t}"));
    let mut workers = Vec::with_capacity(args.connections);
    // Every connection is opened before the clock starts: set-up is not what is measured.
    let (go, start) = tokio::sync::watch::channel(None::<Instant>);
    for _ in 0..args.connections {
        let window = window_after(start.clone(), warmup, duration);
        match args.kind {
            Kind::Grpc => {
                let channel = Endpoint::from_shared(args.url.clone())?.tcp_nodelay(true).connect().await?;
                let client = CatalogServiceClient::new(channel);
                let (id, authorization) = (args.id.clone(), authorization.clone());
                workers.push(tokio::spawn(async move {
                    let Some((measure_from, end)) = window.await else { return Tally::default() };
                    grpc_worker(client, id, authorization, measure_from, end).await
                }));
            }
            Kind::Http => {
                let target = HttpTarget::parse(&args.url, authorization.as_deref())?;
                let stream = TcpStream::connect(target.addr).await?;
                stream.set_nodelay(true)?;
                workers.push(tokio::spawn(async move {
                    let Some((measure_from, end)) = window.await else { return Tally::default() };
                    http_worker(stream, target, measure_from, end).await
                }));
            }
        }
    }
    go.send(Some(Instant::now()))?;
    let mut latencies = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    for worker in workers {
        let tally = worker.await?;
        latencies.extend(tally.latencies);
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
    }
    latencies.sort_unstable();
    let micros = |q: f64| -> f64 {
        // Nearest rank: the smallest latency with at least q of all latencies at or below it.
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(rank - 1).map_or(0.0, |n| *n as f64 / 1000.0)
    };
    let ok = latencies.len();
    println!(
        "requests={ok} errors={errors} seconds={:.3} rps={:.1} p50_us={:.1} p90_us={:.1} p99_us={:.1} max_us={:.1} client_cpu_s={:.2}",
        duration.as_secs_f64(),
        ok as f64 / duration.as_secs_f64(),
        micros(0.50),
        micros(0.90),
        micros(0.99),
        micros(1.0),
        own_cpu_seconds().unwrap_or(f64::NAN),
    );
    if let Some(error) = first_error {
        eprintln!("first error: {error}");
    }
    ensure!(ok > 0, "no request succeeded");
    Ok(())
}

/// When the start is given: the measured window `(from, end)`, after the warm-up. `None` if the run is abandoned.
async fn window_after(
    mut start: tokio::sync::watch::Receiver<Option<Instant>>,
    warmup: Duration,
    duration: Duration,
) -> Option<(Instant, Instant)> {
    let start = (*start.wait_for(Option::is_some).await.ok()?)?;
    Some((start + warmup, start + warmup + duration))
}

async fn grpc_worker(
    mut client: CatalogServiceClient<tonic::transport::Channel>,
    id: String,
    authorization: Option<String>,
    measure_from: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let header = authorization.and_then(|a| a.parse::<tonic::metadata::AsciiMetadataValue>().ok());
    loop {
        let started = Instant::now();
        if started >= end {
            return tally;
        }
        let mut request = tonic::Request::new(GetProductRequest { id: id.clone() });
        if let Some(value) = &header {
            request.metadata_mut().insert("authorization", value.clone());
        }
        let outcome = match client.get_product(request).await {
            Ok(response) if response.get_ref().product.is_some() => Ok(()),
            Ok(_) => Err(anyhow::anyhow!("answer without a product")),
            Err(status) => Err(anyhow::anyhow!("{status}")),
        };
        tally.record(started, measure_from, outcome);
    }
}

/// Where and what an `http` worker asks.
#[derive(Debug, Clone)]
struct HttpTarget {
    addr: SocketAddr,
    /// The whole request, written as is each time.
    request: Vec<u8>,
}

impl HttpTarget {
    fn parse(url: &str, authorization: Option<&str>) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("http://").context("only http:// URLs")?;
        let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        let addr: SocketAddr = host.parse().context("the URL's host must be ip:port")?;
        let mut request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\naccept: application/json\r\n");
        if let Some(value) = authorization {
            request.push_str(&format!("authorization: {value}\r\n"));
        }
        request.push_str("\r\n");
        Ok(Self { addr, request: request.into_bytes() })
    }
}

async fn http_worker(mut stream: TcpStream, target: HttpTarget, measure_from: Instant, end: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut buffer = Vec::with_capacity(16 * 1024);
    loop {
        let started = Instant::now();
        if started >= end {
            return tally;
        }
        let outcome = http_exchange(&mut stream, &target.request, &mut buffer).await;
        let broken = outcome.is_err();
        tally.record(started, measure_from, outcome);
        if broken {
            // The connection's state is unknown after an error: start over on a new one.
            match TcpStream::connect(target.addr).await {
                Ok(fresh) => stream = fresh,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}

/// Writes `request` and reads one answer (status line, headers, a `content-length` body) into `buffer`.
async fn http_exchange(stream: &mut TcpStream, request: &[u8], buffer: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut written = 0;
    while written < request.len() {
        stream.writable().await?;
        match stream.try_write(&request[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    buffer.clear();
    let mut expected: Option<(usize, u16)> = None;
    loop {
        if let Some((total, status)) = expected {
            if buffer.len() >= total {
                ensure!(buffer.len() == total, "more bytes than one answer (pipelining is not used)");
                ensure!(status == 200, "HTTP status {status}");
                return Ok(());
            }
        } else if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            expected = Some(parse_head(&buffer[..end], end + 4)?);
            continue;
        }
        stream.readable().await?;
        let len = buffer.len();
        buffer.resize(len + 8192, 0);
        match stream.try_read(&mut buffer[len..]) {
            Ok(0) => {
                buffer.truncate(len);
                bail!("connection closed by the server");
            }
            Ok(n) => buffer.truncate(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => buffer.truncate(len),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The answer's total length (head plus `content-length`) and status, from its head.
fn parse_head(head: &[u8], head_len: usize) -> anyhow::Result<(usize, u16)> {
    let head = std::str::from_utf8(head).context("answer head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .context("no status line")?;
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .context("answers without content-length (chunked) are not supported")?;
    Ok((head_len + length, status))
}

/// This process's user plus system CPU time so far, from `/proc/self/stat` (Linux; clock ticks of 10 ms).
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 of the whole line.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
