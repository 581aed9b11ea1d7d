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
