//! The orders service over real gRPC, on SQLite and (when `MERCATO_TEST_DATABASE_URL` is set) PostgreSQL:
//! each scenario is an async fn taking a `Db`, run once per engine.
//!
//! A service never depends on another service's crate, so the catalog, the cart, the payments and the
//! deliveries service are one in-memory fake ([`Fake`]) that honours the real idempotency rules (reservation id, payment key,
//! refund id), counts calls, and can be told to fail: decline, refuse a commit, fail transiently, or
//! "crash" — perform a call's effect and then never answer, so the saga is cut off after the remote call
//! and before its state is persisted. The fake is used directly as the `SagaPorts` or, to test the
//! production `GrpcPorts`, behind fake CatalogService / CartService / PaymentService / DeliveryService
//! servers on port-0 listeners. The real end-to-end path is covered by the workspace's tests/.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::catalog::catalog_service_server::{CatalogService, CatalogServiceServer};
use api::catalog::{
    AdjustInventoryRequest, AdjustInventoryResponse, CommitStockRequest, CommitStockResponse, CreateProductRequest,
    CreateProductResponse, GetInventoryRequest, GetInventoryResponse, GetProductRequest, GetProductResponse,
    ListProductsRequest, ListProductsResponse, Product, ReleaseStockRequest, ReleaseStockResponse, ReserveStockRequest,
    ReserveStockResponse, UpdateProductRequest, UpdateProductResponse,
};
use api::common::Money;
use api::mercato::cart::v1::cart_service_server::{CartService, CartServiceServer};
use api::mercato::cart::v1::{
    AddItemRequest, AddItemResponse, Cart, CartItem, ClearCartRequest, ClearCartResponse, GetCartRequest,
    GetCartResponse, RemoveItemRequest, RemoveItemResponse, UpdateItemRequest, UpdateItemResponse,
};
use api::mercato::deliveries::v1::delivery_service_server::{DeliveryService, DeliveryServiceServer};
use api::mercato::deliveries::v1::{
    CancelOrderShipmentRequest, CancelOrderShipmentResponse, DispatchShipmentRequest, DispatchShipmentResponse,
    GetShipmentRequest, GetShipmentResponse, ListShipmentsRequest, ListShipmentsResponse, RecordTrackingEventRequest,
    RecordTrackingEventResponse,
};
use api::mercato::orders::v1::order_service_client::OrderServiceClient;
use api::mercato::orders::v1::{
    Address, CancelOrderRequest, CreateOrderItem, CreateOrderRequest, GetOrderRequest, ListOrdersRequest, Order,
    OrderStatus,
};
use api::mercato::payments::v1::payment_service_server::{PaymentService, PaymentServiceServer};
use api::mercato::payments::v1::{
    CreatePaymentRequest, CreatePaymentResponse, GetPaymentRequest, GetPaymentResponse, ListPaymentsRequest,
    ListPaymentsResponse, Payment, PaymentStatus, RefundPaymentRequest, RefundPaymentResponse,
};
use orders::domain::{LineInput, Offer, Price};
use orders::ports::{
    Commit, PaymentOutcome, PaymentRequest, PortError, RefundRequest, Reservation, SagaPorts, ShipmentCancel,
};
use orders::{Channels, Credentials, GrpcPorts, SagaOptions};
use platform::db::Db;
use platform::events::InProcessBus;
use platform::testkit::TestIssuer;
use platform::with_db;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

// ---------------------------------------------------------------------------------------------------------
// The fake catalog + cart + payments + deliveries.

const COFFEE: &str = "p-coffee";
const TEA: &str = "p-tea";
const BOOK: &str = "p-book";
const SERVICE_TOKEN: &str = "orders-service-token";
const DECLINED: &str = "tok_chargeDeclined";
const DECLINE_REASON: &str = "Your card was declined.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Reserve,
    Release,
    Commit,
    Pay,
    Refund,
    ClearCart,
    CancelShipment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    Held,
    Released,
    Committed,
}

#[derive(Debug, Clone)]
struct FakePayment {
    id: String,
    order_id: String,
    amount: i64,
    captured: bool,
    refunded: i64,
}

