//! Analytics over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL: each
//! scenario is an async fn taking a `Db`, run once per engine. Events reach the service through an
//! `InProcessBus`, as in `mercato up`; the envelopes are built here as the publishing services build them.

use std::sync::Arc;
use std::time::Duration;

use analytics::store::Store;
use api::common::Money;
use api::mercato::analytics::v1::analytics_service_client::AnalyticsServiceClient;
use api::mercato::analytics::v1::{
    CurrencySales, CurrencySummary, DiscountCodeSales, GetDiscountCodeReportRequest, GetSalesReportRequest,
    GetSalesReportResponse, GetSummaryRequest, GetSummaryResponse, GetTopProductsRequest, GetTopProductsResponse,
    ProductRanking, RebuildAggregatesRequest, SalesInterval,
};
use api::mercato::cart::v1::CartItemAdded;
use api::mercato::orders::v1::{OrderCancelled, OrderConfirmed, OrderItem, OrderTax};
use api::mercato::payments::v1::PaymentCaptured;
use api::mercato::refunds::v1::RefundCompleted;
use platform::db::Db;
use platform::events::{EventBus, EventEnvelope, InProcessBus};
use platform::testkit::TestIssuer;
use platform::testkit::violated_fields as bad_fields;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

type Client = AnalyticsServiceClient<Channel>;

struct Server {
    client: Client,
    issuer: Arc<TestIssuer>,
    bus: InProcessBus,
    db: Db,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), analytics::Error>>,
}

