//! Checkout, its saga and its recovery, listing and cancelling: the orders service over real gRPC, on SQLite and
//! (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL, each scenario an async fn taking a `Db`, run once per
//! engine. The fakes of the services orders calls, the server and the clients are in `harness/`.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use api::common::Money;
use api::mercato::orders::v1::{Address, ListOrdersRequest, Order, OrderStatus};
use orders::SagaOptions;
use orders::domain::LineInput;
use platform::db::Db;
use platform::testkit::TestIssuer;
use platform::with_db;
use tonic::Code;

use harness::*;

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

async fn happy_path_from_items(db: Db) {
    for wiring in [Wiring::Direct, Wiring::Grpc] {
        let fake = Fake::new();
        let server = Server::start(db.clone(), fake.clone(), wiring).await;
        let ada = server.client("ada", false).await;
        let order =
            ada.create(order_of(&[(COFFEE, 2), (TEA, 1)], &format!("k-{}", wiring as u8))).await.expect("create");
        assert_eq!(status(&order), OrderStatus::Confirmed, "{order:?}");
        assert_eq!(order.customer_id, "ada");
        assert_eq!(order.total, Some(Money { currency: "EUR".into(), amount_minor: 2 * 1450 + 500 }));
        assert_eq!(order.items.len(), 2);
        assert_eq!(order.items[0].name, "Coffee");
        assert_eq!(order.items[0].line_total.as_ref().map(|m| m.amount_minor), Some(2900));
        assert_eq!(order.shipping_address.as_ref().map(|a| a.country.as_str()), Some("GB"));
        assert!(order.failure_reason.is_empty());
        assert_consistent(&fake, &order, 2, COFFEE, 10);
        assert_eq!(fake.stock(TEA), (9, 0));
        assert_eq!(fake.calls(Op::ClearCart), 0, "not from the cart");
        assert_eq!(events_of(&server.db, &order.id).await, ["order.placed", "order.confirmed"]);
        // The answer is the order as stored, to the microsecond (the saga keeps its copy instead of rereading).
        assert_eq!(ada.get(&order.id).await.expect("get"), order);
        // Every move is logged with it (on PostgreSQL a move without an event is one statement).
        let logged = moves(&[
            ("", "reserve", "PENDING"),
            ("reserve", "pay", "PENDING"),
            ("pay", "commit", "PENDING"),
            ("commit", "done", "CONFIRMED"),
        ]);
        assert_eq!(saga_log_of(&server.db, &order.id).await, logged);
        assert!(orders::audit(&db, Duration::ZERO).await.expect("audit").is_empty());
        server.stop().await;
    }
}

async fn happy_path_from_cart(db: Db) {
    for wiring in [Wiring::Grpc, Wiring::Direct] {
        let fake = Fake::new();
        let server = Server::start(db.clone(), fake.clone(), wiring).await;
        let bob = server.client("bob", false).await;
        fake.state().carts.insert(
            "bob".into(),
            vec![
                LineInput { product_id: COFFEE.into(), quantity: 3 },
                LineInput { product_id: TEA.into(), quantity: 1 },
            ],
        );
        let order = bob.create(order_of(&[], &format!("cart-{}", wiring as u8))).await.expect("create");
        assert_eq!(status(&order), OrderStatus::Confirmed, "{order:?}");
        assert_eq!(order.items.iter().map(|i| i.quantity).collect::<Vec<_>>(), [3, 1]);
        assert_consistent(&fake, &order, 3, COFFEE, 10);
        assert_eq!(fake.calls(Op::ClearCart), 1);
        assert!(!fake.state().carts.contains_key("bob"), "the cart was emptied");
        // A retry of the request replays the order, though the cart it emptied is empty now.
        let replay = bob.create(order_of(&[], &format!("cart-{}", wiring as u8))).await.expect("replay");
        assert_eq!(replay.id, order.id);

        // An empty cart cannot be ordered.
        let empty = bob.create(order_of(&[], &format!("cart2-{}", wiring as u8))).await.expect_err("empty");
        assert_eq!(empty.code(), Code::FailedPrecondition);
        assert_eq!(reason(&empty), "CART_EMPTY");
        server.stop().await;
    }
}

async fn a_shop_asking_for_verified_addresses_checks_out_only_those(db: Db) {
    let fake = Fake::new();
    let issuer = Arc::new(TestIssuer::new().expect("issuer"));
    let strict = SagaOptions { requires_verified_email: true, ..options() };
    let server = Server::start_with(db, fake.clone(), Wiring::Direct, issuer, strict).await;
    let unverified = server.client("ada", false).await;
    let refused = unverified.create(order_of(&[(COFFEE, 1)], "k-unverified")).await.expect_err("not verified");
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::FailedPrecondition, "EMAIL_NOT_VERIFIED"));
    assert!(refused.message().contains("verify your email address"), "{}", refused.message());
    assert_eq!(fake.calls(Op::Reserve), 0, "nothing is held for a refused checkout");
    assert!(unverified.list(ListOrdersRequest::default()).await.expect("list").0.is_empty(), "and no order kept");

    // The same customer once their token says the address is verified (signed in or refreshed since).
    let verified = server.verified_client("ada").await;
    let order = verified.create(order_of(&[(COFFEE, 1)], "k-unverified")).await.expect("verified");
    assert_eq!((status(&order), order.customer_id.as_str()), (OrderStatus::Confirmed, "ada"));
    server.stop().await;
}

