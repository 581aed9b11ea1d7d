//! Events in, notifications out, over real gRPC on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set)
//! PostgreSQL. Mail goes to the log here (no SMTP server): such notifications end LOGGED.

mod common;

use api::mercato::auth::v1::UserDeleted;
use api::mercato::notifications::v1::{
    ListNotificationsRequest, Notification, NotificationChannel, NotificationStatus,
};
use api::mercato::payments::v1::PaymentFailed;
use api::mercato::refunds::v1::RefundCompleted;
use common::{Service, confirmed, envelope, eur, fast_retries, registered};
use notifications::Mailer;
use platform::db::Db;
use tonic::Code;

fn of_type<'a>(all: &'a [Notification], event_type: &str) -> Vec<&'a Notification> {
    all.iter().filter(|n| n.event_type == event_type).collect()
}

async fn confirmed_orders_email_the_user_once_in_their_locale(db: Db) {
    let service = Service::start(db, Mailer::Log, fast_retries()).await;
    service.deliver(&registered("u-ada", "ada@example.com", "Ada", "de-AT")).await;
    let order = confirmed("o-1", "u-ada", "pay-1");
    service.deliver(&order).await;
    service.deliver(&order).await; // redelivered: no second notification

    let all = service
        .wait_until("both are logged", |all| {
            all.len() == 2 && all.iter().all(|n| n.status == NotificationStatus::Logged as i32)
        })
        .await;
    let orders = of_type(&all, "order.confirmed");
    assert_eq!(orders.len(), 1, "one notification per event, however often it arrives: {all:#?}");
    let n = orders[0];
    assert_eq!(n.user_id, "u-ada");
    assert_eq!(n.event_id, order.id);
    assert_eq!(n.channel, NotificationChannel::Email as i32);
    assert_eq!(n.recipient, "ada@example.com");
    assert_eq!(n.subject, "Ihre Bestellung o-1 ist bestätigt", "rendered in German (de-AT falls back to de)");
    assert_eq!((n.attempts, n.last_error.as_str()), (1, ""));
    let welcome = of_type(&all, "user.registered");
    assert_eq!(welcome[0].subject, "Willkommen bei Mercato, Ada");

    // The customer sees the same, newest first.
    let own = service.list(&service.customer("u-ada"), ListNotificationsRequest::default()).await.expect("list");
    let types: Vec<&str> = own.iter().map(|n| n.event_type.as_str()).collect();
    assert_eq!(types, ["order.confirmed", "user.registered"]);
    assert!(service.published.lock().expect("lock").is_empty(), "LOGGED is not SENT: no notification.sent");
    service.stop().await;
}

async fn customers_see_only_their_own_and_admins_all(db: Db) {
    let service = Service::start(db, Mailer::Log, fast_retries()).await;
    service.deliver(&registered("u-ada", "ada@example.com", "Ada", "en")).await;
    service.deliver(&registered("u-bob", "bob@example.com", "Bob", "en")).await;
    service.deliver(&confirmed("o-1", "u-ada", "pay-1")).await;
    service.deliver(&confirmed("o-2", "u-bob", "pay-2")).await;
    service.deliver(&confirmed("o-3", "u-ghost", "pay-3")).await;
    service
        .wait_until("nothing is pending", |all| {
            all.len() == 5 && all.iter().all(|n| n.status != NotificationStatus::Pending as i32)
        })
        .await;

    let ada = service.customer("u-ada");
    let own = service.list(&ada, ListNotificationsRequest::default()).await.expect("own");
    assert_eq!(own.len(), 2);
    assert!(own.iter().all(|n| n.user_id == "u-ada"), "{own:#?}");
    let named = ListNotificationsRequest { user_id: "u-ada".into(), ..Default::default() };
    assert_eq!(service.list(&ada, named).await.expect("naming oneself"), own);
    let other = ListNotificationsRequest { user_id: "u-bob".into(), ..Default::default() };
    assert_eq!(service.list(&ada, other.clone()).await.expect_err("not Bob's").code(), Code::PermissionDenied);

    let admin = service.admin();
    let everyone = service.list(&admin, ListNotificationsRequest::default()).await.expect("all");
    assert_eq!(everyone.len(), 5);
    let bobs = service.list(&admin, other).await.expect("Bob's");
    assert_eq!(bobs.len(), 2);
    assert!(bobs.iter().all(|n| n.user_id == "u-bob"));
    let skipped = ListNotificationsRequest { status: NotificationStatus::Skipped as i32, ..Default::default() };
    let skipped = service.list(&admin, skipped).await.expect("skipped ones");
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].user_id, "u-ghost");

    // Pages of two, newest first, add up to everything exactly once.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let request = ListNotificationsRequest { page_size: 2, page_token: token.clone(), ..Default::default() };
        let page = service.client.clone().list_notifications(common::with_token(request, &admin)).await.expect("page");
        let page = page.into_inner();
        assert!(page.notifications.len() <= 2);
        seen.extend(page.notifications.into_iter().map(|n| n.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, everyone.iter().map(|n| n.id.clone()).collect::<Vec<_>>());

    // Without the read scope, nothing.
    let no_scope = service.issuer.token("u-ada", &["orders:read"], &["customer"]);
    let denied = service.list(&no_scope, ListNotificationsRequest::default()).await.expect_err("scope needed");
    assert_eq!(denied.code(), Code::PermissionDenied);
    service.stop().await;
}

