//! Returns (`ReturnService`): a customer asks to send back items of a delivered order within the return window,
//! staff approve or reject, and receiving the parcel refunds the items' share of what was paid, once, and tells
//! the catalog whether to put the units back. Over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is
//! set) PostgreSQL; the deliveries' `shipment.delivered` events are published on the service's in-process bus as
//! the deliveries service's relay would.

mod harness;

use api::mercato::deliveries::v1::ShipmentDelivered;
use api::mercato::orders::v1::return_service_client::ReturnServiceClient;
use api::mercato::orders::v1::shipping_rate_service_client::ShippingRateServiceClient;
use api::mercato::orders::v1::{
    ApproveReturnRequest, CancelReturnRequest, CreateReturnRequest, GetReturnRequest, ListOrdersRequest,
    ListReturnsRequest, Order, OrderStatus, ReceiveReturnRequest, RejectReturnRequest, Return, ReturnItem,
    ReturnReceived, ReturnRequested, ReturnStatus,
};
use api::mercato::orders::v1::{CreateShippingRateRequest, ShippingRate};
use platform::config::ReturnShipping;
use platform::db::Db;
use platform::events::{EventBus, EventEnvelope};
use platform::with_db;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Status};

use harness::*;

/// A client of the returns acting as `who` with `scopes`.
struct Returns {
    inner: ReturnServiceClient<Channel>,
    token: String,
}

impl Returns {
    async fn new(server: &Server, who: &str, scopes: &[&str]) -> Self {
        let token = format!("Bearer {}", server.issuer.sign(&server.issuer.claims(who, scopes, &["customer"])));
        Self { inner: ReturnServiceClient::new(connect(&server.url).await), token }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        authorized(Some(&self.token), message)
    }