async fn declined_payment_fails_and_releases(db: Db) {
    for wiring in [Wiring::Grpc, Wiring::Direct] {
        let fake = Fake::new();
        let server = Server::start(db.clone(), fake.clone(), wiring).await;
        let ada = server.client("ada", false).await;
        let mut req = order_of(&[(COFFEE, 4)], &format!("d-{}", wiring as u8));
        req.payment_method = DECLINED.into();
        let order = ada.create(req).await.expect("create");
        assert_eq!(status(&order), OrderStatus::Failed);
        assert_eq!(order.failure_reason, DECLINE_REASON);
        assert!(!order.payment_id.is_empty(), "the declined payment is kept for reference");
        assert_eq!(fake.reservation(&order.id), Some(Hold::Released));
        assert_consistent(&fake, &order, 4, COFFEE, 10);
        assert_eq!(fake.calls(Op::Commit), 0);
        assert_eq!(fake.calls(Op::Refund), 0, "nothing was captured");
        assert_eq!(events_of(&server.db, &order.id).await, ["order.placed", "order.failed"]);
        assert_eq!(ada.get(&order.id).await.expect("get"), order, "answered as stored");
        let logged = moves(&[
            ("", "reserve", "PENDING"),
            ("reserve", "pay", "PENDING"),
            ("pay", "release", "PENDING"),
            ("release", "done", "FAILED"),
        ]);
        assert_eq!(saga_log_of(&server.db, &order.id).await, logged);
        server.stop().await;
    }
}

async fn out_of_stock_fails_without_payment(db: Db) {
    for wiring in [Wiring::Grpc, Wiring::Direct] {
        let fake = Fake::new();
        let server = Server::start(db.clone(), fake.clone(), wiring).await;
        let ada = server.client("ada", false).await;
        let order =
            ada.create(order_of(&[(COFFEE, 1), (TEA, 11)], &format!("o-{}", wiring as u8))).await.expect("create");
        assert_eq!(status(&order), OrderStatus::Failed);
        assert_eq!(order.failure_reason, "Sorry, Tea is out of stock.");
        assert_eq!(fake.calls(Op::Pay), 0);
        assert_eq!(fake.stock(COFFEE), (10, 0));
        assert_eq!(fake.stock(TEA), (10, 0));
        server.stop().await;
    }
}

async fn commit_refused_refunds_and_releases(db: Db) {
    let fake = Fake::new();
    fake.state().refuse_commit = true;
    let server = Server::start(db, fake.clone(), Wiring::Grpc).await;
    let ada = server.client("ada", false).await;
    let order = ada.create(order_of(&[(COFFEE, 2)], "c")).await.expect("create");
    assert_eq!(status(&order), OrderStatus::Failed);
    assert_eq!(order.failure_reason, orders::domain::COMMIT_FAILED);
    assert_eq!(fake.refunds_of(&order.payment_id), [(format!("order:{}:compensation", order.id), 2900)]);
    assert_eq!(order.refunded.as_ref().map(|m| m.amount_minor), Some(2900), "shown given back at once");
    assert_consistent(&fake, &order, 2, COFFEE, 10);
    assert_eq!(ada.get(&order.id).await.expect("get"), order, "answered as stored");
    server.stop().await;
}

async fn transient_errors_are_retried(db: Db) {
    let fake = Fake::new();
    fake.state().transient.extend([(Op::Pay, 2), (Op::Reserve, 1), (Op::Commit, 2)]);
    let server = Server::start(db.clone(), fake.clone(), Wiring::Grpc).await;
    let ada = server.client("ada", false).await;
    let order = ada.create(order_of(&[(COFFEE, 1)], "t")).await.expect("create");
    assert_eq!(status(&order), OrderStatus::Confirmed);
    assert_eq!((fake.calls(Op::Reserve), fake.calls(Op::Pay), fake.calls(Op::Commit)), (2, 3, 3));
    assert_consistent(&fake, &order, 1, COFFEE, 10);

    // A service down for longer than the retries: the order stays PENDING at its step, audit reports it
    // once it is old enough, and the next start resumes it.
    fake.state().transient.insert(Op::Pay, 100);
    let stuck = ada.create(order_of(&[(TEA, 1)], "t2")).await.expect("create");
    assert_eq!(status(&stuck), OrderStatus::Pending);
    let problems = orders::audit(&db, Duration::ZERO).await.expect("audit");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains(&stuck.id) && problems[0].contains("pay"), "{problems:?}");
    server.stop().await;
    fake.state().transient.clear();
    let server = Server::start(db.clone(), fake.clone(), Wiring::Direct).await;
    let ada = server.client("ada", false).await;
    let resumed = ada.settled(&stuck.id).await;
    assert_eq!(status(&resumed), OrderStatus::Confirmed);
    assert!(orders::audit(&db, Duration::ZERO).await.expect("audit").is_empty());
    server.stop().await;
}

