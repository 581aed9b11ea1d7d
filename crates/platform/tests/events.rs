//! The outbox, relay, in-process bus and inbox against real databases: SQLite, and PostgreSQL when
//! `MERCATO_TEST_DATABASE_URL` is set.

use platform::db::BeginWrite;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use platform::events::{self, EventBus, EventEnvelope, InProcessBus, NewEvent, Relay};
use platform::{Db, with_db};

async fn create_tables(db: &Db) {
    let sql = format!("{}\n{}", events::OUTBOX_TABLE_SQL, events::INBOX_TABLE_SQL);
    with_db!(db, pool => sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(|_| ()).expect("tables"));
}

fn event(subject: &str, n: u8) -> NewEvent {
    NewEvent { event_type: "thing.happened", subject: subject.to_owned(), payload: vec![n] }
}

/// Writes events the way a service does: in a transaction with its change, here committed or rolled back.
async fn write(db: &Db, event: &NewEvent, commit: bool) {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await.expect("begin");
        events::enqueue(&mut *tx, "test", event).await.expect("enqueue");
        if commit { tx.commit().await.expect("commit") } else { tx.rollback().await.expect("rollback") }
    });
}

/// Writes one event in a transaction of its own and returns its id.
async fn enqueue(db: &Db, event: &NewEvent) -> String {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await.expect("begin");
        let id = events::enqueue(&mut *tx, "test", event).await.expect("enqueue");
        tx.commit().await.expect("commit");
        id
    })
}

/// Runs `relay`'s rounds until one publishes something (on PostgreSQL it may have to wait for the lead, which
/// a relay that ended gives up as soon as the server has ended its session); returns what that round published.
async fn publish_once_leading(relay: &Relay) -> usize {
    for _ in 0..100 {
        match relay.publish_pending().await.expect("published") {
            0 => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            published => return published,
        }
    }
    panic!("the relay never published: it never took the lead");
}

/// A consumer that applies each event once (inbox in the same transaction as its effect) and fails the
/// first `fail_first` deliveries.
fn consumer(db: Db, applied: Arc<AtomicUsize>, fail_first: usize) -> events::Handler {
    let attempts = Arc::new(AtomicUsize::new(0));
    Arc::new(move |envelope: Arc<EventEnvelope>| {
        let (db, applied, attempts) = (db.clone(), applied.clone(), attempts.clone());
        Box::pin(async move {
            if attempts.fetch_add(1, Ordering::SeqCst) < fail_first {
                return Err("consumer not ready".to_owned());
            }
            let first: Result<bool, sqlx::Error> = with_db!(&db, pool => {
                async {
                    let mut tx = pool.begin_write().await?;
                    let first = events::first_delivery(&mut *tx, "counter", &envelope.id).await?;
                    tx.commit().await?;
                    Ok(first)
                }
                .await
            });
            if first.map_err(|e| e.to_string())? {
                applied.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        })
    })
}

async fn outbox_to_consumer_exactly_once(db: Db) {
    create_tables(&db).await;
    let bus = Arc::new(InProcessBus::new());
    let applied = Arc::new(AtomicUsize::new(0));
    bus.subscribe("counter", &["thing.happened"], consumer(db.clone(), applied.clone(), 1));
    let relay = Relay::new("test", db.clone(), bus.clone());

    write(&db, &event("a", 1), true).await;
    write(&db, &event("a", 2), false).await; // rolled back: never published
    write(&db, &event("a", 3), true).await;
    assert_eq!(events::unsent_count(&db).await.expect("count"), 2);

    // The consumer fails the first delivery: nothing is marked sent, nothing applied.
    assert!(relay.publish_pending().await.is_err());
    assert_eq!(events::unsent_count(&db).await.expect("count"), 2);
    assert_eq!(applied.load(Ordering::SeqCst), 0);
    // The next round delivers both, in order.
    assert_eq!(relay.publish_pending().await.expect("published"), 2);
    assert_eq!(events::unsent_count(&db).await.expect("count"), 0);
    assert_eq!(applied.load(Ordering::SeqCst), 2);

    // A redelivery of an already applied event (a crash between handling and marking sent) has no effect.
    let ids: Vec<String> = with_db!(&db, pool => sqlx::query_scalar("SELECT id FROM outbox ORDER BY id").fetch_all(pool).await.expect("ids"));
    with_db!(&db, pool => sqlx::query("UPDATE outbox SET sent_time = NULL").execute(pool).await.map(|_| ()).expect("reset"));
    assert_eq!(relay.publish_pending().await.expect("published"), 2);
    assert_eq!(applied.load(Ordering::SeqCst), 2, "redelivered events were applied again");

    // Payloads arrive intact, in order.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let recorder = Arc::new(InProcessBus::new());
    recorder.subscribe(
        "recorder",
        &["thing.happened"],
        Arc::new(move |e: Arc<EventEnvelope>| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send((e.id.clone(), e.data.clone(), e.subject.clone()));
                Ok(())
            })
        }),
    );
    with_db!(&db, pool => sqlx::query("UPDATE outbox SET sent_time = NULL").execute(pool).await.map(|_| ()).expect("reset"));
    // One relay leads an outbox: the first ends (as its process would) so that this one leads.
    drop(relay);
    assert_eq!(publish_once_leading(&Relay::new("test", db.clone(), recorder)).await, 2);
    let first = rx.recv().await.expect("first");
    let second = rx.recv().await.expect("second");
    assert_eq!((first.0.as_str(), first.1.as_slice(), first.2.as_str()), (ids[0].as_str(), &[1u8][..], "a"));
    assert_eq!(second.1, vec![3u8]);
}