#[derive(Default)]
struct State {
    products: HashMap<String, Offer>,
    /// (on hand, reserved) by product.
    stock: HashMap<String, (i64, i64)>,
    reservations: HashMap<String, (Hold, Vec<LineInput>)>,
    /// By idempotency key.
    payments: HashMap<String, FakePayment>,
    /// refund id -> (payment id, amount).
    refunds: HashMap<String, (String, i64)>,
    carts: HashMap<String, Vec<LineInput>>,
    /// Orders whose parcel the carrier has (their shipment refuses to be cancelled).
    dispatched: std::collections::HashSet<String>,
    /// Orders whose shipment was cancelled, with the reason given.
    cancelled_shipments: HashMap<String, String>,
    /// `authorization` value -> customer.
    tokens: HashMap<String, String>,
    /// Address books by customer: (id, address, whether it is the default).
    addresses: HashMap<String, Vec<(String, Address, bool)>>,
    calls: HashMap<Op, u32>,
    transient: HashMap<Op, u32>,
    crash_after: Option<Op>,
    refuse_commit: bool,
}

#[derive(Default)]
struct Fake {
    state: Mutex<State>,
    crashed: Notify,
}

impl Fake {
    fn new() -> Arc<Self> {
        let fake = Arc::new(Self::default());
        fake.add_product(COFFEE, "Coffee", "EUR", 1450, 10);
        fake.add_product(TEA, "Tea", "EUR", 500, 10);
        fake.add_product(BOOK, "Book", "USD", 2500, 10);
        fake
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("lock")
    }

    fn add_product(&self, id: &str, name: &str, currency: &str, cents: i64, stock: i64) {
        let offer = Offer {
            product_id: id.into(),
            sku: format!("SKU-{id}"),
            name: name.into(),
            price: Price { currency: currency.into(), amount_minor: cents },
            active: true,
        };
        let mut s = self.state();
        s.products.insert(id.into(), offer);
        s.stock.insert(id.into(), (stock, 0));
    }

    fn calls(&self, op: Op) -> u32 {
        self.state().calls.get(&op).copied().unwrap_or(0)
    }

    fn stock(&self, id: &str) -> (i64, i64) {
        self.state().stock[id]
    }

    fn reservation(&self, order_id: &str) -> Option<Hold> {
        self.state().reservations.get(order_id).map(|r| r.0)
    }

    fn payments_of(&self, order_id: &str) -> Vec<FakePayment> {
        self.state().payments.values().filter(|p| p.order_id == order_id).cloned().collect()
    }

    fn refunds_of(&self, payment_id: &str) -> Vec<(String, i64)> {
        let s = self.state();
        s.refunds.iter().filter(|(_, (p, _))| p == payment_id).map(|(id, (_, a))| (id.clone(), *a)).collect()
    }

    /// Counts the call, and fails it when told to fail transiently.
    fn enter(&self, op: Op) -> Result<(), PortError> {
        let mut s = self.state();
        *s.calls.entry(op).or_default() += 1;
        if let Some(n) = s.transient.get_mut(&op)
            && *n > 0
        {
            *n -= 1;
            return Err(PortError::Transient(format!("{op:?} unavailable")));
        }
        Ok(())
    }