async fn idempotent_replay_and_key_reuse(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db, fake.clone(), Wiring::Direct).await;
    let ada = server.client("ada", false).await;
    let first = ada.create(order_of(&[(COFFEE, 1)], "same")).await.expect("create");
    let again = ada.create(order_of(&[(COFFEE, 1)], "same")).await.expect("replay");
    assert_eq!(first.id, again.id);
    assert_eq!(status(&again), OrderStatus::Confirmed);
    assert_eq!(fake.calls(Op::Pay), 1);
    assert_eq!(fake.stock(COFFEE), (9, 0));
    // A retry replays after the product stopped being sold, too: the order was placed before.
    fake.state().products.get_mut(COFFEE).expect("coffee").active = false;
    let late = ada.create(order_of(&[(COFFEE, 1)], "same")).await.expect("replay of a product no longer sold");
    assert_eq!(late.id, first.id);
    fake.state().products.get_mut(COFFEE).expect("coffee").active = true;

    // The header wins over the field, and replays too.
    let mut with_header = ada.request(order_of(&[(TEA, 1)], "ignored"));
    with_header.metadata_mut().insert("idempotency-key", "hdr".parse().expect("key"));
    let by_header = ada.inner.clone().create_order(with_header).await.expect("create").into_inner().order.expect("o");
    let replay = ada.create(order_of(&[(TEA, 1)], "hdr")).await.expect("replay");
    assert_eq!(by_header.id, replay.id);

    let reused = ada.create(order_of(&[(COFFEE, 2)], "same")).await.expect_err("reuse");
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert_eq!(reason(&reused), "IDEMPOTENCY_KEY_REUSED");

    // Keys are per customer.
    let bob = server.client("bob", false).await;
    let bobs = bob.create(order_of(&[(COFFEE, 1)], "same")).await.expect("create");
    assert_ne!(bobs.id, first.id);

    let missing = ada.create(order_of(&[(COFFEE, 1)], "")).await.expect_err("no key");
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(missing.message().contains("idempotency_key"));

    // Concurrent requests with one key make one order.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let ada = ada.clone();
            tokio::spawn(async move { ada.create(order_of(&[(BOOK, 1)], "race")).await.expect("create").id })
        })
        .collect();
    let mut ids = Vec::new();
    for r in racers {
        ids.push(r.await.expect("join"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(fake.stock(BOOK), (9, 0));
    server.stop().await;
}

async fn validation_and_pricing(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db, fake.clone(), Wiring::Grpc).await;
    let ada = server.client("ada", false).await;
    let mut bad = order_of(&[(COFFEE, 0)], "v1");
    bad.shipping_address = Some(Address { country: "Germany".into(), ..address() });
    bad.payment_method = String::new();
    let err = ada.create(bad).await.expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    for field in ["shipping_address.country", "payment_method", "items[0].quantity"] {
        assert!(err.message().contains(field), "{field} in {}", err.message());
    }
    let unknown = ada.create(order_of(&[("p-nope", 1)], "v2")).await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let mixed = ada.create(order_of(&[(COFFEE, 1), (BOOK, 1)], "v3")).await.expect_err("mixed");
    assert_eq!(mixed.code(), Code::InvalidArgument);
    assert_eq!(reason(&mixed), "MIXED_CURRENCIES");
    let (orders, _) = ada.list(ListOrdersRequest::default()).await.expect("list");
    assert!(orders.is_empty(), "nothing was created");
    assert_eq!(fake.calls(Op::Reserve), 0);
    server.stop().await;
}

async fn ships_to_a_saved_or_the_default_address(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db, fake.clone(), Wiring::Direct).await;
    let ada = server.client("ada", false).await;
    let work = Address { name: "Ada at work".into(), line1: " 2 Engine Lane ".into(), ..address() };
    fake.state()
        .addresses
        .insert("ada".into(), vec![("a-home".into(), address(), true), ("a-work".into(), work, false)]);
    let mut named = order_of(&[(COFFEE, 1)], "saved-1");
    (named.shipping_address, named.shipping_address_id) = (None, "a-work".into());
    let order = ada.create(named.clone()).await.expect("ships to the saved address");
    let shipped = order.shipping_address.clone().expect("address");
    assert_eq!(
        (shipped.name.as_str(), shipped.line1.as_str(), shipped.country.as_str()),
        ("Ada at work", "2 Engine Lane", "GB")
    );
    // A retry is the same request even after the book changed: the order as it was.
    fake.state().addresses.get_mut("ada").expect("book")[1].1.city = "Paris".into();
    assert_eq!(ada.create(named).await.expect("replay").id, order.id);

    let mut default = order_of(&[(COFFEE, 1)], "saved-2");
    default.shipping_address = None;
    let order = ada.create(default).await.expect("ships to the default address");
    assert_eq!(order.shipping_address.map(|a| a.name), Some("Ada Lovelace".into()));

    // Another's address, none at all, or both at once: refused, naming the field, and nothing is reserved.
    let reserved = fake.calls(Op::Reserve);
    let bob = server.client("bob", false).await;
    let mut theirs = order_of(&[(COFFEE, 1)], "saved-3");
    (theirs.shipping_address, theirs.shipping_address_id) = (None, "a-home".into());
    let err = bob.create(theirs).await.expect_err("not bob's");
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "shipping_address_id: is not an address in your address book")
    );
    let mut nothing = order_of(&[(COFFEE, 1)], "saved-4");
    nothing.shipping_address = None;
    let err = bob.create(nothing).await.expect_err("no default");
    assert!(err.message().starts_with("shipping_address: is required"), "{}", err.message());
    let mut both = order_of(&[(COFFEE, 1)], "saved-5");
    both.shipping_address_id = "a-home".into();
    let err = ada.create(both).await.expect_err("both");
    assert!(
        err.message().starts_with("shipping_address_id: cannot be given with shipping_address"),
        "{}",
        err.message()
    );
    assert_eq!(fake.calls(Op::Reserve), reserved, "nothing refused was reserved");
    server.stop().await;
}

