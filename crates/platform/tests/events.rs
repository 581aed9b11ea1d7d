//! The outbox, relay, in-process bus and inbox against real databases: SQLite, and PostgreSQL when
//! `MERCATO_TEST_DATABASE_URL` is set.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use platform::events::{self, EventBus, EventEnvelope, InProcessBus, NewEvent, Relay};
use platform::{Db, with_db};

async fn create_tables(db: &Db) {
    let sql = format!("{}\n{}", events::OUTBOX_TABLE_SQL, events::INBOX_TABLE_SQL);
    with_db!(db, pool => sqlx::raw_sql(&sql).execute(pool).await.map(|_| ()).expect("tables"));
}

fn event(subject: &str, n: u8) -> NewEvent {
    NewEvent { event_type: "thing.happened", subject: subject.to_owned(), payload: vec![n] }
}

/// Writes events the way a service does: in a transaction with its change, here committed or rolled back.
async fn write(db: &Db, event: &NewEvent, commit: bool) {
    with_db!(db, pool => {
        let mut tx = pool.begin().await.expect("begin");
        events::enqueue(&mut *tx, "test", event).await.expect("enqueue");
        if commit { tx.commit().await.expect("commit") } else { tx.rollback().await.expect("rollback") }
    });
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
                    let mut tx = pool.begin().await?;
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
    Relay::new("test", db.clone(), recorder).publish_pending().await.expect("published");
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

/// Two relays (two replicas of a service) drain one PostgreSQL outbox at the same time: each event is
/// published once, by one of them, and the events of each subject in the order they were written.
#[tokio::test]
async fn two_relays_on_one_postgres_outbox_publish_each_event_once_in_subject_order() {
    let Some(db) = platform::testkit::postgres("events").await else { return };
    create_tables(&db).await;
    let (subjects, per_subject) = (60, 10);
    let mut written: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for n in 0..subjects * per_subject {
        let subject = format!("s{}", n % subjects);
        let event = event(&subject, (n % 256) as u8);
        let id = with_db!(&db, pool => {
            let mut tx = pool.begin().await.expect("begin");
            let id = events::enqueue(&mut *tx, "test", &event).await.expect("enqueue");
            tx.commit().await.expect("commit");
            id
        });
        written.entry(subject).or_default().push(id);
    }

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let bus = recording_bus(seen.clone());
    let drain = |relay: Relay| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut published = 0;
            while events::unsent_count(&db).await.expect("count") > 0 {
                published += relay.publish_pending().await.expect("published");
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
    assert!(first > 0 && second > 0, "one relay did all the work ({first} and {second}): they never overlapped");
    let mut published: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for (subject, id) in seen {
        published.entry(subject).or_default().push(id);
    }
    assert_eq!(published, written, "a subject's events were published out of order");
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
    let gauge = |name: &str| -> f64 {
        let prefix = format!("{name}{{service=\"{service}\"}} ");
        let rendered = metrics.render();
        let line =
            rendered.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{rendered}"));
        line[prefix.len()..].parse().expect("a number")
    };
    assert_eq!(gauge("mercato_outbox_depth"), 2.0);
    let age = gauge("mercato_outbox_oldest_age_seconds");
    assert!((60.0..70.0).contains(&age), "age {age}");
    // Once drained, nothing is waiting: depth and age are zero.
    assert_eq!(relay.publish_pending().await.expect("published"), 2);
    assert_eq!(gauge("mercato_outbox_depth"), 0.0);
    assert_eq!(gauge("mercato_outbox_oldest_age_seconds"), 0.0);
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