    /// After a call's effect: "crash" (never answer) when told to.
    async fn leave(&self, op: Op) {
        let crash = {
            let mut s = self.state();
            let crash = s.crash_after == Some(op);
            if crash {
                s.crash_after = None;
            }
            crash
        };
        if crash {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

#[tonic::async_trait]
impl SagaPorts for Fake {
    async fn product(&self, product_id: &str) -> Result<Option<Offer>, PortError> {
        Ok(self.state().products.get(product_id).filter(|o| o.active).cloned())
    }

    async fn cart(&self, authorization: &str) -> Result<Vec<LineInput>, PortError> {
        let s = self.state();
        let customer = s.tokens.get(authorization).ok_or_else(|| PortError::Permanent("unknown caller".into()))?;
        Ok(s.carts.get(customer).cloned().unwrap_or_default())
    }

    async fn saved_address(&self, authorization: &str, id: Option<&str>) -> Result<Option<Address>, PortError> {
        let s = self.state();
        let customer = s.tokens.get(authorization).ok_or_else(|| PortError::Permanent("unknown caller".into()))?;
        let book = s.addresses.get(customer).map(Vec::as_slice).unwrap_or_default();
        let found = book.iter().find(|(saved_id, _, default)| id.map_or(*default, |id| id == saved_id));
        Ok(found.map(|(_, address, _)| address.clone()))
    }

    async fn reserve(&self, order_id: &str, lines: &[LineInput]) -> Result<Reservation, PortError> {
        self.enter(Op::Reserve)?;
        let outcome = {
            let mut s = self.state();
            if let Some((held, _)) = s.reservations.get(order_id) {
                if *held == Hold::Released { Reservation::Released } else { Reservation::Held }
            } else if let Some(short) = lines.iter().find(|l| {
                let (on_hand, reserved) = s.stock.get(&l.product_id).copied().unwrap_or((0, 0));
                on_hand - reserved < i64::from(l.quantity)
            }) {
                Reservation::OutOfStock(Some(short.product_id.clone()))
            } else {
                for l in lines {
                    if let Some(stock) = s.stock.get_mut(&l.product_id) {
                        stock.1 += i64::from(l.quantity);
                    }
                }
                s.reservations.insert(order_id.into(), (Hold::Held, lines.to_vec()));
                Reservation::Held
            }
        };
        self.leave(Op::Reserve).await;
        Ok(outcome)
    }

    async fn release(&self, order_id: &str) -> Result<(), PortError> {
        self.enter(Op::Release)?;
        {
            let mut s = self.state();
            if let Some((held, lines)) = s.reservations.get(order_id).cloned() {
                match held {
                    Hold::Held => {
                        for l in &lines {
                            if let Some(stock) = s.stock.get_mut(&l.product_id) {
                                stock.1 -= i64::from(l.quantity);
                            }
                        }
                        s.reservations.insert(order_id.into(), (Hold::Released, lines));
                    }
                    Hold::Released => {}
                    Hold::Committed => return Err(PortError::Permanent("reservation committed".into())),
                }
            }
        }
        self.leave(Op::Release).await;
        Ok(())
    }

    async fn commit(&self, order_id: &str) -> Result<Commit, PortError> {
        self.enter(Op::Commit)?;
        let outcome = {
            let mut s = self.state();
            match s.reservations.get(order_id).cloned() {
                Some((Hold::Committed, _)) => Commit::Committed,
                Some((Hold::Held, _)) if s.refuse_commit => Commit::Refused,
                Some((Hold::Held, lines)) => {
                    for l in &lines {
                        if let Some(stock) = s.stock.get_mut(&l.product_id) {
                            stock.0 -= i64::from(l.quantity);
                            stock.1 -= i64::from(l.quantity);
                        }
                    }
                    s.reservations.insert(order_id.into(), (Hold::Committed, lines));
                    Commit::Committed
                }
                _ => Commit::Refused,
            }
        };
        self.leave(Op::Commit).await;
        Ok(outcome)
    }

    async fn pay(&self, request: &PaymentRequest) -> Result<PaymentOutcome, PortError> {
        self.enter(Op::Pay)?;
        let payment = {
            let mut s = self.state();
            s.payments
                .entry(request.idempotency_key.clone())
                .or_insert_with(|| FakePayment {
                    id: format!("pay-{}", uuid::Uuid::now_v7().simple()),
                    order_id: request.order_id.clone(),
                    amount: request.amount.amount_minor,
                    captured: request.payment_method != DECLINED,
                    refunded: 0,
                })
                .clone()
        };
        self.leave(Op::Pay).await;
        Ok(PaymentOutcome {
            payment_id: payment.id,
            captured: payment.captured,
            failure_reason: if payment.captured { String::new() } else { DECLINE_REASON.into() },
        })
    }

    async fn refund(&self, request: &RefundRequest) -> Result<(), PortError> {
        self.enter(Op::Refund)?;
        {
            let mut s = self.state();
            if !s.refunds.contains_key(&request.refund_id) {
                let payment = s
                    .payments
                    .values_mut()
                    .find(|p| p.id == request.payment_id && p.captured)
                    .ok_or_else(|| PortError::Permanent("no such captured payment".into()))?;
                if payment.refunded + request.amount.amount_minor > payment.amount {
                    return Err(PortError::Permanent("refund exceeds the payment".into()));
                }
                payment.refunded += request.amount.amount_minor;
                s.refunds.insert(request.refund_id.clone(), (request.payment_id.clone(), request.amount.amount_minor));
            }
        }
        self.leave(Op::Refund).await;
        Ok(())
    }

    async fn clear_cart(&self, customer_id: &str) -> Result<(), PortError> {
        self.enter(Op::ClearCart)?;
        self.state().carts.remove(customer_id);
        self.leave(Op::ClearCart).await;
        Ok(())
    }

    async fn cancel_shipment(&self, order_id: &str, reason: &str) -> Result<ShipmentCancel, PortError> {
        self.enter(Op::CancelShipment)?;
        let outcome = {
            let mut s = self.state();
            if s.dispatched.contains(order_id) {
                ShipmentCancel::Dispatched
            } else {
                s.cancelled_shipments.entry(order_id.to_owned()).or_insert_with(|| reason.to_owned());
                ShipmentCancel::Cancelled
            }
        };
        self.leave(Op::CancelShipment).await;
        Ok(outcome)
    }
}

// The same fake behind the real gRPC contracts, for the production GrpcPorts.

#[derive(Clone)]
struct Remote(Arc<Fake>);

fn to_status(e: PortError) -> Status {
    match e {
        PortError::Transient(m) => Status::unavailable(m),
        PortError::Permanent(m) => Status::failed_precondition(m),
    }
}

fn require_service<T>(request: &Request<T>) -> Result<(), Status> {
    let auth = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {SERVICE_TOKEN}")) {
        return Err(Status::unauthenticated("service token expected"));
    }
    Ok(())
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the fake"))
}

#[tonic::async_trait]
impl CatalogService for Remote {
    async fn get_product(&self, request: Request<GetProductRequest>) -> Result<Response<GetProductResponse>, Status> {
        let id = request.into_inner().id;
        let offer = self.0.product(&id).await.map_err(to_status)?.ok_or_else(|| Status::not_found("no product"))?;
        Ok(Response::new(GetProductResponse {
            product: Some(Product {
                id: offer.product_id,
                sku: offer.sku,
                name: offer.name,
                price: Some(Money { currency: offer.price.currency, amount_minor: offer.price.amount_minor }),
                active: offer.active,
                ..Product::default()
            }),
        }))
    }
    async fn reserve_stock(
        &self,
        request: Request<ReserveStockRequest>,
    ) -> Result<Response<ReserveStockResponse>, Status> {
        require_service(&request)?;
        let req = request.into_inner();
        let lines: Vec<_> =
            req.items.iter().map(|i| LineInput { product_id: i.product_id.clone(), quantity: i.quantity }).collect();
        match self.0.reserve(&req.reservation_id, &lines).await.map_err(to_status)? {
            Reservation::Held => Ok(Response::new(ReserveStockResponse {
                reservation_id: req.reservation_id,
                status: api::catalog::ReservationStatus::Held as i32,
            })),
            Reservation::OutOfStock(p) => Err(platform::error::with_reason(
                Code::FailedPrecondition,
                "INSUFFICIENT_STOCK",
                format!("not enough stock of product {} for the reservation", p.unwrap_or_default()),
            )),
            other => Err(Status::internal(format!("unexpected {other:?}"))),
        }
    }
    async fn release_stock(
        &self,
        request: Request<ReleaseStockRequest>,
    ) -> Result<Response<ReleaseStockResponse>, Status> {
        require_service(&request)?;
        let id = request.into_inner().reservation_id;
        if self.0.reservation(&id).is_none() {
            return Err(Status::not_found("no reservation"));
        }
        self.0.release(&id).await.map_err(to_status)?;
        Ok(Response::new(ReleaseStockResponse { status: api::catalog::ReservationStatus::Released as i32 }))
    }
    async fn commit_stock(
        &self,
        request: Request<CommitStockRequest>,
    ) -> Result<Response<CommitStockResponse>, Status> {
        require_service(&request)?;
        match self.0.commit(&request.into_inner().reservation_id).await.map_err(to_status)? {
            Commit::Committed => {
                Ok(Response::new(CommitStockResponse { status: api::catalog::ReservationStatus::Committed as i32 }))
            }
            Commit::Refused => Err(platform::error::with_reason(Code::FailedPrecondition, "RESERVATION_SETTLED", "no")),
        }
    }
    async fn list_products(&self, _: Request<ListProductsRequest>) -> Result<Response<ListProductsResponse>, Status> {
        unimplemented()
    }
    async fn create_product(
        &self,
        _: Request<CreateProductRequest>,
    ) -> Result<Response<CreateProductResponse>, Status> {
        unimplemented()
    }
    async fn update_product(
        &self,
        _: Request<UpdateProductRequest>,
    ) -> Result<Response<UpdateProductResponse>, Status> {
        unimplemented()
    }
    async fn get_inventory(&self, _: Request<GetInventoryRequest>) -> Result<Response<GetInventoryResponse>, Status> {
        unimplemented()
    }
    async fn adjust_inventory(
        &self,
        _: Request<AdjustInventoryRequest>,
    ) -> Result<Response<AdjustInventoryResponse>, Status> {
        unimplemented()
    }
    async fn list_stock_levels(
        &self,
        _: Request<api::catalog::ListStockLevelsRequest>,
    ) -> Result<Response<api::catalog::ListStockLevelsResponse>, Status> {
        unimplemented()
    }
    async fn list_categories(
        &self,
        _: Request<api::catalog::ListCategoriesRequest>,
    ) -> Result<Response<api::catalog::ListCategoriesResponse>, Status> {
        unimplemented()
    }
    async fn create_category(
        &self,
        _: Request<api::catalog::CreateCategoryRequest>,
    ) -> Result<Response<api::catalog::CreateCategoryResponse>, Status> {
        unimplemented()
    }
    async fn update_category(
        &self,
        _: Request<api::catalog::UpdateCategoryRequest>,
    ) -> Result<Response<api::catalog::UpdateCategoryResponse>, Status> {
        unimplemented()
    }
    async fn delete_category(
        &self,
        _: Request<api::catalog::DeleteCategoryRequest>,
    ) -> Result<Response<api::catalog::DeleteCategoryResponse>, Status> {
        unimplemented()
    }
    async fn add_product_image(
        &self,
        _: Request<api::catalog::AddProductImageRequest>,
    ) -> Result<Response<api::catalog::AddProductImageResponse>, Status> {
        unimplemented()
    }
    async fn delete_product_image(
        &self,
        _: Request<api::catalog::DeleteProductImageRequest>,
    ) -> Result<Response<api::catalog::DeleteProductImageResponse>, Status> {
        unimplemented()
    }
    async fn get_product_image_content(
        &self,
        _: Request<api::catalog::GetProductImageContentRequest>,
    ) -> Result<Response<api::google::api::HttpBody>, Status> {
        unimplemented()
    }
}

#[tonic::async_trait]
impl CartService for Remote {
    async fn get_cart(&self, request: Request<GetCartRequest>) -> Result<Response<GetCartResponse>, Status> {
        // The caller's own token, forwarded by the orders service.
        let auth = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let lines = self.0.cart(auth).await.map_err(|_| Status::unauthenticated("unknown caller"))?;
        let items = lines
            .into_iter()
            .map(|l| CartItem {
                product_id: l.product_id,
                quantity: l.quantity,
                available: true,
                ..CartItem::default()
            })
            .collect();
        Ok(Response::new(GetCartResponse { cart: Some(Cart { items, ..Cart::default() }) }))
    }
    async fn clear_cart(&self, request: Request<ClearCartRequest>) -> Result<Response<ClearCartResponse>, Status> {
        require_service(&request)?;
        self.0.clear_cart(&request.into_inner().customer_id).await.map_err(to_status)?;
        Ok(Response::new(ClearCartResponse { cart: Some(Cart::default()) }))
    }
    async fn add_item(&self, _: Request<AddItemRequest>) -> Result<Response<AddItemResponse>, Status> {
        unimplemented()
    }
    async fn update_item(&self, _: Request<UpdateItemRequest>) -> Result<Response<UpdateItemResponse>, Status> {
        unimplemented()
    }
    async fn remove_item(&self, _: Request<RemoveItemRequest>) -> Result<Response<RemoveItemResponse>, Status> {
        unimplemented()
    }
}

#[tonic::async_trait]
impl PaymentService for Remote {
    async fn create_payment(
        &self,
        request: Request<CreatePaymentRequest>,
    ) -> Result<Response<CreatePaymentResponse>, Status> {
        require_service(&request)?;
        let key = request.metadata().get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let key = key.to_owned();
        let req = request.into_inner();
        assert_eq!(key, format!("order:{}", req.order_id), "the payment key is the order's");
        assert!(!req.customer_id.is_empty(), "the orders service names the customer");
        let amount = req.amount.clone().unwrap_or_default();
        let outcome = self
            .0
            .pay(&PaymentRequest {
                order_id: req.order_id.clone(),
                customer_id: req.customer_id.clone(),
                amount: Price { currency: amount.currency.clone(), amount_minor: amount.amount_minor },
                payment_method: req.payment_method.clone(),
                idempotency_key: key,
            })
            .await
            .map_err(to_status)?;
        let status = if outcome.captured { PaymentStatus::Captured } else { PaymentStatus::Failed };
        Ok(Response::new(CreatePaymentResponse {
            payment: Some(Payment {
                id: outcome.payment_id,
                order_id: req.order_id,
                customer_id: req.customer_id,
                amount: Some(amount),
                status: status as i32,
                failure_reason: outcome.failure_reason,
                ..Payment::default()
            }),
        }))
    }
    async fn refund_payment(
        &self,
        request: Request<RefundPaymentRequest>,
    ) -> Result<Response<RefundPaymentResponse>, Status> {
        require_service(&request)?;
        let req = request.into_inner();
        let amount = req.amount.unwrap_or_default();
        self.0
            .refund(&RefundRequest {
                payment_id: req.payment_id,
                refund_id: req.refund_id,
                amount: Price { currency: amount.currency, amount_minor: amount.amount_minor },
                reason: req.reason,
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(RefundPaymentResponse::default()))
    }
    async fn get_payment(&self, _: Request<GetPaymentRequest>) -> Result<Response<GetPaymentResponse>, Status> {
        unimplemented()
    }

    async fn list_payments(&self, _: Request<ListPaymentsRequest>) -> Result<Response<ListPaymentsResponse>, Status> {
        unimplemented()
    }
}

#[tonic::async_trait]
impl DeliveryService for Remote {
    async fn cancel_order_shipment(
        &self,
        request: Request<CancelOrderShipmentRequest>,
    ) -> Result<Response<CancelOrderShipmentResponse>, Status> {
        require_service(&request)?;
        let req = request.into_inner();
        match self.0.cancel_shipment(&req.order_id, &req.reason).await.map_err(to_status)? {
            ShipmentCancel::Cancelled => Ok(Response::new(CancelOrderShipmentResponse::default())),
            // As the deliveries service refuses it: FAILED_PRECONDITION with its ErrorInfo reason.
            ShipmentCancel::Dispatched => Err(platform::error::with_reason(
                Code::FailedPrecondition,
                "SHIPMENT_DISPATCHED",
                "the order's shipment was handed to DHL (in transit): it can no longer be cancelled".to_owned(),
            )),
        }
    }
    async fn get_shipment(&self, _: Request<GetShipmentRequest>) -> Result<Response<GetShipmentResponse>, Status> {
        unimplemented()
    }
    async fn list_shipments(
        &self,
        _: Request<ListShipmentsRequest>,
    ) -> Result<Response<ListShipmentsResponse>, Status> {
        unimplemented()
    }
    async fn dispatch_shipment(
        &self,
        _: Request<DispatchShipmentRequest>,
    ) -> Result<Response<DispatchShipmentResponse>, Status> {
        unimplemented()
    }
    async fn record_tracking_event(
        &self,
        _: Request<RecordTrackingEventRequest>,
    ) -> Result<Response<RecordTrackingEventResponse>, Status> {
        unimplemented()
    }
}

// ---------------------------------------------------------------------------------------------------------
// The orders service, in-process on a port-0 listener.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wiring {
    /// The fake as the SagaPorts.
    Direct,
    /// GrpcPorts against the fake's gRPC servers.
    Grpc,
}

fn options() -> SagaOptions {
    SagaOptions {
        wait: Duration::from_secs(10),
        attempts: 3,
        backoff: Duration::from_millis(10),
        recovery_interval: Duration::from_millis(200),
        stuck_after: Duration::from_secs(30),
        requires_verified_email: false,
    }
}

struct Server {
    url: String,
    issuer: Arc<TestIssuer>,
    fake: Arc<Fake>,
    db: Db,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), orders::Error>>,
    remote: Option<(CancellationToken, JoinHandle<Result<(), tonic::transport::Error>>)>,
}

async fn connect(url: &str) -> Channel {
    for _ in 0..100 {
        if let Ok(channel) = Channel::from_shared(url.to_owned()).expect("url").connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("{url} did not come up");
}

impl Server {
    async fn start(db: Db, fake: Arc<Fake>, wiring: Wiring) -> Self {
        Self::start_with(db, fake, wiring, Arc::new(TestIssuer::new().expect("issuer")), options()).await
    }

    async fn start_with(
        db: Db,
        fake: Arc<Fake>,
        wiring: Wiring,
        issuer: Arc<TestIssuer>,
        options: SagaOptions,
    ) -> Self {
        // The saga's log, shown with a failing test's output (the test harness captures it otherwise): a rare
        // failure is read from it. `RUST_LOG` overrides what is logged.
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "orders=info,platform=info".to_owned());
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter(filter).try_init();
        let (ports, remote): (Arc<dyn SagaPorts>, _) = match wiring {
            Wiring::Direct => (fake.clone(), None),
            Wiring::Grpc => {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fakes");
                let url = format!("http://{}", listener.local_addr().expect("addr"));
                let stop = CancellationToken::new();
                let stopping = stop.clone();
                let remote = Remote(fake.clone());
                let task = tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(CatalogServiceServer::new(remote.clone()))
                        .add_service(CartServiceServer::new(remote.clone()))
                        .add_service(PaymentServiceServer::new(remote.clone()))
                        .add_service(DeliveryServiceServer::new(remote))
                        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                            stopping.cancelled().await
                        }),
                );
                let channel = platform::grpc::channel(&url).expect("channel");
                let channels = Channels {
                    catalog: channel.clone(),
                    cart: channel.clone(),
                    payments: channel.clone(),
                    deliveries: channel.clone(),
                    // No address books over gRPC here: the saved-address scenario runs on the direct wiring.
                    users: channel,
                };
                let ports = GrpcPorts::new(channels, Credentials::Fixed(SERVICE_TOKEN.to_owned()));
                (Arc::new(ports) as Arc<dyn SagaPorts>, Some((stop, task)))
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(orders::serve(
            listener,
            db.clone(),
            issuer.verifier(),
            ports,
            Arc::new(InProcessBus::new()),
            options,
            shutdown.clone(),
        ));
        connect(&url).await;
        let server = Self { url, issuer, fake, db, shutdown, task, remote };
        // The listener is bound before the service migrates: an answered call means its tables exist.
        server.client("probe", false).await.list(ListOrdersRequest::default()).await.expect("serving");
        server
    }