async fn a_deleted_account_is_erased_and_told_once(db: Db) {
    let service = Service::start(db, Mailer::Log, fast_retries()).await;
    service.deliver(&registered("u-ada", "ada@example.com", "Ada", "en")).await;
    service.deliver(&registered("u-bob", "bob@example.com", "Bob", "en")).await;
    service.deliver(&confirmed("o-1", "u-ada", "pay-1")).await;
    service
        .wait_until("three mails logged", |all| {
            all.iter().filter(|n| n.status == NotificationStatus::Logged as i32).count() == 3
        })
        .await;

    let deleted = UserDeleted {
        user_id: "u-ada".into(),
        email: "ada@example.com".into(),
        display_name: "Ada".into(),
        locale: "de".into(),
        delete_time: None,
    };
    let event = envelope("user.deleted", "u-ada", &deleted);
    service.deliver(&event).await;
    service.deliver(&event).await; // a redelivery: one confirmation
    let all = service
        .wait_until("the confirmation is logged", |all| {
            of_type(all, "user.deleted").iter().any(|n| n.status == NotificationStatus::Logged as i32)
        })
        .await;
    let farewell = of_type(&all, "user.deleted");
    assert_eq!(farewell.len(), 1, "{all:#?}");
    assert_eq!(
        (farewell[0].recipient.as_str(), farewell[0].user_id.as_str()),
        ("ada@example.com", ""),
        "unlinked from the account"
    );
    assert_eq!(farewell[0].subject, "Ihr Mercato-Konto wurde gelöscht");
    // Ada's earlier mails keep their facts but not her address or their texts; Bob's are untouched.
    for n in all.iter().filter(|n| n.user_id == "u-ada") {
        assert_eq!((n.recipient.as_str(), n.subject.as_str()), ("", ""), "{n:#?}");
    }
    assert_eq!(of_type(&all, "user.registered").iter().filter(|n| n.recipient == "bob@example.com").count(), 1);
    // The directory forgot her: a later event for her reaches nobody.
    let later = confirmed("o-2", "u-ada", "pay-2");
    service.deliver(&later).await;
    let all = service.all().await;
    let late = all.iter().find(|n| n.event_id == later.id).expect("the late order's notification");
    assert_eq!(late.status, NotificationStatus::Skipped as i32, "{late:#?}");
    service.stop().await;
}

async fn unknown_customers_are_skipped_with_a_reason(db: Db) {
    let service = Service::start(db, Mailer::Log, fast_retries()).await;
    service.deliver(&confirmed("o-9", "u-ghost", "pay-9")).await;
    let refund = RefundCompleted {
        refund_id: "r-1".into(),
        payment_id: "pay-unknown".into(),
        amount: Some(eur(100)),
        reason: String::new(),
    };
    service.deliver(&envelope("refund.completed", "r-1", &refund)).await;
    let all = service.all().await;
    assert_eq!(all.len(), 2);
    for n in &all {
        assert_eq!(n.status, NotificationStatus::Skipped as i32, "{n:#?}");
        assert_eq!((n.recipient.as_str(), n.attempts), ("", 0));
    }
    let ghost = of_type(&all, "order.confirmed")[0];
    assert_eq!(ghost.user_id, "u-ghost");
    assert!(ghost.last_error.contains("no address for customer u-ghost"), "{}", ghost.last_error);
    let orphan = of_type(&all, "refund.completed")[0];
    assert!(orphan.last_error.contains("no customer known for payment pay-unknown"), "{}", orphan.last_error);
    let own = service.list(&service.customer("u-ghost"), ListNotificationsRequest::default()).await.expect("own");
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].last_error, "", "customers do not see internal reasons");

    // Refunds and failed payments reach known customers: the refund through the order's payment.
    service.deliver(&registered("u-cy", "cy@example.com", "Cy", "en")).await;
    service.deliver(&confirmed("o-10", "u-cy", "pay-10")).await;
    let refund = RefundCompleted {
        refund_id: "r-2".into(),
        payment_id: "pay-10".into(),
        amount: Some(eur(1999)),
        reason: "broken".into(),
    };
    service.deliver(&envelope("refund.completed", "r-2", &refund)).await;
    let declined = PaymentFailed {
        payment_id: "pay-11".into(),
        order_id: "o-11".into(),
        customer_id: "u-cy".into(),
        amount: Some(eur(500)),
        failure_code: "card_declined".into(),
        failure_reason: "the card was declined".into(),
    };
    service.deliver(&envelope("payment.failed", "pay-11", &declined)).await;
    let all = service
        .wait_until("Cy's mails are logged", |all| {
            all.iter().filter(|n| n.user_id == "u-cy" && n.status == NotificationStatus::Logged as i32).count() == 4
        })
        .await;
    let refunded = all.iter().find(|n| n.event_type == "refund.completed" && n.user_id == "u-cy").expect("refund mail");
    assert_eq!(refunded.subject, "We refunded EUR 19.99");
    let failed = all.iter().find(|n| n.event_type == "payment.failed").expect("payment mail");
    assert_eq!(failed.subject, "Your payment of EUR 5.00 did not go through");
    service.stop().await;
}