    async fn create(&self, order_id: &str, items: &[(&str, i32)], reason: &str) -> Result<Return, Status> {
        let items = items
            .iter()
            .map(|(product_id, quantity)| ReturnItem {
                product_id: (*product_id).into(),
                quantity: *quantity,
                ..ReturnItem::default()
            })
            .collect();
        let request = self.request(CreateReturnRequest { order_id: order_id.into(), items, reason: reason.into() });
        Ok(self.inner.clone().create_return(request).await?.into_inner().r#return.expect("return"))
    }

    async fn get(&self, id: &str) -> Result<Return, Status> {
        let request = self.request(GetReturnRequest { id: id.into() });
        Ok(self.inner.clone().get_return(request).await?.into_inner().r#return.expect("return"))
    }

    async fn list(&self, request: ListReturnsRequest) -> Result<Vec<Return>, Status> {
        Ok(self.inner.clone().list_returns(self.request(request)).await?.into_inner().returns)
    }

    async fn approve(&self, id: &str) -> Result<Return, Status> {
        let request = self.request(ApproveReturnRequest { id: id.into() });
        Ok(self.inner.clone().approve_return(request).await?.into_inner().r#return.expect("return"))
    }

    async fn cancel(&self, id: &str) -> Result<Return, Status> {
        let request = self.request(CancelReturnRequest { id: id.into() });
        Ok(self.inner.clone().cancel_return(request).await?.into_inner().r#return.expect("return"))
    }

    async fn reject(&self, id: &str, reason: &str) -> Result<Return, Status> {
        let request = self.request(RejectReturnRequest { id: id.into(), reason: reason.into() });
        Ok(self.inner.clone().reject_return(request).await?.into_inner().r#return.expect("return"))
    }

    /// Return `id` once the background task has refunded it (as it stands after 5 s when it has not).
    async fn refunded_in_time(&self, id: &str) -> Return {
        let mut seen = self.get(id).await.expect("get");
        for _ in 0..100 {
            if seen.status() == ReturnStatus::Refunded {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            seen = self.get(id).await.expect("get");
        }
        seen
    }

    async fn receive(&self, id: &str, restock: bool) -> Result<Return, Status> {
        let request = self.request(ReceiveReturnRequest { id: id.into(), restock });
        Ok(self.inner.clone().receive_return(request).await?.into_inner().r#return.expect("return"))
    }
}

const STAFF: &[&str] = &["orders:write", "returns:write"];

/// Publishes the `shipment.delivered` event of `order_id`, delivered `days_ago`, and waits until the service has
/// recorded it.
async fn deliver(server: &Server, order_id: &str, days_ago: i64) {
    let time = platform::time::now_micros() - days_ago * 24 * 3600 * 1_000_000;
    let payload = ShipmentDelivered {
        shipment_id: format!("shipment-{order_id}"),
        order_id: order_id.into(),
        customer_id: String::new(),
    };
    let event = EventEnvelope {
        id: format!("delivered-{order_id}"),
        source: "deliveries".into(),
        r#type: "shipment.delivered".into(),
        subject: payload.shipment_id.clone(),
        time: Some(platform::time::timestamp(time)),
        data: payload.encode_to_vec(),
        ..EventEnvelope::default()
    };
    server.bus.publish(event).await.expect("taken");
    for _ in 0..200 {
        let recorded: Option<i64> = with_db!(&server.db, pool => {
            sqlx::query_scalar("SELECT deliver_time FROM order_deliveries WHERE order_id = $1")
                .bind(order_id)
                .fetch_optional(pool)
                .await
                .expect("read")
        });
        if recorded.is_some() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the delivery of {order_id} was not recorded");
}

fn amount(r: &Return) -> i64 {
    r.refund.as_ref().map_or(-1, |m| m.amount_minor)
}

/// Each line's product with the units that came back.
fn returned(order: &Order) -> Vec<(&str, i32)> {
    order.items.iter().map(|i| (i.product_id.as_str(), i.returned_quantity)).collect()
}

fn lines(r: &Return) -> Vec<(String, i32, String, i64)> {
    r.items
        .iter()
        .map(|i| {
            (i.product_id.clone(), i.quantity, i.name.clone(), i.unit_price.as_ref().map_or(-1, |m| m.amount_minor))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

async fn a_delivered_order_is_returned_in_parts_and_refunded_its_share(db: Db) {
    let server = Server::start(db, Fake::new(), Wiring::Grpc).await;
    let ada = server.client("ada", false).await;
    let ada_returns = Returns::new(&server, "ada", &["orders:write"]).await;
    let bob_returns = Returns::new(&server, "bob", &["orders:write"]).await;
    let staff = Returns::new(&server, "sam", STAFF).await;

    // 2 × 14.50 + 5.00 = 34.00, no shipping rates, no discount.
    let order = ada.create(order_of(&[(COFFEE, 2), (TEA, 1)], "a1")).await.expect("create");
    assert_eq!(status(&order), OrderStatus::Confirmed);
    let refused = ada_returns.create(&order.id, &[(COFFEE, 1)], "").await.expect_err("not delivered");
    assert_eq!((refused.code(), reason(&refused)), (Code::FailedPrecondition, "ORDER_NOT_DELIVERED".to_owned()));

    deliver(&server, &order.id, 2).await;
    let first = ada_returns.create(&order.id, &[(COFFEE, 1)], " too strong ").await.expect("asked");
    assert_eq!(
        (first.status(), first.order_id.as_str(), first.customer_id.as_str(), first.reason.as_str(), amount(&first)),
        (ReturnStatus::Requested, order.id.as_str(), "ada", "too strong", 1450)
    );
    assert_eq!(lines(&first), [(COFFEE.to_owned(), 1, "Coffee".to_owned(), 1450)]);
    let requested: ReturnRequested = outbox_event(&server.db, &first.id, "return.requested").await;
    assert_eq!((requested.order_id.as_str(), requested.items.len()), (order.id.as_str(), 1));
    assert_eq!(returned(&ada.get(&order.id).await.expect("get")), [(COFFEE, 0), (TEA, 0)], "asked, not received");

    // Another customer's order and return do not exist for Bob; only staff decide.
    assert_eq!(bob_returns.create(&order.id, &[(COFFEE, 1)], "").await.expect_err("ada's").code(), Code::NotFound);
    assert_eq!(bob_returns.get(&first.id).await.expect_err("ada's").code(), Code::NotFound);
    assert_eq!(ada_returns.approve(&first.id).await.expect_err("no scope").code(), Code::PermissionDenied);
    let mine = ada_returns.list(ListReturnsRequest::default()).await.expect("list");
    assert_eq!(mine.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [first.id.as_str()]);
    assert!(bob_returns.list(ListReturnsRequest::default()).await.expect("list").is_empty());
    let asking_for_ada = ListReturnsRequest { customer_id: "ada".into(), ..ListReturnsRequest::default() };
    assert_eq!(bob_returns.list(asking_for_ada.clone()).await.expect_err("ada's").code(), Code::PermissionDenied);
    assert_eq!(staff.list(asking_for_ada).await.expect("staff").len(), 1);

    // Received only once approved; approved once; then received: refunded once, units back in stock.
    let early = staff.receive(&first.id, true).await.expect_err("not approved");
    assert_eq!(reason(&early), "RETURN_NOT_APPROVED");
    assert_eq!(staff.approve(&first.id).await.expect("approve").status(), ReturnStatus::Approved);
    assert_eq!(staff.approve(&first.id).await.expect("again").status(), ReturnStatus::Approved);
    assert_eq!(reason(&staff.reject(&first.id, "no").await.expect_err("decided")), "RETURN_NOT_REQUESTED");
    let refunded = staff.receive(&first.id, true).await.expect("receive");
    assert_eq!(
        (refunded.status(), refunded.refund_id.as_str(), refunded.restocked, amount(&refunded)),
        (ReturnStatus::Refunded, format!("return:{}", first.id).as_str(), true, 1450)
    );
    assert_eq!(server.fake.refunds_of(&order.payment_id), [(format!("return:{}", first.id), 1450)]);
    let received: ReturnReceived = outbox_event(&server.db, &first.id, "return.received").await;
    assert!(received.restock);
    assert_eq!(received.items.iter().map(|i| (i.product_id.as_str(), i.quantity)).collect::<Vec<_>>(), [(COFFEE, 1)]);
    assert_eq!(staff.receive(&first.id, false).await.expect("again"), refunded, "received once");
    assert_eq!(server.fake.refunds_of(&order.payment_id).len(), 1, "refunded once");
    assert_eq!(ada_returns.get(&first.id).await.expect("ada reads hers"), refunded);
    assert_eq!(returned(&ada.get(&order.id).await.expect("get")), [(COFFEE, 1), (TEA, 0)], "the order shows it");

    // One coffee is left to return; the rest of the order takes the rest of the total.
    let too_many = ada_returns.create(&order.id, &[(COFFEE, 2)], "").await.expect_err("one left");
    assert_eq!(violations(&too_many), [("items[0].quantity".to_owned(), "1 of 2 units are left to return".to_owned())]);
    let rest = ada_returns.create(&order.id, &[(TEA, 1), (COFFEE, 1)], "").await.expect("the rest");
    assert_eq!(amount(&rest), 3400 - 1450);
    // A rejection says why; its units may be asked for again.
    let no_reason = staff.reject(&rest.id, " ").await.expect_err("why");
    assert_eq!(violations(&no_reason)[0].0, "reason");
    let rejected = staff.reject(&rest.id, "the tea was opened").await.expect("reject");
    assert_eq!((rejected.status(), rejected.reject_reason.as_str()), (ReturnStatus::Rejected, "the tea was opened"));
    assert_eq!(staff.approve(&rest.id).await.expect_err("decided").code(), Code::FailedPrecondition);
    let coffee = ada_returns.create(&order.id, &[(COFFEE, 1)], "").await.expect("again");
    assert_eq!(amount(&coffee), 1450, "the tea is still not returned: its share only");
    staff.approve(&coffee.id).await.expect("approve");
    let kept = staff.receive(&coffee.id, false).await.expect("receive");
    assert_eq!((kept.status(), kept.restocked), (ReturnStatus::Refunded, false));
    let received: ReturnReceived = outbox_event(&server.db, &coffee.id, "return.received").await;
    assert!(!received.restock, "staff kept the units out of stock");
    let given_back: i64 = server.fake.refunds_of(&order.payment_id).iter().map(|(_, a)| a).sum();
    assert_eq!(given_back, 2 * 1450);
    // The order counts the units received back, not the rejected tea; its list entry too.
    let (listed, _) = ada.list(ListOrdersRequest::default()).await.expect("list");
    assert_eq!(returned(&listed[0]), [(COFFEE, 2), (TEA, 0)]);
    assert_eq!(status(&listed[0]), OrderStatus::Confirmed);

    // Listed newest first, by state too.
    let all = staff.list(ListReturnsRequest { order_id: order.id.clone(), ..ListReturnsRequest::default() }).await;
    let ids: Vec<String> = all.expect("list").into_iter().map(|r| r.id).collect();
    assert_eq!(ids, [coffee.id.clone(), rest.id.clone(), first.id.clone()]);
    let mut paged = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListReturnsRequest { page_size: 1, page_token, ..ListReturnsRequest::default() };
        let page = staff.inner.clone().list_returns(staff.request(request)).await.expect("page").into_inner();
        paged.extend(page.returns.into_iter().map(|r| r.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(paged, ids, "a page at a time");
    let bad_token = ListReturnsRequest { page_token: "x".into(), ..ListReturnsRequest::default() };
    assert_eq!(violations(&staff.list(bad_token).await.expect_err("bad token"))[0].0, "page_token");
    let rejected_only = ListReturnsRequest { status: ReturnStatus::Rejected as i32, ..ListReturnsRequest::default() };
    let ids: Vec<String> = staff.list(rejected_only).await.expect("list").into_iter().map(|r| r.id).collect();
    assert_eq!(ids, [rest.id]);
    server.stop().await;
}

async fn returns_are_refused_outside_the_window_and_for_what_was_not_ordered(db: Db) {
    let options = orders::SagaOptions { return_window_days: 14, ..options() };
    let issuer = std::sync::Arc::new(platform::testkit::TestIssuer::new().expect("issuer"));
    let server = Server::start_with(db, Fake::new(), Wiring::Direct, issuer, options).await;
    let ada = server.client("ada", false).await;
    let ada_returns = Returns::new(&server, "ada", &["orders:write"]).await;

    let late = ada.create(order_of(&[(TEA, 1)], "a1")).await.expect("create");
    deliver(&server, &late.id, 15).await;
    let closed = ada_returns.create(&late.id, &[(TEA, 1)], "").await.expect_err("too late");
    assert_eq!((closed.code(), reason(&closed)), (Code::FailedPrecondition, "RETURN_WINDOW_CLOSED".to_owned()));

    let mut declined = order_of(&[(TEA, 1)], "a2");
    declined.payment_method = DECLINED.into();
    let failed = ada.create(declined).await.expect("create");
    assert_eq!(status(&failed), OrderStatus::Failed);
    let not_sold = ada_returns.create(&failed.id, &[(TEA, 1)], "").await.expect_err("failed");
    assert_eq!(reason(&not_sold), "ORDER_NOT_DELIVERED");

    let order = ada.create(order_of(&[(TEA, 2)], "a3")).await.expect("create");
    deliver(&server, &order.id, 13).await;
    let bad =
        ada_returns.create(&order.id, &[(COFFEE, 1), (TEA, 3), (TEA, 0)], &"x".repeat(1001)).await.expect_err("bad");
    let fields: Vec<String> = violations(&bad).into_iter().map(|(field, _)| field).collect();
    assert_eq!(fields, ["items[0].product_id", "items[1].quantity", "items[2].quantity", "reason"]);
    let none = ada_returns.create(&order.id, &[], "").await.expect_err("nothing");
    assert_eq!(violations(&none)[0].0, "items");
    let fine = ada_returns.create(&order.id, &[(TEA, 2)], "").await.expect("within 14 days");
    assert_eq!(amount(&fine), 1000);

    // Ada changes her mind before sending the parcel: withdrawn (by her only), its units free again; a return
    // already received cannot be withdrawn.
    let bob_returns = Returns::new(&server, "bob", &["orders:write"]).await;
    assert_eq!(bob_returns.cancel(&fine.id).await.expect_err("ada's").code(), Code::NotFound);
    let withdrawn = ada_returns.cancel(&fine.id).await.expect("cancel");
    assert_eq!(withdrawn.status(), ReturnStatus::Cancelled);
    assert_eq!(ada_returns.cancel(&fine.id).await.expect("again"), withdrawn);
    let staff = Returns::new(&server, "sam", STAFF).await;
    assert_eq!(reason(&staff.approve(&fine.id).await.expect_err("withdrawn")), "RETURN_NOT_REQUESTED");
    let again = ada_returns.create(&order.id, &[(TEA, 2)], "").await.expect("the units are free");
    staff.approve(&again.id).await.expect("approve");
    assert_eq!(staff.receive(&again.id, true).await.expect("receive").status(), ReturnStatus::Refunded);
    assert_eq!(reason(&ada_returns.cancel(&again.id).await.expect_err("arrived")), "RETURN_NOT_OPEN");
    let cancelled: api::mercato::orders::v1::ReturnCancelled =
        outbox_event(&server.db, &fine.id, "return.cancelled").await;
    assert_eq!(cancelled.order_id, order.id);
    assert_eq!(violations(&staff.receive(" ", true).await.expect_err("no id"))[0].0, "id");
    let unknown = staff.get("no-such-return").await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    server.stop().await;
}

async fn a_shop_that_keeps_shipping_gives_it_back_with_the_whole_order_only(db: Db) {
    let options = orders::SagaOptions { return_shipping: ReturnShipping::WholeOrder, ..options() };
    let issuer = std::sync::Arc::new(platform::testkit::TestIssuer::new().expect("issuer"));
    let server = Server::start_with(db, Fake::new(), Wiring::Direct, issuer, options).await;
    let rates = ShippingRateServiceClient::new(connect(&server.url).await);
    let standard = ShippingRate {
        id: "standard".into(),
        name: "Standard".into(),
        countries: vec!["GB".into()],
        price: Some(api::common::Money { currency: "EUR".into(), amount_minor: 490 }),
        ..ShippingRate::default()
    };
    let request = authorized(
        Some(&server.staff_token(&["shipping:write"])),
        CreateShippingRateRequest { shipping_rate: Some(standard) },
    );
    rates.clone().create_shipping_rate(request).await.expect("a rate");
    let ada = server.client("ada", false).await;
    let ada_returns = Returns::new(&server, "ada", &["orders:write"]).await;

    // 2 × 14.50 + 5.00 + 4.90 shipping = 38.90.
    let mut placed = order_of(&[(COFFEE, 2), (TEA, 1)], "k1");
    placed.shipping_rate_id = "standard".into();
    let order = ada.create(placed).await.expect("create");
    assert_eq!(order.total.as_ref().map(|t| t.amount_minor), Some(3890), "{order:?}");
    deliver(&server, &order.id, 1).await;
    let coffee = ada_returns.create(&order.id, &[(COFFEE, 1)], "").await.expect("one coffee");
    assert_eq!(amount(&coffee), 1450, "its price, no share of the shipping");
    let rest = ada_returns.create(&order.id, &[(COFFEE, 1), (TEA, 1)], "").await.expect("the rest");
    assert_eq!(amount(&rest), 3890 - 1450, "the whole order is back: the shipping too");
    server.stop().await;
}

async fn a_refund_the_payments_service_cannot_make_now_is_made_later(db: Db) {
    let server = Server::start(db, Fake::new(), Wiring::Direct).await;
    let ada = server.client("ada", false).await;
    let ada_returns = Returns::new(&server, "ada", &["orders:write"]).await;
    let staff = Returns::new(&server, "sam", STAFF).await;
    let order = ada.create(order_of(&[(TEA, 2)], "a1")).await.expect("create");
    deliver(&server, &order.id, 0).await;

    // The payments service is down while the parcel is received: the return waits RECEIVED, and the refund is
    // made in the background.
    let waiting = ada_returns.create(&order.id, &[(TEA, 1)], "").await.expect("asked");
    staff.approve(&waiting.id).await.expect("approve");
    server.fake.state().transient.insert(Op::Refund, 1);
    let received = staff.receive(&waiting.id, true).await.expect("receive");
    assert_eq!((received.status(), received.refund_id.as_str()), (ReturnStatus::Received, ""));
    let refunded = ada_returns.refunded_in_time(&waiting.id).await;
    assert_eq!((refunded.status(), amount(&refunded)), (ReturnStatus::Refunded, 500));
    assert_eq!(server.fake.refunds_of(&order.payment_id), [(format!("return:{}", waiting.id), 500)]);

    // Staff gave 3.00 back by other means just before the parcel arrived, and the orders service has not heard
    // yet: the payments service refuses the return's 5.00, and the return says why; once the payment's event has
    // told the order, receiving it again refunds what is left.
    let last = ada_returns.create(&order.id, &[(TEA, 1)], "").await.expect("asked");
    staff.approve(&last.id).await.expect("approve");
    let payment = order.payment_id.clone();
    server.fake.state().payments.values_mut().find(|p| p.id == payment).expect("payment").refunded += 300;
    let refused = staff.receive(&last.id, true).await.expect("receive");
    assert_eq!((refused.status(), amount(&refused)), (ReturnStatus::Received, 500));
    assert!(refused.refund_failure.contains("left to refund"), "{}", refused.refund_failure);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(ada_returns.get(&last.id).await.expect("get"), refused, "a refused refund is not retried by itself");
    publish_refunded(&server, &order.id, &payment, "goodwill", 300, 800).await;
    for _ in 0..200 {
        let seen = ada.get(&order.id).await.expect("order").refunded.map_or(0, |m| m.amount_minor);
        if seen == 800 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let again = staff.receive(&last.id, true).await.expect("again");
    assert_eq!((again.status(), again.refund_failure.as_str(), amount(&again)), (ReturnStatus::Refunded, "", 200));
    let given_back: i64 = server.fake.refunds_of(&payment).iter().map(|(_, a)| a).sum();
    assert_eq!(given_back, 700, "the returns' 5.00 and 2.00; the 3.00 went by other means");
    server.stop().await;
}

async fn a_refund_that_cannot_be_made_for_long_shows_in_the_audit(db: Db) {
    let server = Server::start(db, Fake::new(), Wiring::Direct).await;
    let ada = server.client("ada", false).await;
    let ada_returns = Returns::new(&server, "ada", &["orders:write"]).await;
    let staff = Returns::new(&server, "sam", STAFF).await;
    let order = ada.create(order_of(&[(TEA, 1)], "a1")).await.expect("create");
    deliver(&server, &order.id, 0).await;
    let asked = ada_returns.create(&order.id, &[(TEA, 1)], "").await.expect("asked");
    staff.approve(&asked.id).await.expect("approve");
    server.fake.state().transient.insert(Op::Refund, u32::MAX);
    assert_eq!(staff.receive(&asked.id, false).await.expect("receive").status(), ReturnStatus::Received);
    let found = orders::audit(&server.db, std::time::Duration::ZERO).await.expect("audit");
    assert_eq!(found, [format!("return {} of order {} was received but its refund is not made", asked.id, order.id)]);
    // Once the payments service answers again, the background task makes it, and the audit is content.
    server.fake.state().transient.insert(Op::Refund, 0);
    assert_eq!(ada_returns.refunded_in_time(&asked.id).await.status(), ReturnStatus::Refunded);
    assert!(orders::audit(&server.db, std::time::Duration::ZERO).await.expect("audit").is_empty());
    server.stop().await;
}

on_both_engines!(
    a_refund_that_cannot_be_made_for_long_shows_in_the_audit,
    a_delivered_order_is_returned_in_parts_and_refunded_its_share,
    returns_are_refused_outside_the_window_and_for_what_was_not_ordered,
    a_refund_the_payments_service_cannot_make_now_is_made_later,
    a_shop_that_keeps_shipping_gives_it_back_with_the_whole_order_only,
);