async fn visibility_and_listing(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db, fake.clone(), Wiring::Direct).await;
    let ada = server.client("ada", false).await;
    let bob = server.client("bob", false).await;
    let admin = server.client("root", true).await;
    let mut adas = Vec::new();
    for i in 0..5 {
        adas.push(ada.create(order_of(&[(COFFEE, 1)], &format!("a{i}"))).await.expect("create").id);
    }
    let mut declined = order_of(&[(TEA, 1)], "b0");
    declined.payment_method = DECLINED.into();
    let bobs = bob.create(declined).await.expect("create");

    assert_eq!(ada.get(&adas[0]).await.expect("own").id, adas[0]);
    assert_eq!(bob.get(&adas[0]).await.expect_err("other's").code(), Code::NotFound);
    assert_eq!(admin.get(&adas[0]).await.expect("admin").customer_id, "ada");

    // Own orders, newest first, page by page.
    let (page1, token) = ada.list(ListOrdersRequest { page_size: 3, ..Default::default() }).await.expect("list");
    assert_eq!(
        page1.iter().map(|o| o.id.clone()).collect::<Vec<_>>(),
        [&adas[4], &adas[3], &adas[2]].map(|s| s.clone())
    );
    assert!(!page1[0].items.is_empty());
    let (page2, end) =
        ada.list(ListOrdersRequest { page_size: 3, page_token: token, ..Default::default() }).await.expect("list");
    assert_eq!(page2.iter().map(|o| o.id.clone()).collect::<Vec<_>>(), [&adas[1], &adas[0]].map(|s| s.clone()));
    assert!(end.is_empty());
    let other = ada.list(ListOrdersRequest { customer_id: "bob".into(), ..Default::default() }).await;
    assert_eq!(other.expect_err("not admin").code(), Code::PermissionDenied);

    // Admins see everyone's, and filter.
    let (all, _) = admin.list(ListOrdersRequest::default()).await.expect("all");
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].id, bobs.id);
    let (of_bob, _) =
        admin.list(ListOrdersRequest { customer_id: "bob".into(), ..Default::default() }).await.expect("bob");
    assert_eq!(of_bob.len(), 1);
    let failed = ListOrdersRequest { status: OrderStatus::Failed as i32, ..Default::default() };
    let (failed, _) = admin.list(failed).await.expect("failed");
    assert_eq!(failed.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), [bobs.id.as_str()]);
    let bad = admin.list(ListOrdersRequest { page_token: "garbage!".into(), ..Default::default() }).await;
    assert_eq!(bad.expect_err("bad token").code(), Code::InvalidArgument);

    // A period: placed from Ada's second order (inclusive) to her fourth (exclusive); her own, or anyone's.
    let second = admin.get(&adas[1]).await.expect("order").create_time;
    let fourth = admin.get(&adas[3]).await.expect("order").create_time;
    let between = ListOrdersRequest { start_time: second, end_time: fourth, ..Default::default() };
    let ids = |orders: Vec<Order>| orders.into_iter().map(|o| o.id).collect::<Vec<_>>();
    assert_eq!(ids(ada.list(between.clone()).await.expect("hers").0), [&adas[2], &adas[1]].map(|s| s.clone()));
    assert_eq!(ids(admin.list(between).await.expect("anyone's").0), [&adas[2], &adas[1]].map(|s| s.clone()));
    let since = ListOrdersRequest { start_time: fourth, ..Default::default() };
    assert_eq!(ids(admin.list(since).await.expect("since").0), [&bobs.id, &adas[4], &adas[3]].map(|s| s.clone()));
    let backwards = ListOrdersRequest { start_time: fourth, end_time: second, ..Default::default() };
    let refused = admin.list(backwards).await.expect_err("a backwards period");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let details = platform::error::decode_details(&refused).expect("details");
    let bad_request =
        <api::google::rpc::BadRequest as prost::Message>::decode(details.details[0].value.as_slice()).expect("bad");
    assert_eq!(bad_request.field_violations[0].field, "end_time");
    server.stop().await;
}

