//! The deliveries service over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL:
//! each scenario is an async fn taking a `Db`, run once per engine. The orders' events arrive on an
//! in-process bus as the orders service publishes them; what the service publishes is caught on the same bus.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::mercato::deliveries::v1::delivery_service_client::DeliveryServiceClient;
use api::mercato::deliveries::v1::{
    CancelOrderShipmentRequest, DispatchShipmentRequest, GetShipmentRequest, ListShipmentsRequest,
    RecordTrackingEventRequest, Shipment, ShipmentShipped, ShipmentStatus, TrackingEvent,
};
use api::mercato::orders::v1::{Address, OrderCancelled, OrderConfirmed, OrderItem};
use platform::db::Db;
use platform::events::{EventBus, EventEnvelope, InProcessBus};
use platform::testkit::TestIssuer;
use platform::testkit::error_reason as reason;
use platform::testkit::violated_fields as bad_fields;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

type Client = DeliveryServiceClient<Channel>;

/// A published event: its type, its subject and its payload.
type Published = (String, String, Vec<u8>);

struct Server {
    client: Client,
    bus: Arc<InProcessBus>,
    /// (event type, subject, payload) of every `shipment.*` event published, in order.
    published: Arc<Mutex<Vec<Published>>>,
    issuer: Arc<TestIssuer>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), deliveries::Error>>,
}