#[tokio::test]
async fn outbox_to_consumer_exactly_once_on_sqlite() {
    let (db, _dir) = platform::testkit::sqlite("events").await.expect("sqlite");
    outbox_to_consumer_exactly_once(db).await;
}

#[tokio::test]
async fn outbox_to_consumer_exactly_once_on_postgres() {
    let Some(db) = platform::testkit::postgres("events").await else { return };
    outbox_to_consumer_exactly_once(db).await;
}

#[tokio::test]
async fn the_relay_delivers_soon_after_a_wake_and_stops_on_shutdown() {
    let (db, _dir) = platform::testkit::sqlite("events").await.expect("sqlite");
    create_tables(&db).await;
    let bus = Arc::new(InProcessBus::new());
    let applied = Arc::new(AtomicUsize::new(0));
    bus.subscribe("counter", &["thing.happened"], consumer(db.clone(), applied.clone(), 0));
    let relay = Relay::new("test", db.clone(), bus as Arc<dyn EventBus>);
    let handle = relay.handle();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone()));
    write(&db, &event("b", 7), true).await;
    handle.wake();
    for _ in 0..200 {
        if applied.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(applied.load(Ordering::SeqCst), 1);
    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), task).await.expect("stops").expect("task");
}

/// A bus that records every event it is given, by subject, yielding while it "publishes" so that relays
/// running side by side really interleave.
fn recording_bus(seen: Arc<std::sync::Mutex<Vec<(String, String)>>>) -> Arc<InProcessBus> {
    let bus = Arc::new(InProcessBus::new());
    bus.subscribe(
        "recorder",
        &["thing.happened"],
        Arc::new(move |e: Arc<EventEnvelope>| {
            let seen = seen.clone();
            Box::pin(async move {
                seen.lock().expect("seen").push((e.subject.clone(), e.id.clone()));
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                Ok(())
            })
        }),
    );
    bus
}

