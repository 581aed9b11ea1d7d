//! Discount codes: staff manage them (`DiscountCodeService`), customers enter one at checkout, and its uses are
//! counted with the orders that hold them. Over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is
//! set) PostgreSQL; the services orders calls are the fakes of `harness/`.

mod harness;

use api::common::Money;
use api::mercato::orders::v1::discount_code_service_client::DiscountCodeServiceClient;
use api::mercato::orders::v1::{
    CreateDiscountCodeRequest, DiscountCode, GetDiscountCodeRequest, ListDiscountCodesRequest, ListOrdersRequest,
    Order, OrderStatus, UpdateDiscountCodeRequest,
};
use orders::discount;
use orders::domain::LineInput;
use platform::db::Db;
use platform::with_db;
use tonic::transport::Channel;
use tonic::{Code, Status};

use harness::*;

const WRITE: &str = "discounts:write";

/// A client of the discount codes acting with `scopes`.
struct Staff {
    inner: DiscountCodeServiceClient<Channel>,
    token: String,
}

impl Staff {
    async fn new(server: &Server, scopes: &[&str]) -> Self {
        Self { inner: DiscountCodeServiceClient::new(connect(&server.url).await), token: server.staff_token(scopes) }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        authorized(Some(&self.token), message)
    }

    async fn create(&self, code: DiscountCode) -> Result<DiscountCode, Status> {
        let request = self.request(CreateDiscountCodeRequest { discount_code: Some(code) });
        Ok(self.inner.clone().create_discount_code(request).await?.into_inner().discount_code.expect("code"))
    }

    async fn get(&self, code: &str) -> Result<DiscountCode, Status> {
        let request = self.request(GetDiscountCodeRequest { code: code.into() });
        Ok(self.inner.clone().get_discount_code(request).await?.into_inner().discount_code.expect("code"))
    }

    async fn update(&self, code: &str, values: DiscountCode, paths: &[&str]) -> Result<DiscountCode, Status> {
        let request = self.request(UpdateDiscountCodeRequest {
            code: code.into(),
            discount_code: Some(values),
            update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
        });
        Ok(self.inner.clone().update_discount_code(request).await?.into_inner().discount_code.expect("code"))
    }

    async fn used(&self, code: &str) -> i32 {
        self.get(code).await.expect("get").times_redeemed
    }
}

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money { currency: "EUR".into(), amount_minor })
}

fn percent(code: &str, percent_off: i32) -> DiscountCode {
    DiscountCode { code: code.into(), percent_off, ..DiscountCode::default() }
}

fn amount(code: &str, amount_minor: i64) -> DiscountCode {
    DiscountCode { code: code.into(), amount_off: eur(amount_minor), ..DiscountCode::default() }
}

/// Why checkout refused the order's code.
fn refusal(status: &Status) -> String {
    match violations(status).as_slice() {
        [(field, why)] if field == "discount_code" => why.clone(),
        other => panic!("not a refused code: {other:?}"),
    }
}

fn with_code(items: &[(&str, i32)], key: &str, code: &str) -> api::mercato::orders::v1::CreateOrderRequest {
    api::mercato::orders::v1::CreateOrderRequest { discount_code: code.into(), ..order_of(items, key) }
}

