//! The harness of the orders service's tests, shared by the scenario files (orders.rs, discounts.rs,
//! shipping.rs): the
//! service over real gRPC on a port-0 listener, a client per customer, helpers that read its database, and
//! [`on_both_engines!`], which runs each scenario (an async fn taking a `Db`) on SQLite and, when
//! `MERCATO_TEST_DATABASE_URL` is set, PostgreSQL.
//!
//! A service never depends on another service's crate, so the catalog, the cart, the payments, the
//! deliveries and the users service are one in-memory fake ([`Fake`]) that honours the real idempotency rules (reservation id, payment key,
//! refund id), counts calls, and can be told to fail: decline, refuse a commit, fail transiently, or
//! "crash" — perform a call's effect and then never answer, so the saga is cut off after the remote call
//! and before its state is persisted. The fake is used directly as the `SagaPorts` or, to test the
//! production `GrpcPorts`, behind fake CatalogService / CartService / PaymentService / DeliveryService /
//! UserService (address books) servers on port-0 listeners. The real end-to-end path is covered by the workspace's tests/.

// Each scenario file is a test binary of its own and uses only part of the harness.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::catalog::catalog_service_server::{CatalogService, CatalogServiceServer};
use api::catalog::{
    AdjustInventoryRequest, AdjustInventoryResponse, CommitStockRequest, CommitStockResponse, CreateProductRequest,
    CreateProductResponse, GetInventoryRequest, GetInventoryResponse, GetProductRequest, GetProductResponse,
    ListProductsRequest, ListProductsResponse, Product, ReleaseStockRequest, ReleaseStockResponse, ReserveStockRequest,
    ReserveStockResponse, TaxClass, UpdateProductRequest, UpdateProductResponse,
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
    OrderStatus, PreviewOrderRequest, PreviewOrderResponse,
};
use api::mercato::payments::v1::payment_service_server::{PaymentService, PaymentServiceServer};
use api::mercato::payments::v1::{
    CreatePaymentRequest, CreatePaymentResponse, GetPaymentRequest, GetPaymentResponse, ListPaymentsRequest,
    ListPaymentsResponse, Payment, PaymentStatus, RefundPaymentRequest, RefundPaymentResponse,
};
use api::mercato::users::v1::user_service_server::{UserService, UserServiceServer};
use api::mercato::users::v1::{
    CreateAddressRequest, CreateAddressResponse, DeleteAddressRequest, DeleteAddressResponse, GetAddressRequest,
    GetAddressResponse, GetProfileRequest, GetProfileResponse, ListAddressesRequest, ListAddressesResponse,
    SavedAddress, UpdateAddressRequest, UpdateAddressResponse, UpdateProfileRequest, UpdateProfileResponse,
};
use orders::domain::{LineInput, Offer, Price};
use orders::ports::{
    Commit, PaymentOutcome, PaymentRequest, PortError, RefundRequest, Reservation, SagaPorts, ShipmentCancel,
};
use orders::{Channels, Credentials, GrpcPorts, SagaOptions};
use platform::db::Db;
use platform::events::InProcessBus;
use platform::testkit::TestIssuer;
#[allow(unused_imports)]
pub use platform::testkit::error_reason as reason;
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

pub const COFFEE: &str = "p-coffee";
pub const TEA: &str = "p-tea";
pub const BOOK: &str = "p-book";
pub const SERVICE_TOKEN: &str = "orders-service-token";
pub const DECLINED: &str = "tok_chargeDeclined";
pub const DECLINE_REASON: &str = "Your card was declined.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Reserve,
    Release,
    Commit,
    Pay,
    Refund,
    ClearCart,
    CancelShipment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Held,
    Released,
    Committed,
}

#[derive(Debug, Clone)]
pub struct FakePayment {
    pub id: String,
    pub order_id: String,
    pub amount: i64,
    /// The tax the amount includes, as orders said.
    pub tax: i64,
    pub captured: bool,
    pub refunded: i64,
}

#[derive(Default)]
pub struct State {
    pub products: HashMap<String, Offer>,
    /// (on hand, reserved) by product.
    pub stock: HashMap<String, (i64, i64)>,
    pub reservations: HashMap<String, (Hold, Vec<LineInput>)>,
    /// By idempotency key.
    pub payments: HashMap<String, FakePayment>,
    /// refund id -> (payment id, amount).
    pub refunds: HashMap<String, (String, i64)>,
    pub carts: HashMap<String, Vec<LineInput>>,
    /// Orders whose parcel the carrier has (their shipment refuses to be cancelled).
    pub dispatched: std::collections::HashSet<String>,
    /// Orders whose shipment was cancelled, with the reason given.
    pub cancelled_shipments: HashMap<String, String>,
    /// `authorization` value -> customer.
    pub tokens: HashMap<String, String>,
    /// Address books by customer: (id, address, whether it is the default).
    pub addresses: HashMap<String, Vec<(String, Address, bool)>>,
    pub calls: HashMap<Op, u32>,
    pub transient: HashMap<Op, u32>,
    pub crash_after: Option<Op>,
    pub refuse_commit: bool,
}

