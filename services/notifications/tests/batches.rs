//! Events recorded together: the consumer's batch (what the group commit hands it) on SQLite and (when
//! `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL. The events of one batch see what the events before them
//! introduce, and each event counts once however often it comes. The dispatcher's outcomes are stored in
//! batches too: each once, each with its event.

mod common;

use std::sync::Arc;

use api::mercato::refunds::v1::RefundCompleted;
use common::{confirmed, envelope, eur, registered};
use notifications::domain::Status;
use notifications::events::{Consumer, Delivery, Recorded};
use notifications::store::{Due, Finished, ListQuery, Outcome, Store};
use notifications::templates::Templates;
use platform::db::Db;
use platform::events::BatchRecorder;
use tokio::sync::Notify;

async fn consumer(db: &Db) -> (Consumer, Store, Arc<Notify>) {
    db.migrate(&notifications::MIGRATOR, notifications::NAME).await.expect("migrated");
    let store = Store::new(db.clone());
    let wake = Arc::new(Notify::new());
    let templates = Arc::new(Templates::load().expect("templates"));
    (Consumer::new(store.clone(), templates, wake.clone()), store, wake)
}

fn decoded(envelopes: &[&platform::events::EventEnvelope]) -> Vec<Delivery> {
    envelopes.iter().map(|e| Delivery::decode(e).expect("decodes")).collect()
}

/// Every PENDING notification with its rendered content, in the order the dispatcher takes them (by id: all
/// were written at the same time). Claimed, so that the next call returns only newer ones.
async fn pending(store: &Store) -> Vec<Due> {
    let now = platform::time::now_micros();
    let mut due = store.claim_due(now, now + 60_000_000, 100).await.expect("claimed");
    due.sort_by(|a, b| a.id.cmp(&b.id));
    due
}

async fn a_batch_sees_what_its_earlier_events_introduce(db: Db) {
    let (consumer, store, wake) = consumer(&db).await;
    let register = registered("u-ada", "ada@example.com", "Ada", "en");
    let order = confirmed("o-1", "u-ada", "pay-1");
    let refund = RefundCompleted {
        refund_id: "r-1".into(),
        payment_id: "pay-1".into(),
        amount: Some(eur(500)),
        reason: String::new(),
    };
    let refund = envelope("refund.completed", "r-1", &refund);
    // Nothing stored yet: Ada and her payment are known only from the events ahead in the same batch.
    let outcomes = consumer.record_batch(&decoded(&[&register, &order, &refund, &order])).await.expect("recorded");
    assert_eq!(
        outcomes,
        [
            Recorded::Email(Status::Pending),
            Recorded::Email(Status::Pending),
            Recorded::Email(Status::Pending),
            Recorded::SeenBefore
        ],
        "the second copy of the order is a repeat"
    );
    // The dispatcher was woken.
    tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified()).await.expect("the dispatcher is woken");

    let mails = pending(&store).await;
    let types: Vec<&str> = mails.iter().map(|m| m.event_type.as_str()).collect();
    assert_eq!(types, ["user.registered", "order.confirmed", "refund.completed"], "one mail per event, in order");
    for mail in &mails {
        assert_eq!((mail.user_id.as_str(), mail.recipient.as_str()), ("u-ada", "ada@example.com"), "{mail:#?}");
    }
    assert_eq!(mails[1].subject, "Your order o-1 is confirmed");
    assert!(
        mails[2].body_text.contains("for your order o-1"),
        "the refund names the order of its payment: {}",
        mails[2].body_text
    );

    // A later batch: what the first stored addresses its events; repeats of any earlier event change nothing.
    let second_order = confirmed("o-2", "u-ada", "pay-2");
    let outcomes = consumer.record_batch(&decoded(&[&register, &second_order, &refund])).await.expect("recorded");
    assert_eq!(outcomes, [Recorded::SeenBefore, Recorded::Email(Status::Pending), Recorded::SeenBefore]);
    let mails = pending(&store).await;
    assert_eq!(mails.len(), 1, "only the new order's mail: {mails:#?}");
    assert_eq!(
        (mails[0].subject.as_str(), mails[0].recipient.as_str()),
        ("Your order o-2 is confirmed", "ada@example.com")
    );
}

async fn a_customer_registered_after_their_order_in_the_batch_is_not_addressed(db: Db) {
    let (consumer, store, _wake) = consumer(&db).await;
    let order = confirmed("o-1", "u-bob", "pay-1");
    let register = registered("u-bob", "bob@example.com", "Bob", "en");
    let outcomes = consumer.record_batch(&decoded(&[&order, &register])).await.expect("recorded");
    // As one event at a time in this order: the order came before anybody knew Bob.
    assert_eq!(outcomes, [Recorded::Email(Status::Skipped), Recorded::Email(Status::Pending)]);
    let mails = pending(&store).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].event_type, "user.registered");
}

/// `user.email_changed` of `user_id`, from `previous` to `email`.
fn moved(user_id: &str, email: &str, previous: &str) -> platform::events::EventEnvelope {
    let payload = api::mercato::auth::v1::EmailChanged {
        user_id: user_id.into(),
        email: email.into(),
        display_name: "Cy".into(),
        locale: "en".into(),
        previous_email: previous.into(),
        change_time: None,
        changed_by: String::new(),
    };
    envelope("user.email_changed", user_id, &payload)
}