async fn cancel_refunds(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db.clone(), fake.clone(), Wiring::Grpc).await;
    let ada = server.client("ada", false).await;
    let bob = server.client("bob", false).await;
    let order = ada.create(order_of(&[(COFFEE, 2)], "x")).await.expect("create");
    assert_eq!(bob.cancel(&order.id).await.expect_err("other's").code(), Code::NotFound);
    let cancelled = ada.cancel(&order.id).await.expect("cancel");
    assert_eq!(status(&cancelled), OrderStatus::Cancelled);
    assert_eq!(ada.get(&order.id).await.expect("get"), cancelled, "answered as stored");
    assert_eq!(fake.refunds_of(&order.payment_id), [(format!("order:{}:cancel", order.id), 2900)]);
    assert_eq!(cancelled.refunded.as_ref().map(|m| m.amount_minor), Some(2900), "shown given back at once");
    assert_consistent(&fake, &cancelled, 2, COFFEE, 10);
    // The stock stays sold until the catalog consumes order.cancelled.
    assert_eq!(fake.stock(COFFEE), (8, 0));
    assert_eq!(events_of(&db, &order.id).await, ["order.placed", "order.confirmed", "order.cancelled"]);
    // Its shipment was cancelled first, with the customer's reason for its history.
    assert_eq!(fake.state().cancelled_shipments.get(&order.id).map(String::as_str), Some("cancelled by the customer"));
    // Again: unchanged, no second refund.
    assert_eq!(status(&ada.cancel(&order.id).await.expect("again")), OrderStatus::Cancelled);
    assert_eq!((fake.calls(Op::Refund), fake.calls(Op::CancelShipment)), (1, 1));

    // Staff refunded part of an order (a scratch): cancelling it gives the rest back, not the total again.
    let scratched = ada.create(order_of(&[(COFFEE, 1)], "scratched")).await.expect("create");
    fake.state().payments.values_mut().find(|p| p.id == scratched.payment_id).expect("payment").refunded = 500;
    let cancelled = ada.cancel(&scratched.id).await.expect("cancel");
    assert_eq!(status(&cancelled), OrderStatus::Cancelled, "{cancelled:?}");
    assert_eq!(fake.refunds_of(&scratched.payment_id), [(format!("order:{}:cancel", scratched.id), 950)]);
    assert_eq!(fake.payments_of(&scratched.id)[0].refunded, 1450, "refunded in full, once");
    assert_eq!(cancelled.refunded.as_ref().map(|m| m.amount_minor), Some(1450), "the part and the rest");
    let event = cancelled_event(&db, &scratched.id).await;
    assert_eq!(
        event.refunded.map(|m| m.amount_minor),
        Some(950),
        "order.cancelled says what the cancellation gave back"
    );

    let mut declined = order_of(&[(TEA, 1)], "y");
    declined.payment_method = DECLINED.into();
    let failed = ada.create(declined).await.expect("create");
    let refused = ada.cancel(&failed.id).await.expect_err("failed order");
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // A checkout in progress cannot be cancelled.
    fake.state().transient.insert(Op::Pay, 100);
    let pending = ada.create(order_of(&[(TEA, 1)], "z")).await.expect("create");
    assert_eq!(status(&pending), OrderStatus::Pending);
    let busy = ada.cancel(&pending.id).await.expect_err("pending");
    assert_eq!(busy.code(), Code::FailedPrecondition);
    assert!(busy.message().contains("checkout in progress"));
    server.stop().await;
}

async fn a_dispatched_order_is_not_cancelled(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db.clone(), fake.clone(), Wiring::Grpc).await;
    let ada = server.client("ada", false).await;
    let admin = server.client("root", true).await;
    let order = ada.create(order_of(&[(COFFEE, 1)], "shipped")).await.expect("create");
    fake.state().dispatched.insert(order.id.clone());

    for caller in [&ada, &admin] {
        let refused = caller.cancel(&order.id).await.expect_err("the parcel is with the carrier");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(reason(&refused), "ORDER_SHIPPED");
        assert!(refused.message().contains("handed to the carrier"), "{}", refused.message());
    }
    // Nothing changed: still confirmed, not refunded, no order.cancelled for the catalog to restock. (Only
    // update_time moved: the cancellation was attempted.)
    let unchanged = |o: Order| Order { update_time: None, ..o };
    assert_eq!(unchanged(ada.get(&order.id).await.expect("get")), unchanged(order.clone()));
    assert!(fake.refunds_of(&order.payment_id).is_empty());
    assert_eq!(events_of(&db, &order.id).await, ["order.placed", "order.confirmed"]);
    assert_eq!(fake.calls(Op::CancelShipment), 2);

    // While the deliveries service is down nothing is refunded: the cancellation waits (the answer shows the
    // order still CONFIRMED; three attempts failed) and completes once it answers again (asking again resumes
    // it; so would the recovery task, later).
    let other = ada.create(order_of(&[(TEA, 1)], "later")).await.expect("create");
    fake.state().transient.insert(Op::CancelShipment, 5);
    let waiting = ada.cancel(&other.id).await.expect("cancel accepted");
    assert_eq!(status(&waiting), OrderStatus::Confirmed);
    assert!(fake.refunds_of(&other.payment_id).is_empty(), "no refund before the shipment is cancelled");
    let cancelled = ada.cancel(&other.id).await.expect("cancel resumed");
    assert_eq!(status(&cancelled), OrderStatus::Cancelled);
    assert_eq!(fake.refunds_of(&cancelled.payment_id), [(format!("order:{}:cancel", other.id), 500)]);
    server.stop().await;
}

/// Where to cut the saga off, and the request that gets there.
#[derive(Debug, Clone, Copy)]
enum CrashAfter {
    Reserve,
    Pay,
    Commit,
    DeclinedPay,
    Release,
    CompensationRefund,
    CancelShipment,
    CancelRefund,
}

