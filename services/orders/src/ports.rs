//! What the orders service asks of other services, behind one trait so the saga can be driven by fakes
//! (failures, crashes) in tests. [`GrpcPorts`] is the production implementation over gRPC.
//!
//! Every saga call is idempotent at the other end, keyed by ids derived from the order id: the reservation
//! id is the order id, the payment's idempotency key `order:<id>`, the refund ids `order:<id>:compensation`
//! and `order:<id>:cancel`, the shipment to cancel the order's. Repeating a call after a crash is therefore
//! always safe.

use std::sync::Arc;

use api::catalog::catalog_service_client::CatalogServiceClient;
use api::catalog::{
    CommitStockRequest, GetProductRequest, ReleaseStockRequest, ReservationStatus, ReserveStockRequest, StockItem,
    TaxClass,
};
use api::common::Money;
use api::mercato::cart::v1::cart_service_client::CartServiceClient;
use api::mercato::cart::v1::{ClearCartRequest, GetCartRequest};
use api::mercato::deliveries::v1::CancelOrderShipmentRequest;
use api::mercato::deliveries::v1::delivery_service_client::DeliveryServiceClient;
use api::mercato::orders::v1::Address as WireAddress;
use api::mercato::payments::v1::payment_service_client::PaymentServiceClient;
use api::mercato::payments::v1::{CreatePaymentRequest, PaymentStatus, RefundPaymentRequest};
use api::mercato::users::v1::user_service_client::UserServiceClient;
use api::mercato::users::v1::{GetAddressRequest, ListAddressesRequest};
use platform::auth::ServiceTokens;
use platform::grpc::Channel;
use platform::grpc::TracedChannel;
use tonic::{Code, Request, Status};

use crate::domain::{LineInput, Offer, Price};

/// A call to another service failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Worth retrying: the service is unreachable, slow or overloaded.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying the same call will not help.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl PortError {
    /// Classifies a gRPC status: UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, RESOURCE_EXHAUSTED and UNKNOWN
    /// (transport trouble) are transient, everything else permanent.
    pub fn from_status(what: &str, status: &Status) -> Self {
        let text = format!("{what}: {:?}: {}", status.code(), status.message());
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::ResourceExhausted | Code::Unknown => {
                Self::Transient(text)
            }
            _ => Self::Permanent(text),
        }
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// How ReserveStock ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The stock is held (or was already committed by an earlier run).
    Held,
    /// Not enough stock of a product (the one named when known).
    OutOfStock(Option<String>),
    /// A product is no longer for sale or unknown (the one named when known).
    NotForSale(Option<String>),
    /// The reservation already exists and was released.
    Released,
}

/// How CommitStock ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The stock is sold.
    Committed,
    /// The reservation was released or does not exist: the stock cannot be sold.
    Refused,
}

/// How CancelOrderShipment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipmentCancel {
    /// The shipment is cancelled (or was never made, and now will not be): the order may be cancelled.
    Cancelled,
    /// The parcel is with the carrier: the order cannot be cancelled.
    Dispatched,
}

/// A charge to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    /// The order.
    pub order_id: String,
    /// The customer charged.
    pub customer_id: String,
    /// Amount.
    pub amount: Price,
    /// The tax the amount includes (0: none), for the payment's books.
    pub tax_minor: i64,
    /// Payment method token.
    pub payment_method: String,
    /// Idempotency key (`order:<id>`).
    pub idempotency_key: String,
}

/// How a charge ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentOutcome {
    /// The payment's id.
    pub payment_id: String,
    /// Captured (true) or failed (false).
    pub captured: bool,
    /// The customer-readable reason when failed.
    pub failure_reason: String,
}

/// A refund to make: an amount (a return's), or whatever is still refundable of a payment (all of it, or the
/// rest when staff gave part back already), so a compensation or a cancellation never asks for more than is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// The captured payment.
    pub payment_id: String,
    /// Idempotency id of the refund.
    pub refund_id: String,
    /// Why.
    pub reason: String,
    /// What to give back; None: the rest of the payment.
    pub amount: Option<Price>,
}