fn amounts(order: &Order) -> (i64, i64, i64) {
    let minor = |m: &Option<Money>| m.as_ref().map_or(-1, |m| m.amount_minor);
    (minor(&order.subtotal), minor(&order.discount), minor(&order.total))
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

async fn staff_manage_codes(db: Db) {
    let server = Server::start(db, Fake::new(), Wiring::Direct).await;
    let staff = Staff::new(&server, &[WRITE]).await;
    let created = staff
        .create(DiscountCode { description: "Summer sale".into(), max_redemptions: 100, ..percent(" summer-10 ", 10) })
        .await
        .expect("create");
    assert_eq!((created.code.as_str(), created.percent_off, created.times_redeemed), ("SUMMER-10", 10, 0));
    assert!(created.start_time.is_some() && created.end_time.is_none() && !created.disabled);
    assert_eq!(staff.get("Summer-10").await.expect("get in any case"), created);

    let taken = staff.create(percent("SUMMER-10", 20)).await.expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    let wrong = staff
        .create(DiscountCode {
            amount_off: Some(Money { currency: "eur".into(), amount_minor: 500 }),
            ..percent("x", 0)
        })
        .await
        .expect_err("wrong");
    let fields: Vec<String> = violations(&wrong).into_iter().map(|(field, _)| field).collect();
    assert_eq!(fields, ["discount_code.code", "discount_code.amount_off.currency"]);
    assert_eq!(staff.get("NOPE").await.expect_err("unknown").code(), Code::NotFound);

    // Customers (and staff without the scope) neither see nor make codes.
    let customer = Staff::new(&server, &["orders:write"]).await;
    assert_eq!(customer.get("SUMMER-10").await.expect_err("customer").code(), Code::PermissionDenied);
    assert_eq!(customer.create(percent("MINE", 99)).await.expect_err("customer").code(), Code::PermissionDenied);

    // Newest first, a page at a time.
    staff.create(amount("FIVER", 500)).await.expect("create");
    staff.create(percent("WELCOME", 15)).await.expect("create");
    let mut client = staff.inner.clone();
    let first = client
        .list_discount_codes(staff.request(ListDiscountCodesRequest { page_size: 2, page_token: String::new() }))
        .await
        .expect("list")
        .into_inner();
    let codes: Vec<&str> = first.discount_codes.iter().map(|c| c.code.as_str()).collect();
    assert_eq!(codes, ["WELCOME", "FIVER"]);
    let rest = client
        .list_discount_codes(
            staff.request(ListDiscountCodesRequest { page_size: 2, page_token: first.next_page_token }),
        )
        .await
        .expect("list")
        .into_inner();
    assert_eq!(rest.discount_codes.iter().map(|c| c.code.as_str()).collect::<Vec<_>>(), ["SUMMER-10"]);
    assert!(rest.next_page_token.is_empty());

    // An update changes the fields named, and only those that may change.
    let end = prost_types::Timestamp { seconds: 4_102_444_800, nanos: 0 };
    let values = DiscountCode { end_time: Some(end), disabled: true, description: "ignored".into(), ..percent("", 50) };
    let updated = staff.update("summer-10", values, &["end_time", "disabled"]).await.expect("update");
    assert_eq!((updated.end_time, updated.disabled, updated.description.as_str()), (Some(end), true, "Summer sale"));
    assert_eq!((updated.percent_off, updated.max_redemptions), (10, 100));
    assert_eq!(staff.get("SUMMER-10").await.expect("get"), updated);
    let fixed = staff.update("SUMMER-10", percent("", 50), &["percent_off"]).await.expect_err("fixed");
    assert_eq!(violations(&fixed)[0].0, "update_mask");
    let early = DiscountCode { end_time: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }), ..percent("", 0) };
    let early = staff.update("SUMMER-10", early, &["end_time"]).await.expect_err("before start");
    assert_eq!(violations(&early), [("discount_code.end_time".to_owned(), "must be after start_time".to_owned())]);
    server.stop().await;
}

async fn a_code_takes_its_discount_off_what_is_charged(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db.clone(), fake.clone(), Wiring::Grpc).await;
    let staff = Staff::new(&server, &[WRITE]).await;
    staff.create(percent("SUMMER-10", 10)).await.expect("create");
    staff.create(amount("FIVER", 500)).await.expect("create");
    staff.create(DiscountCode { minimum_subtotal: eur(5000), ..percent("BIG-SPENDER", 20) }).await.expect("create");
    let ada = server.client("ada", false).await;

    let order = ada.create(with_code(&[(COFFEE, 2), (TEA, 1)], "k1", "summer-10")).await.expect("create");
    assert_eq!(status(&order), OrderStatus::Confirmed, "{order:?}");
    assert_eq!(amounts(&order), (3400, 340, 3060));
    assert_eq!(order.discount_code, "SUMMER-10");
    assert_eq!(fake.payments_of(&order.id)[0].amount, 3060, "the payment is the total after the discount");
    assert_eq!(ada.get(&order.id).await.expect("get"), order, "answered as stored");
    assert_eq!(staff.used("SUMMER-10").await, 1);
    // A fixed amount; without a code the subtotal is the total.
    let fiver = ada.create(with_code(&[(TEA, 2)], "k2", "FIVER")).await.expect("create");
    assert_eq!(amounts(&fiver), (1000, 500, 500));
    let plain = ada.create(order_of(&[(TEA, 1)], "k3")).await.expect("create");
    assert_eq!((amounts(&plain), plain.discount_code.as_str()), ((500, 0, 500), ""));

    // Each refusal says why, and places nothing: the same key then goes through without the code.
    let cases = [
        (with_code(&[(TEA, 1)], "r1", "FIVER"), "applies to orders of more than EUR 5.00"),
        (with_code(&[(BOOK, 1)], "r1", "FIVER"), "is for orders in EUR"),
        (with_code(&[(COFFEE, 3)], "r1", "BIG-SPENDER"), "applies to orders of at least EUR 50.00"),
        (with_code(&[(TEA, 1)], "r1", "NO-SUCH-CODE"), "is not a discount code of this shop"),
        (with_code(&[(TEA, 1)], "r1", "a b"), "must be 3 to 32 letters, digits, '-' or '_'"),
    ];
    for (request, why) in cases {
        let refused = ada.create(request).await.expect_err(why);
        assert_eq!(refusal(&refused), why);
    }
    let (stock_before, payments_before) = (fake.stock(TEA), fake.calls(Op::Pay));
    let later = ada.create(order_of(&[(TEA, 1)], "r1")).await.expect("the same key without a code");
    assert_eq!(status(&later), OrderStatus::Confirmed);
    assert_eq!((stock_before.0 - 1, payments_before + 1), (fake.stock(TEA).0, fake.calls(Op::Pay)));
    let big = ada.create(with_code(&[(COFFEE, 4)], "k4", "big-spender")).await.expect("at the minimum");
    assert_eq!(amounts(&big), (5800, 1160, 4640));
    server.stop().await;
}