impl Server {
    async fn start(db: Db) -> Self {
        db.migrate(&analytics::MIGRATOR, analytics::NAME).await.expect("migrate");
        let bus = InProcessBus::new();
        analytics::events::subscribe(&bus, Store::new(db.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let issuer = Arc::new(TestIssuer::new().expect("issuer"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(analytics::serve(listener, db.clone(), issuer.verifier(), shutdown.clone()));
        let client = AnalyticsServiceClient::new(platform::testkit::connect_when_up(&url, "analytics").await);
        Self { client, issuer, bus, db, shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("served cleanly");
    }

    /// The shop owner's token: reads reports.
    fn owner(&self) -> String {
        self.issuer.token("owner-1", &["analytics:read"], &["admin"])
    }

    /// An operator's token: may rebuild the aggregates.
    fn operator(&self) -> String {
        self.issuer.token("ops-1", &["analytics:read", "analytics:admin"], &["admin"])
    }

    async fn publish(&self, envelope: EventEnvelope) {
        self.bus.publish(envelope).await.expect("analytics consumed the event");
    }

    async fn sales(&self, token: &str, request: GetSalesReportRequest) -> Result<GetSalesReportResponse, Status> {
        Ok(self.client.clone().get_sales_report(with_token(request, token)).await?.into_inner())
    }

    async fn top(&self, token: &str, request: GetTopProductsRequest) -> Result<GetTopProductsResponse, Status> {
        Ok(self.client.clone().get_top_products(with_token(request, token)).await?.into_inner())
    }

    async fn summary(&self, token: &str, from: &str, to: &str) -> Result<GetSummaryResponse, Status> {
        let request = GetSummaryRequest { from: from.into(), to: to.into() };
        Ok(self.client.clone().get_summary(with_token(request, token)).await?.into_inner())
    }

    async fn codes(&self, token: &str, from: &str, to: &str, currency: &str) -> Result<Vec<DiscountCodeSales>, Status> {
        let request = GetDiscountCodeReportRequest { from: from.into(), to: to.into(), currency: currency.into() };
        Ok(self.client.clone().get_discount_code_report(with_token(request, token)).await?.into_inner().codes)
    }

    async fn rebuild(&self, token: &str) -> Result<i64, Status> {
        let request = with_token(RebuildAggregatesRequest {}, token);
        Ok(self.client.clone().rebuild_aggregates(request).await?.into_inner().replayed_events)
    }

    /// Every report of March 2025 (and the end of February) the scenarios look at.
    async fn reports(
        &self,
    ) -> (GetSalesReportResponse, GetTopProductsResponse, GetTopProductsResponse, GetSummaryResponse) {
        let owner = self.owner();
        let sales = self.sales(&owner, weekly("2025-02-26", "2025-03-12")).await.expect("sales");
        let by_units = self.top(&owner, top("2025-02-01", "2025-04-01", ProductRanking::Units, 0, "")).await;
        let by_revenue = self.top(&owner, top("2025-02-01", "2025-04-01", ProductRanking::Revenue, 0, "EUR")).await;
        let summary = self.summary(&owner, "2025-02-01", "2025-04-01").await.expect("summary");
        (sales, by_units.expect("top by units"), by_revenue.expect("top by revenue"), summary)
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    request
}

fn weekly(from: &str, to: &str) -> GetSalesReportRequest {
    GetSalesReportRequest {
        from: from.into(),
        to: to.into(),
        interval: SalesInterval::Week as i32,
        currency: String::new(),
    }
}

fn top(from: &str, to: &str, by: ProductRanking, limit: i32, currency: &str) -> GetTopProductsRequest {
    GetTopProductsRequest { from: from.into(), to: to.into(), by: by as i32, limit, currency: currency.into() }
}

// ---------------------------------------------------------------------------------------------------------
// Events, as the orders, payments, refunds and cart services publish them.

const COFFEE: &str = "p-coffee";
const TEA: &str = "p-tea";
const BOOK: &str = "p-book";
const MUG: &str = "p-mug";

fn money(currency: &str, amount_minor: i64) -> Option<Money> {
    Some(Money { currency: currency.into(), amount_minor })
}

/// An envelope of `event_type` at `hour` o'clock (UTC) on `date`.
fn envelope(id: &str, event_type: &str, date: &str, hour: i64, data: Vec<u8>) -> EventEnvelope {
    let day = analytics::domain::parse_date(date).expect("a test date");
    EventEnvelope {
        id: id.into(),
        source: "test".into(),
        r#type: event_type.into(),
        subject: id.into(),
        time: Some(prost_types::Timestamp { seconds: day * 86_400 + hour * 3_600, nanos: 0 }),
        data_content_type: "application/protobuf".into(),
        data,
        traceparent: String::new(),
    }
}

fn item(product_id: &str, name: &str, quantity: i32, currency: &str, unit_minor: i64) -> OrderItem {
    OrderItem {
        product_id: product_id.into(),
        sku: format!("SKU-{product_id}"),
        name: name.into(),
        quantity,
        unit_price: money(currency, unit_minor),
        line_total: money(currency, unit_minor * i64::from(quantity)),
        ..OrderItem::default()
    }
}

fn confirmed(id: &str, date: &str, hour: i64, items: Vec<OrderItem>, from_cart: bool) -> EventEnvelope {
    let currency = items[0].line_total.as_ref().expect("line total").currency.clone();
    let total: i64 = items.iter().map(|i| i.line_total.as_ref().expect("line total").amount_minor).sum();
    let payload = OrderConfirmed {
        order_id: id.into(),
        customer_id: "c".into(),
        payment_id: format!("pay-{id}"),
        items,
        total: money(&currency, total),
        shipping_address: None,
        from_cart,
        ..OrderConfirmed::default()
    };
    envelope(&format!("ev-confirmed-{id}"), "order.confirmed", date, hour, payload.encode_to_vec())
}

/// `order.confirmed` of `items` with a discount code (SAVE-10) that took `discount` off their sum.
fn discounted(id: &str, date: &str, items: Vec<OrderItem>, discount: i64) -> EventEnvelope {
    shipped(id, date, items, "SAVE-10", discount, 0)
}

/// `order.confirmed` of `items` with discount code `code` (none when empty) that took `discount` off their sum,
/// and `shipping` paid on top (a shipping rate when it is not 0).
fn shipped(id: &str, date: &str, items: Vec<OrderItem>, code: &str, discount: i64, shipping: i64) -> EventEnvelope {
    let currency = items[0].line_total.as_ref().expect("line total").currency.clone();
    let subtotal: i64 = items.iter().map(|i| i.line_total.as_ref().expect("line total").amount_minor).sum();
    let payload = OrderConfirmed {
        order_id: id.into(),
        customer_id: "c".into(),
        payment_id: format!("pay-{id}"),
        items,
        total: money(&currency, subtotal - discount + shipping),
        discount: money(&currency, discount),
        discount_code: code.into(),
        shipping: money(&currency, shipping),
        shipping_rate_id: if shipping > 0 { "standard".into() } else { String::new() },
        ..OrderConfirmed::default()
    };
    envelope(&format!("ev-confirmed-{id}"), "order.confirmed", date, 12, payload.encode_to_vec())
}

fn cancelled(id: &str, date: &str, items: Vec<OrderItem>) -> EventEnvelope {
    let currency = items[0].line_total.as_ref().expect("line total").currency.clone();
    let total: i64 = items.iter().map(|i| i.line_total.as_ref().expect("line total").amount_minor).sum();
    let payload = OrderCancelled {
        order_id: id.into(),
        customer_id: "c".into(),
        items,
        payment_id: format!("pay-{id}"),
        refunded: money(&currency, total),
        reason: "changed my mind".into(),
    };
    envelope(&format!("ev-cancelled-{id}"), "order.cancelled", date, 9, payload.encode_to_vec())
}

fn captured(order_id: &str, date: &str, currency: &str, minor: i64) -> EventEnvelope {
    let payload = PaymentCaptured {
        payment_id: format!("pay-{order_id}"),
        order_id: order_id.into(),
        customer_id: "c".into(),
        amount: money(currency, minor),
        processor_reference: "ch_1".into(),
    };
    envelope(&format!("ev-captured-{order_id}"), "payment.captured", date, 8, payload.encode_to_vec())
}

fn refunded(refund_id: &str, date: &str, currency: &str, minor: i64) -> EventEnvelope {
    let payload = RefundCompleted {
        refund_id: refund_id.into(),
        payment_id: "pay-o1".into(),
        amount: money(currency, minor),
        reason: "broken".into(),
    };
    envelope(&format!("ev-refund-{refund_id}"), "refund.completed", date, 15, payload.encode_to_vec())
}

fn item_added(id: &str, date: &str, customer_id: &str, cart_was_empty: bool) -> EventEnvelope {
    let payload =
        CartItemAdded { customer_id: customer_id.into(), product_id: TEA.into(), quantity: 1, cart_was_empty };
    envelope(&format!("ev-cart-{id}"), "cart.item_added", date, 7, payload.encode_to_vec())
}

/// A month of a small shop, in EUR and USD:
///
/// | day              | what happens                                                                     |
/// | ---------------- | -------------------------------------------------------------------------------- |
/// | Fri 2025-02-28   | o0: 1 mug, 12.00 EUR, ordered directly                                           |
/// | Mon 2025-03-03   | alice starts a cart (and adds more); o1 from it: 2 coffee + 3 tea, 35.00 EUR     |
/// | Tue 2025-03-04   | bob starts a cart; o2 from it: 1 book, 25.00 USD; o3 direct: 1 coffee, 10.00 EUR |
/// | Sun 2025-03-09   | 5.00 EUR of o1 refunded                                                          |
/// | Mon 2025-03-10   | o3 cancelled; carol starts a cart; o4 direct: 9 tea, 45.00 EUR                   |
///
/// The coffee's name changed between o1 and o3; o1's confirmation arrives last, a week late.
fn history() -> Vec<EventEnvelope> {
    vec![
        confirmed("o0", "2025-02-28", 12, vec![item(MUG, "Mug", 1, "EUR", 1200)], false),
        item_added("a1", "2025-03-03", "alice", true),
        item_added("a2", "2025-03-03", "alice", false),
        captured("o1", "2025-03-03", "EUR", 3500),
        item_added("b1", "2025-03-04", "bob", true),
        captured("o2", "2025-03-04", "USD", 2500),
        confirmed("o2", "2025-03-04", 10, vec![item(BOOK, "Book", 1, "USD", 2500)], true),
        captured("o3", "2025-03-04", "EUR", 1000),
        confirmed("o3", "2025-03-04", 11, vec![item(COFFEE, "Coffee, new blend", 1, "EUR", 1000)], false),
        refunded("r1", "2025-03-09", "EUR", 500),
        cancelled("o3", "2025-03-10", vec![item(COFFEE, "Coffee, new blend", 1, "EUR", 1000)]),
        item_added("c1", "2025-03-10", "carol", true),
        confirmed("o4", "2025-03-10", 13, vec![item(TEA, "Tea", 9, "EUR", 500)], false),
        confirmed(
            "o1",
            "2025-03-03",
            9,
            vec![item(COFFEE, "Coffee", 2, "EUR", 1000), item(TEA, "Tea", 3, "EUR", 500)],
            true,
        ),
    ]
}

/// (currency, orders, gross, refunded, net, cancelled orders, cancelled, refunds, captured) of a sales entry.
type SalesRow = (String, i64, i64, i64, i64, i64, i64, i64, i64);

fn amount(money: &Option<Money>, currency: &str) -> i64 {
    let money = money.as_ref().expect("an amount");
    assert_eq!(money.currency, currency, "amounts are in their entry's currency");
    money.amount_minor
}

fn sales_row(s: &CurrencySales) -> SalesRow {
    let c = s.currency.as_str();
    (
        s.currency.clone(),
        s.orders,
        amount(&s.gross, c),
        amount(&s.refunded, c),
        amount(&s.net, c),
        s.cancelled_orders,
        amount(&s.cancelled, c),
        s.refunds,
        amount(&s.captured, c),
    )
}

fn buckets(report: &GetSalesReportResponse) -> Vec<(String, String, Vec<SalesRow>)> {
    report.buckets.iter().map(|b| (b.start.clone(), b.end.clone(), b.sales.iter().map(sales_row).collect())).collect()
}

fn row(currency: &str, figures: [i64; 8]) -> SalesRow {
    let [orders, gross, refunded, net, cancelled_orders, cancelled, refunds, captured] = figures;
    (currency.into(), orders, gross, refunded, net, cancelled_orders, cancelled, refunds, captured)
}

fn bucket(start: &str, end: &str, rows: Vec<SalesRow>) -> (String, String, Vec<SalesRow>) {
    (start.into(), end.into(), rows)
}

/// (product id, sku, name, units, revenue per currency) of a top product.
type ProductRow = (String, String, String, i64, Vec<(String, i64)>);

/// Every top product of a response, in order.
fn products(response: &GetTopProductsResponse) -> Vec<ProductRow> {
    response
        .products
        .iter()
        .map(|p| {
            let revenue = p.revenue.iter().map(|m| (m.currency.clone(), m.amount_minor)).collect();
            (p.product_id.clone(), p.sku.clone(), p.name.clone(), p.units, revenue)
        })
        .collect()
}

/// The expected row of a product (its sku is `SKU-<id>`).
fn product(id: &str, name: &str, units: i64, revenue: &[(&str, i64)]) -> ProductRow {
    let revenue = revenue.iter().map(|(c, m)| ((*c).to_owned(), *m)).collect();
    (id.into(), format!("SKU-{id}"), name.into(), units, revenue)
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

async fn reports_show_what_the_shop_sold(db: Db) {
    let server = Server::start(db).await;
    for event in history() {
        server.publish(event).await;
    }
    let (weekly, by_units, by_revenue, summary) = server.reports().await;

    // Weeks from Wednesday 2025-02-26: the first and last are cut to the period; Sunday's refund belongs to
    // the week of Monday 03-03; every bucket lists both currencies.
    assert_eq!(weekly.interval, SalesInterval::Week as i32);
    assert_eq!((weekly.from.as_str(), weekly.to.as_str()), ("2025-02-26", "2025-03-12"));
    assert_eq!(
        buckets(&weekly),
        [
            bucket("2025-02-26", "2025-03-03", vec![row("EUR", [1, 1200, 0, 1200, 0, 0, 0, 0]), row("USD", [0; 8])]),
            bucket(
                "2025-03-03",
                "2025-03-10",
                vec![row("EUR", [2, 4500, 500, 4000, 0, 0, 1, 4500]), row("USD", [1, 2500, 0, 2500, 0, 0, 0, 2500])]
            ),
            bucket(
                "2025-03-10",
                "2025-03-12",
                vec![row("EUR", [1, 4500, 1000, 3500, 1, 1000, 0, 0]), row("USD", [0; 8])]
            ),
        ]
    );

    // Days, one currency: empty days are there, so a chart has no gaps.
    let request = GetSalesReportRequest {
        from: "2025-03-02".into(),
        to: "2025-03-06".into(),
        interval: SalesInterval::Day as i32,
        currency: "USD".into(),
    };
    let daily = server.sales(&server.owner(), request).await.expect("daily");
    assert_eq!(
        buckets(&daily),
        [
            bucket("2025-03-02", "2025-03-03", vec![row("USD", [0; 8])]),
            bucket("2025-03-03", "2025-03-04", vec![row("USD", [0; 8])]),
            bucket("2025-03-04", "2025-03-05", vec![row("USD", [1, 2500, 0, 2500, 0, 0, 0, 2500])]),
            bucket("2025-03-05", "2025-03-06", vec![row("USD", [0; 8])]),
        ]
    );

    // Months.
    let request = GetSalesReportRequest {
        from: "2025-02-01".into(),
        to: "2025-04-01".into(),
        interval: SalesInterval::Month as i32,
        currency: String::new(),
    };
    let monthly = server.sales(&server.owner(), request).await.expect("monthly");
    assert_eq!(
        buckets(&monthly),
        [
            bucket("2025-02-01", "2025-03-01", vec![row("EUR", [1, 1200, 0, 1200, 0, 0, 0, 0]), row("USD", [0; 8])]),
            bucket(
                "2025-03-01",
                "2025-04-01",
                vec![
                    row("EUR", [3, 9000, 1500, 7500, 1, 1000, 1, 4500]),
                    row("USD", [1, 2500, 0, 2500, 0, 0, 0, 2500])
                ]
            ),
        ]
    );

    // Top products: the cancelled coffee is taken back; book and mug tie on units and go by id; the coffee
    // shows its latest name although o1's event arrived last.
    assert_eq!(
        products(&by_units),
        [
            product(TEA, "Tea", 12, &[("EUR", 6000)]),
            product(COFFEE, "Coffee, new blend", 2, &[("EUR", 2000)]),
            product(BOOK, "Book", 1, &[("USD", 2500)]),
            product(MUG, "Mug", 1, &[("EUR", 1200)]),
        ]
    );
    assert_eq!(
        products(&by_revenue),
        [
            product(TEA, "Tea", 12, &[("EUR", 6000)]),
            product(COFFEE, "Coffee, new blend", 2, &[("EUR", 2000)]),
            product(MUG, "Mug", 1, &[("EUR", 1200)]),
        ]
    );
    let owner = server.owner();
    let two = server.top(&owner, top("2025-02-01", "2025-04-01", ProductRanking::Unspecified, 2, "")).await;
    assert_eq!(products(&two.expect("limit 2")).len(), 2);
    let last_days = server.top(&owner, top("2025-03-10", "2025-03-12", ProductRanking::Units, 0, "")).await;
    assert_eq!(
        products(&last_days.expect("after the cancellation")),
        [product(TEA, "Tea", 9, &[("EUR", 4500)])],
        "a product with only a cancellation in the period is not a top seller"
    );

    // The summary: EUR 4 orders, 102.00 gross, 15.00 back (a refund and a cancellation).
    let eur = CurrencySummary {
        currency: "EUR".into(),
        orders: 4,
        gross: money("EUR", 10_200),
        refunded: money("EUR", 1_500),
        net: money("EUR", 8_700),
        cancelled_orders: 1,
        cancelled: money("EUR", 1_000),
        refunds: 1,
        average_order_value: money("EUR", 2_550),
        refund_rate_bps: 1_471, // 15.00 / 102.00 = 14.706%
        refund_count_rate_bps: 5_000,
        captured: money("EUR", 4_500),
        discounted_orders: 0,
        discount: money("EUR", 0),
        shipping: money("EUR", 0),
        tax: money("EUR", 0),
    };
    let usd = CurrencySummary {
        currency: "USD".into(),
        orders: 1,
        gross: money("USD", 2_500),
        refunded: money("USD", 0),
        net: money("USD", 2_500),
        cancelled_orders: 0,
        cancelled: money("USD", 0),
        refunds: 0,
        average_order_value: money("USD", 2_500),
        refund_rate_bps: 0,
        refund_count_rate_bps: 0,
        captured: money("USD", 2_500),
        discounted_orders: 0,
        discount: money("USD", 0),
        shipping: money("USD", 0),
        tax: money("USD", 0),
    };
    assert_eq!(
        summary,
        GetSummaryResponse {
            from: "2025-02-01".into(),
            to: "2025-04-01".into(),
            currencies: vec![eur, usd],
            carts_started: 3,
            orders_from_carts: 2,
            cart_conversion_bps: 6_667,
        }
    );
    let quiet = server.summary(&server.owner(), "2025-01-01", "2025-02-01").await.expect("a quiet month");
    assert_eq!((quiet.currencies.len(), quiet.carts_started, quiet.cart_conversion_bps), (0, 0, 0));
    server.stop().await;
}

async fn a_redelivered_event_counts_once(db: Db) {
    let server = Server::start(db).await;
    for event in history() {
        server.publish(event).await;
    }
    let before = server.reports().await;
    // At-least-once delivery: every event again, and one of them a third time.
    for event in history() {
        server.publish(event).await;
    }
    server.publish(history().remove(3)).await;
    assert_eq!(server.reports().await, before, "redeliveries change no report");
    let store = Store::new(server.db.clone());
    let again = analytics::events::consume(&store, &history()[0]).await.expect("consumed");
    assert!(!again, "the consumer knows it has seen it");
    assert_eq!(server.rebuild(&server.operator()).await.expect("rebuild"), 14, "the history holds each event once");
    server.stop().await;
}

/// The service forgets the events it handled once they are older than the retention (a month), when it starts
/// and hourly after: its inbox does not grow for ever, and what it handled lately is still deduplicated.
async fn the_inbox_forgets_events_handled_long_ago(db: Db) {
    db.migrate(&analytics::MIGRATOR, analytics::NAME).await.expect("migrate");
    let day = 24 * 3600 * 1_000_000_i64;
    let now = platform::time::now_micros();
    platform::with_db!(&db, pool => {
        for (event_id, handled) in [("old-1", now - 31 * day), ("old-2", now - 40 * day), ("recent", now - 29 * day)] {
            sqlx::query("INSERT INTO inbox (consumer, event_id, handle_time) VALUES ($1, $2, $3)")
                .bind(analytics::events::CONSUMER).bind(event_id).bind(handled)
                .execute(pool).await.expect("inbox row");
        }
    });
    let server = Server::start(db).await;
    let mut left = Vec::new();
    for _ in 0..100 {
        left = platform::with_db!(&server.db, pool => {
            sqlx::query_scalar::<_, String>("SELECT event_id FROM inbox ORDER BY event_id").fetch_all(pool).await.expect("inbox")
        });
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, ["recent"], "events handled over a month ago are forgotten, the rest kept");
    server.stop().await;
}

/// Deliveries arriving together (several relays, a broker's redeliveries) are recorded together: the reports
/// are those of the events delivered one by one, each event counted once even when two copies of it arrive in
/// the same moment.
async fn events_arriving_together_count_as_one_by_one(db: Db) {
    let one_by_one = Server::start(db).await;
    for event in history() {
        one_by_one.publish(event).await;
    }
    let expected = one_by_one.reports().await;

    let (db, _dir) = another_database_like(&one_by_one.db).await;
    let server = Arc::new(Server::start(db).await);
    let mut deliveries = Vec::new();
    for copy in 0..3 {
        for event in history().into_iter().skip(copy * 2) {
            let server = server.clone();
            deliveries.push(tokio::spawn(async move { server.publish(event).await }));
        }
    }
    for delivery in deliveries {
        delivery.await.expect("every delivery is acknowledged");
    }
    assert_eq!(server.reports().await, expected, "the same reports as one event at a time");
    assert_eq!(server.rebuild(&server.operator()).await.expect("rebuild"), 14, "the history holds each event once");
    assert_eq!(server.reports().await, expected, "and a rebuild agrees");
    one_by_one.stop().await;
    Arc::try_unwrap(server).ok().expect("every delivery has ended").stop().await;
}

/// An event the database refuses (PostgreSQL stores no NUL in text; SQLite does) among others arriving with it:
/// the others are counted all the same, and only its own delivery fails.
async fn an_event_the_database_refuses_fails_alone(db: Db) {
    let poison = || confirmed("order-nul", "2025-01-20", 9, vec![item("prod-nul", "Bad\0name", 1, "EUR", 100)], false);
    let one_by_one = Server::start(db).await;
    for event in history() {
        one_by_one.publish(event).await;
    }
    let accepted_alone = one_by_one.bus.publish(poison()).await.is_ok();
    let expected = one_by_one.reports().await;

    let (db, _dir) = another_database_like(&one_by_one.db).await;
    let server = Arc::new(Server::start(db).await);
    let mut deliveries = Vec::new();
    for event in history().into_iter().chain([poison()]) {
        let server = server.clone();
        let id = event.id.clone();
        deliveries.push(tokio::spawn(async move { (id, server.bus.publish(event).await.is_ok()) }));
    }
    for delivery in deliveries {
        let (id, accepted) = delivery.await.expect("join");
        let expected = id != "ev-confirmed-order-nul" || accepted_alone;
        assert_eq!(accepted, expected, "event {id}: accepted as when it came alone");
    }
    assert_eq!(server.reports().await, expected, "every other event counted");
    one_by_one.stop().await;
    Arc::try_unwrap(server).ok().expect("every delivery has ended").stop().await;
}

/// A rebuild replays the history 500 events at a time: big orders make a page of thousands of product rows, more
/// values than one SQL statement may carry (SQLite takes 32766), so the aggregates are written in chunks.
async fn a_rebuild_of_big_orders_succeeds(db: Db) {
    let server = Server::start(db).await;
    for n in 0..48 {
        let items = (0..100).map(|p| item(&format!("prod-{n}-{p}"), "Thing", 1, "EUR", 100)).collect();
        server.publish(confirmed(&format!("big-{n}"), "2025-01-10", 9, items, false)).await;
    }
    let before = server.reports().await;
    assert_eq!(server.rebuild(&server.operator()).await.expect("rebuild"), 48, "every order replayed");
    assert_eq!(server.reports().await, before, "the same reports");
    server.stop().await;
}

/// A new, empty database on the engine of `db` (with the directory that holds it, for SQLite).
async fn another_database_like(db: &Db) -> (Db, Option<platform::testkit::TempDir>) {
    match db {
        Db::Sqlite(_) => {
            let (db, dir) = platform::testkit::sqlite("analytics").await.expect("sqlite");
            (db, Some(dir))
        }
        Db::Postgres(_) => (platform::testkit::postgres("analytics").await.expect("PostgreSQL"), None),
    }
}

async fn a_rebuild_reproduces_the_reports(db: Db) {
    let server = Server::start(db).await;
    assert_eq!(server.rebuild(&server.operator()).await.expect("empty history"), 0);
    for event in history() {
        server.publish(event).await;
    }
    let before = server.reports().await;
    assert_eq!(server.rebuild(&server.operator()).await.expect("rebuild"), 14);
    assert_eq!(server.reports().await, before, "a rebuild from the history gives exactly the same reports");

    // Damaged aggregates are repaired by a rebuild: it recomputes, it does not keep.
    platform::with_db!(&server.db, pool => {
        sqlx::query("DELETE FROM daily_sales WHERE currency = 'EUR'").execute(pool).await.expect("damage");
        sqlx::query("UPDATE products SET name = 'wrong'").execute(pool).await.expect("damage");
    });
    assert_ne!(server.reports().await, before);
    assert_eq!(server.rebuild(&server.operator()).await.expect("rebuild"), 14);
    assert_eq!(server.reports().await, before);

    // Events after a rebuild add up as before.
    server.publish(confirmed("o5", "2025-03-11", 10, vec![item(MUG, "Mug", 2, "EUR", 1200)], false)).await;
    let summary = server.summary(&server.owner(), "2025-02-01", "2025-04-01").await.expect("summary");
    assert_eq!((summary.currencies[0].orders, amount(&summary.currencies[0].gross, "EUR")), (5, 12_600));

    let err = server.rebuild(&server.owner()).await.expect_err("a reader cannot rebuild");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    server.stop().await;
}

async fn discounts_shipping_and_tax_are_reported_beside_what_orders_cost(db: Db) {
    let server = Server::start(db).await;
    // The day's row exists before the discounted order adds to it.
    server.publish(confirmed("d2", "2025-03-04", 13, vec![item(MUG, "Mug", 1, "EUR", 1200)], false)).await;
    server.publish(discounted("d1", "2025-03-04", vec![item(MUG, "Mug", 2, "EUR", 1200)], 240)).await;
    server.publish(shipped("d3", "2025-03-04", vec![item(MUG, "Mug", 1, "EUR", 1200)], "", 0, 490)).await;
    // An order whose total includes tax at two rates.
    let part = |rate_basis_points, taxable, tax| OrderTax {
        name: "MwSt.".into(),
        rate_basis_points,
        taxable: money("EUR", taxable),
        amount: money("EUR", tax),
    };
    let taxed = OrderConfirmed {
        order_id: "d4".into(),
        customer_id: "c".into(),
        payment_id: "pay-d4".into(),
        items: vec![item(MUG, "Mug", 2, "EUR", 1200)],
        total: money("EUR", 2400),
        taxes: vec![part(1900, 1400, 224), part(700, 1000, 65)],
        ..OrderConfirmed::default()
    };
    server.publish(envelope("ev-confirmed-d4", "order.confirmed", "2025-03-04", 14, taxed.encode_to_vec())).await;
    let owner = server.owner();
    let daily = GetSalesReportRequest {
        from: "2025-03-04".into(),
        to: "2025-03-05".into(),
        interval: SalesInterval::Day as i32,
        currency: "EUR".into(),
    };
    let report = server.sales(&owner, daily.clone()).await.expect("sales");
    let day = &report.buckets[0].sales[0];
    assert_eq!(
        (day.orders, amount(&day.gross, "EUR"), day.discounted_orders, amount(&day.discount, "EUR")),
        (4, 2160 + 1200 + 1690 + 2400, 1, 240),
        "gross is what the orders cost; the discount is beside it"
    );
    assert_eq!(amount(&day.shipping, "EUR"), 490, "what orders paid for shipping (in gross)");
    assert_eq!(amount(&day.tax, "EUR"), 224 + 65, "the tax their totals include (in gross)");
    let summary = server.summary(&owner, "2025-03-01", "2025-04-01").await.expect("summary");
    let eur = &summary.currencies[0];
    assert_eq!((eur.discounted_orders, amount(&eur.discount, "EUR"), amount(&eur.shipping, "EUR")), (1, 240, 490));
    assert_eq!(amount(&eur.tax, "EUR"), 289);
    assert_eq!(server.rebuild(&server.operator()).await.expect("rebuild"), 4);
    assert_eq!(server.sales(&owner, daily).await.expect("sales"), report, "a rebuild finds the same");
    server.stop().await;
}

async fn each_discount_code_is_reported_with_what_it_brought_in(db: Db) {
    let server = Server::start(db).await;
    let mugs = |n| vec![item(MUG, "Mug", n, "EUR", 1200)];
    server.publish(shipped("c1", "2025-03-04", mugs(2), "SUMMER", 240, 0)).await;
    server.publish(shipped("c2", "2025-03-05", mugs(1), "WELCOME", 500, 0)).await;
    // The same code the same day: the day's row exists and is added to.
    server.publish(shipped("c3", "2025-03-04", mugs(1), "SUMMER", 120, 0)).await;
    server.publish(shipped("c4", "2025-03-06", vec![item(MUG, "Mug", 1, "USD", 1500)], "SUMMER", 150, 0)).await;
    server.publish(confirmed("c5", "2025-03-06", 13, mugs(3), false)).await;
    // Outside the period asked for.
    server.publish(shipped("c6", "2025-04-02", mugs(1), "WELCOME", 500, 0)).await;
    let owner = server.owner();

    let report = server.codes(&owner, "2025-03-01", "2025-04-01", "").await.expect("codes");
    let rows: Vec<_> = report
        .iter()
        .map(|c| {
            (
                c.code.as_str(),
                c.currency.as_str(),
                c.orders,
                amount(&c.discount, &c.currency),
                amount(&c.gross, &c.currency),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("SUMMER", "EUR", 2, 360, 2160 + 1080), ("SUMMER", "USD", 1, 150, 1350), ("WELCOME", "EUR", 1, 500, 700),],
        "the most used first; an order without a code is in none"
    );
    let euros = server.codes(&owner, "2025-03-01", "2025-04-01", "EUR").await.expect("codes");
    assert_eq!(euros.iter().map(|c| c.code.as_str()).collect::<Vec<_>>(), ["SUMMER", "WELCOME"]);
    let bad = server.codes(&owner, "March", "2025-04-01", "euro").await.expect_err("bad");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let customer = server.issuer.token("c-1", &["orders:write"], &["customer"]);
    assert_eq!(server.codes(&customer, "", "", "").await.expect_err("not staff").code(), Code::PermissionDenied);
    assert_eq!(server.rebuild(&server.operator()).await.expect("rebuild"), 6);
    assert_eq!(
        server.codes(&owner, "2025-03-01", "2025-04-01", "").await.expect("codes"),
        report,
        "a rebuild finds the same"
    );
    server.stop().await;
}

async fn events_during_a_rebuild_count_exactly_once(db: Db) {
    let server = Arc::new(Server::start(db).await);
    let events = history();
    let (first, second) = events.split_at(7);
    for event in first {
        server.publish(event.clone()).await;
    }
    // The rest arrives while rebuilds run: each event is either replayed or applied after, never both.
    let publisher = {
        let server = server.clone();
        let rest = second.to_vec();
        tokio::spawn(async move {
            for event in rest {
                server.publish(event).await;
            }
        })
    };
    let mut rebuilds = Vec::new();
    for _ in 0..3 {
        let server = server.clone();
        rebuilds.push(tokio::spawn(async move { server.rebuild(&server.operator()).await.expect("rebuild") }));
    }
    publisher.await.expect("publisher");
    for rebuild in rebuilds {
        let replayed = rebuild.await.expect("join");
        assert!((7..=14).contains(&replayed), "{replayed}");
    }
    let summary = server.summary(&server.owner(), "2025-02-01", "2025-04-01").await.expect("summary");
    let eur = &summary.currencies[0];
    assert_eq!((eur.orders, amount(&eur.gross, "EUR"), amount(&eur.refunded, "EUR")), (4, 10_200, 1_500));
    assert_eq!((summary.carts_started, summary.orders_from_carts), (3, 2));
    let settled = server.reports().await;
    assert_eq!(server.rebuild(&server.operator()).await.expect("rebuild"), 14);
    assert_eq!(server.reports().await, settled);
    let Ok(server) = Arc::try_unwrap(server) else { panic!("server still shared") };
    server.stop().await;
}

async fn unreadable_events_are_refused_and_change_nothing(db: Db) {
    let server = Server::start(db).await;
    let mut garbage = captured("x", "2025-03-03", "EUR", 100);
    garbage.data = vec![0xff, 0xff, 0xff];
    server.bus.publish(garbage).await.expect_err("a payload that does not decode");
    let mut timeless = captured("y", "2025-03-03", "EUR", 100);
    timeless.time = None;
    server.bus.publish(timeless).await.expect_err("an event without a time");
    let mut no_total = confirmed("z", "2025-03-03", 10, vec![item(MUG, "Mug", 1, "EUR", 1200)], false);
    no_total.data = OrderConfirmed { order_id: "z".into(), ..OrderConfirmed::default() }.encode_to_vec();
    server.bus.publish(no_total).await.expect_err("an order without a total");
    assert_eq!(server.rebuild(&server.operator()).await.expect("rebuild"), 0, "nothing was kept");

    // The same id, readable this time (a fixed publisher), is counted: refusals leave no inbox entry.
    server.publish(captured("x", "2025-03-03", "EUR", 100)).await;
    let summary = server.summary(&server.owner(), "2025-03-01", "2025-04-01").await.expect("summary");
    assert_eq!(amount(&summary.currencies[0].captured, "EUR"), 100);
    server.stop().await;
}

async fn the_default_period_is_the_last_30_days(db: Db) {
    let server = Server::start(db).await;
    let now = platform::time::now_micros();
    let today = analytics::domain::day_of_micros(now);
    let mut event = captured("now", "1970-01-01", "EUR", 700);
    event.time = Some(platform::time::timestamp(now));
    server.publish(event).await;
    let report = server.sales(&server.owner(), GetSalesReportRequest::default()).await.expect("defaults");
    assert_eq!(report.interval, SalesInterval::Day as i32, "days by default");
    assert_eq!(report.to, analytics::domain::format_date(today + 1), "today included");
    assert_eq!(report.from, analytics::domain::format_date(today - 29));
    assert_eq!(report.buckets.len(), 30);
    let last = report.buckets.last().expect("a last day");
    assert_eq!(last.start, analytics::domain::format_date(today));
    assert_eq!(amount(&last.sales[0].captured, "EUR"), 700, "today's event is in today's bucket");
    let summary = server.summary(&server.owner(), "", "").await.expect("defaults");
    assert_eq!((summary.from.as_str(), summary.to.as_str()), (report.from.as_str(), report.to.as_str()));
    let top = server.top(&server.owner(), GetTopProductsRequest::default()).await.expect("defaults");
    assert_eq!((top.from, top.products.len()), (report.from, 0));
    server.stop().await;
}

async fn only_readers_see_reports(db: Db) {
    let server = Server::start(db).await;
    let customer = server.issuer.token("alice", &["cart:write", "orders:read", "orders:write"], &["customer"]);
    let err = server.sales(&customer, GetSalesReportRequest::default()).await.expect_err("customer");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = server.top(&customer, GetTopProductsRequest::default()).await.expect_err("customer");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = server.summary(&customer, "", "").await.expect_err("customer");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = server.rebuild(&customer).await.expect_err("customer");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let mut client = server.client.clone();
    let err = client.get_summary(Request::new(GetSummaryRequest::default())).await.expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = server.summary("not-a-token", "", "").await.expect_err("forged");
    assert_eq!(err.code(), Code::Unauthenticated);
    server.summary(&server.owner(), "", "").await.expect("analytics:read is enough to read");
    server.stop().await;
}

async fn bad_parameters_name_their_field(db: Db) {
    let server = Server::start(db).await;
    let owner = server.owner();
    let sales = |from: &str, to: &str, interval: i32, currency: &str| GetSalesReportRequest {
        from: from.into(),
        to: to.into(),
        interval,
        currency: currency.into(),
    };
    let cases = [
        (sales("2025-02-30", "", 0, ""), vec!["from"]),
        (sales("", "03/01/2025", 0, ""), vec!["to"]),
        (sales("2025-03-01", "2025-03-01", 0, ""), vec!["from"]),
        (sales("2025-03-02", "2025-03-01", 0, ""), vec!["from"]),
        (sales("2020-01-01", "2025-01-01", 0, ""), vec!["from"]),
        (sales("2025-03-01", "2025-04-01", 9, ""), vec!["interval"]),
        (sales("2025-03-01", "2025-04-01", 1, "euro"), vec!["currency"]),
        (sales("nope", "2025-04-01", -1, "eur"), vec!["from", "interval", "currency"]),
    ];
    for (request, fields) in cases {
        let err = server.sales(&owner, request.clone()).await.expect_err("refused");
        assert_eq!(bad_fields(&err), fields, "{request:?}");
    }
    let cases = [
        (top("", "", ProductRanking::Units, 101, ""), vec!["limit"]),
        (top("", "", ProductRanking::Units, -1, ""), vec!["limit"]),
        (top("", "", ProductRanking::Revenue, 10, ""), vec!["currency"]),
        (top("2025-13-01", "", ProductRanking::Units, 10, ""), vec!["from"]),
        (GetTopProductsRequest { by: 7, ..GetTopProductsRequest::default() }, vec!["by"]),
    ];
    for (request, fields) in cases {
        let err = server.top(&owner, request.clone()).await.expect_err("refused");
        assert_eq!(bad_fields(&err), fields, "{request:?}");
    }
    server.top(&owner, top("", "", ProductRanking::Units, 100, "")).await.expect("100 is the most");
    server.top(&owner, top("", "", ProductRanking::Units, 1, "")).await.expect("1 is the fewest");
    assert_eq!(bad_fields(&server.summary(&owner, "2025-03-01", "2025-02-01").await.expect_err("backwards")), ["from"]);
    assert_eq!(bad_fields(&server.summary(&owner, "", "2025-02-29").await.expect_err("not a leap year")), ["to"]);
    server.stop().await;
}

/// Runs each scenario once on SQLite and once on PostgreSQL.
macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (db, _dir) = platform::testkit::sqlite("analytics").await.expect("sqlite");
                    super::$scenario(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(db) = platform::testkit::postgres("analytics").await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
}

on_both_engines!(
    discounts_shipping_and_tax_are_reported_beside_what_orders_cost,
    each_discount_code_is_reported_with_what_it_brought_in,
    reports_show_what_the_shop_sold,
    a_redelivered_event_counts_once,
    the_inbox_forgets_events_handled_long_ago,
    events_arriving_together_count_as_one_by_one,
    an_event_the_database_refuses_fails_alone,
    a_rebuild_of_big_orders_succeeds,
    a_rebuild_reproduces_the_reports,
    events_during_a_rebuild_count_exactly_once,
    unreadable_events_are_refused_and_change_nothing,
    the_default_period_is_the_last_30_days,
    only_readers_see_reports,
    bad_parameters_name_their_field,
);