/// Two relays (two replicas of a service) drain one PostgreSQL outbox at the same time: one leads and
/// publishes each event once, the events of each subject in the order they were written; the other publishes
/// nothing while it leads.
#[tokio::test]
async fn two_relays_on_one_postgres_outbox_publish_each_event_once_in_subject_order() {
    let Some(db) = platform::testkit::postgres("events").await else { return };
    create_tables(&db).await;
    let (subjects, per_subject) = (60, 10);
    let mut written: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for n in 0..subjects * per_subject {
        let subject = format!("s{}", n % subjects);
        let id = enqueue(&db, &event(&subject, (n % 256) as u8)).await;
        written.entry(subject).or_default().push(id);
    }

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let bus = recording_bus(seen.clone());
    let drain = |relay: Relay| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut published = 0;
            while events::unsent_count(&db).await.expect("count") > 0 {
                match relay.publish_pending().await.expect("published") {
                    0 => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                    n => published += n,
                }
            }
            published
        })
    };
    let first = drain(Relay::new("test", db.clone(), bus.clone()));
    let second = drain(Relay::new("test", db.clone(), bus.clone()));
    let (first, second) = (first.await.expect("first relay"), second.await.expect("second relay"));

    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), subjects * per_subject, "events published more than once or not at all");
    assert_eq!(first + second, subjects * per_subject);
    assert!(first == 0 || second == 0, "both relays published ({first} and {second}): neither led alone");
    let mut published: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for (subject, id) in seen {
        published.entry(subject).or_default().push(id);
    }
    assert_eq!(published, written, "a subject's events were published out of order");
}

/// The relay that leads a PostgreSQL outbox dies (its process ends and with it its connection): another
/// replica's relay, which published nothing meanwhile, takes the lead and publishes what is left, in order.
#[tokio::test]
async fn when_the_leading_relay_dies_another_takes_the_lead() {
    let Some(db) = platform::testkit::postgres("events").await else { return };
    create_tables(&db).await;
    let mut written = Vec::new();
    for n in 0..3 {
        written.push(enqueue(&db, &event("a", n)).await);
    }
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let bus = recording_bus(seen.clone());
    let leader = Relay::new("test", db.clone(), bus.clone());
    let follower = Relay::new("test", db.clone(), bus.clone());
    assert_eq!(leader.publish_pending().await.expect("leader publishes"), 3);

    for n in 3..5 {
        written.push(enqueue(&db, &event("a", n)).await);
    }
    assert_eq!(follower.publish_pending().await.expect("follower's round"), 0, "a follower published");
    assert_eq!(events::unsent_count(&db).await.expect("count"), 2);

    drop(leader);
    assert_eq!(publish_once_leading(&follower).await, 2, "no relay took the lead after the leader died");
    let seen: Vec<String> = seen.lock().expect("seen").iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(seen, written, "events were lost, repeated or reordered across the change of leader");
}

/// The value of gauge `name` for `service`.
fn gauge(metrics: &metrics_exporter_prometheus::PrometheusHandle, name: &str, service: &str) -> f64 {
    let prefix = format!("{name}{{service=\"{service}\"}} ");
    let rendered = metrics.render();
    let line =
        rendered.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{rendered}"));
    line[prefix.len()..].parse().expect("a number")
}

async fn the_outbox_age_and_depth_are_metrics(db: Db, service: &'static str) {
    let metrics = platform::metrics::handle();
    create_tables(&db).await;
    let bus = Arc::new(InProcessBus::new());
    bus.subscribe("counter", &["thing.happened"], consumer(db.clone(), Arc::new(AtomicUsize::new(0)), 1));
    let relay = Relay::new(service, db.clone(), bus);
    write(&db, &event("a", 1), true).await;
    write(&db, &event("a", 2), true).await;
    // The oldest event was written a minute ago; the consumer fails its first delivery, so both stay.
    with_db!(&db, pool => sqlx::query("UPDATE outbox SET create_time = create_time - 60000000 WHERE payload = 'AQ=='").execute(pool).await.map(|_| ()).expect("age"));
    assert!(relay.publish_pending().await.is_err());
    let gauge = |name: &str| gauge(metrics, name, service);
    assert_eq!(gauge("mercato_outbox_depth"), 2.0);
    let age = gauge("mercato_outbox_oldest_age_seconds");
    assert!((60.0..70.0).contains(&age), "age {age}");
    // Once drained, nothing is waiting: depth and age are zero.
    assert_eq!(relay.publish_pending().await.expect("published"), 2);
    assert_eq!(gauge("mercato_outbox_depth"), 0.0);
    assert_eq!(gauge("mercato_outbox_oldest_age_seconds"), 0.0);
}