async fn a_preview_prices_with_the_code_and_holds_nothing(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db.clone(), fake.clone(), Wiring::Grpc).await;
    let staff = Staff::new(&server, &[WRITE]).await;
    staff.create(DiscountCode { once_per_customer: true, ..percent("HELLO", 15) }).await.expect("create");
    let ada = server.client("ada", false).await;

    let preview = ada.preview(&[(COFFEE, 2)], " hello ").await.expect("preview");
    let minor = |m: &Option<Money>| m.as_ref().map_or(-1, |m| m.amount_minor);
    let quoted = (minor(&preview.subtotal), minor(&preview.discount), minor(&preview.total));
    assert_eq!((quoted, preview.discount_code.as_str()), ((2900, 435, 2465), "HELLO"));
    assert_eq!((preview.items.len(), preview.items[0].name.as_str()), (1, "Coffee"));
    assert_eq!((fake.calls(Op::Reserve), fake.calls(Op::Pay), staff.used("HELLO").await), (0, 0, 0), "nothing held");
    assert!(ada.list(ListOrdersRequest::default()).await.expect("list").0.is_empty(), "nothing placed");

    // The order then costs what the preview said; after it, the code is used for this customer.
    let order = ada.create(with_code(&[(COFFEE, 2)], "p1", "HELLO")).await.expect("create");
    assert_eq!(amounts(&order), quoted);
    let used = ada.preview(&[(COFFEE, 2)], "HELLO").await.expect_err("used");
    assert_eq!(refusal(&used), "has been used by you already (once per customer)");

    // The cart's items without a code; bad input named as at checkout.
    fake.state().carts.insert("ada".into(), vec![LineInput { product_id: TEA.into(), quantity: 3 }]);
    let cart = ada.preview(&[], "").await.expect("the cart");
    let cart_amounts = (minor(&cart.subtotal), minor(&cart.discount), minor(&cart.total));
    assert_eq!((cart_amounts, cart.discount_code.as_str()), ((1500, 0, 1500), ""));
    let bad = ada.preview(&[(TEA, 0)], "no way").await.expect_err("bad");
    let fields: Vec<String> = violations(&bad).into_iter().map(|(field, _)| field).collect();
    assert_eq!(fields, ["items[0].quantity", "discount_code"]);
    server.stop().await;
}