#[derive(Default)]
pub struct Fake {
    pub state: Mutex<State>,
    pub crashed: Notify,
}

impl Fake {
    pub fn new() -> Arc<Self> {
        let fake = Arc::new(Self::default());
        fake.add_product(COFFEE, "Coffee", "EUR", 1450, 10);
        fake.add_product(TEA, "Tea", "EUR", 500, 10);
        fake.add_product(BOOK, "Book", "USD", 2500, 10);
        fake
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("lock")
    }

    pub fn add_product(&self, id: &str, name: &str, currency: &str, cents: i64, stock: i64) {
        let offer = Offer {
            product_id: id.into(),
            sku: format!("SKU-{id}"),
            name: name.into(),
            price: Price { currency: currency.into(), amount_minor: cents },
            active: true,
            reduced_tax: false,
        };
        let mut s = self.state();
        s.products.insert(id.into(), offer);
        s.stock.insert(id.into(), (stock, 0));
    }

    /// Puts product `id` in the reduced tax class.
    pub fn reduce_tax(&self, id: &str) {
        if let Some(offer) = self.state().products.get_mut(id) {
            offer.reduced_tax = true;
        }
    }

    pub fn calls(&self, op: Op) -> u32 {
        self.state().calls.get(&op).copied().unwrap_or(0)
    }

    pub fn stock(&self, id: &str) -> (i64, i64) {
        self.state().stock[id]
    }

    pub fn reservation(&self, order_id: &str) -> Option<Hold> {
        self.state().reservations.get(order_id).map(|r| r.0)
    }

    pub fn payments_of(&self, order_id: &str) -> Vec<FakePayment> {
        self.state().payments.values().filter(|p| p.order_id == order_id).cloned().collect()
    }

    pub fn refunds_of(&self, payment_id: &str) -> Vec<(String, i64)> {
        let s = self.state();
        s.refunds.iter().filter(|(_, (p, _))| p == payment_id).map(|(id, (_, a))| (id.clone(), *a)).collect()
    }