/// The rows of `table` once they are `expected` (a background task deletes them), or after five seconds
/// whatever they are then.
async fn count_until(db: &Db, table: &str, expected: i64) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let mut rows = i64::MAX;
    for _ in 0..100 {
        rows = with_db!(db, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.as_str())).fetch_one(pool).await.expect("count"));
        if rows == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    rows
}

async fn sent_events_past_their_retention_are_deleted(db: Db, service: &'static str) {
    let metrics = platform::metrics::handle();
    create_tables(&db).await;
    let bus = Arc::new(InProcessBus::new());
    bus.subscribe("counter", &["thing.happened"], consumer(db.clone(), Arc::new(AtomicUsize::new(0)), 0));
    let relay = Relay::new(service, db.clone(), bus).with_retention(std::time::Duration::from_secs(3600));
    for n in 1..=3 {
        write(&db, &event("a", n), true).await;
    }
    assert_eq!(publish_once_leading(&relay).await, 3);
    // Events 1 and 2 were sent two hours ago, 3 just now; 4, written two hours ago, is not sent yet.
    write(&db, &event("b", 4), true).await;
    with_db!(&db, pool => {
        sqlx::query("UPDATE outbox SET sent_time = sent_time - 7200000000 WHERE payload IN ('AQ==', 'Ag==')")
            .execute(pool).await.map(|_| ()).expect("sent long ago");
        sqlx::query("UPDATE outbox SET create_time = create_time - 7200000000 WHERE payload = 'BA=='")
            .execute(pool).await.map(|_| ()).expect("written long ago");
    });

    assert_eq!(relay.purge_sent().await, Ok(2));
    let left: Vec<String> = with_db!(&db, pool => {
        sqlx::query_scalar("SELECT payload FROM outbox ORDER BY payload").fetch_all(pool).await.expect("outbox")
    });
    assert_eq!(left, ["Aw==", "BA=="], "the recent one and the unsent one stay");
    assert_eq!(gauge(metrics, "mercato_outbox_purged_total", service), 2.0);
    assert_eq!(relay.purge_sent().await, Ok(0));
    // The unsent one is still published.
    assert_eq!(publish_once_leading(&relay).await, 1);

    // A running relay purges when it starts (and every hour after), however many batches that takes: here
    // two and a half more, as after the first start of an outbox that was never purged.
    with_db!(&db, pool => {
        sqlx::query("UPDATE outbox SET sent_time = sent_time - 7200000000").execute(pool).await.map(|_| ()).expect("age");
        sqlx::query(
            "WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
             INSERT INTO outbox (id, source, event_type, subject, payload, traceparent, create_time, sent_time) \
             SELECT 'old-' || i, 'test', 'thing.happened', 'old', '', '', 1, 2 FROM n",
        )
        .execute(pool)
        .await
        .map(|_| ())
        .expect("old events");
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    let left = count_until(&db, "outbox", 0).await;
    assert_eq!(left, 0, "the running relay deleted the sent events past their retention");
    shutdown.cancel();
    running.await.expect("relay stopped");
}

#[tokio::test]
async fn sent_events_past_their_retention_are_deleted_on_sqlite() {
    let (db, _dir) = platform::testkit::sqlite("events").await.expect("sqlite");
    sent_events_past_their_retention_are_deleted(db, "purge-sqlite").await;
}

#[tokio::test]
async fn sent_events_past_their_retention_are_deleted_on_postgres() {
    let Some(db) = platform::testkit::postgres("events").await else { return };
    sent_events_past_their_retention_are_deleted(db, "purge-postgres").await;
}

async fn handled_events_past_their_retention_leave_the_inbox(db: Db, service: &'static str) {
    let metrics = platform::metrics::handle();
    create_tables(&db).await;
    for (consumer, event_id) in [("counter", "e1"), ("counter", "e2"), ("counter", "e3"), ("mailer", "e1")] {
        let first = with_db!(&db, pool => events::first_delivery(pool, consumer, event_id).await.expect("record"));
        assert!(first);
    }
    // e1 was handled two hours ago by both consumers, e2 by one; e3 just now.
    with_db!(&db, pool => {
        sqlx::query("UPDATE inbox SET handle_time = handle_time - 7200000000 WHERE event_id IN ('e1', 'e2')")
            .execute(pool).await.map(|_| ()).expect("handled long ago")
    });
    let pruner = events::InboxPruner::new(service, db.clone()).with_retention(std::time::Duration::from_secs(3600));
    assert_eq!(pruner.prune().await.expect("pruned"), 3);
    let left: Vec<(String, String)> = with_db!(&db, pool => {
        sqlx::query_as("SELECT consumer, event_id FROM inbox").fetch_all(pool).await.expect("inbox")
    });
    assert_eq!(left, [("counter".to_owned(), "e3".to_owned())], "only the recent one stays");
    assert_eq!(gauge(metrics, "mercato_inbox_pruned_total", service), 3.0);
    // Still remembered: a redelivery of e3 is a duplicate.
    let again = with_db!(&db, pool => events::first_delivery(pool, "counter", "e3").await.expect("record"));
    assert!(!again, "a recent event is still deduplicated");

    // A running pruner prunes when it starts, however many batches that takes (here two and a half).
    with_db!(&db, pool => {
        sqlx::query(
            "WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
             INSERT INTO inbox (consumer, event_id, handle_time) SELECT 'counter', 'old-' || i, 1 FROM n",
        )
        .execute(pool)
        .await
        .map(|_| ())
        .expect("old deliveries")
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(pruner.run(shutdown.clone()));
    let left = count_until(&db, "inbox", 1).await;
    assert_eq!(left, 1, "the running pruner deleted the old rows and kept the recent one");
    shutdown.cancel();
    running.await.expect("pruner stopped");
}

#[tokio::test]
async fn handled_events_past_their_retention_leave_the_inbox_on_sqlite() {
    let (db, _dir) = platform::testkit::sqlite("events").await.expect("sqlite");
    handled_events_past_their_retention_leave_the_inbox(db, "prune-sqlite").await;
}

#[tokio::test]
async fn handled_events_past_their_retention_leave_the_inbox_on_postgres() {
    let Some(db) = platform::testkit::postgres("events").await else { return };
    handled_events_past_their_retention_leave_the_inbox(db, "prune-postgres").await;
}

#[tokio::test]
async fn the_outbox_age_and_depth_are_metrics_on_sqlite() {
    let (db, _dir) = platform::testkit::sqlite("events").await.expect("sqlite");
    the_outbox_age_and_depth_are_metrics(db, "age-sqlite").await;
}

#[tokio::test]
async fn the_outbox_age_and_depth_are_metrics_on_postgres() {
    let Some(db) = platform::testkit::postgres("events").await else { return };
    the_outbox_age_and_depth_are_metrics(db, "age-postgres").await;
}

/// A replica whose relay follows reports the outbox's depth and age too (alerts take the largest over replicas,
/// and a replica that led before would otherwise keep reporting what it saw then).
#[tokio::test]
async fn a_following_relay_reports_the_outbox_depth_too() {
    let Some(db) = platform::testkit::postgres("events").await else { return };
    let metrics = platform::metrics::handle();
    create_tables(&db).await;
    let bus = Arc::new(InProcessBus::new());
    let leader = Relay::new("depth-leader", db.clone(), bus.clone());
    let follower = Relay::new("depth-follower", db.clone(), bus);
    write(&db, &event("a", 1), true).await;
    assert_eq!(leader.publish_pending().await.expect("published"), 1);
    write(&db, &event("a", 2), true).await;
    write(&db, &event("a", 3), true).await;
    assert_eq!(follower.publish_pending().await.expect("follower's round"), 0);
    assert_eq!(gauge(metrics, "mercato_outbox_depth", "depth-follower"), 2.0);
    assert!(gauge(metrics, "mercato_outbox_oldest_age_seconds", "depth-follower") < 60.0);
}

/// The in-process bus hands an event to all its consumers at once: a slow consumer does not hold the others up,
/// and publishing reports the one that failed after every consumer has had the event.
#[tokio::test]
async fn the_in_process_bus_delivers_to_its_consumers_side_by_side() {
    let bus = InProcessBus::new();
    // Each consumer waits for the other to have started: delivered in turn, the first would wait forever.
    let both_started = Arc::new(tokio::sync::Barrier::new(2));
    let finished = Arc::new(AtomicUsize::new(0));
    for (name, fails) in [("search", false), ("analytics", true)] {
        let (both_started, finished) = (both_started.clone(), finished.clone());
        bus.subscribe(
            name,
            &["thing.happened"],
            Arc::new(move |_: Arc<EventEnvelope>| {
                let (both_started, finished) = (both_started.clone(), finished.clone());
                Box::pin(async move {
                    both_started.wait().await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    if fails { Err("analytics is down".to_owned()) } else { Ok(()) }
                })
            }),
        );
    }
    let envelope = EventEnvelope { id: "evt-1".to_owned(), r#type: "thing.happened".to_owned(), ..Default::default() };
    let published = tokio::time::timeout(std::time::Duration::from_secs(5), bus.publish(envelope))
        .await
        .expect("a consumer waited for the other: the bus delivered one at a time");
    match published {
        Err(events::BusError::Handler { consumer, event_id, .. }) => {
            assert_eq!((consumer.as_str(), event_id.as_str()), ("analytics", "evt-1"));
        }
        other => panic!("the failing consumer is reported: {other:?}"),
    }
    assert_eq!(finished.load(Ordering::SeqCst), 2, "both consumers handled the event");
}

/// A batch from the relay: the subjects are delivered side by side, the events of one subject in order, and the
/// accepted prefix ends at the first event a consumer refused.
#[tokio::test]
async fn the_in_process_bus_delivers_a_batchs_subjects_side_by_side_and_each_in_order() {
    let bus = InProcessBus::new();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // The first event of order-a waits until order-b's first has started: one subject at a time never gets there.
    let both_started = Arc::new(tokio::sync::Barrier::new(2));
    {
        let (seen, both_started) = (seen.clone(), both_started.clone());
        bus.subscribe(
            "recorder",
            &["thing.happened"],
            Arc::new(move |e: Arc<EventEnvelope>| {
                let (seen, both_started) = (seen.clone(), both_started.clone());
                Box::pin(async move {
                    if e.id == "a1" || e.id == "b1" {
                        both_started.wait().await;
                    }
                    if e.id == "b3" {
                        return Err("b3 is refused".to_owned());
                    }
                    seen.lock().expect("seen").push(e.id.clone());
                    Ok(())
                })
            }),
        );
    }
    let event = |id: &str, subject: &str| EventEnvelope {
        id: id.to_owned(),
        r#type: "thing.happened".to_owned(),
        subject: subject.to_owned(),
        ..Default::default()
    };
    let batch = vec![
        event("a1", "order-a"),
        event("b1", "order-b"),
        event("a2", "order-a"),
        event("b2", "order-b"),
        event("a3", "order-a"),
        event("b3", "order-b"),
        event("b4", "order-b"),
        event("a4", "order-a"),
    ];
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(5), bus.publish_batch(batch))
        .await
        .expect("order-a waited for order-b: the subjects were delivered one at a time");
    assert_eq!(outcome.confirmed, 5, "a1 b1 a2 b2 a3 were accepted, b3 was not: {outcome:?}");
    assert!(
        matches!(&outcome.error, Some(events::BusError::Handler { event_id, .. }) if event_id == "b3"),
        "{outcome:?}"
    );
    let seen = seen.lock().expect("seen").clone();
    let of = |subject: char| seen.iter().filter(|id| id.starts_with(subject)).cloned().collect::<Vec<_>>();
    assert_eq!(of('a'), ["a1", "a2", "a3", "a4"], "order-a in order, all of it");
    assert_eq!(of('b'), ["b1", "b2"], "order-b stops at the refused b3: b4 must not overtake it");
}