/// Everything the orders service needs from the catalog, the cart, the payments, the deliveries and the users
/// service.
#[tonic::async_trait]
pub trait SagaPorts: Send + Sync + 'static {
    /// The product as the catalog sells it now; `None` when unknown or hidden (not for sale).
    async fn product(&self, product_id: &str) -> Result<Option<Offer>, PortError>;
    /// The lines of the cart of the caller whose `authorization` metadata value is given.
    async fn cart(&self, authorization: &str) -> Result<Vec<LineInput>, PortError>;
    /// Address `id` of that caller's address book, or with no id the book's default; `None` when there is no
    /// such address.
    async fn saved_address(&self, authorization: &str, id: Option<&str>) -> Result<Option<WireAddress>, PortError>;
    /// Holds stock for order `order_id` (the reservation id), all lines or none.
    async fn reserve(&self, order_id: &str, lines: &[LineInput]) -> Result<Reservation, PortError>;
    /// Gives the held stock of order `order_id` back; a reservation that does not exist is fine.
    async fn release(&self, order_id: &str) -> Result<(), PortError>;
    /// Sells the held stock of order `order_id`.
    async fn commit(&self, order_id: &str) -> Result<Commit, PortError>;
    /// Charges the payment method; a decline is an outcome, not an error.
    async fn pay(&self, request: &PaymentRequest) -> Result<PaymentOutcome, PortError>;
    /// Gives back what is still refundable of a captured payment; answers what that was (in minor units of the
    /// payment's currency; 0 when nothing was left). A repeat with the same refund id answers the first result.
    async fn refund(&self, request: &RefundRequest) -> Result<i64, PortError>;
    /// Empties the cart of `customer_id`.
    async fn clear_cart(&self, customer_id: &str) -> Result<(), PortError>;
    /// Cancels the shipment of order `order_id` (`reason` goes into its history), unless it was dispatched.
    async fn cancel_shipment(&self, order_id: &str, reason: &str) -> Result<ShipmentCancel, PortError>;
}

/// How [`GrpcPorts`] proves who it is to the other services.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// This service's tokens from the auth service (client-credentials grant): production.
    Service(Arc<ServiceTokens>),
    /// A fixed bearer token (tests, or a token minted elsewhere).
    Fixed(String),
}

impl Credentials {
    async fn request<T>(&self, message: T) -> Result<Request<T>, Status> {
        match self {
            Self::Service(tokens) => tokens.request(message).await,
            Self::Fixed(token) => {
                let mut request = Request::new(message);
                let value =
                    format!("Bearer {token}").parse().map_err(|_| Status::internal("unusable service token"))?;
                request.metadata_mut().insert("authorization", value);
                Ok(request)
            }
        }
    }
}

