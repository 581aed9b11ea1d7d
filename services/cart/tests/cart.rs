//! The cart over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL: each
//! scenario is an async fn taking a `Db`, run once per engine (the harness, with its stand-in catalog, is in
//! `harness/`).

use std::sync::Arc;
use std::time::Duration;

use api::mercato::cart::v1::{AddItemRequest, Cart, CartItem, ClearCartRequest, GetCartRequest};
use cart::store::{NewLine, Store};
use platform::db::Db;
use platform::events::EventBus;
use tonic::{Code, Request, Status};

mod harness;

use harness::*;

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

async fn add_merge_update_remove_clear(db: Db) {
    let server = Server::start(db).await;
    let alice = server.customer("alice");

    let empty = server.get(&alice).await.expect("empty cart");
    assert_eq!(empty, Cart { customer_id: "alice".into(), ..Cart::default() }, "no cart yet: empty, no time");

    let cart = server.add(&alice, COFFEE, 2).await.expect("add");
    assert_eq!(cart.customer_id, "alice");
    assert_eq!(
        cart.items,
        vec![CartItem {
            product_id: COFFEE.into(),
            sku: "COF-1".into(),
            name: "Coffee".into(),
            quantity: 2,
            unit_price: Some(eur(1450)),
            line_total: Some(eur(2900)),
            available: true,
        }]
    );
    assert_eq!((cart.totals.clone(), cart.item_count), (vec![eur(2900)], 2));
    let first_time = micros(&cart);
    assert!(first_time > 1_600_000_000_000_000);

    let cart = server.add(&alice, COFFEE, 3).await.expect("merge");
    assert_eq!(lines(&cart), [(COFFEE, 5)], "adding again grows the line");
    assert!(micros(&cart) > first_time);
    let cart = server.add(&alice, TEA, 1).await.expect("second product");
    assert_eq!(lines(&cart), [(COFFEE, 5), (TEA, 1)], "oldest first");
    assert_eq!((cart.totals.clone(), cart.item_count), (vec![eur(5 * 1450 + 500)], 6));

    let cart = server.update(&alice, TEA, 4).await.expect("update");
    assert_eq!(lines(&cart), [(COFFEE, 5), (TEA, 4)]);
    assert_eq!(item(&cart, TEA).line_total, Some(eur(2000)));
    let err = server.update(&alice, BOOK, 1).await.expect_err("not in cart");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(server.get(&alice).await.expect("get"), cart, "a failed update changes nothing");

    let cart = server.remove(&alice, COFFEE).await.expect("remove");
    assert_eq!(lines(&cart), [(TEA, 4)]);
    assert_eq!(server.remove(&alice, COFFEE).await.expect_err("gone").code(), Code::NotFound);
    assert_eq!(server.remove(&alice, "never-seen").await.expect_err("unknown").code(), Code::NotFound);

    let before_clear = micros(&cart);
    let cleared = server.clear(&alice, "").await.expect("clear");
    assert!(cleared.items.is_empty() && cleared.totals.is_empty() && cleared.item_count == 0);
    assert!(micros(&cleared) > before_clear);
    assert_eq!(server.clear(&alice, "alice").await.expect("clear again, naming oneself").items, vec![]);
    assert_eq!(server.get(&alice).await.expect("get").items, vec![]);
    let cart = server.add(&alice, BOOK, 1).await.expect("add after clear");
    assert_eq!(lines(&cart), [(BOOK, 1)]);
    server.stop().await;
}