    /// A client acting as `customer` (scopes orders:write, plus orders:admin for admins), whose address is not
    /// verified.
    async fn client(&self, customer: &str, admin: bool) -> Client {
        let scopes: &[&str] = if admin { &["orders:write", "orders:admin"] } else { &["orders:write"] };
        self.client_with(self.issuer.claims(customer, scopes, &["customer"])).await
    }

    /// A client acting as `customer`, whose token says the address is verified.
    async fn verified_client(&self, customer: &str) -> Client {
        let claims = self.issuer.claims(customer, &["orders:write"], &["customer"]);
        self.client_with(platform::auth::Claims { email_verified: true, ..claims }).await
    }

    async fn client_with(&self, claims: platform::auth::Claims) -> Client {
        let token = format!("Bearer {}", self.issuer.sign(&claims));
        self.fake.state().tokens.insert(token.clone(), claims.sub.clone());
        Client { inner: OrderServiceClient::new(connect(&self.url).await), token }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stopped in time")
            .expect("join")
            .expect("served cleanly");
        if let Some((stop, task)) = self.remote {
            stop.cancel();
            task.await.expect("join").expect("fakes served");
        }
    }
}

#[derive(Clone)]
struct Client {
    inner: OrderServiceClient<Channel>,
    token: String,
}