async fn crash_at_every_step_then_resume(db: Db) {
    use CrashAfter::*;
    let cases = [
        (Reserve, Op::Reserve, OrderStatus::Confirmed),
        (Pay, Op::Pay, OrderStatus::Confirmed),
        (Commit, Op::Commit, OrderStatus::Confirmed),
        (DeclinedPay, Op::Pay, OrderStatus::Failed),
        (Release, Op::Release, OrderStatus::Failed),
        (CompensationRefund, Op::Refund, OrderStatus::Failed),
        (CancelShipment, Op::CancelShipment, OrderStatus::Cancelled),
        (CancelRefund, Op::Refund, OrderStatus::Cancelled),
    ];
    let issuer = Arc::new(TestIssuer::new().expect("issuer"));
    for (n, (crash, op, expected)) in cases.into_iter().enumerate() {
        let fake = Fake::new();
        let first = Server::start_with(db.clone(), fake.clone(), Wiring::Direct, issuer.clone(), options()).await;
        let ada = first.client("ada", false).await;
        let mut req = order_of(&[(COFFEE, 3)], &format!("crash-{n}"));
        if matches!(crash, DeclinedPay | Release) {
            req.payment_method = DECLINED.into();
        }
        if matches!(crash, CompensationRefund) {
            fake.state().refuse_commit = true;
        }
        let order_id = if matches!(crash, CancelShipment | CancelRefund) {
            let order = ada.create(req.clone()).await.expect("create");
            fake.state().crash_after = Some(op);
            let canceller = ada.clone();
            let id = order.id.clone();
            let call = tokio::spawn(async move { canceller.cancel(&id).await });
            fake.crashed.notified().await;
            first.stop().await;
            let answered = call.await.expect("join").expect("cancel answered");
            assert_eq!(status(&answered), OrderStatus::Confirmed, "still cancelling when cut off");
            order.id
        } else {
            fake.state().crash_after = Some(op);
            let creator = ada.clone();
            let call = tokio::spawn(async move { creator.create(req).await });
            fake.crashed.notified().await;
            first.stop().await;
            let answered = call.await.expect("join").expect("create answered");
            assert_eq!(status(&answered), OrderStatus::Pending, "{crash:?}: cut off mid-checkout");
            answered.id
        };
        // The remote effect happened, our record of it did not.
        let calls_before = fake.calls(op);

        let second = Server::start_with(db.clone(), fake.clone(), Wiring::Direct, issuer.clone(), options()).await;
        let ada = second.client("ada", false).await;
        let order = ada.reaches(&order_id, expected).await;
        assert_consistent(&fake, &order, 3, COFFEE, 10);
        assert!(fake.calls(op) > calls_before, "{crash:?}: the cut-off call was repeated (idempotently)");
        assert_eq!(fake.payments_of(&order_id).len(), 1, "{crash:?}: exactly one payment");
        if expected == OrderStatus::Confirmed {
            assert_eq!(events_of(&db, &order_id).await, ["order.placed", "order.confirmed"], "{crash:?}");
        }
        second.stop().await;
    }
}

async fn crash_before_the_first_step_resumes(db: Db) {
    // An order persisted PENDING whose saga never ran (e.g. the process died right after the insert): a
    // stalled reserve call stands in for the crash.
    let fake = Fake::new();
    fake.state().transient.insert(Op::Reserve, 3);
    let first = Server::start(db.clone(), fake.clone(), Wiring::Direct).await;
    let ada = first.client("ada", false).await;
    let order = ada.create(order_of(&[(COFFEE, 1)], "early")).await.expect("create");
    assert_eq!(status(&order), OrderStatus::Pending);
    assert_eq!(fake.reservation(&order.id), None);
    first.stop().await;
    let second = Server::start(db, fake.clone(), Wiring::Direct).await;
    let ada = second.client("ada", false).await;
    let settled = ada.settled(&order.id).await;
    assert_eq!(status(&settled), OrderStatus::Confirmed);
    assert_consistent(&fake, &settled, 1, COFFEE, 10);
    second.stop().await;
}

/// A connection that holds the write lock on the orders table until [`release`](OrdersTableLock::release).
enum OrdersTableLock {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

impl OrdersTableLock {
    /// Takes the lock: SQLite's write lock, or PostgreSQL's EXCLUSIVE lock (reads pass, inserts wait).
    async fn take(db: &Db) -> Self {
        match db {
            Db::Sqlite(pool) => {
                let mut conn = pool.acquire().await.expect("connection");
                sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.expect("lock");
                Self::Sqlite(conn)
            }
            Db::Postgres(pool) => {
                let mut conn = pool.acquire().await.expect("connection");
                sqlx::query("BEGIN").execute(&mut *conn).await.expect("begin");
                sqlx::query("LOCK TABLE orders IN EXCLUSIVE MODE").execute(&mut *conn).await.expect("lock");
                Self::Postgres(conn)
            }
        }
    }