async fn adding_items_publishes_cart_item_added(db: Db) {
    let server = Server::start(db).await;
    let ada = server.customer("ada");
    server.add(&ada, COFFEE, 2).await.expect("first item");
    server.add(&ada, TEA, 1).await.expect("second item");
    server.add(&ada, COFFEE, 1).await.expect("more of the first");
    server.add(&ada, COFFEE, 99).await.expect_err("over the limit: nothing added, nothing published");
    server.clear(&ada, "").await.expect("clear");
    server.add(&ada, TEA, 3).await.expect("a new cart");

    let mut published = Vec::new();
    for _ in 0..100 {
        published = server.item_added.lock().expect("lock").clone();
        if published.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen: Vec<(&str, i32, bool)> =
        published.iter().map(|e| (e.product_id.as_str(), e.quantity, e.cart_was_empty)).collect();
    assert_eq!(seen, [(COFFEE, 2, true), (TEA, 1, false), (COFFEE, 1, false), (TEA, 3, true)]);
    assert!(published.iter().all(|e| e.customer_id == "ada"));
    server.stop().await;
}

async fn a_deleted_accounts_cart_is_erased(db: Db) {
    let server = Server::start(db).await;
    let (ada, bob) = (server.customer("ada"), server.customer("bob"));
    server.add(&ada, COFFEE, 2).await.expect("ada's");
    server.add(&bob, TEA, 1).await.expect("bob's");
    let deleted = account_deleted("ada");
    server.bus.publish(deleted.clone()).await.expect("taken");
    assert_eq!(
        server.get(&ada).await.expect("cart"),
        Cart { customer_id: "ada".into(), ..Cart::default() },
        "no cart at all"
    );
    server.bus.publish(deleted).await.expect("a redelivery is taken too");
    assert_eq!(server.get(&bob).await.expect("cart").items.len(), 1, "others keep theirs");
    server.stop().await;
}

async fn quantity_limits(db: Db) {
    let server = Server::start(db).await;
    let alice = server.customer("alice");
    assert_eq!(bad_fields(&server.add(&alice, COFFEE, 0).await.expect_err("0")), ["quantity"]);
    assert_eq!(bad_fields(&server.add(&alice, COFFEE, 100).await.expect_err("100")), ["quantity"]);
    assert_eq!(bad_fields(&server.add(&alice, COFFEE, -1).await.expect_err("-1")), ["quantity"]);
    assert_eq!(bad_fields(&server.add(&alice, "", 1).await.expect_err("no product")), ["product_id"]);
    assert_eq!(bad_fields(&server.add(&alice, "", 0).await.expect_err("both")), ["product_id", "quantity"]);
    assert_eq!(bad_fields(&server.add(&alice, &"p".repeat(101), 1).await.expect_err("long id")), ["product_id"]);

    assert_eq!(lines(&server.add(&alice, COFFEE, 97).await.expect("97")), [(COFFEE, 97)]);
    let err = server.add(&alice, COFFEE, 5).await.expect_err("merge past 99");
    assert_eq!(bad_fields(&err), ["quantity"]);
    assert!(err.message().contains("97"), "{}", err.message());
    assert_eq!(lines(&server.get(&alice).await.expect("get")), [(COFFEE, 97)], "a refused merge changes nothing");
    assert_eq!(lines(&server.add(&alice, COFFEE, 2).await.expect("up to 99")), [(COFFEE, 99)]);
    assert_eq!(bad_fields(&server.add(&alice, COFFEE, 1).await.expect_err("past 99")), ["quantity"]);

    assert_eq!(bad_fields(&server.update(&alice, COFFEE, 0).await.expect_err("0")), ["quantity"]);
    assert_eq!(bad_fields(&server.update(&alice, COFFEE, 100).await.expect_err("100")), ["quantity"]);
    assert_eq!(bad_fields(&server.update(&alice, "", 5).await.expect_err("no product")), ["product_id"]);
    assert_eq!(bad_fields(&server.remove(&alice, "").await.expect_err("no product")), ["product_id"]);
    assert_eq!(lines(&server.update(&alice, COFFEE, 1).await.expect("down to 1")), [(COFFEE, 1)]);
    server.stop().await;
}

async fn only_products_for_sale_can_be_added(db: Db) {
    let server = Server::start(db).await;
    let alice = server.customer("alice");
    let err = server.add(&alice, RETIRED, 1).await.expect_err("inactive");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(reason(&err), "PRODUCT_INACTIVE");
    let err = server.add(&alice, "no-such-product", 1).await.expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "product no-such-product not found");
    let cart = server.get(&alice).await.expect("get");
    assert!(cart.items.is_empty() && cart.update_time.is_none(), "refused adds leave no cart behind");

    // Out of stock can still be added (it shows as not available).
    server.catalog.change(TEA, |_, stock| *stock = 0);
    let cart = server.add(&alice, TEA, 1).await.expect("out of stock is addable");
    assert!(!item(&cart, TEA).available);
    server.stop().await;
}