impl Client {
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", self.token.parse().expect("header"));
        request
    }

    async fn create(&self, req: CreateOrderRequest) -> Result<Order, Status> {
        let order = self.inner.clone().create_order(self.request(req)).await?.into_inner().order;
        Ok(order.expect("order"))
    }

    async fn get(&self, id: &str) -> Result<Order, Status> {
        let order = self.inner.clone().get_order(self.request(GetOrderRequest { id: id.into() })).await?;
        Ok(order.into_inner().order.expect("order"))
    }

    async fn list(&self, req: ListOrdersRequest) -> Result<(Vec<Order>, String), Status> {
        let r = self.inner.clone().list_orders(self.request(req)).await?.into_inner();
        Ok((r.orders, r.next_page_token))
    }

    async fn cancel(&self, id: &str) -> Result<Order, Status> {
        let mut client = self.inner.clone();
        let r = client.cancel_order(self.request(CancelOrderRequest { id: id.into(), reason: String::new() })).await?;
        Ok(r.into_inner().order.expect("order"))
    }

    /// Polls until the order leaves PENDING (and is not mid-cancel).
    async fn settled(&self, id: &str) -> Order {
        for _ in 0..200 {
            let order = self.get(id).await.expect("get");
            if order.status != OrderStatus::Pending as i32 {
                return order;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("order {id} did not settle");
    }

    /// Polls until the order is in state `want` (a cancelling order still shows CONFIRMED).
    async fn reaches(&self, id: &str, want: OrderStatus) -> Order {
        for _ in 0..200 {
            let order = self.get(id).await.expect("get");
            if order.status == want as i32 {
                return order;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("order {id} did not become {want:?}");
    }
}

fn address() -> Address {
    Address {
        name: "Ada Lovelace".into(),
        line1: "1 Analytical Row".into(),
        city: "London".into(),
        postal_code: "N1 9GU".into(),
        country: "gb".into(),
        ..Address::default()
    }
}

fn order_of(items: &[(&str, i32)], key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        shipping_address: Some(address()),
        payment_method: "tok_visa".into(),
        items: items.iter().map(|(p, q)| CreateOrderItem { product_id: (*p).into(), quantity: *q }).collect(),
        idempotency_key: key.into(),
        shipping_address_id: String::new(),
    }
}

fn status(order: &Order) -> OrderStatus {
    OrderStatus::try_from(order.status).expect("status")
}

fn reason(status: &Status) -> String {
    let details = platform::error::decode_details(status).expect("details");
    let info = details
        .details
        .iter()
        .find(|d| d.type_url.ends_with("ErrorInfo"))
        .map(|d| <api::google::rpc::ErrorInfo as prost::Message>::decode(d.value.as_slice()).expect("info"))
        .expect("ErrorInfo");
    info.reason
}

async fn events_of(db: &Db, order_id: &str) -> Vec<String> {
    with_db!(db, pool => {
        sqlx::query_scalar::<_, String>("SELECT event_type FROM outbox WHERE subject = $1 ORDER BY create_time, id")
            .bind(order_id)
            .fetch_all(pool)
            .await
            .expect("outbox")
    })
}

/// The saga's log of an order: (from step, to step, status) per stored move, in order.
async fn saga_log_of(db: &Db, order_id: &str) -> Vec<(String, String, String)> {
    with_db!(db, pool => {
        sqlx::query_as::<_, (String, String, String)>(
            "SELECT from_step, to_step, status FROM saga_log WHERE order_id = $1 ORDER BY create_time, id",
        )
        .bind(order_id)
        .fetch_all(pool)
        .await
        .expect("saga log")
    })
}

fn moves(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter().map(|(from, to, status)| ((*from).to_owned(), (*to).to_owned(), (*status).to_owned())).collect()
}

/// The end state is consistent with the order's status, in the fake's books.
fn assert_consistent(fake: &Fake, order: &Order, quantity: i64, product: &str, initial_stock: i64) {
    let payments = fake.payments_of(&order.id);
    assert!(payments.len() <= 1, "at most one payment per order: {payments:?}");
    let (on_hand, reserved) = fake.stock(product);
    assert_eq!(reserved, 0, "nothing stays reserved");
    match status(order) {
        OrderStatus::Confirmed => {
            assert_eq!(payments.len(), 1);
            assert!(payments[0].captured && payments[0].refunded == 0);
            assert_eq!(order.payment_id, payments[0].id);
            assert_eq!(fake.reservation(&order.id), Some(Hold::Committed));
            assert_eq!(on_hand, initial_stock - quantity);
        }
        OrderStatus::Failed => {
            assert!(!order.failure_reason.is_empty());
            assert_ne!(fake.reservation(&order.id), Some(Hold::Held));
            assert_ne!(fake.reservation(&order.id), Some(Hold::Committed));
            assert_eq!(on_hand, initial_stock);
            if let Some(p) = payments.first()
                && p.captured
            {
                assert_eq!(p.refunded, p.amount, "a captured payment of a failed order is refunded");
            }
        }
        OrderStatus::Cancelled => {
            assert_eq!(payments.len(), 1);
            assert_eq!(payments[0].refunded, payments[0].amount);
        }
        other => panic!("unsettled order {other:?}"),
    }
}

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
    assert_consistent(&fake, &cancelled, 2, COFFEE, 10);
    // The stock stays sold until the catalog consumes order.cancelled.
    assert_eq!(fake.stock(COFFEE), (8, 0));
    assert_eq!(events_of(&db, &order.id).await, ["order.placed", "order.confirmed", "order.cancelled"]);
    // Its shipment was cancelled first, with the customer's reason for its history.
    assert_eq!(fake.state().cancelled_shipments.get(&order.id).map(String::as_str), Some("cancelled by the customer"));
    // Again: unchanged, no second refund.
    assert_eq!(status(&ada.cancel(&order.id).await.expect("again")), OrderStatus::Cancelled);
    assert_eq!((fake.calls(Op::Refund), fake.calls(Op::CancelShipment)), (1, 1));

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

macro_rules! on_both_engines {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let (db, _dir) = platform::testkit::sqlite("orders").await.expect("sqlite");
                    super::$scenario(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let Some(db) = platform::testkit::postgres("orders").await else { return };
                    super::$scenario(db).await;
                }
            )*
        }
    };
}

on_both_engines!(
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
