//! Throughput and lag of outbox → relay → RabbitMQ → consumer → inbox, on SQLite.
//!
//! ```sh
//! MERCATO_AMQP_URL=amqp://guest:guest@127.0.0.1:5672 cargo run --release -p platform --example amqp_throughput -- 5000
//! ```
//!
//! Two phases, each with `N` events (default 5000) under a unique exchange/queue prefix deleted at the end:
//!
//! 1. backlog: `N` events already in the outbox; the relay drains it (one publish with confirm and one
//!    `UPDATE outbox` per event). Reports the relay's publish rate and how long until the consumer applied all.
//! 2. stream: a writer commits events one per transaction as fast as it can while the relay runs (woken on
//!    each commit); the consumer applies each in an inbox transaction. Reports end-to-end events/s and the
//!    p50/p99/max lag from the commit (`create_time`) to the consumer's commit.

use platform::db::BeginWrite;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use platform::events::{self, AmqpBus, EventBus, EventEnvelope, NewEvent, Relay};
use platform::{Db, with_db};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Lags (µs) of applied events, in the order they were applied.
#[derive(Default)]
struct Applied {
    lags: Mutex<Vec<i64>>,
}

impl Applied {
    fn count(&self) -> usize {
        self.lags.lock().map(|l| l.len()).unwrap_or_default()
    }
}

fn consumer(db: Db, applied: Arc<Applied>) -> events::Handler {
    Arc::new(move |envelope: Arc<EventEnvelope>| -> BoxFuture<'static, std::result::Result<(), String>> {
        let (db, applied) = (db.clone(), applied.clone());
        Box::pin(async move {
            let first: std::result::Result<bool, sqlx::Error> = with_db!(&db, pool => {
                async {
                    let mut tx = pool.begin_write().await?;
                    let first = events::first_delivery(&mut *tx, "bench", &envelope.id).await?;
                    tx.commit().await?;
                    Ok(first)
                }
                .await
            });
            if first.map_err(|e| e.to_string())? {
                let created = envelope.time.as_ref().map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000);
                let lag = platform::time::now_micros() - created.unwrap_or_default();
                if let Ok(mut lags) = applied.lags.lock() {
                    lags.push(lag);
                }
            }
            Ok(())
        })
    })
}

async fn write(db: &Db, n: usize) -> Result<()> {
    let event = NewEvent { event_type: "bench.happened", subject: format!("s{}", n % 16), payload: vec![0u8; 64] };
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        events::enqueue(&mut *tx, "bench", &event).await?;
        tx.commit().await?;
    });
    Ok(())
}

async fn wait_applied(applied: &Applied, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while applied.count() < n {
        if Instant::now() > deadline {
            return Err(format!("only {} of {n} events applied", applied.count()).into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn run(url: &str, prefix: &str, n: usize) -> Result<()> {
    let (db, _dir) = platform::testkit::sqlite("bench").await?;
    let sql = format!("{}\n{}", events::OUTBOX_TABLE_SQL, events::INBOX_TABLE_SQL);
    with_db!(&db, pool => sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(|_| ()))?;
    let bus = Arc::new(AmqpBus::connect(url, prefix).await?);
    let applied = Arc::new(Applied::default());
    bus.subscribe("bench", &["bench.happened"], consumer(db.clone(), applied.clone()));

    // Baselines: the relay with a bus that accepts at once (SQLite cost alone), and the bus alone (a publish
    // with its confirm, no database).
    for i in 0..n {
        write(&db, i).await?;
    }
    let null_relay = Relay::new("bench", db.clone(), Arc::new(events::InProcessBus::new()));
    let start = Instant::now();
    let mut published = 0;
    while published < n {
        published += null_relay.publish_pending().await?;
    }
    println!("baseline: relay to a bus that accepts at once: {:.0} events/s", n as f64 / start.elapsed().as_secs_f64());
    with_db!(&db, pool => sqlx::query("UPDATE outbox SET sent_time = NULL").execute(pool).await.map(|_| ()))?;
    let probe = AmqpBus::connect(url, prefix).await?;
    probe_publish(&probe, "bench.unrouted", "to no queue", n).await?;
    probe.subscribe("probe", &["bench.probe"], Arc::new(|_| Box::pin(async { Ok(()) })));
    probe_publish(&probe, "bench.probe", "to a quorum queue", n).await?;
    probe.shutdown().await;

    // Phase 1: drain a backlog (the rows written above, unsent again).
    let relay = Relay::new("bench", db.clone(), bus.clone());
    let start = Instant::now();
    let mut published = 0;
    while published < n {
        published += relay.publish_pending().await?;
    }
    let publish_time = start.elapsed();
    wait_applied(&applied, n).await?;
    let drain_time = start.elapsed();
    println!(
        "backlog of {n}: relay published {:.0} events/s ({:.2} s); consumer applied all after {:.2} s ({:.0} events/s)",
        n as f64 / publish_time.as_secs_f64(),
        publish_time.as_secs_f64(),
        drain_time.as_secs_f64(),
        n as f64 / drain_time.as_secs_f64(),
    );

    // Phase 2: a stream of commits with the relay running.
    if let Ok(mut lags) = applied.lags.lock() {
        lags.clear();
    }
    let relay = Relay::new("bench", db.clone(), bus.clone());
    let wake = relay.handle();
    let stop = tokio_util::sync::CancellationToken::new();
    let relay_task = tokio::spawn(relay.run(stop.clone()));
    let start = Instant::now();
    for i in 0..n {
        write(&db, i).await?;
        wake.wake();
    }
    let write_time = start.elapsed();
    wait_applied(&applied, n).await?;
    let total = start.elapsed();
    stop.cancel();
    let _ = relay_task.await;
    let mut lags = applied.lags.lock().map(|l| l.clone()).unwrap_or_default();
    lags.sort_unstable();
    println!(
        "stream of {n}: written at {:.0} events/s, applied end to end at {:.0} events/s ({:.2} s); lag commit → consumer commit p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        n as f64 / write_time.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        total.as_secs_f64(),
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        percentile(&lags, 1.0),
    );
    bus.shutdown().await;
    Ok(())
}

/// Publishes `n` envelopes of `event_type` one at a time and prints the rate and confirm latency.
async fn probe_publish(bus: &AmqpBus, event_type: &str, what: &str, n: usize) -> Result<()> {
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let begin = Instant::now();
        let envelope = EventEnvelope {
            id: format!("probe-{i}"),
            r#type: event_type.to_owned(),
            data: vec![0u8; 64],
            ..EventEnvelope::default()
        };
        bus.publish(envelope).await?;
        latencies.push(begin.elapsed().as_micros() as i64);
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    println!(
        "baseline: AmqpBus::publish alone, one at a time, {what}: {:.0} events/s, confirm p50 {:.2} ms, p99 {:.2} ms",
        n as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    );
    Ok(())
}

async fn delete_topology(url: &str, prefix: &str) -> Result<()> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    for queue in [
        format!("{prefix}.bench"),
        format!("{prefix}.bench.dead"),
        format!("{prefix}.probe"),
        format!("{prefix}.probe.dead"),
    ] {
        channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await?;
    }
    for exchange in [format!("{prefix}.events"), format!("{prefix}.dlx")] {
        channel.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await?;
    }
    connection.close(200, "done".into()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::var("MERCATO_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned());
    let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(5000);
    let prefix = format!("mercato-bench-{}", uuid::Uuid::now_v7().simple());
    let result = run(&url, &prefix, n).await;
    delete_topology(&url, &prefix).await?;
    result
}