async fn prices_and_availability_follow_the_catalog(db: Db) {
    let server = Server::start(db).await;
    let alice = server.customer("alice");
    server.add(&alice, COFFEE, 2).await.expect("coffee");
    server.add(&alice, BOOK, 1).await.expect("book");
    let cart = server.add(&alice, TEA, 3).await.expect("tea");
    assert_eq!(cart.totals, vec![eur(2 * 1450 + 3 * 500), money("USD", 2500)], "one total per currency, by code");
    assert_eq!(cart.item_count, 6);

    // A price change shows in the next read.
    server.catalog.change(COFFEE, |p, _| {
        p.price = Some(eur(1600));
        p.name = "Coffee, new blend".into();
    });
    let cart = server.get(&alice).await.expect("get");
    let coffee = item(&cart, COFFEE);
    assert_eq!((coffee.unit_price.clone(), coffee.line_total.clone()), (Some(eur(1600)), Some(eur(3200))));
    assert_eq!(coffee.name, "Coffee, new blend");
    assert_eq!(cart.totals, vec![eur(3200 + 1500), money("USD", 2500)]);

    // A product that becomes inactive stays in the cart, not available, in no total.
    server.catalog.change(TEA, |p, _| p.active = false);
    let cart = server.get(&alice).await.expect("get");
    let tea = item(&cart, TEA);
    assert!(!tea.available);
    assert_eq!((tea.name.as_str(), tea.sku.as_str(), tea.quantity), ("Tea", "TEA-1", 3), "as last seen");
    assert_eq!((&tea.unit_price, &tea.line_total), (&None, &None));
    assert_eq!(cart.totals, vec![eur(3200), money("USD", 2500)]);
    assert_eq!(cart.item_count, 6, "unavailable units still count");

    // Not enough stock: priced, not available, in no total; the USD total disappears.
    server.catalog.change(BOOK, |_, stock| *stock = 0);
    let cart = server.get(&alice).await.expect("get");
    let book = item(&cart, BOOK);
    assert!(!book.available);
    assert_eq!(book.unit_price, Some(money("USD", 2500)));
    assert_eq!(cart.totals, vec![eur(3200)]);
    server.catalog.change(COFFEE, |_, stock| *stock = 2);
    assert!(item(&server.get(&alice).await.expect("get"), COFFEE).available, "exactly enough stock");

    // A product the catalog no longer knows.
    server.catalog.delete(COFFEE);
    let cart = server.get(&alice).await.expect("get");
    let coffee = item(&cart, COFFEE);
    assert!(!coffee.available && coffee.unit_price.is_none());
    assert_eq!(coffee.name, "Coffee", "the name when it was added");
    assert!(cart.totals.is_empty());
    assert_eq!(lines(&cart), [(COFFEE, 2), (BOOK, 1), (TEA, 3)]);

    // Lines that are not for sale can still be changed and removed.
    server.update(&alice, TEA, 1).await.expect("update inactive line");
    let cart = server.remove(&alice, COFFEE).await.expect("remove deleted product");
    assert_eq!(lines(&cart), [(BOOK, 1), (TEA, 1)]);
    server.stop().await;
}

async fn carts_are_private(db: Db) {
    let server = Server::start(db).await;
    let alice = server.customer("alice");
    let bob = server.customer("bob");
    server.add(&alice, COFFEE, 1).await.expect("alice adds");
    let bobs = server.get(&bob).await.expect("bob reads");
    assert_eq!((bobs.customer_id.as_str(), bobs.items.len()), ("bob", 0), "bob does not see alice's cart");
    server.add(&bob, TEA, 2).await.expect("bob adds");
    assert_eq!(lines(&server.get(&alice).await.expect("alice")), [(COFFEE, 1)]);
    assert_eq!(lines(&server.get(&bob).await.expect("bob")), [(TEA, 2)]);
    // Alice cannot touch bob's line through the product id: she only ever reaches her own cart.
    assert_eq!(server.remove(&alice, TEA).await.expect_err("not hers").code(), Code::NotFound);
    assert_eq!(server.update(&alice, TEA, 5).await.expect_err("not hers").code(), Code::NotFound);

    let err = server.clear(&alice, "bob").await.expect_err("alice clears bob");
    assert_eq!(err.code(), Code::NotFound, "another customer's cart does not exist for alice: {err:?}");
    assert_eq!(lines(&server.get(&bob).await.expect("bob")), [(TEA, 2)], "bob's cart survives");
    let cleared = server.clear(&server.admin(), "bob").await.expect("orders:admin clears bob's cart");
    assert_eq!((cleared.customer_id.as_str(), cleared.items.len()), ("bob", 0));
    assert_eq!(server.get(&bob).await.expect("bob").items, vec![]);
    assert_eq!(lines(&server.get(&alice).await.expect("alice")), [(COFFEE, 1)], "only bob's was cleared");
    let none = server.clear(&server.admin(), "nobody").await.expect("clearing a missing cart is fine");
    assert!(none.items.is_empty() && none.update_time.is_none());

    // No token, bad token, a token without cart:write.
    let mut client = server.client.clone();
    let err = client.get_cart(Request::new(GetCartRequest {})).await.expect_err("anonymous read");
    assert_eq!(err.code(), Code::Unauthenticated);
    let anonymous = Request::new(AddItemRequest { product_id: COFFEE.into(), quantity: 1 });
    assert_eq!(client.add_item(anonymous).await.expect_err("anonymous add").code(), Code::Unauthenticated);
    let anonymous = Request::new(ClearCartRequest::default());
    assert_eq!(client.clear_cart(anonymous).await.expect_err("anonymous clear").code(), Code::Unauthenticated);
    let forged = with_token(GetCartRequest {}, "not-a-token");
    assert_eq!(client.get_cart(forged).await.expect_err("forged").code(), Code::Unauthenticated);
    let reader = server.issuer.token("carol", &["orders:read"], &["customer"]);
    assert_eq!(server.get(&reader).await.expect("reading needs no scope").customer_id, "carol");
    let err = server.add(&reader, COFFEE, 1).await.expect_err("no cart:write");
    assert_eq!(err.code(), Code::PermissionDenied);
    server.stop().await;
}