async fn a_registration_handled_after_a_move_leaves_the_new_address(db: Db) {
    let (consumer, store, _wake) = consumer(&db).await;
    // A registration delivered late (a dead letter replayed), in the batch after its account's move.
    let move_cy = moved("u-cy", "cy@example.org", "cy@example.com");
    let register_cy = registered("u-cy", "cy@example.com", "Cy", "en");
    consumer.record_batch(&decoded(&[&move_cy, &register_cy, &confirmed("o-1", "u-cy", "pay-1")])).await.expect("ok");
    // And in batches of its own.
    consumer.record_batch(&decoded(&[&moved("u-dee", "dee@example.org", "dee@example.com")])).await.expect("ok");
    consumer.record_batch(&decoded(&[&registered("u-dee", "dee@example.com", "Dee", "en")])).await.expect("ok");
    consumer.record_batch(&decoded(&[&confirmed("o-2", "u-dee", "pay-2")])).await.expect("ok");
    // What the first batch stored, read by a later one.
    consumer.record_batch(&decoded(&[&confirmed("o-3", "u-cy", "pay-3")])).await.expect("ok");

    let mails = pending(&store).await;
    let to = |event_type: &str, user_id: &str| {
        let mail = mails.iter().find(|m| m.event_type == event_type && m.user_id == user_id);
        mail.map(|m| m.recipient.clone()).unwrap_or_else(|| panic!("no {event_type} for {user_id}: {mails:#?}"))
    };
    // The move itself mails nothing (the notice to the address left comes with `user.email_change_confirmed`).
    assert!(!mails.iter().any(|m| m.event_type == "user.email_changed"), "{mails:#?}");
    assert_eq!(to("order.confirmed", "u-cy"), "cy@example.org", "in the batch, the move stays");
    assert_eq!(to("order.confirmed", "u-dee"), "dee@example.org", "across batches, the move stays");
    let later = mails.iter().find(|m| m.subject == "Your order o-3 is confirmed").map(|m| m.recipient.as_str());
    assert_eq!(later, Some("cy@example.org"), "the batch stored the move, not the registration after it");
}

async fn outcomes_are_stored_once_each_with_its_event(db: Db) {
    let (consumer, store, _wake) = consumer(&db).await;
    let users = [
        registered("u-1", "one@example.com", "One", "en"),
        registered("u-2", "two@example.com", "Two", "en"),
        registered("u-3", "three@example.com", "Three", "en"),
    ];
    consumer.record_batch(&decoded(&users.iter().collect::<Vec<_>>())).await.expect("recorded");
    let due = pending(&store).await;
    let [one, two, three] = [&due[0], &due[1], &due[2]];
    let finished = |due: &Due, outcome: Outcome, event: bool| Finished {
        id: due.id.clone(),
        outcome,
        event: event.then(|| notifications::events::sent(due, 1)),
    };

    // Alike and publishing nothing: one statement.
    let logged = [finished(one, Outcome::Logged, false), finished(two, Outcome::Logged, false)];
    assert_eq!(store.finish_attempts(&logged, 10).await.expect("stored"), [true, true]);
    // Stored once: a second report of the same attempts changes nothing.
    assert_eq!(store.finish_attempts(&logged, 11).await.expect("stored"), [false, false]);
    // Mixed, with an event: only the row still PENDING changes, and only its event is written.
    let mixed = [finished(three, Outcome::Sent, true), finished(one, Outcome::Sent, true)];
    assert_eq!(store.finish_attempts(&mixed, 12).await.expect("stored"), [true, false]);

    let rows = store.list(&ListQuery { limit: 10, ..ListQuery::default() }).await.expect("listed");
    let status_of = |id: &str| rows.iter().find(|r| r.id == id).map(|r| (r.status.clone(), r.attempts, r.update_time));
    assert_eq!(status_of(&one.id), Some(("LOGGED".to_owned(), 1, 10)));
    assert_eq!(status_of(&two.id), Some(("LOGGED".to_owned(), 1, 10)));
    assert_eq!(status_of(&three.id), Some(("SENT".to_owned(), 1, 12)));
    let events: Vec<String> = platform::with_db!(&db, pool => {
        sqlx::query_scalar("SELECT subject FROM outbox WHERE event_type = 'notification.sent'")
            .fetch_all(pool)
            .await
            .expect("outbox")
    });
    assert_eq!(events, std::slice::from_ref(&three.id), "one notification.sent, for the row that was sent");
}

/// Runs each scenario once on SQLite and once on PostgreSQL.
macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let (db, _dir) = platform::testkit::sqlite("notifications").await.expect("sqlite");
                    super::$scenario(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let Some(db) = platform::testkit::postgres("notifications").await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
}

on_both_engines!(
    a_batch_sees_what_its_earlier_events_introduce,
    a_customer_registered_after_their_order_in_the_batch_is_not_addressed,
    a_registration_handled_after_a_move_leaves_the_new_address,
    outcomes_are_stored_once_each_with_its_event,
);