async fn bad_requests_name_the_field(db: Db) {
    let service = Service::start(db, Mailer::Log, fast_retries()).await;
    let ada = service.customer("u-ada");
    let request = ListNotificationsRequest { page_size: -1, ..Default::default() };
    let err = service.list(&ada, request).await.expect_err("bad page size");
    assert_eq!(common::bad_fields(&err), ["page_size"]);
    assert!(err.message().contains("page_size"), "{}", err.message());
    let request = ListNotificationsRequest { page_size: 201, ..Default::default() };
    assert!(service.list(&ada, request).await.is_ok(), "more than 200 is the largest page, 200 (AIP-158)");
    let request = ListNotificationsRequest { page_token: "garbage".into(), status: 42, ..Default::default() };
    let err = service.list(&ada, request).await.expect_err("bad token and status");
    assert_eq!(common::bad_fields(&err), ["page_token", "status"]);
    service.stop().await;
}

/// Runs each scenario once on SQLite and once on PostgreSQL.
macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (db, _dir) = platform::testkit::sqlite("notifications").await.expect("sqlite");
                    super::$scenario(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(db) = platform::testkit::postgres("notifications").await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
}

async fn the_log_forgets_what_is_done_with_after_90_days(db: Db) {
    let service = Service::start(db.clone(), Mailer::Log, fast_retries()).await;
    for (user, email) in [("u-old", "old@example.com"), ("u-new", "new@example.com"), ("u-due", "due@example.com")] {
        service.deliver(&registered(user, email, "Someone", "en")).await;
    }
    let logged = |n: &Notification| n.status == NotificationStatus::Logged as i32;
    service.wait_until("all logged", |all| all.len() == 3 && all.iter().all(logged)).await;
    let day: i64 = 24 * 3600 * 1_000_000;
    let now = platform::time::now_micros();
    // Two made 91 days ago, one of them still PENDING (a retry scheduled far ahead).
    platform::with_db!(&db, pool => {
        sqlx::query("UPDATE notifications SET create_time = $1 WHERE user_id IN ('u-old', 'u-due')")
            .bind(now - 91 * day)
            .execute(pool)
            .await
            .expect("sql");
        sqlx::query("UPDATE notifications SET status = 'PENDING', next_attempt_time = $1 WHERE user_id = 'u-due'")
            .bind(now + 365 * day)
            .execute(pool)
            .await
            .expect("sql");
    });
    let store = notifications::store::Store::new(db.clone());
    let before = now - 90 * day;
    assert_eq!(store.delete_finished_before(before).await.expect("deletes"), 1);
    let left: Vec<String> = service.all().await.into_iter().map(|n| n.user_id).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&"u-new".to_owned()) && left.contains(&"u-due".to_owned()), "{left:?}");
    assert_eq!(store.delete_finished_before(before).await.expect("again"), 0);
    service.stop().await;
}

on_both_engines!(
    the_log_forgets_what_is_done_with_after_90_days,
    a_deleted_account_is_erased_and_told_once,
    confirmed_orders_email_the_user_once_in_their_locale,
    customers_see_only_their_own_and_admins_all,
    unknown_customers_are_skipped_with_a_reason,
    bad_requests_name_the_field,
);