    /// Counts the call, and fails it when told to fail transiently.
    pub fn enter(&self, op: Op) -> Result<(), PortError> {
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
    pub async fn leave(&self, op: Op) {
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
                    tax: request.tax_minor,
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

    async fn refund(&self, request: &RefundRequest) -> Result<i64, PortError> {
        self.enter(Op::Refund)?;
        let refunded = {
            let mut s = self.state();
            match s.refunds.get(&request.refund_id) {
                Some((_, amount)) => *amount,
                None => {
                    let payment = s
                        .payments
                        .values_mut()
                        .find(|p| p.id == request.payment_id && p.captured)
                        .ok_or_else(|| PortError::Permanent("no such captured payment".into()))?;
                    // The amount asked for, or the rest, as the payments service gives it back.
                    let rest = payment.amount - payment.refunded;
                    let amount = request.amount.as_ref().map_or(rest, |a| a.amount_minor);
                    if amount > rest {
                        return Err(PortError::Permanent(format!("only {rest} of the payment is left to refund")));
                    }
                    payment.refunded += amount;
                    if amount > 0 {
                        s.refunds.insert(request.refund_id.clone(), (request.payment_id.clone(), amount));
                    }
                    amount
                }
            }
        };
        self.leave(Op::Refund).await;
        Ok(refunded)
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
pub struct Remote(Arc<Fake>);

pub fn to_status(e: PortError) -> Status {
    match e {
        PortError::Transient(m) => Status::unavailable(m),
        PortError::Permanent(m) => Status::failed_precondition(m),
    }
}

pub fn require_service<T>(request: &Request<T>) -> Result<(), Status> {
    let auth = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {SERVICE_TOKEN}")) {
        return Err(Status::unauthenticated("service token expected"));
    }
    Ok(())
}

pub fn unimplemented<T>() -> Result<Response<T>, Status> {
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
                tax_class: if offer.reduced_tax { TaxClass::Reduced } else { TaxClass::Standard } as i32,
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
                tax_minor: req.tax.map_or(0, |t| t.amount_minor),
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
        if req.rest == req.amount.is_some() {
            return Err(Status::invalid_argument("either the rest of a payment or an amount"));
        }
        let amount = req.amount.map(|m| Price { currency: m.currency, amount_minor: m.amount_minor });
        let refund = RefundRequest { payment_id: req.payment_id, refund_id: req.refund_id, reason: req.reason, amount };
        let refunded = self.0.refund(&refund).await.map_err(to_status)?;
        // The fake's payments are all in euros; the orders service reads the amount.
        Ok(Response::new(RefundPaymentResponse {
            refunded: Some(Money { currency: "EUR".into(), amount_minor: refunded }),
            ..RefundPaymentResponse::default()
        }))
    }
    async fn get_payment(&self, _: Request<GetPaymentRequest>) -> Result<Response<GetPaymentResponse>, Status> {
        unimplemented()
    }

    async fn list_payments(&self, _: Request<ListPaymentsRequest>) -> Result<Response<ListPaymentsResponse>, Status> {
        unimplemented()
    }
}

/// The address books, as the users service answers the customer's own token.
#[tonic::async_trait]
impl UserService for Remote {
    async fn list_addresses(
        &self,
        request: Request<ListAddressesRequest>,
    ) -> Result<Response<ListAddressesResponse>, Status> {
        let auth = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let s = self.0.state();
        let customer = s.tokens.get(auth).ok_or_else(|| Status::unauthenticated("unknown caller"))?;
        let book = s.addresses.get(customer).cloned().unwrap_or_default();
        let addresses = book
            .into_iter()
            .map(|(id, address, is_default)| SavedAddress {
                id,
                address: Some(address),
                is_default,
                ..SavedAddress::default()
            })
            .collect();
        Ok(Response::new(ListAddressesResponse { addresses }))
    }
    async fn get_address(&self, request: Request<GetAddressRequest>) -> Result<Response<GetAddressResponse>, Status> {
        let auth = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let id = request.into_inner().id;
        let found =
            self.0.saved_address(&auth, Some(&id)).await.map_err(|_| Status::unauthenticated("unknown caller"))?;
        let address = found.ok_or_else(|| Status::not_found(format!("address {id} not found")))?;
        Ok(Response::new(GetAddressResponse {
            address: Some(SavedAddress { id, address: Some(address), ..SavedAddress::default() }),
        }))
    }
    async fn get_profile(&self, _: Request<GetProfileRequest>) -> Result<Response<GetProfileResponse>, Status> {
        unimplemented()
    }
    async fn update_profile(
        &self,
        _: Request<UpdateProfileRequest>,
    ) -> Result<Response<UpdateProfileResponse>, Status> {
        unimplemented()
    }
    async fn create_address(
        &self,
        _: Request<CreateAddressRequest>,
    ) -> Result<Response<CreateAddressResponse>, Status> {
        unimplemented()
    }
    async fn update_address(
        &self,
        _: Request<UpdateAddressRequest>,
    ) -> Result<Response<UpdateAddressResponse>, Status> {
        unimplemented()
    }
    async fn delete_address(
        &self,
        _: Request<DeleteAddressRequest>,
    ) -> Result<Response<DeleteAddressResponse>, Status> {
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
pub enum Wiring {
    /// The fake as the SagaPorts.
    Direct,
    /// GrpcPorts against the fake's gRPC servers.
    Grpc,
}

pub fn options() -> SagaOptions {
    SagaOptions {
        wait: Duration::from_secs(10),
        attempts: 3,
        backoff: Duration::from_millis(10),
        recovery_interval: Duration::from_millis(200),
        stuck_after: Duration::from_secs(30),
        requires_verified_email: false,
        return_window_days: 30,
        return_shipping: platform::config::ReturnShipping::Shared,
    }
}

pub struct Server {
    pub url: String,
    pub issuer: Arc<TestIssuer>,
    pub fake: Arc<Fake>,
    pub db: Db,
    /// The bus the service publishes on and consumes `payment.refunded` from (subscribed as `orders::run` does).
    pub bus: Arc<InProcessBus>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), orders::Error>>,
    pub remote: Option<(CancellationToken, JoinHandle<Result<(), tonic::transport::Error>>)>,
}

/// A channel to the orders service under test at `url`, once it is up.
pub async fn connect(url: &str) -> Channel {
    platform::testkit::connect_when_up(url, "orders").await
}

impl Server {
    pub async fn start(db: Db, fake: Arc<Fake>, wiring: Wiring) -> Self {
        Self::start_with(db, fake, wiring, Arc::new(TestIssuer::new().expect("issuer")), options()).await
    }

    pub async fn start_with(
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
                        .add_service(DeliveryServiceServer::new(remote.clone()))
                        .add_service(UserServiceServer::new(remote))
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
                    users: channel,
                };
                let ports = GrpcPorts::new(channels, Credentials::Fixed(SERVICE_TOKEN.to_owned()));
                (Arc::new(ports) as Arc<dyn SagaPorts>, Some((stop, task)))
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let bus = Arc::new(InProcessBus::new());
        orders::events::subscribe(bus.as_ref(), orders::store::Store::new(db.clone()));
        let task = tokio::spawn(orders::serve(
            listener,
            db.clone(),
            issuer.verifier(),
            ports,
            bus.clone(),
            options,
            shutdown.clone(),
        ));
        connect(&url).await;
        let server = Self { url, issuer, fake, db, bus, shutdown, task, remote };
        // The listener is bound before the service migrates: an answered call means its tables exist.
        server.client("probe", false).await.list(ListOrdersRequest::default()).await.expect("serving");
        server
    }

    /// A client acting as `customer` (scopes orders:write, plus orders:admin for admins), whose address is not
    /// verified.
    pub async fn client(&self, customer: &str, admin: bool) -> Client {
        let scopes: &[&str] = if admin { &["orders:write", "orders:admin"] } else { &["orders:write"] };
        self.client_with(self.issuer.claims(customer, scopes, &["customer"])).await
    }

    /// A client acting as `customer`, whose token says the address is verified.
    pub async fn verified_client(&self, customer: &str) -> Client {
        let claims = self.issuer.claims(customer, &["orders:write"], &["customer"]);
        self.client_with(platform::auth::Claims { email_verified: true, ..claims }).await
    }

    /// The `authorization` value of staff member `staff-1` holding `scopes`.
    pub fn staff_token(&self, scopes: &[&str]) -> String {
        format!("Bearer {}", self.issuer.sign(&self.issuer.claims("staff-1", scopes, &["staff"])))
    }

    pub async fn client_with(&self, claims: platform::auth::Claims) -> Client {
        let token = format!("Bearer {}", self.issuer.sign(&claims));
        self.fake.state().tokens.insert(token.clone(), claims.sub.clone());
        Client { inner: OrderServiceClient::new(connect(&self.url).await), token }
    }

    pub async fn stop(self) {
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
pub struct Client {
    pub inner: OrderServiceClient<Channel>,
    pub token: String,
}

impl Client {
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", self.token.parse().expect("header"));
        request
    }

    pub async fn create(&self, req: CreateOrderRequest) -> Result<Order, Status> {
        let order = self.inner.clone().create_order(self.request(req)).await?.into_inner().order;
        Ok(order.expect("order"))
    }

    /// What `items` (none: the cart) would cost with `discount_code`, without placing an order.
    pub async fn preview(&self, items: &[(&str, i32)], discount_code: &str) -> Result<PreviewOrderResponse, Status> {
        let items = items.iter().map(|(p, q)| CreateOrderItem { product_id: (*p).into(), quantity: *q }).collect();
        self.preview_with(PreviewOrderRequest { items, discount_code: discount_code.into(), ..Default::default() })
            .await
    }

    /// What `request` would cost, without placing an order.
    pub async fn preview_with(&self, request: PreviewOrderRequest) -> Result<PreviewOrderResponse, Status> {
        Ok(self.inner.clone().preview_order(self.request(request)).await?.into_inner())
    }

    pub async fn get(&self, id: &str) -> Result<Order, Status> {
        let order = self.inner.clone().get_order(self.request(GetOrderRequest { id: id.into() })).await?;
        Ok(order.into_inner().order.expect("order"))
    }

    pub async fn list(&self, req: ListOrdersRequest) -> Result<(Vec<Order>, String), Status> {
        let r = self.inner.clone().list_orders(self.request(req)).await?.into_inner();
        Ok((r.orders, r.next_page_token))
    }

    pub async fn cancel(&self, id: &str) -> Result<Order, Status> {
        let mut client = self.inner.clone();
        let r = client.cancel_order(self.request(CancelOrderRequest { id: id.into(), reason: String::new() })).await?;
        Ok(r.into_inner().order.expect("order"))
    }

    /// Polls until the order leaves PENDING (and is not mid-cancel).
    pub async fn settled(&self, id: &str) -> Order {
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
    pub async fn reaches(&self, id: &str, want: OrderStatus) -> Order {
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

/// `message` sent with `token` (an `authorization` value such as [`Server::staff_token`]'s), or without one.
pub fn authorized<T>(token: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", token.parse().expect("header"));
    }
    request
}

pub fn address() -> Address {
    Address {
        name: "Ada Lovelace".into(),
        line1: "1 Analytical Row".into(),
        city: "London".into(),
        postal_code: "N1 9GU".into(),
        country: "gb".into(),
        ..Address::default()
    }
}

pub fn order_of(items: &[(&str, i32)], key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        shipping_address: Some(address()),
        payment_method: "tok_visa".into(),
        items: items.iter().map(|(p, q)| CreateOrderItem { product_id: (*p).into(), quantity: *q }).collect(),
        idempotency_key: key.into(),
        shipping_address_id: String::new(),
        discount_code: String::new(),
        shipping_rate_id: String::new(),
    }
}

pub fn status(order: &Order) -> OrderStatus {
    OrderStatus::try_from(order.status).expect("status")
}

/// The field violations of an INVALID_ARGUMENT, as (field, description).
pub fn violations(status: &Status) -> Vec<(String, String)> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = platform::error::decode_details(status).expect("details");
    let bad = details
        .details
        .iter()
        .find(|d| d.type_url.ends_with("BadRequest"))
        .map(|d| <api::google::rpc::BadRequest as prost::Message>::decode(d.value.as_slice()).expect("bad request"))
        .expect("BadRequest");
    bad.field_violations.into_iter().map(|v| (v.field, v.description)).collect()
}

pub async fn events_of(db: &Db, order_id: &str) -> Vec<String> {
    with_db!(db, pool => {
        sqlx::query_scalar::<_, String>("SELECT event_type FROM outbox WHERE subject = $1 ORDER BY create_time, id")
            .bind(order_id)
            .fetch_all(pool)
            .await
            .expect("outbox")
    })
}

/// The `order.cancelled` event the order wrote to its outbox.
pub async fn cancelled_event(db: &Db, order_id: &str) -> api::mercato::orders::v1::OrderCancelled {
    outbox_event(db, order_id, "order.cancelled").await
}

/// Publishes the payments' `payment.refunded` event of refund `refund_id` of `amount_minor` (EUR) of an order's
/// payment, `so_far` given back of it in all, on the service's bus as the payments' relay would.
pub async fn publish_refunded(
    server: &Server,
    order_id: &str,
    payment_id: &str,
    refund_id: &str,
    amount_minor: i64,
    so_far: i64,
) {
    use platform::events::EventBus;
    use prost::Message;
    let eur = |amount_minor| Some(Money { currency: "EUR".into(), amount_minor });
    let payload = api::mercato::payments::v1::PaymentRefunded {
        payment_id: payment_id.into(),
        order_id: order_id.into(),
        refund_id: refund_id.into(),
        amount: eur(amount_minor),
        refunded_amount: eur(so_far),
        ..Default::default()
    };
    let event = platform::events::EventEnvelope {
        id: format!("event-{refund_id}"),
        source: "payments".into(),
        r#type: "payment.refunded".into(),
        subject: payment_id.into(),
        data: payload.encode_to_vec(),
        ..Default::default()
    };
    server.bus.publish(event).await.expect("taken");
}

/// The payload of the event of `event_type` the order wrote to its outbox.
pub async fn outbox_event<M: prost::Message + Default>(db: &Db, order_id: &str, event_type: &str) -> M {
    // The outbox keeps the payload message in base64.
    let payload: String = with_db!(db, pool => {
        sqlx::query_scalar("SELECT payload FROM outbox WHERE subject = $1 AND event_type = $2")
            .bind(order_id)
            .bind(event_type)
            .fetch_one(pool)
            .await
            .expect("the event")
    });
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, payload).expect("base64");
    M::decode(bytes.as_slice()).expect("payload")
}

/// The saga's log of an order: (from step, to step, status) per stored move, in order.
pub async fn saga_log_of(db: &Db, order_id: &str) -> Vec<(String, String, String)> {
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

pub fn moves(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter().map(|(from, to, status)| ((*from).to_owned(), (*to).to_owned(), (*status).to_owned())).collect()
}

/// The end state is consistent with the order's status, in the fake's books.
pub fn assert_consistent(fake: &Fake, order: &Order, quantity: i64, product: &str, initial_stock: i64) {
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
// Every scenario on both engines.

/// Runs each named scenario (an async fn taking a `Db`) as a test on SQLite, and on PostgreSQL when
/// `MERCATO_TEST_DATABASE_URL` is set.
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

pub(crate) use on_both_engines;