/// A request made as the caller whose `authorization` metadata value is given (their cart, their addresses).
fn as_caller<T>(message: T, authorization: &str) -> Result<Request<T>, PortError> {
    let mut request = Request::new(message);
    let value = authorization.parse().map_err(|_| PortError::Permanent("unusable authorization".into()))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// The production ports: gRPC clients of the catalog, the cart, the payments, the deliveries and the users service.
#[derive(Debug, Clone)]
pub struct GrpcPorts {
    catalog: CatalogServiceClient<TracedChannel>,
    cart: CartServiceClient<TracedChannel>,
    payments: PaymentServiceClient<TracedChannel>,
    deliveries: DeliveryServiceClient<TracedChannel>,
    users: UserServiceClient<TracedChannel>,
    credentials: Credentials,
}

/// The channels [`GrpcPorts`] calls over, one per service.
#[derive(Debug, Clone)]
pub struct Channels {
    /// To the catalog (products, stock).
    pub catalog: Channel,
    /// To the cart service.
    pub cart: Channel,
    /// To the payments service.
    pub payments: Channel,
    /// To the deliveries service (the shipment of an order being cancelled).
    pub deliveries: Channel,
    /// To the users service (the customer's saved addresses).
    pub users: Channel,
}

impl GrpcPorts {
    /// Ports over `channels`, calling with `credentials` where a service token is needed.
    pub fn new(channels: Channels, credentials: Credentials) -> Self {
        Self {
            catalog: CatalogServiceClient::new(TracedChannel::new(channels.catalog)),
            cart: CartServiceClient::new(TracedChannel::new(channels.cart)),
            payments: PaymentServiceClient::new(TracedChannel::new(channels.payments)),
            deliveries: DeliveryServiceClient::new(TracedChannel::new(channels.deliveries)),
            users: UserServiceClient::new(TracedChannel::new(channels.users)),
            credentials,
        }
    }

    async fn authed<T>(&self, what: &str, message: T) -> Result<Request<T>, PortError> {
        self.credentials.request(message).await.map_err(|s| PortError::from_status(what, &s))
    }
}

fn money(price: &Price) -> Money {
    Money { currency: price.currency.clone(), amount_minor: price.amount_minor }
}

/// The product a catalog error message names, among `lines` (the catalog says "... product <id> ...").
fn named_product(status: &Status, lines: &[LineInput]) -> Option<String> {
    lines.iter().find(|l| status.message().contains(&l.product_id)).map(|l| l.product_id.clone())
}

/// The `ErrorInfo` reason of a status, if it has one.
fn error_reason(status: &Status) -> Option<String> {
    let details = platform::error::decode_details(status)?;
    details.details.iter().find_map(|any| {
        (any.type_url == "type.googleapis.com/google.rpc.ErrorInfo")
            .then(|| <api::google::rpc::ErrorInfo as prost::Message>::decode(any.value.as_slice()).ok())
            .flatten()
            .map(|info| info.reason)
    })
}

#[tonic::async_trait]
impl SagaPorts for GrpcPorts {
    async fn product(&self, product_id: &str) -> Result<Option<Offer>, PortError> {
        // GetProduct is open to anyone; anonymous callers do not see inactive products (NOT_FOUND).
        match self.catalog.clone().get_product(GetProductRequest { id: product_id.to_owned() }).await {
            Ok(response) => {
                let Some(p) = response.into_inner().product else {
                    return Err(PortError::Permanent("GetProduct answered without a product".into()));
                };
                let Some(price) = p.price else {
                    return Ok(None);
                };
                Ok(Some(Offer {
                    product_id: p.id,
                    sku: p.sku,
                    name: p.name,
                    price: Price { currency: price.currency, amount_minor: price.amount_minor },
                    active: p.active,
                    reduced_tax: p.tax_class == TaxClass::Reduced as i32,
                }))
            }
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(PortError::from_status("GetProduct", &status)),
        }
    }

    async fn cart(&self, authorization: &str) -> Result<Vec<LineInput>, PortError> {
        let request = as_caller(GetCartRequest {}, authorization)?;
        let cart = self
            .cart
            .clone()
            .get_cart(request)
            .await
            .map_err(|s| PortError::from_status("GetCart", &s))?
            .into_inner()
            .cart
            .unwrap_or_default();
        Ok(cart.items.into_iter().map(|i| LineInput { product_id: i.product_id, quantity: i.quantity }).collect())
    }

    async fn saved_address(&self, authorization: &str, id: Option<&str>) -> Result<Option<WireAddress>, PortError> {
        let mut users = self.users.clone();
        let Some(id) = id else {
            let book = users.list_addresses(as_caller(ListAddressesRequest {}, authorization)?).await;
            let book = book.map_err(|s| PortError::from_status("ListAddresses", &s))?.into_inner();
            return Ok(book.addresses.into_iter().find(|a| a.is_default).and_then(|a| a.address));
        };
        match users.get_address(as_caller(GetAddressRequest { id: id.to_owned() }, authorization)?).await {
            Ok(found) => Ok(found.into_inner().address.and_then(|a| a.address)),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(PortError::from_status("GetAddress", &status)),
        }
    }

    async fn reserve(&self, order_id: &str, lines: &[LineInput]) -> Result<Reservation, PortError> {
        let message = ReserveStockRequest {
            reservation_id: order_id.to_owned(),
            items: lines.iter().map(|l| StockItem { product_id: l.product_id.clone(), quantity: l.quantity }).collect(),
        };
        let request = self.authed("ReserveStock", message).await?;
        match self.catalog.clone().reserve_stock(request).await {
            Ok(response) => Ok(match ReservationStatus::try_from(response.into_inner().status) {
                Ok(ReservationStatus::Released) => Reservation::Released,
                _ => Reservation::Held,
            }),
            Err(status) if status.code() == Code::NotFound => {
                Ok(Reservation::NotForSale(named_product(&status, lines)))
            }
            Err(status) if status.code() == Code::FailedPrecondition => {
                let product = named_product(&status, lines);
                Ok(match error_reason(&status).as_deref() {
                    Some("INSUFFICIENT_STOCK") => Reservation::OutOfStock(product),
                    _ => Reservation::NotForSale(product),
                })
            }
            Err(status) => Err(PortError::from_status("ReserveStock", &status)),
        }
    }

    async fn release(&self, order_id: &str) -> Result<(), PortError> {
        let request = self.authed("ReleaseStock", ReleaseStockRequest { reservation_id: order_id.to_owned() }).await?;
        match self.catalog.clone().release_stock(request).await {
            Ok(_) => Ok(()),
            // Never reserved (the reservation failed): nothing to give back.
            Err(status) if status.code() == Code::NotFound => Ok(()),
            Err(status) => Err(PortError::from_status("ReleaseStock", &status)),
        }
    }

    async fn commit(&self, order_id: &str) -> Result<Commit, PortError> {
        let request = self.authed("CommitStock", CommitStockRequest { reservation_id: order_id.to_owned() }).await?;
        match self.catalog.clone().commit_stock(request).await {
            Ok(_) => Ok(Commit::Committed),
            Err(status) if matches!(status.code(), Code::NotFound | Code::FailedPrecondition) => Ok(Commit::Refused),
            Err(status) => Err(PortError::from_status("CommitStock", &status)),
        }
    }

    async fn pay(&self, request: &PaymentRequest) -> Result<PaymentOutcome, PortError> {
        let message = CreatePaymentRequest {
            order_id: request.order_id.clone(),
            amount: Some(money(&request.amount)),
            payment_method: request.payment_method.clone(),
            idempotency_key: request.idempotency_key.clone(),
            customer_id: request.customer_id.clone(),
            // Only when there is some: the payment's fingerprint then is what it was before orders sent tax.
            tax: (request.tax_minor > 0)
                .then(|| money(&Price { currency: request.amount.currency.clone(), amount_minor: request.tax_minor })),
        };
        let mut call = self.authed("CreatePayment", message).await?;
        let key = request.idempotency_key.parse().map_err(|_| PortError::Permanent("unusable key".into()))?;
        call.metadata_mut().insert("idempotency-key", key);
        let payment = self
            .payments
            .clone()
            .create_payment(call)
            .await
            .map_err(|s| PortError::from_status("CreatePayment", &s))?
            .into_inner()
            .payment
            .ok_or_else(|| PortError::Permanent("CreatePayment answered without a payment".into()))?;
        let captured = payment.status != PaymentStatus::Failed as i32;
        Ok(PaymentOutcome { payment_id: payment.id, captured, failure_reason: payment.failure_reason })
    }

    async fn refund(&self, request: &RefundRequest) -> Result<i64, PortError> {
        let message = RefundPaymentRequest {
            payment_id: request.payment_id.clone(),
            refund_id: request.refund_id.clone(),
            amount: request.amount.as_ref().map(money),
            reason: request.reason.clone(),
            rest: request.amount.is_none(),
        };
        let call = self.authed("RefundPayment", message).await?;
        let answer = self
            .payments
            .clone()
            .refund_payment(call)
            .await
            .map_err(|s| PortError::from_status("RefundPayment", &s))?
            .into_inner();
        Ok(answer.refunded.map_or(0, |m| m.amount_minor))
    }

    async fn clear_cart(&self, customer_id: &str) -> Result<(), PortError> {
        let call = self.authed("ClearCart", ClearCartRequest { customer_id: customer_id.to_owned() }).await?;
        self.cart.clone().clear_cart(call).await.map_err(|s| PortError::from_status("ClearCart", &s))?;
        Ok(())
    }

    async fn cancel_shipment(&self, order_id: &str, reason: &str) -> Result<ShipmentCancel, PortError> {
        let message = CancelOrderShipmentRequest { order_id: order_id.to_owned(), reason: reason.to_owned() };
        let call = self.authed("CancelOrderShipment", message).await?;
        match self.deliveries.clone().cancel_order_shipment(call).await {
            Ok(_) => Ok(ShipmentCancel::Cancelled),
            Err(status) if error_reason(&status).as_deref() == Some("SHIPMENT_DISPATCHED") => {
                Ok(ShipmentCancel::Dispatched)
            }
            Err(status) => Err(PortError::from_status("CancelOrderShipment", &status)),
        }
    }
}