async fn concurrent_adds_never_pass_99(db: Db) {
    let server = Arc::new(Server::start(db).await);
    let alice = server.customer("alice");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let server = server.clone();
        let token = alice.clone();
        tasks.push(tokio::spawn(async move { server.add(&token, COFFEE, 5).await }));
    }
    let mut successes = 0;
    for task in tasks {
        match task.await.expect("join") {
            Ok(_) => successes += 1,
            Err(status) => assert_eq!(bad_fields(&status), ["quantity"], "refused only for the limit"),
        }
    }
    let cart = server.get(&alice).await.expect("get");
    assert_eq!(lines(&cart), [(COFFEE, successes * 5)], "every success counted, nothing else");
    assert_eq!(successes, 19, "adds are serialised: all fit until 95, the 20th would pass 99");
    let Ok(server) = Arc::try_unwrap(server) else { panic!("server still shared") };
    server.stop().await;
}

async fn a_missing_catalog_is_unavailable(db: Db) {
    let server = Server::start(db).await;
    let alice = server.customer("alice");
    server.add(&alice, COFFEE, 1).await.expect("add");
    // Stop the catalog; the cart's channel to it then fails to reconnect.
    server.catalog_stop.cancel();
    let Server { client, item_added, issuer, catalog, catalog_stop, catalog_task, shutdown, task, bus, wishlist } =
        server;
    tokio::time::timeout(Duration::from_secs(20), catalog_task)
        .await
        .expect("the catalog stops")
        .expect("join")
        .expect("catalog stopped cleanly");
    let catalog_task = tokio::spawn(async { Ok(()) });
    let server =
        Server { client, item_added, issuer, catalog, catalog_stop, catalog_task, shutdown, task, bus, wishlist };
    let err = server.get(&alice).await.expect_err("no prices without the catalog");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(!err.message().contains("127.0.0.1"), "{}", err.message());
    assert_eq!(server.add(&alice, TEA, 1).await.expect_err("cannot check the product").code(), Code::Unavailable);
    // An empty cart needs no prices.
    assert_eq!(server.get(&server.customer("bob")).await.expect("empty cart").items, vec![]);
    server.stop().await;
}

async fn a_cart_holds_at_most_100_products(db: Db) {
    db.migrate(&cart::MIGRATOR, cart::NAME).await.expect("migrate");
    let store = Store::new(db);
    fn line(id: &str) -> NewLine<'_> {
        NewLine { product_id: id, sku: "S", name: "N", quantity: 1 }
    }
    for i in 0..100 {
        store.add("alice", &line(&format!("p{i:03}")), 1_000 + i).await.expect("within the limit");
    }
    let err = store.add("alice", &line("p100"), 2_000).await.expect_err("101st product");
    assert_eq!(reason(&Status::from(err)), "CART_FULL");
    store.add("alice", &line("p000"), 2_001).await.expect("more of a product already in the cart");
    store.add("bob", &line("p100"), 2_002).await.expect("another customer's cart is separate");
    let cart = store.cart("alice").await.expect("cart");
    assert_eq!(cart.lines.len(), 100);
    assert_eq!((cart.lines[0].product_id.as_str(), cart.lines[0].quantity), ("p000", 2));
    assert_eq!(cart.update_time, Some(2_001));
    // update time never goes backwards, even with an older clock.
    store.clear("alice", 5).await.expect("clear");
    let cart = store.cart("alice").await.expect("cart");
    assert!(cart.lines.is_empty() && cart.update_time == Some(2_002));
}

on_both_engines!(
    add_merge_update_remove_clear,
    adding_items_publishes_cart_item_added,
    a_deleted_accounts_cart_is_erased,
    quantity_limits,
    only_products_for_sale_can_be_added,
    prices_and_availability_follow_the_catalog,
    carts_are_private,
    concurrent_adds_never_pass_99,
    a_missing_catalog_is_unavailable,
    a_cart_holds_at_most_100_products,
);