async fn a_failed_or_cancelled_order_gives_its_use_back(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db.clone(), fake.clone(), Wiring::Direct).await;
    let staff = Staff::new(&server, &[WRITE]).await;
    staff.create(DiscountCode { max_redemptions: 1, ..percent("ONCE", 50) }).await.expect("create");
    let (ada, bob) = (server.client("ada", false).await, server.client("bob", false).await);

    let mut declined = with_code(&[(COFFEE, 1)], "a1", "ONCE");
    declined.payment_method = DECLINED.into();
    let failed = ada.create(declined).await.expect("create");
    assert_eq!(status(&failed), OrderStatus::Failed);
    assert_eq!(staff.used("ONCE").await, 0, "a failed checkout gives the use back");

    let order = ada.create(with_code(&[(COFFEE, 2)], "a2", "ONCE")).await.expect("create");
    assert_eq!((status(&order), amounts(&order)), (OrderStatus::Confirmed, (2900, 1450, 1450)));
    assert_eq!(staff.used("ONCE").await, 1);
    let used_up = bob.create(with_code(&[(TEA, 1)], "b1", "ONCE")).await.expect_err("used up");
    assert_eq!(refusal(&used_up), "has been used up");
    // The first order's retry is answered with it, not refused for its own use.
    assert_eq!(ada.create(with_code(&[(COFFEE, 2)], "a2", "ONCE")).await.expect("replay"), order);

    let cancelled = ada.cancel(&order.id).await.expect("cancel");
    assert_eq!(status(&cancelled), OrderStatus::Cancelled);
    assert_eq!(fake.refunds_of(&order.payment_id), [(format!("order:{}:cancel", order.id), 1450)]);
    assert_eq!(staff.used("ONCE").await, 0, "a cancelled order gives the use back");
    let bobs = bob.create(with_code(&[(TEA, 1)], "b1", "ONCE")).await.expect("free again");
    assert_eq!((status(&bobs), amounts(&bobs)), (OrderStatus::Confirmed, (500, 250, 250)));

    // Switched off, not yet valid, expired: refused, until staff change it.
    staff.create(percent("LATER", 10)).await.expect("create");
    staff
        .update("LATER", DiscountCode { disabled: true, ..DiscountCode::default() }, &["disabled"])
        .await
        .expect("off");
    assert_eq!(
        refusal(&bob.create(with_code(&[(TEA, 1)], "b2", "LATER")).await.expect_err("off")),
        "can no longer be used"
    );
    let future = prost_types::Timestamp { seconds: 4_102_444_800, nanos: 0 };
    let values = DiscountCode { start_time: Some(future), disabled: false, ..DiscountCode::default() };
    staff.update("LATER", values, &["start_time", "disabled"]).await.expect("later");
    assert_eq!(
        refusal(&bob.create(with_code(&[(TEA, 1)], "b2", "LATER")).await.expect_err("early")),
        "cannot be used yet"
    );
    staff.update("LATER", DiscountCode::default(), &["start_time"]).await.expect("from its creation");
    let on = bob.create(with_code(&[(TEA, 1)], "b2", "LATER")).await.expect("valid now");
    assert_eq!(amounts(&on), (500, 50, 450));
    server.stop().await;
}

async fn once_per_customer_and_a_race_for_the_last_use(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db.clone(), fake.clone(), Wiring::Direct).await;
    let staff = Staff::new(&server, &[WRITE]).await;
    staff.create(DiscountCode { once_per_customer: true, ..percent("HELLO", 15) }).await.expect("create");
    let (ada, bob) = (server.client("ada", false).await, server.client("bob", false).await);
    assert_eq!(
        status(&ada.create(with_code(&[(TEA, 2)], "a1", "HELLO")).await.expect("first")),
        OrderStatus::Confirmed
    );
    let again = ada.create(with_code(&[(TEA, 2)], "a2", "HELLO")).await.expect_err("second");
    assert_eq!(refusal(&again), "has been used by you already (once per customer)");
    assert_eq!(
        status(&bob.create(with_code(&[(TEA, 2)], "b1", "HELLO")).await.expect("bob's")),
        OrderStatus::Confirmed
    );
    assert_eq!(staff.used("HELLO").await, 2);

    // Twenty customers at once for a code's last three uses: exactly three get it, the rest are told why.
    staff.create(DiscountCode { max_redemptions: 3, ..percent("RUSH", 30) }).await.expect("create");
    let mut buyers = Vec::new();
    for i in 0..20 {
        let client = server.client(&format!("rush-{i}"), false).await;
        buyers.push(tokio::spawn(async move { client.create(with_code(&[(TEA, 1)], "rush", "RUSH")).await }));
    }
    let mut confirmed = 0;
    for buyer in buyers {
        match buyer.await.expect("join") {
            Ok(order) => {
                assert_eq!((status(&order), amounts(&order)), (OrderStatus::Confirmed, (500, 150, 350)));
                confirmed += 1;
            }
            Err(refused) => assert_eq!(refusal(&refused), "has been used up"),
        }
    }
    assert_eq!((confirmed, staff.used("RUSH").await), (3, 3));
    server.stop().await;
}

/// A customer who had ten codes refused within the hour (previews and checkouts together) gets every code refused
/// until it is over, a good one too: guessing cannot tell which exist. Others are not held back.
/// How many discount codes were refused for `customer` in the hour counted last (0 when none ever was).
async fn refused_codes(db: &Db, customer: &str) -> i64 {
    let counted: Option<i64> = with_db!(db, pool => {
        sqlx::query_scalar("SELECT CAST(refused AS BIGINT) FROM discount_code_refusals WHERE customer_id = $1")
            .bind(customer)
            .fetch_optional(pool)
            .await
            .expect("count")
    });
    counted.unwrap_or(0)
}