impl Server {
    async fn start(db: Db) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = Arc::new(TestIssuer::new().expect("issuer"));
        let shutdown = CancellationToken::new();
        let bus = Arc::new(InProcessBus::new());
        let published = Arc::new(Mutex::new(Vec::new()));
        let recorded = published.clone();
        bus.subscribe(
            "test",
            &[
                deliveries::events::SHIPMENT_CREATED,
                deliveries::events::SHIPMENT_SHIPPED,
                deliveries::events::SHIPMENT_DELIVERED,
                deliveries::events::SHIPMENT_CANCELLED,
            ],
            Arc::new(move |envelope: Arc<EventEnvelope>| {
                let recorded = recorded.clone();
                Box::pin(async move {
                    let entry = (envelope.r#type.clone(), envelope.subject.clone(), envelope.data.clone());
                    recorded.lock().expect("lock").push(entry);
                    Ok(())
                })
            }),
        );
        db.migrate(&deliveries::MIGRATOR, deliveries::NAME).await.expect("migrate");
        deliveries::events::subscribe(bus.as_ref(), deliveries::store::Store::new(db.clone()));
        let task = tokio::spawn(deliveries::serve(listener, db, issuer.verifier(), bus.clone(), shutdown.clone()));
        let url = format!("http://{addr}");
        let client = DeliveryServiceClient::new(platform::testkit::connect_when_up(&url, "deliveries").await);
        Self { client, bus, published, issuer, shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("served cleanly");
    }

    fn customer(&self, id: &str) -> String {
        self.issuer.token(id, &["cart:write", "orders:read", "orders:write", "payment:write"], &["customer"])
    }

    fn staff(&self) -> String {
        self.issuer.token("admin-1", &["shipment:write", "orders:admin"], &["admin"])
    }

    /// The orders service's token, as auth gives it (client-credentials grant).
    fn orders_service(&self) -> String {
        self.issuer.token("service:orders", &["inventory:reserve", "payment:refund", "shipment:cancel"], &["service"])
    }

    /// CancelOrderShipment as the orders service calls it before refunding a cancelled order.
    async fn cancel_shipment(&self, token: &str, order_id: &str, reason: &str) -> Result<Option<Shipment>, Status> {
        let request = CancelOrderShipmentRequest { order_id: order_id.into(), reason: reason.into() };
        Ok(self.client.clone().cancel_order_shipment(with_token(request, token)).await?.into_inner().shipment)
    }

    /// Every shipment of `order_id` (none or one), as staff see it.
    async fn shipments_of(&self, order_id: &str) -> Vec<Shipment> {
        let request = ListShipmentsRequest { order_id: order_id.into(), ..ListShipmentsRequest::default() };
        self.list(&self.staff(), request).await.expect("list").0
    }

    /// Delivers an orders event as the orders service publishes it.
    async fn deliver(&self, id: &str, event_type: &str, order_id: &str, data: Vec<u8>) {
        let envelope = EventEnvelope {
            id: id.into(),
            source: "orders".into(),
            r#type: event_type.into(),
            subject: order_id.into(),
            time: Some(platform::time::timestamp(platform::time::now_micros())),
            data_content_type: "application/protobuf".into(),
            data,
            traceparent: String::new(),
        };
        self.bus.publish(envelope).await.expect("the deliveries service took the event");
    }

    async fn confirm(&self, event_id: &str, order_id: &str, customer_id: &str) {
        self.deliver(event_id, "order.confirmed", order_id, confirmed(order_id, customer_id).encode_to_vec()).await;
    }

    async fn cancel(&self, event_id: &str, order_id: &str, customer_id: &str) {
        let payload = OrderCancelled {
            order_id: order_id.into(),
            customer_id: customer_id.into(),
            reason: "changed my mind".into(),
            ..OrderCancelled::default()
        };
        self.deliver(event_id, "order.cancelled", order_id, payload.encode_to_vec()).await;
    }

    async fn list(&self, token: &str, request: ListShipmentsRequest) -> Result<(Vec<Shipment>, String), Status> {
        let answer = self.client.clone().list_shipments(with_token(request, token)).await?.into_inner();
        Ok((answer.shipments, answer.next_page_token))
    }

    /// The shipment of `order_id`, as staff see it.
    async fn of_order(&self, order_id: &str) -> Shipment {
        let request = ListShipmentsRequest { order_id: order_id.into(), ..ListShipmentsRequest::default() };
        let (mut found, _) = self.list(&self.staff(), request).await.expect("list");
        assert_eq!(found.len(), 1, "one shipment for order {order_id}: {found:?}");
        found.remove(0)
    }

    async fn get(&self, token: &str, id: &str) -> Result<Shipment, Status> {
        let request = with_token(GetShipmentRequest { id: id.into() }, token);
        Ok(self.client.clone().get_shipment(request).await?.into_inner().shipment.expect("a shipment"))
    }

    async fn dispatch(&self, token: &str, id: &str, carrier: &str, tracking_number: &str) -> Result<Shipment, Status> {
        let request =
            DispatchShipmentRequest { id: id.into(), carrier: carrier.into(), tracking_number: tracking_number.into() };
        let answer = self.client.clone().dispatch_shipment(with_token(request, token)).await?.into_inner();
        Ok(answer.shipment.expect("a shipment"))
    }

    async fn track(&self, token: &str, request: RecordTrackingEventRequest) -> Result<Shipment, Status> {
        let answer = self.client.clone().record_tracking_event(with_token(request, token)).await?.into_inner();
        Ok(answer.shipment.expect("a shipment"))
    }

    /// The `shipment.*` events published so far (type, subject), waiting up to 5 s for `count` of them.
    async fn published(&self, count: usize) -> Vec<Published> {
        for _ in 0..100 {
            if self.published.lock().expect("lock").len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.published.lock().expect("lock").clone()
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    request
}

fn confirmed(order_id: &str, customer_id: &str) -> OrderConfirmed {
    let item = |product_id: &str, name: &str, quantity: i32| OrderItem {
        product_id: product_id.into(),
        sku: format!("SKU-{product_id}"),
        name: name.into(),
        quantity,
        ..OrderItem::default()
    };
    OrderConfirmed {
        order_id: order_id.into(),
        customer_id: customer_id.into(),
        payment_id: format!("pay-{order_id}"),
        items: vec![item("p-coffee", "Coffee", 2), item("p-mug", "Mug", 1)],
        shipping_address: Some(address(customer_id)),
        shipping_rate_id: "express".into(),
        shipping_rate_name: "Express (next working day)".into(),
        ..OrderConfirmed::default()
    }
}

fn address(name: &str) -> Address {
    Address {
        name: name.into(),
        line1: "Hauptstraße 1".into(),
        city: "Leipzig".into(),
        postal_code: "04109".into(),
        country: "DE".into(),
        ..Address::default()
    }
}

fn status(shipment: &Shipment) -> ShipmentStatus {
    ShipmentStatus::try_from(shipment.status).expect("a known status")
}

/// The states of a shipment's history, in order.
fn history(shipment: &Shipment) -> Vec<ShipmentStatus> {
    shipment.events.iter().map(|e| ShipmentStatus::try_from(e.status).expect("a known status")).collect()
}

fn event(shipment_id: &str, status: ShipmentStatus, carrier_event_id: &str) -> RecordTrackingEventRequest {
    RecordTrackingEventRequest {
        shipment_id: shipment_id.into(),
        status: status as i32,
        location: "Leipzig hub".into(),
        description: "scanned".into(),
        carrier_event_id: carrier_event_id.into(),
        ..RecordTrackingEventRequest::default()
    }
}

/// When a history entry happened, in microseconds since the epoch.
fn micros(event: &TrackingEvent) -> i64 {
    let t = event.occur_time.expect("occur time");
    t.seconds * 1_000_000 + i64::from(t.nanos / 1_000)
}

fn seconds_ago(seconds: i64) -> prost_types::Timestamp {
    platform::time::timestamp(platform::time::now_micros() - seconds * 1_000_000)
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios.

async fn a_confirmed_order_gets_one_shipment(db: Db) {
    let server = Server::start(db).await;
    server.confirm("ev-1", "o-1", "alice").await;
    // Redelivered, and (should orders ever send it) another event for the same order: still one shipment.
    server.confirm("ev-1", "o-1", "alice").await;
    server.confirm("ev-1-again", "o-1", "alice").await;

    let listed = server.of_order("o-1").await;
    let alice = server.customer("alice");
    let shipment = server.get(&alice, &listed.id).await.expect("the customer sees their shipment");
    assert_eq!(status(&shipment), ShipmentStatus::Pending);
    assert_eq!((shipment.order_id.as_str(), shipment.customer_id.as_str()), ("o-1", "alice"));
    assert_eq!(shipment.address, Some(address("alice")));
    assert_eq!(shipment.shipping_method, "Express (next working day)", "the warehouse sees how it is to go");
    let lines: Vec<_> = shipment.items.iter().map(|i| (i.product_id.as_str(), i.name.as_str(), i.quantity)).collect();
    assert_eq!(lines, [("p-coffee", "Coffee", 2), ("p-mug", "Mug", 1)]);
    assert_eq!(history(&shipment), [ShipmentStatus::Pending]);
    assert!(shipment.carrier.is_empty() && shipment.ship_time.is_none() && shipment.deliver_time.is_none());

    let published = server.published(1).await;
    assert_eq!(published.len(), 1, "one shipment.created: {published:?}");
    assert_eq!((published[0].0.as_str(), published[0].1.as_str()), ("shipment.created", shipment.id.as_str()));
    server.stop().await;
}

async fn dispatch_then_track_to_delivery(db: Db) {
    let server = Server::start(db).await;
    server.confirm("ev-1", "o-1", "alice").await;
    let id = server.of_order("o-1").await.id;
    let staff = server.staff();
    let alice = server.customer("alice");

    let refused = server.dispatch(&alice, &id, "DHL", "JJD0001").await.expect_err("customers do not dispatch");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let early = server.track(&staff, event(&id, ShipmentStatus::InTransit, "")).await.expect_err("not dispatched");
    assert_eq!((early.code(), reason(&early).as_str()), (Code::FailedPrecondition, "INVALID_SHIPMENT_TRANSITION"));

    let shipped = server.dispatch(&staff, &id, " DHL ", "JJD0001").await.expect("dispatched");
    assert_eq!(status(&shipped), ShipmentStatus::Shipped);
    assert_eq!((shipped.carrier.as_str(), shipped.tracking_number.as_str()), ("DHL", "JJD0001"));
    assert!(shipped.ship_time.is_some());
    let again = server.dispatch(&staff, &id, "DHL", "JJD0001").await.expect("a retried dispatch");
    assert_eq!(again, shipped, "a retry changes nothing");
    let other = server.dispatch(&staff, &id, "UPS", "1Z999").await.expect_err("already dispatched");
    assert_eq!((other.code(), reason(&other).as_str()), (Code::FailedPrecondition, "SHIPMENT_NOT_PENDING"));

    let in_transit = server.track(&staff, event(&id, ShipmentStatus::InTransit, "c-1")).await.expect("scan");
    assert_eq!(status(&in_transit), ShipmentStatus::InTransit);
    let redelivered = server.track(&staff, event(&id, ShipmentStatus::InTransit, "c-1")).await.expect("webhook again");
    assert_eq!(redelivered.events.len(), in_transit.events.len(), "a carrier event is recorded once");
    // A scan that happened between the dispatch and the latest scan arrives late: history only.
    let between = (micros(&in_transit.events[1]) + micros(&in_transit.events[2])) / 2;
    let late = RecordTrackingEventRequest {
        occur_time: Some(platform::time::timestamp(between)),
        location: "Berlin depot".into(),
        ..event(&id, ShipmentStatus::OutForDelivery, "c-0")
    };
    let after_late = server.track(&staff, late).await.expect("a late scan");
    assert_eq!(status(&after_late), ShipmentStatus::InTransit, "the later scan's state stays");
    assert_eq!(after_late.events[2].location, "Berlin depot", "history in the order things happened: {after_late:?}");

    server.track(&staff, event(&id, ShipmentStatus::OutForDelivery, "c-2")).await.expect("out for delivery");
    let delivered = server.track(&staff, event(&id, ShipmentStatus::Delivered, "c-3")).await.expect("delivered");
    assert_eq!(status(&delivered), ShipmentStatus::Delivered);
    assert!(delivered.deliver_time.is_some());
    assert_eq!(
        history(&delivered),
        [
            ShipmentStatus::Pending,
            ShipmentStatus::Shipped,
            ShipmentStatus::OutForDelivery,
            ShipmentStatus::InTransit,
            ShipmentStatus::OutForDelivery,
            ShipmentStatus::Delivered
        ],
        "the late scan sorts where it happened"
    );
    let after = server.track(&staff, event(&id, ShipmentStatus::Returned, "c-4")).await.expect_err("final");
    assert_eq!(reason(&after), "INVALID_SHIPMENT_TRANSITION");

    let seen = server.get(&alice, &id).await.expect("the customer follows it");
    assert_eq!(seen, delivered);
    let published = server.published(3).await;
    let types: Vec<_> = published.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(types, ["shipment.created", "shipment.shipped", "shipment.delivered"]);
    let shipped_event = ShipmentShipped::decode(published[1].2.as_slice()).expect("ShipmentShipped");
    assert_eq!(
        (shipped_event.order_id.as_str(), shipped_event.carrier.as_str(), shipped_event.tracking_number.as_str()),
        ("o-1", "DHL", "JJD0001")
    );
    server.stop().await;
}

async fn a_cancelled_order_cancels_its_shipment_until_dispatched(db: Db) {
    let server = Server::start(db).await;
    let staff = server.staff();
    server.confirm("ev-1", "o-1", "alice").await;
    server.confirm("ev-2", "o-2", "alice").await;
    let pending = server.of_order("o-1").await.id;
    let dispatched = server.of_order("o-2").await.id;
    server.dispatch(&staff, &dispatched, "DHL", "JJD0002").await.expect("dispatched");

    server.cancel("ev-3", "o-1", "alice").await;
    server.cancel("ev-3", "o-1", "alice").await;
    server.cancel("ev-4", "o-2", "alice").await;
    // An order that never had a shipment: nothing to do, and no error (the event is not dead-lettered).
    server.cancel("ev-5", "o-unknown", "alice").await;

    let cancelled = server.get(&staff, &pending).await.expect("get");
    assert_eq!(status(&cancelled), ShipmentStatus::Cancelled);
    assert_eq!(
        history(&cancelled),
        [ShipmentStatus::Pending, ShipmentStatus::Cancelled],
        "once, though delivered twice"
    );
    let refused = server.dispatch(&staff, &pending, "DHL", "JJD0009").await.expect_err("cancelled");
    assert_eq!(reason(&refused), "SHIPMENT_NOT_PENDING");

    let noted = server.get(&staff, &dispatched).await.expect("get");
    assert_eq!(status(&noted), ShipmentStatus::Shipped, "a dispatched parcel is not recalled by a database row");
    let last = noted.events.last().expect("history");
    assert!(last.description.contains("cancelled after dispatch"), "{last:?}");

    let published = server.published(4).await;
    let cancellations: Vec<_> =
        published.iter().filter(|(t, _, _)| t == "shipment.cancelled").map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(cancellations, [pending.as_str()]);
    server.stop().await;
}

async fn the_orders_service_cancels_a_shipment_only_before_dispatch(db: Db) {
    let server = Server::start(db).await;
    let (orders, staff) = (server.orders_service(), server.staff());
    server.confirm("ev-1", "o-1", "alice").await;
    server.confirm("ev-2", "o-2", "alice").await;
    server.confirm("ev-3", "o-3", "alice").await;
    let pending = server.of_order("o-1").await.id;
    let shipped = server.dispatch(&staff, &server.of_order("o-2").await.id, "DHL", "JJD0002").await.expect("dispatch");
    let returned = server.dispatch(&staff, &server.of_order("o-3").await.id, "UPS", "1Z0003").await.expect("dispatch");
    server.track(&staff, event(&returned.id, ShipmentStatus::Returned, "ups-1")).await.expect("returned");

    // Not dispatched: cancelled, with the order's reason in its history; asking again changes nothing.
    let cancelled = server.cancel_shipment(&orders, "o-1", "changed my mind").await.expect("cancel").expect("shipment");
    assert_eq!((cancelled.id.as_str(), status(&cancelled)), (pending.as_str(), ShipmentStatus::Cancelled));
    let last = cancelled.events.last().expect("history");
    assert_eq!(last.description, "order cancelled before dispatch: changed my mind");
    let again = server.cancel_shipment(&orders, "o-1", "changed my mind").await.expect("again").expect("shipment");
    assert_eq!(again, cancelled);

    // With the carrier: refused, and the shipment is left exactly as it was.
    let refused = server.cancel_shipment(&orders, "o-2", "").await.expect_err("dispatched");
    assert_eq!((refused.code(), reason(&refused).as_str()), (Code::FailedPrecondition, "SHIPMENT_DISPATCHED"));
    assert!(refused.message().contains("handed to DHL (shipped)"), "{}", refused.message());
    assert_eq!(server.get(&staff, &shipped.id).await.expect("get"), shipped);
    // Back at the shop: nothing to cancel, and the order may be refunded.
    let back = server.cancel_shipment(&orders, "o-3", "").await.expect("returned").expect("shipment");
    assert_eq!(status(&back), ShipmentStatus::Returned);

    // Cancelled before its confirmation arrived: no shipment now, and none when order.confirmed comes.
    assert_eq!(server.cancel_shipment(&orders, "o-4", "").await.expect("no shipment yet"), None);
    server.confirm("ev-4", "o-4", "alice").await;
    assert_eq!(server.shipments_of("o-4").await, []);
    // Likewise when order.cancelled overtakes order.confirmed (a dead letter requeued late).
    server.cancel("ev-5", "o-5", "alice").await;
    server.confirm("ev-6", "o-5", "alice").await;
    assert_eq!(server.shipments_of("o-5").await, []);

    let published = server.published(6).await;
    let cancellations: Vec<_> =
        published.iter().filter(|(t, _, _)| t == "shipment.cancelled").map(|(_, s, _)| s.as_str()).collect();
    assert_eq!(cancellations, [pending.as_str()], "once, for the one shipment cancelled");

    // Only the orders service may ask (scope shipment:cancel), and it must name the order.
    let customer = server.customer("alice");
    let denied = server.cancel_shipment(&customer, "o-1", "").await.expect_err("a customer");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let bad = server.cancel_shipment(&orders, "", &"x".repeat(501)).await.expect_err("bad request");
    assert_eq!(bad_fields(&bad), ["order_id", "reason"]);
    server.stop().await;
}

async fn a_cancellation_racing_the_confirmation_leaves_no_shipment_to_send(db: Db) {
    let server = Arc::new(Server::start(db).await);
    let orders = server.orders_service();
    let mut races = Vec::new();
    for n in 0..30 {
        let (server, orders) = (server.clone(), orders.clone());
        races.push(tokio::spawn(async move {
            let order_id = format!("race-{n}");
            let event_id = format!("ev-{n}");
            let confirm = server.confirm(&event_id, &order_id, "alice");
            let cancel = server.cancel_shipment(&orders, &order_id, "");
            let (_, cancelled) = tokio::join!(confirm, cancel);
            cancelled.expect("a shipment not yet dispatched is always cancelled");
            order_id
        }));
    }
    for race in races {
        let order_id = race.await.expect("join");
        // Whichever came first, the order's shipment is never left PENDING: someone would pack it.
        let shipments = server.shipments_of(&order_id).await;
        assert!(shipments.iter().all(|s| status(s) == ShipmentStatus::Cancelled), "{order_id}: {shipments:?}");
    }
    Arc::into_inner(server).expect("the only handle").stop().await;
}

async fn shipments_are_private_and_listed_newest_first(db: Db) {
    let server = Server::start(db).await;
    for n in 1..=3 {
        server.confirm(&format!("ev-a{n}"), &format!("o-a{n}"), "alice").await;
    }
    server.confirm("ev-b1", "o-b1", "bob").await;
    let alice = server.customer("alice");
    let bob = server.customer("bob");
    let staff = server.staff();

    let (first, token) =
        server.list(&alice, ListShipmentsRequest { page_size: 2, ..Default::default() }).await.expect("page 1");
    let (second, end) = server
        .list(&alice, ListShipmentsRequest { page_size: 2, page_token: token.clone(), ..Default::default() })
        .await
        .expect("page 2");
    let orders: Vec<_> = first.iter().chain(&second).map(|s| s.order_id.as_str()).collect();
    assert_eq!(orders, ["o-a3", "o-a2", "o-a1"], "only alice's, newest first");
    assert!(!token.is_empty() && end.is_empty());

    let bobs = server.of_order("o-b1").await;
    let hidden = server.get(&alice, &bobs.id).await.expect_err("bob's shipment");
    assert_eq!(hidden.code(), Code::NotFound);
    let denied = server
        .list(&alice, ListShipmentsRequest { customer_id: "bob".into(), ..Default::default() })
        .await
        .expect_err("another customer's list");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let (bob_sees, _) = server.list(&bob, ListShipmentsRequest::default()).await.expect("bob's list");
    assert_eq!(bob_sees.len(), 1);

    let (all, _) = server.list(&staff, ListShipmentsRequest::default()).await.expect("staff list");
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|s| s.events.is_empty() && s.items.len() == 2), "listings carry items, not history");
    server.dispatch(&staff, &bobs.id, "DHL", "JJD0003").await.expect("dispatch");
    let shipped = ListShipmentsRequest { status: ShipmentStatus::Shipped as i32, ..Default::default() };
    let (only_shipped, _) = server.list(&staff, shipped).await.expect("by status");
    assert_eq!(only_shipped.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [bobs.id.as_str()]);
    let (alices, _) = server
        .list(&staff, ListShipmentsRequest { customer_id: "alice".into(), ..Default::default() })
        .await
        .expect("by customer");
    assert_eq!(alices.len(), 3);
    server.stop().await;
}

async fn bad_requests_name_their_fields(db: Db) {
    let server = Server::start(db).await;
    server.confirm("ev-1", "o-1", "alice").await;
    let id = server.of_order("o-1").await.id;
    let staff = server.staff();

    let bad = server.dispatch(&staff, &id, "", "12;DROP TABLE").await.expect_err("bad dispatch");
    assert_eq!(bad_fields(&bad), ["carrier", "tracking_number"]);
    let unknown = server.dispatch(&staff, "no-such-shipment", "DHL", "1").await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    server.dispatch(&staff, &id, "DHL", "JJD0001").await.expect("dispatched");

    let future =
        RecordTrackingEventRequest { occur_time: Some(seconds_ago(-3600)), ..event(&id, ShipmentStatus::Pending, "") };
    let refused = server.track(&staff, future).await.expect_err("bad event");
    assert_eq!(bad_fields(&refused), ["status", "occur_time"]);
    let page = server
        .list(&staff, ListShipmentsRequest { page_size: -1, page_token: "' OR 1=1".into(), ..Default::default() })
        .await
        .expect_err("bad listing");
    assert_eq!(bad_fields(&page), ["page_size", "page_token"]);
    let unchanged = server.get(&staff, &id).await.expect("get");
    assert_eq!(status(&unchanged), ShipmentStatus::Shipped, "refused requests change nothing");
    assert_eq!(unchanged.events.len(), 2);
    server.stop().await;
}

/// Runs each scenario once on SQLite and once on PostgreSQL.
macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (db, _dir) = platform::testkit::sqlite("deliveries").await.expect("sqlite");
                    super::$scenario(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(db) = platform::testkit::postgres("deliveries").await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
}

on_both_engines!(
    a_confirmed_order_gets_one_shipment,
    dispatch_then_track_to_delivery,
    a_cancelled_order_cancels_its_shipment_until_dispatched,
    the_orders_service_cancels_a_shipment_only_before_dispatch,
    a_cancellation_racing_the_confirmation_leaves_no_shipment_to_send,
    shipments_are_private_and_listed_newest_first,
    bad_requests_name_their_fields,
);
