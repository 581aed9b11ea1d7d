//! Throughput and end-to-end lag of outbox → relay → RabbitMQ (publisher confirms) → consumer → inbox on
//! PostgreSQL, the production path.
//!
//! ```sh
//! cargo run --release -p platform --example outbox_relay_pg -- 5000 200 30
//! ```
//!
//! Arguments (all optional): events per backlog phase (default 5000), the steady rate in events/s (200) and
//! how long it runs in seconds (30). `MERCATO_BENCH_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432`) names the server, on which a fresh database is created and dropped;
//! `MERCATO_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672`) the broker, on which everything lives
//! under a unique prefix deleted at the end. Phases:
//!
//! 1. backlog, one relay: N events already in the outbox; the relay drains them (batches of 100 published
//!    with pipelined confirms). Relay rate, and the end-to-end rate until the consumer applied the last one.
//! 2. backlog, two relays (two replicas, each with its own broker connection) on the same outbox: one leads and
//!    publishes, the other follows, so this shows what a second replica costs the one that publishes.
//! 3. steady: a writer commits one event per transaction at the given rate, waking the running relay after
//!    each commit; lag of every event from its outbox insert (`create_time`) to the consumer's inbox commit,
//!    p50/p99/max.

use platform::db::BeginWrite;
use std::error::Error;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use platform::events::{self, AmqpBus, EventEnvelope, NewEvent, Relay};
use platform::{Db, with_db};
use sqlx::ConnectOptions;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Subjects the events are spread over (aggregates: orders, carts, ...).
const SUBJECTS: usize = 64;

/// Lags (µs) of the events the consumer applied, in the order it applied them.
#[derive(Default)]
struct Applied {
    lags: Mutex<Vec<i64>>,
}

impl Applied {
    fn count(&self) -> usize {
        self.lags.lock().map(|l| l.len()).unwrap_or_default()
    }

    fn take(&self) -> Vec<i64> {
        self.lags.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default()
    }
}

/// The consumer: records the event id in its inbox in a transaction, then notes the lag from the event's
/// outbox insert to that commit.
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

fn event(n: usize) -> NewEvent {
    NewEvent { event_type: "bench.happened", subject: format!("s{}", n % SUBJECTS), payload: vec![0u8; 64] }
}

/// Writes `n` events in one transaction (a backlog).
async fn write_backlog(db: &Db, n: usize) -> Result<()> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        for i in 0..n {
            events::enqueue(&mut *tx, "bench", &event(i)).await?;
        }
        tx.commit().await?;
    });
    Ok(())
}

async fn write_one(db: &Db, i: usize) -> Result<()> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        events::enqueue(&mut *tx, "bench", &event(i)).await?;
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
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// The value below which a share `p` of `sorted` lies, in milliseconds.
fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Drains a backlog of `n` events with `relays` relays side by side, each with its own broker connection (one of
/// them leads the outbox and publishes).
async fn backlog(db: &Db, url: &str, prefix: &str, applied: &Applied, n: usize, relays: usize) -> Result<()> {
    write_backlog(db, n).await?;
    applied.take();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..relays {
        let relay = Relay::new("bench", db.clone(), Arc::new(AmqpBus::connect(url, prefix).await?));
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            while events::unsent_count(&db).await? > 0 {
                if relay.publish_pending().await? == 0 {
                    // A follower, or a round that found nothing yet.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Ok::<_, Box<dyn Error + Send + Sync>>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let publish_time = start.elapsed();
    wait_applied(applied, n).await?;
    let total = start.elapsed();
    println!(
        "backlog of {n}, {relays} relay(s): published {:.0} events/s ({:.2} s); consumer applied the last after {:.2} s: {:.0} events/s end to end",
        n as f64 / publish_time.as_secs_f64(),
        publish_time.as_secs_f64(),
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
    );
    Ok(())
}

/// Commits `rate` events per second for `seconds` with a relay running, and reports the lags.
async fn steady(db: &Db, bus: Arc<AmqpBus>, applied: &Applied, rate: u64, seconds: u64) -> Result<()> {
    applied.take();
    let relay = Relay::new("bench", db.clone(), bus);
    let wake = relay.handle();
    let stop = tokio_util::sync::CancellationToken::new();
    let relay_task = tokio::spawn(relay.run(stop.clone()));
    let n = (rate * seconds) as usize;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    for i in 0..n {
        ticks.tick().await;
        write_one(db, i).await?;
        wake.wake();
    }
    let write_time = start.elapsed();
    wait_applied(applied, n).await?;
    let total = start.elapsed();
    stop.cancel();
    let _ = relay_task.await;
    let mut lags = applied.take();
    lags.sort_unstable();
    println!(
        "steady {rate}/s for {seconds} s: {n} events written at {:.0} events/s, all applied after {:.2} s; \
         lag outbox insert → consumer commit p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        n as f64 / write_time.as_secs_f64(),
        total.as_secs_f64(),
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        percentile(&lags, 1.0),
    );
    Ok(())
}

/// Waits until the server has ended the sessions of the last phase's relays, and with them their lead of the
/// outbox (a relay that finds the lead taken tries again only after its poll interval, which would be timed).
async fn hand_over_lead() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn run(db: &Db, url: &str, prefix: &str, n: usize, rate: u64, seconds: u64) -> Result<()> {
    let sql = format!("{}\n{}", events::OUTBOX_TABLE_SQL, events::INBOX_TABLE_SQL);
    with_db!(db, pool => sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(|_| ()))?;
    let consuming = Arc::new(AmqpBus::connect(url, prefix).await?);
    let applied = Arc::new(Applied::default());
    events::EventBus::subscribe(&*consuming, "bench", &["bench.happened"], consumer(db.clone(), applied.clone()));
    // The first publish declares the consumer's queue, so nothing of the phases below is unroutable.
    let warm = Relay::new("bench", db.clone(), consuming.clone());
    write_one(db, 0).await?;
    warm.publish_pending().await?;
    wait_applied(&applied, 1).await?;
    drop(warm);

    hand_over_lead().await;
    backlog(db, url, prefix, &applied, n, 1).await?;
    hand_over_lead().await;
    backlog(db, url, prefix, &applied, n, 2).await?;
    hand_over_lead().await;
    steady(db, consuming.clone(), &applied, rate, seconds).await?;
    consuming.shutdown().await;
    Ok(())
}

async fn delete_topology(url: &str, prefix: &str) -> Result<()> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    for queue in [format!("{prefix}.bench"), format!("{prefix}.bench.dead")] {
        channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await?;
    }
    for exchange in [format!("{prefix}.events"), format!("{prefix}.dlx")] {
        channel.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await?;
    }
    connection.close(200, "done".into()).await?;
    Ok(())
}

async fn drop_database(server: &str, name: &str) -> Result<()> {
    let mut admin = sqlx::postgres::PgConnectOptions::from_str(server)?.database("postgres").connect().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&mut admin)
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::var("MERCATO_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned());
    let server =
        std::env::var("MERCATO_BENCH_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5000);
    let rate: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200).max(1);
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(30);
    let id = uuid::Uuid::now_v7().simple();
    let (prefix, database) = (format!("mercato-bench-{id}"), format!("mercato_bench_{id}"));
    let db = Db::open_postgres_server(&server, &database, "bench").await?;
    let result = run(&db, &url, &prefix, n, rate, seconds).await;
    db.close().await;
    delete_topology(&url, &prefix).await?;
    drop_database(&server, &database).await?;
    result
}