async fn guessing_codes_is_cut_short(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db.clone(), fake.clone(), Wiring::Direct).await;
    let staff = Staff::new(&server, &[WRITE]).await;
    staff.create(percent("REAL", 10)).await.expect("create");
    let (ada, bob) = (server.client("ada", false).await, server.client("bob", false).await);
    ada.preview(&[(COFFEE, 1)], "REAL").await.expect("a good code counts for nothing");
    for n in 1..=6 {
        let refused = ada.preview(&[(COFFEE, 1)], &format!("GUESS-{n}")).await.expect_err("unknown");
        assert_eq!(refusal(&refused), "is not a discount code of this shop");
    }
    for n in 7..=10 {
        let refused = ada.create(with_code(&[(COFFEE, 1)], &format!("g{n}"), &format!("GUESS-{n}"))).await;
        assert_eq!(refusal(&refused.expect_err("unknown")), "is not a discount code of this shop");
    }

    // The budget is spent: every code is refused, at checkout too, and nothing is placed or held.
    let spent = ada.preview(&[(COFFEE, 1)], "REAL").await.expect_err("spent");
    assert_eq!((spent.code(), reason(&spent)), (Code::ResourceExhausted, "DISCOUNT_CODE_ATTEMPTS".to_owned()));
    assert!(spent.message().contains("try again in"), "{spent:?}");
    let checkout = ada.create(with_code(&[(COFFEE, 1)], "real-1", "REAL")).await.expect_err("spent");
    assert_eq!(checkout.code(), Code::ResourceExhausted);
    assert!(ada.list(ListOrdersRequest::default()).await.expect("list").0.is_empty(), "nothing placed");
    assert_eq!(fake.calls(Op::Reserve), 0, "nothing held");
    // Without a code she orders as ever; Bob's codes are his own business.
    assert_eq!(status(&ada.create(order_of(&[(COFFEE, 1)], "plain")).await.expect("no code")), OrderStatus::Confirmed);
    bob.preview(&[(COFFEE, 1)], "REAL").await.expect("another customer");

    // The next hour starts again from nothing.
    with_db!(&db, pool => {
        sqlx::query("UPDATE discount_code_refusals SET window_start = window_start - 3600000000")
            .execute(pool)
            .await
            .expect("an hour earlier");
    });
    ada.preview(&[(COFFEE, 1)], "REAL").await.expect("a new hour");
    ada.preview(&[(COFFEE, 1)], "GUESS-11").await.expect_err("unknown");
    assert_eq!(refused_codes(&db, "ada").await, 1, "counted from one again");
    server.stop().await;
}

async fn a_retried_checkout_whose_order_used_the_code_up_counts_no_refusal(db: Db) {
    let fake = Fake::new();
    let server = Server::start(db.clone(), fake.clone(), Wiring::Direct).await;
    let staff = Staff::new(&server, &[WRITE]).await;
    staff.create(DiscountCode { max_redemptions: 1, ..percent("ONCE", 50) }).await.expect("create");
    staff.create(percent("REAL", 10)).await.expect("create");
    let ada = server.client("ada", false).await;
    let order = ada.create(with_code(&[(COFFEE, 1)], "once-1", "ONCE")).await.expect("the code's one use");
    // Her client retries (a lost answer) more often than the budget allows refusals: each retry answers the order.
    for _ in 0..=discount::MAX_REFUSED_PER_HOUR {
        let again = ada.create(with_code(&[(COFFEE, 1)], "once-1", "ONCE")).await.expect("the same order");
        assert_eq!(again.id, order.id);
    }
    assert_eq!(refused_codes(&db, "ada").await, 0, "no refusal counted");
    ada.preview(&[(COFFEE, 1)], "REAL").await.expect("her codes still work");
    // A new checkout with the used-up code is a refusal as ever, and counts.
    let refused = ada.create(with_code(&[(COFFEE, 1)], "once-2", "ONCE")).await.expect_err("used up");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(refused_codes(&db, "ada").await, 1);
    server.stop().await;
}

on_both_engines!(
    a_retried_checkout_whose_order_used_the_code_up_counts_no_refusal,
    guessing_codes_is_cut_short,
    staff_manage_codes,
    a_code_takes_its_discount_off_what_is_charged,
    a_preview_prices_with_the_code_and_holds_nothing,
    a_failed_or_cancelled_order_gives_its_use_back,
    once_per_customer_and_a_race_for_the_last_use,
);