    async fn release(self) {
        match self {
            Self::Sqlite(mut conn) => sqlx::query("ROLLBACK").execute(&mut *conn).await.map(drop),
            Self::Postgres(mut conn) => sqlx::query("ROLLBACK").execute(&mut *conn).await.map(drop),
        }
        .expect("unlock");
    }
}

async fn a_checkout_the_caller_hung_up_on_still_completes(db: Db) {
    // The recovery scan is an hour away: only the request's own saga run can finish the order.
    let patient = SagaOptions {
        recovery_interval: Duration::from_secs(3600),
        stuck_after: Duration::from_secs(3600),
        ..options()
    };
    let fake = Fake::new();
    let issuer = Arc::new(TestIssuer::new().expect("issuer"));
    let server = Server::start_with(db.clone(), fake.clone(), Wiring::Direct, issuer, patient).await;
    let ada = server.client("ada", false).await;

    // The order's insert waits on the lock; meanwhile the caller hangs up (the server drops its handler).
    let lock = OrdersTableLock::take(&db).await;
    let creator = ada.clone();
    let call = tokio::spawn(async move { creator.create(order_of(&[(COFFEE, 2)], "hung-up")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.abort();
    assert!(call.await.is_err_and(|e| e.is_cancelled()), "the call was still waiting when the caller left");
    tokio::time::sleep(Duration::from_millis(100)).await;
    lock.release().await;

    // The order was placed and its checkout ran to the end, with nobody asking again.
    let mut listed = Vec::new();
    for _ in 0..100 {
        listed = ada.list(ListOrdersRequest::default()).await.expect("list").0;
        if listed.first().is_some_and(|o| status(o) != OrderStatus::Pending) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(status(&listed[0]), OrderStatus::Confirmed, "{:?}", listed[0]);
    assert_consistent(&fake, &listed[0], 2, COFFEE, 10);
    server.stop().await;
}

async fn hundred_units_three_hundred_buyers(db: Db) {
    let fake = Fake::new();
    fake.add_product("p-hot", "Hot Item", "EUR", 999, 100);
    let server = Server::start(db, fake.clone(), Wiring::Direct).await;
    let mut buyers = Vec::new();
    for i in 0..300 {
        let client = server.client(&format!("buyer-{i}"), false).await;
        buyers
            .push(tokio::spawn(async move { client.create(order_of(&[("p-hot", 1)], "buy")).await.expect("create") }));
    }
    let mut confirmed = 0;
    let mut failed = 0;
    for b in buyers {
        let order = b.await.expect("join");
        match status(&order) {
            OrderStatus::Confirmed => confirmed += 1,
            OrderStatus::Failed => {
                assert_eq!(order.failure_reason, "Sorry, Hot Item is out of stock.");
                failed += 1;
            }
            other => panic!("unsettled {other:?}"),
        }
    }
    assert_eq!((confirmed, failed), (100, 200));
    assert_eq!(fake.stock("p-hot"), (0, 0));
    assert_eq!(fake.calls(Op::Pay), 100);
    server.stop().await;
}

/// A move from a state the order has left changes nothing: no step, no log line, no event (on PostgreSQL the
/// move, its log line and its event are one statement, each part conditional on the compare-and-set).
async fn a_stale_move_writes_neither_log_nor_event(db: Db) {
    use orders::domain::{Status as Stored, Step};
    use orders::store::{Change, Store};
    let fake = Fake::new();
    let server = Server::start(db.clone(), fake.clone(), Wiring::Direct).await;
    let ada = server.client("ada", false).await;
    let order = ada.create(order_of(&[(COFFEE, 1)], "stale")).await.expect("create");
    assert_eq!(status(&order), OrderStatus::Confirmed);
    let (events, log) = (events_of(&server.db, &order.id).await, saga_log_of(&server.db, &order.id).await);

    let store = Store::new(server.db.clone());
    let event = platform::events::NewEvent::new("order.failed", order.id.clone(), &api::common::Money::default());
    let change = Change::to(Stored::Failed, Step::Done);
    let stale = (Stored::Pending, Step::Commit);
    let moved = store.advance(&order.id, stale, &change, Some(&event), "late runner", 1).await.expect("advance");
    assert!(!moved, "the order is no longer PENDING at commit");
    assert_eq!(events_of(&server.db, &order.id).await, events, "no event for a move that did not happen");
    assert_eq!(saga_log_of(&server.db, &order.id).await, log, "no log line either");
    assert_eq!(status(&ada.get(&order.id).await.expect("get")), OrderStatus::Confirmed);

    // From the state it is in, the same move applies, with its log line and its event.
    let current = (Stored::Confirmed, Step::Done);
    let moved = store.advance(&order.id, current, &change, Some(&event), "operator", 2).await.expect("advance");
    assert!(moved);
    assert_eq!(events_of(&server.db, &order.id).await, ["order.placed", "order.confirmed", "order.failed"]);
    assert_eq!(saga_log_of(&server.db, &order.id).await.len(), log.len() + 1);
    server.stop().await;
}

/// The ids the recovery task would resume now, whatever their age.
async fn in_flight_ids(store: &orders::store::Store) -> Vec<String> {
    store.in_flight(None).await.expect("in flight").into_iter().map(|(id, _)| id).collect()
}

async fn recovery_sees_exactly_the_sagas_with_work_left(db: Db) {
    use orders::domain::{Status as Stored, Step};
    use orders::store::{Change, Store};
    let fake = Fake::new();
    let server = Server::start(db.clone(), fake.clone(), Wiring::Direct).await;
    let ada = server.client("ada", false).await;
    let confirmed = ada.create(order_of(&[(COFFEE, 1)], "landed")).await.expect("create");
    assert_eq!(status(&confirmed), OrderStatus::Confirmed);
    fake.state().transient.insert(Op::Pay, 100);
    let pending = ada.create(order_of(&[(TEA, 1)], "flying")).await.expect("create");
    assert_eq!(status(&pending), OrderStatus::Pending);
    server.stop().await;

    let store = Store::new(db.clone());
    assert_eq!(
        in_flight_ids(&store).await,
        std::slice::from_ref(&pending.id),
        "a confirmed order has nothing left to do"
    );
    assert!(orders::audit(&db, Duration::from_secs(3600)).await.expect("audit").is_empty());

    // A confirmed order's cancellation takes off again, and lands when it is done.
    let cancelling = Change::to(Stored::Confirmed, Step::Cancel);
    let done = (Stored::Confirmed, Step::Done);
    assert!(store.advance(&confirmed.id, done, &cancelling, None, "cancel", 1).await.expect("advance"));
    let mut both = vec![pending.id.clone(), confirmed.id.clone()];
    both.sort_unstable();
    let mut seen = in_flight_ids(&store).await;
    seen.sort_unstable();
    assert_eq!(seen, both);
    let cancelled = Change::to(Stored::Cancelled, Step::Done);
    let at_cancel = (Stored::Confirmed, Step::Cancel);
    assert!(store.advance(&confirmed.id, at_cancel, &cancelled, None, "refunded", 2).await.expect("advance"));
    assert_eq!(in_flight_ids(&store).await, std::slice::from_ref(&pending.id));

    // The audit tells when the list and the orders disagree, both ways.
    with_db!(&db, pool => {
        sqlx::query("DELETE FROM sagas_in_flight WHERE order_id = $1").bind(&pending.id).execute(pool).await.expect("delete");
        sqlx::query("INSERT INTO sagas_in_flight (order_id) VALUES ($1)").bind(&confirmed.id).execute(pool).await.expect("insert");
    });
    let problems = orders::audit(&db, Duration::from_secs(3600)).await.expect("audit");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems.iter().any(|p| p.contains(&pending.id) && p.contains("recovery task does not see it")),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| p.contains(&confirmed.id) && p.contains("listed as in flight")), "{problems:?}");
}

/// What the catalog learns of buyers from orders placed before it kept them (`mercato backfill-purchases`):
/// confirmed orders and those cancelled since, each product once, a page at a time; a failed order bought nothing.
async fn confirmed_orders_tell_who_bought_what(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db.clone(), fake.clone(), Wiring::Direct).await;
    let ada = server.client("ada", false).await;
    let kept = ada.create(order_of(&[(COFFEE, 1), (TEA, 2)], "p1")).await.expect("create");
    let cancelled = ada.create(order_of(&[(TEA, 1)], "p2")).await.expect("create");
    ada.cancel(&cancelled.id).await.expect("cancel");
    let mut declined = order_of(&[(BOOK, 1)], "p3");
    declined.payment_method = DECLINED.into();
    assert_eq!(status(&ada.create(declined).await.expect("create")), OrderStatus::Failed);

    let all = orders::purchases(&db, "", 10).await.expect("purchases");
    let seen: Vec<(&str, Vec<&str>, bool)> = all
        .iter()
        .map(|p| (p.order_id.as_str(), p.product_ids.iter().map(String::as_str).collect(), p.cancelled))
        .collect();
    let mut products = vec![COFFEE, TEA];
    products.sort_unstable();
    assert_eq!(seen, [(kept.id.as_str(), products, false), (cancelled.id.as_str(), vec![TEA], true)]);
    assert!(all.iter().all(|p| p.customer_id == "ada"));
    let first = orders::purchases(&db, "", 1).await.expect("page 1");
    let second = orders::purchases(&db, &first[0].order_id, 1).await.expect("page 2");
    let third = orders::purchases(&db, &second[0].order_id, 1).await.expect("page 3");
    assert_eq!(
        (first[0].order_id.as_str(), second[0].order_id.as_str(), third.len()),
        (kept.id.as_str(), cancelled.id.as_str(), 0)
    );
    server.stop().await;
}

on_both_engines!(
    confirmed_orders_tell_who_bought_what,
    happy_path_from_items,
    happy_path_from_cart,
    a_shop_asking_for_verified_addresses_checks_out_only_those,
    declined_payment_fails_and_releases,
    out_of_stock_fails_without_payment,
    commit_refused_refunds_and_releases,
    transient_errors_are_retried,
    idempotent_replay_and_key_reuse,
    validation_and_pricing,
    visibility_and_listing,
    ships_to_a_saved_or_the_default_address,
    cancel_refunds,
    a_dispatched_order_is_not_cancelled,
    crash_at_every_step_then_resume,
    crash_before_the_first_step_resumes,
    a_checkout_the_caller_hung_up_on_still_completes,
    hundred_units_three_hundred_buyers,
    a_stale_move_writes_neither_log_nor_event,
    recovery_sees_exactly_the_sagas_with_work_left,
);
