//! The gRPC face of the orders service: wire messages in, domain rules, store and saga, wire messages out.

use std::sync::Arc;

use api::common::Money;
use api::mercato::orders::v1::order_service_server::OrderService;
use api::mercato::orders::v1::{
    Address as WireAddress, CancelOrderRequest, CancelOrderResponse, CreateOrderItem, CreateOrderRequest,
    CreateOrderResponse, GetOrderRequest, GetOrderResponse, ListOrdersRequest, ListOrdersResponse, Order as WireOrder,
    OrderItem, OrderStatus, OrderTax as WireOrderTax, PreviewOrderRequest, PreviewOrderResponse, ShippingOption,
};
use futures::future::try_join_all;
use platform::auth::{Claims, caller};
use platform::error::FieldViolation;
use platform::time::{now_micros, timestamp};
use prost::Message;
use tonic::{Request, Response, Status as GrpcStatus};
use tracing::Instrument;

use crate::discount;
use crate::domain::{self, Address, Line, LineInput, Price, PricingError, Status, Step};
use crate::error::{
    CART_EMPTY, EMAIL_NOT_VERIFIED, Error, IDEMPOTENCY_KEY_REUSED, MIXED_CURRENCIES, ORDER_SHIPPED, ORDER_STATE,
    PRODUCT_UNAVAILABLE,
};
use crate::events;
use crate::ports::{PortError, SagaPorts};
use crate::saga::Saga;
use crate::shipping::{self, Shipping};
use crate::store::{Change, ListQuery, Order, Placement, Store};
use crate::tax::{self, OrderTax};

/// The scope that lets a caller see and manage every customer's orders.
pub const ORDERS_ADMIN: &str = "orders:admin";
/// The gRPC metadata carrying the idempotency key (the `Idempotency-Key` HTTP header).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Implements `mercato.orders.v1.OrderService`.
#[derive(Clone)]
pub struct OrdersApi {
    store: Store,
    saga: Saga,
    ports: Arc<dyn SagaPorts>,
}

impl std::fmt::Debug for OrdersApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrdersApi").field("saga", &self.saga).finish_non_exhaustive()
    }
}

impl OrdersApi {
    /// The service over a migrated store, running checkouts with `saga` and pricing with `ports`.
    pub fn new(store: Store, saga: Saga, ports: Arc<dyn SagaPorts>) -> Self {
        Self { store, saga, ports }
    }
}

/// Money on the wire.
pub fn money(price: &Price) -> Money {
    Money { currency: price.currency.clone(), amount_minor: price.amount_minor }
}

/// Order lines on the wire, in `currency`.
pub fn lines_to_wire(lines: &[Line], currency: &str) -> Vec<OrderItem> {
    lines
        .iter()
        .map(|l| OrderItem {
            product_id: l.product_id.clone(),
            sku: l.sku.clone(),
            name: l.name.clone(),
            quantity: l.quantity,
            unit_price: Some(Money { currency: currency.to_owned(), amount_minor: l.unit_price_minor }),
            line_total: Some(Money { currency: currency.to_owned(), amount_minor: l.total_minor() }),
            returned_quantity: l.returned,
        })
        .collect()
}

/// An address on the wire.
pub fn address_to_wire(a: &Address) -> WireAddress {
    WireAddress {
        name: a.name.clone(),
        line1: a.line1.clone(),
        line2: a.line2.clone(),
        city: a.city.clone(),
        region: a.region.clone(),
        postal_code: a.postal_code.clone(),
        country: a.country.clone(),
    }
}

/// An address from the wire (checked before: `platform::address::validate`).
pub fn address_from_wire(a: WireAddress) -> Address {
    Address {
        name: a.name,
        line1: a.line1,
        line2: a.line2,
        city: a.city,
        region: a.region,
        postal_code: a.postal_code,
        country: a.country,
    }
}

fn status_to_wire(status: Status) -> OrderStatus {
    match status {
        Status::Pending => OrderStatus::Pending,
        Status::Confirmed => OrderStatus::Confirmed,
        Status::Failed => OrderStatus::Failed,
        Status::Cancelled => OrderStatus::Cancelled,
    }
}

fn status_from_wire(status: i32) -> Result<Option<Status>, FieldViolation> {
    match OrderStatus::try_from(status) {
        Ok(OrderStatus::Unspecified) => Ok(None),
        Ok(OrderStatus::Pending) => Ok(Some(Status::Pending)),
        Ok(OrderStatus::Confirmed) => Ok(Some(Status::Confirmed)),
        Ok(OrderStatus::Failed) => Ok(Some(Status::Failed)),
        Ok(OrderStatus::Cancelled) => Ok(Some(Status::Cancelled)),
        Err(_) => Err(FieldViolation::new("status", "is not an order status")),
    }
}

/// The tax an order's `total` (after its discount, with shipping) includes at `rate` (None: its country has no
/// rate), its items priced as `priced`.
fn tax_included(rate: Option<tax::TaxRate>, priced: &domain::Priced, total: &Price) -> Option<OrderTax> {
    rate.map(|rate| tax::included(&rate, total.amount_minor, priced.total.amount_minor, priced.reduced_tax_minor))
}

/// All the tax included, in `currency`: zero without.
pub fn tax_of(currency: &str, tax: Option<&OrderTax>) -> Price {
    Price { currency: currency.to_owned(), amount_minor: tax.map_or(0, OrderTax::amount_minor) }
}

/// The tax included in a total in `currency`, by rate, on the wire: the standard part, then the reduced one.
pub fn taxes_to_wire(currency: &str, tax: Option<&OrderTax>) -> Vec<WireOrderTax> {
    let Some(tax) = tax else { return Vec::new() };
    let price = |amount_minor| Some(money(&Price { currency: currency.to_owned(), amount_minor }));
    tax.parts()
        .map(|part| WireOrderTax {
            name: tax.name.clone(),
            rate_basis_points: part.rate_basis_points,
            taxable: price(part.taxable_minor),
            amount: price(part.amount_minor),
        })
        .collect()
}

/// An order on the wire.
pub fn order_to_wire(order: Order) -> WireOrder {
    WireOrder {
        taxes: taxes_to_wire(&order.total.currency, order.tax.as_ref()),
        tax: Some(money(&tax_of(&order.total.currency, order.tax.as_ref()))),
        subtotal: Some(money(&order.subtotal())),
        discount: Some(money(&order.discount())),
        shipping: Some(money(&order.shipping())),
        refunded: Some(money(&order.refunded())),
        items: lines_to_wire(&order.lines, &order.total.currency),
        total: Some(money(&order.total)),
        shipping_address: Some(address_to_wire(&order.address)),
        status: status_to_wire(order.status) as i32,
        id: order.id,
        customer_id: order.customer_id,
        payment_method: order.payment_method,
        payment_id: order.payment_id,
        // Only a failed order has a reason to show; a compensating one keeps it until it is FAILED.
        failure_reason: if order.status == Status::Failed { order.failure_reason } else { String::new() },
        create_time: Some(timestamp(order.create_time)),
        update_time: Some(timestamp(order.update_time)),
        discount_code: order.discount_code,
        shipping_rate_id: order.shipping_rate_id,
        shipping_rate_name: order.shipping_rate_name,
    }
}

fn is_admin(claims: &Claims) -> bool {
    claims.has_scope(ORDERS_ADMIN)
}

/// The page a listing asks for: its size, where it starts and the period it covers.
pub struct Paging {
    /// At most this many rows.
    pub size: i64,
    /// Start after this row.
    pub after: Option<domain::Cursor>,
    /// Microseconds, start inclusive, end exclusive.
    pub period: (i64, i64),
}

/// The paging of a listing request, each wrong field added to `violations`.
pub fn paging(
    page_size: i32,
    page_token: &str,
    (start_time, end_time): (Option<&prost_types::Timestamp>, Option<&prost_types::Timestamp>),
    violations: &mut Vec<FieldViolation>,
) -> Paging {
    let size = domain::page_size(page_size).unwrap_or_else(|v| {
        violations.push(v);
        domain::DEFAULT_PAGE_SIZE
    });
    let after = domain::Cursor::decode(page_token).unwrap_or_else(|v| {
        violations.push(v);
        None
    });
    let period = platform::time::period(start_time, end_time).unwrap_or_else(|v| {
        violations.extend(v);
        (i64::MIN, i64::MAX)
    });
    Paging { size, after, period }
}

/// Whose rows a listing shows: for a caller who `reads_all`, the customer asked for (everyone when none is);
/// for anyone else their own, and naming another is PERMISSION_DENIED saying which scope it `needs`.
pub fn listed_customer(
    claims: &Claims,
    requested: String,
    reads_all: bool,
    needs: &str,
) -> Result<Option<String>, Error> {
    if reads_all {
        Ok(Some(requested).filter(|c| !c.is_empty()))
    } else if requested.is_empty() || requested == claims.sub {
        Ok(Some(claims.sub.clone()))
    } else {
        Err(Error::PermissionDenied(format!("listing another customer's {needs}")))
    }
}

/// Where a checkout ships to, as the request says.
#[derive(Debug, Clone)]
enum Destination {
    /// The address in the request, checked.
    Given(Address),
    /// The caller's saved address with this id.
    Saved(String),
    /// The caller's default saved address.
    Default,
}

const NO_ADDRESS: &str =
    "is required: give one, name a saved address in shipping_address_id, or save a default address";

/// The destination of a checkout: the address given (trimmed and checked as every address the platform takes,
/// `platform::address`), a saved address's id, or, with neither, the default one; not both.
fn destination(given: Option<WireAddress>, saved_id: &str) -> Result<Destination, Vec<FieldViolation>> {
    match (given, saved_id) {
        (Some(_), id) if !id.is_empty() => Err(vec![FieldViolation::new(
            "shipping_address_id",
            "cannot be given with shipping_address: name one address",
        )]),
        (Some(address), _) => platform::address::validate("shipping_address", Some(address))
            .map(|a| Destination::Given(address_from_wire(a))),
        (None, "") => Ok(Destination::Default),
        (None, id) => platform::error::check_id("shipping_address_id", id)
            .map(|()| Destination::Saved(id.to_owned()))
            .map_err(|v| vec![v]),
    }
}

/// What a discount code does to an order: what it takes off the items, and whether it takes the shipping off.
#[derive(Debug, Clone, Copy, Default)]
struct Applied {
    items_off: i64,
    free_shipping: bool,
}

/// (the discount, the total) of an order of `subtotal` with `applied` and `shipping` ([`discount::settle`]).
fn settle(subtotal: &Price, applied: Applied, shipping: Option<&Shipping>) -> Result<(i64, Price), Error> {
    let shipping_minor = shipping.map_or(0, |s| s.amount_minor);
    let (discount, total) =
        discount::settle(subtotal.amount_minor, applied.items_off, applied.free_shipping, shipping_minor)
            .ok_or_else(|| Error::invalid(FieldViolation::new("items", "the total is too large")))?;
    Ok((discount, Price { currency: subtotal.currency.clone(), amount_minor: total }))
}

fn upstream(what: &str, error: PortError) -> Error {
    match error {
        PortError::Transient(text) => {
            tracing::warn!(error = %text, "{what} unavailable");
            Error::Unavailable(format!("the {what} is unavailable; try again"))
        }
        PortError::Permanent(text) => Error::Upstream(format!("{what}: {text}")),
    }
}

impl OrdersApi {
    /// The order `id` if `claims` may see it (their own, or any for admins).
    async fn visible(&self, id: &str, claims: &Claims) -> Result<Order, Error> {
        if id.is_empty() {
            return Err(Error::invalid(FieldViolation::new("id", "is required")));
        }
        match self.store.order(id).await? {
            Some(order) if order.customer_id == claims.sub || is_admin(claims) => Ok(order),
            // Another customer's order does not exist for this caller.
            _ => Err(Error::order_not_found(id)),
        }
    }

    /// Replays the order created earlier with the same key, or refuses a different request.
    async fn replay(&self, id: &str, hash: &str) -> Result<WireOrder, Error> {
        let order = self.store.order(id).await?.ok_or_else(|| Error::order_not_found(id))?;
        if order.request_hash != hash {
            return Err(Error::Rejected {
                reason: IDEMPOTENCY_KEY_REUSED,
                message: "this idempotency key was used for a different request".to_owned(),
            });
        }
        self.settled(order).await
    }

    /// The order once its saga finished (or the wait ran out).
    async fn settled(&self, order: Order) -> Result<WireOrder, Error> {
        Ok(order_to_wire(self.settled_order(order).await?))
    }

    /// [`Self::settled`], before it goes on the wire.
    async fn settled_order(&self, order: Order) -> Result<Order, Error> {
        if order.status == Status::Pending || order.step == Step::Cancel {
            if let Some(order) = self.saga.finish(&order.id).await {
                return Ok(order);
            }
            let id = order.id;
            return self.store.order(&id).await?.ok_or_else(|| Error::order_not_found(&id));
        }
        Ok(order)
    }

    /// Where to ship: the address given, or the one named or the default from the caller's address book.
    async fn address(&self, destination: Destination, authorization: &str) -> Result<Address, Error> {
        self.known_address(destination, authorization)
            .await?
            .ok_or_else(|| Error::invalid(FieldViolation::new("shipping_address", NO_ADDRESS)))
    }

    /// [`Self::address`], or None when the caller named none and has no default address.
    async fn known_address(&self, destination: Destination, authorization: &str) -> Result<Option<Address>, Error> {
        let id = match destination {
            Destination::Given(address) => return Ok(Some(address)),
            Destination::Saved(id) => Some(id),
            Destination::Default => None,
        };
        let saved = self.ports.saved_address(authorization, id.as_deref()).await.map_err(|e| upstream("users", e))?;
        let Some(saved) = saved else {
            return match id {
                Some(_) => Err(Error::invalid(FieldViolation::new(
                    "shipping_address_id",
                    "is not an address in your address book",
                ))),
                None => Ok(None),
            };
        };
        // Checked again as every address the platform takes: the book's rules could have been looser once.
        platform::address::validate("shipping_address", Some(saved))
            .map(|a| Some(address_from_wire(a)))
            .map_err(Error::InvalidArgument)
    }

    /// The lines priced at the catalog now, with the shop's shipping rates and the tax rate of `country` when it
    /// is known (read meanwhile).
    async fn price_with_rates(
        &self,
        lines: &[LineInput],
        from_cart: bool,
        country: Option<&str>,
    ) -> Result<(domain::Priced, Vec<shipping::ShippingRate>, Option<tax::TaxRate>), Error> {
        let tax_rate = async {
            match country {
                Some(country) => self.store.tax_rate(country).await,
                None => Ok(None),
            }
        };
        futures::try_join!(self.price(lines, from_cart), self.store.shipping_rates(), tax_rate)
    }

    /// The lines to order: the request's, or the caller's cart.
    async fn lines(&self, asked: Vec<LineInput>, authorization: &str) -> Result<(Vec<LineInput>, bool), Error> {
        if !asked.is_empty() {
            return Ok((asked, false));
        }
        let cart = self.ports.cart(authorization).await.map_err(|e| upstream("cart", e))?;
        if cart.is_empty() {
            return Err(Error::FailedPrecondition {
                reason: CART_EMPTY,
                message: "your cart is empty; add items or name them in the order".to_owned(),
            });
        }
        let lines = domain::normalize_lines(&cart).map_err(|_| Error::FailedPrecondition {
            reason: CART_EMPTY,
            message: "your cart cannot be ordered as it is".to_owned(),
        })?;
        Ok((lines, true))
    }

    /// Prices `lines` at the catalog now.
    async fn price(&self, lines: &[LineInput], from_cart: bool) -> Result<domain::Priced, Error> {
        let lookups = lines.iter().map(|l| async move {
            let offer = self.ports.product(&l.product_id).await.map_err(|e| upstream("catalog", e))?;
            offer.ok_or_else(|| {
                if from_cart {
                    Error::FailedPrecondition {
                        reason: PRODUCT_UNAVAILABLE,
                        message: format!("product {} in your cart is no longer sold; remove it", l.product_id),
                    }
                } else {
                    Error::NotFound(format!("product {} not found", l.product_id))
                }
            })
        });
        let offers = try_join_all(lookups).await?;
        domain::price(lines, &offers).map_err(|e| match e {
            PricingError::Inactive(name) => {
                Error::FailedPrecondition { reason: PRODUCT_UNAVAILABLE, message: format!("{name} is not for sale") }
            }
            PricingError::MixedCurrencies => Error::Rejected {
                reason: MIXED_CURRENCIES,
                message: "the items are priced in different currencies; order them separately".to_owned(),
            },
            PricingError::Overflow => Error::invalid(FieldViolation::new("items", "the total is too large")),
        })
    }

    /// What discount code `code` does to an order of `subtotal` for `customer_id` now, or the violation that
    /// tells the customer why not. Placing the order checks the use limits again where it counts the use.
    ///
    /// A refusal counts against the customer's budget ([`discount::MAX_REFUSED_PER_HOUR`]); once it is spent,
    /// every code is refused (RESOURCE_EXHAUSTED) until the hour is over, a good one too, so that whether a
    /// code exists cannot be learnt by guessing. A refusal of a checkout whose idempotency key `replaying` placed
    /// an order already does not count: it is a retry of that order (whose own use may have used the code up),
    /// which the checkout then answers.
    async fn discount(
        &self,
        code: &str,
        subtotal: &Price,
        customer_id: &str,
        now: i64,
        replaying: Option<&str>,
    ) -> Result<Applied, Error> {
        let window = discount::refusal_window(now);
        if self.store.refused_codes(customer_id, window).await? >= discount::MAX_REFUSED_PER_HOUR {
            // Whole minutes, rounded up: "in 0 minutes" would invite an immediate retry.
            let minutes = (discount::refusal_window_end(window) - now + 59_999_999) / 60_000_000;
            return Err(Error::TooManyAttempts(format!(
                "too many discount codes were refused for this account lately; try again in {minutes} minutes"
            )));
        }
        let checked = self.check_code(code, subtotal, customer_id, now).await;
        if let Err(Error::InvalidArgument(_)) = &checked {
            // Looked up only on a refusal: a checkout with a good code costs no statement more.
            let replay = match replaying {
                Some(key) => self.store.id_by_key(customer_id, key).await?.is_some(),
                None => false,
            };
            if !replay {
                self.store.count_refused_code(customer_id, window).await?;
            }
        }
        checked
    }

    /// [`Self::discount`] without the budget.
    async fn check_code(&self, code: &str, subtotal: &Price, customer_id: &str, now: i64) -> Result<Applied, Error> {
        let found = self.store.discount_code(code).await?;
        let refused = |refusal: discount::Refusal| Error::invalid(refusal.violation());
        let code = found.ok_or_else(|| refused(discount::Refusal::Unknown))?;
        let off = discount::discount_for(&code, subtotal, now).map_err(refused)?;
        if code.once_per_customer && self.store.has_redeemed(&code.code, customer_id).await? {
            return Err(refused(discount::Refusal::UsedBefore));
        }
        Ok(Applied { items_off: off, free_shipping: code.off == discount::Off::FreeShipping })
    }

    /// The lines as asked for at checkout or in a preview, checked and merged (empty: the cart's).
    fn asked_lines(items: &[CreateOrderItem]) -> Result<Vec<LineInput>, Vec<FieldViolation>> {
        let asked: Vec<LineInput> = items
            .iter()
            .map(|i| LineInput { product_id: i.product_id.trim().to_owned(), quantity: i.quantity })
            .collect();
        domain::normalize_lines(&asked)
    }

    /// A shipping rate as asked for at checkout or in a preview: None for the cheapest, or the id as stored.
    fn asked_rate(raw: &str) -> Result<Option<String>, FieldViolation> {
        match raw.trim() {
            "" => Ok(None),
            id => shipping::normalize_id(shipping::CHECKOUT_FIELD, id).map(Some),
        }
    }

    /// A discount code as asked for at checkout or in a preview: None for none, or the code as stored.
    fn asked_code(raw: &str) -> Result<Option<String>, FieldViolation> {
        match raw.trim() {
            "" => Ok(None),
            code => discount::normalize_code(discount::CHECKOUT_FIELD, code).map(Some),
        }
    }
}

#[tonic::async_trait]
impl OrderService for OrdersApi {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, GrpcStatus> {
        let claims = caller(&request)?.clone();
        let header = request.metadata().get(IDEMPOTENCY_KEY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let authorization =
            request.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let req = request.into_inner();

        let mut violations = Vec::new();
        let key = domain::idempotency_key(header.as_deref(), &req.idempotency_key).map_err(|v| violations.push(v)).ok();
        let destination =
            destination(req.shipping_address, req.shipping_address_id.trim()).map_err(|v| violations.extend(v)).ok();
        if let Err(v) = domain::validate_payment_method(&req.payment_method) {
            violations.push(v);
        }
        let asked = Self::asked_lines(&req.items).map_err(|v| violations.extend(v)).ok();
        let discount_code = Self::asked_code(&req.discount_code).map_err(|v| violations.push(v)).ok();
        let rate = Self::asked_rate(&req.shipping_rate_id).map_err(|v| violations.push(v)).ok();
        let (Some(key), Some(destination), Some(asked), Some(discount_code), Some(rate), true) =
            (key, destination, asked, discount_code, rate, violations.is_empty())
        else {
            return Err(Error::InvalidArgument(violations).into());
        };
        let payment_method = req.payment_method.trim().to_owned();
        // The shop's rule, when it has it (`MERCATO_CHECKOUT_REQUIRES_VERIFIED_EMAIL`): the access token tells
        // whether the customer proved their address, as of their last sign-in or refresh.
        if self.saga.options().requires_verified_email && !claims.email_verified {
            let message = "verify your email address before checking out (the code was mailed to you; \
                           POST /v1/auth/email-verifications mails another), then refresh your sign-in";
            return Err(Error::FailedPrecondition { reason: EMAIL_NOT_VERIFIED, message: message.to_owned() }.into());
        }

        // What the request means, without its key: equal fingerprints are replays. A saved address counts by its
        // id, so a retry after the customer edited it is still the same request.
        let canonical = CreateOrderRequest {
            shipping_address: match &destination {
                Destination::Given(address) => Some(address_to_wire(address)),
                Destination::Saved(_) | Destination::Default => None,
            },
            payment_method: payment_method.clone(),
            items: asked
                .iter()
                .map(|l| CreateOrderItem { product_id: l.product_id.clone(), quantity: l.quantity })
                .collect(),
            idempotency_key: String::new(),
            shipping_address_id: match &destination {
                Destination::Saved(id) => id.clone(),
                Destination::Given(_) | Destination::Default => String::new(),
            },
            discount_code: discount_code.clone().unwrap_or_default(),
            shipping_rate_id: rate.clone().unwrap_or_default(),
        };
        let hash = domain::fingerprint(&canonical.encode_to_vec());
        // A replay is found by its key where the request cannot go on: where the order's insert meets the key
        // (below), or here, when the cart it emptied is empty now or its products changed since. Looking the key
        // up first would cost every new order a statement.
        let now = now_micros();
        let priced = async {
            let address = self.address(destination, &authorization).await?;
            let (lines, from_cart) = self.lines(asked, &authorization).await?;
            let (priced, rates, tax_rate) = self.price_with_rates(&lines, from_cart, Some(&address.country)).await?;
            let applied = match &discount_code {
                Some(code) => self.discount(code, &priced.total, &claims.sub, now, Some(&key)).await?,
                None => Applied::default(),
            };
            let items = Price { amount_minor: priced.total.amount_minor - applied.items_off, ..priced.total.clone() };
            let shipping = shipping::choose(&rates, rate.as_deref(), &address.country, &items)
                .map_err(|refusal| Error::invalid(refusal.violation()))?;
            let (discount_minor, total) = settle(&priced.total, applied, shipping.as_ref())?;
            let tax = tax_included(tax_rate, &priced, &total);
            Ok::<_, Error>((priced, discount_minor, shipping, total, tax, from_cart, address))
        };
        let (priced, discount_minor, shipping, total, tax, from_cart, address) = match priced.await {
            Ok(priced) => priced,
            Err(e) => match self.store.id_by_key(&claims.sub, &key).await? {
                Some(id) => {
                    return Ok(Response::new(CreateOrderResponse { order: Some(self.replay(&id, &hash).await?) }));
                }
                None => return Err(e.into()),
            },
        };
        let order = Order {
            id: uuid::Uuid::now_v7().to_string(),
            customer_id: claims.sub.clone(),
            status: Status::Pending,
            step: Step::Reserve,
            step_time: now,
            lines: priced.lines,
            total,
            discount_minor,
            discount_code: discount_code.unwrap_or_default(),
            shipping_minor: shipping.as_ref().map_or(0, |s| s.amount_minor),
            shipping_rate_id: shipping.as_ref().map(|s| s.rate_id.clone()).unwrap_or_default(),
            shipping_rate_name: shipping.map(|s| s.name).unwrap_or_default(),
            tax,
            refunded_minor: 0,
            address,
            payment_method,
            payment_id: String::new(),
            failure_reason: String::new(),
            cancel_reason: String::new(),
            from_cart,
            idempotency_key: key.clone(),
            request_hash: hash.clone(),
            create_time: now,
            update_time: now,
        };
        // Placed and started in a task of its own: if the caller hangs up meanwhile (which drops this handler),
        // the order is either not placed at all or placed with its saga running — never placed and left
        // waiting for the recovery scan.
        let placing = {
            let (store, saga, order) = (self.store.clone(), self.saga.clone(), order.clone());
            tokio::spawn(
                async move {
                    let placed = store.insert_order(&order, &events::placed(&order)).await?;
                    if placed == Placement::Placed {
                        // The saga starts from the order as just stored: no read back.
                        saga.start_placed(order);
                    }
                    Ok::<_, Error>(placed)
                }
                .in_current_span(),
            )
        };
        match placing.await.map_err(Error::from)?? {
            Placement::Placed => {}
            Placement::KeyUsed => {
                // A concurrent request with the same key won the race.
                let id = self.store.id_by_key(&claims.sub, &key).await?.ok_or_else(|| Error::order_not_found(&key))?;
                return Ok(Response::new(CreateOrderResponse { order: Some(self.replay(&id, &hash).await?) }));
            }
            // The code's last use went to another order meanwhile, or this customer's earlier one counts.
            Placement::Refused(refusal) => return Err(Error::invalid(refusal.violation()).into()),
        }
        tracing::info!(order_id = %order.id, customer_id = %order.customer_id, from_cart, "order placed");
        let order = self.settled(order).await?;
        Ok(Response::new(CreateOrderResponse { order: Some(order) }))
    }

    async fn preview_order(
        &self,
        request: Request<PreviewOrderRequest>,
    ) -> Result<Response<PreviewOrderResponse>, GrpcStatus> {
        let claims = caller(&request)?.clone();
        let authorization =
            request.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let req = request.into_inner();
        let mut violations = Vec::new();
        let asked = Self::asked_lines(&req.items).map_err(|v| violations.extend(v)).ok();
        let discount_code = Self::asked_code(&req.discount_code).map_err(|v| violations.push(v)).ok();
        let destination =
            destination(req.shipping_address, req.shipping_address_id.trim()).map_err(|v| violations.extend(v)).ok();
        let rate = Self::asked_rate(&req.shipping_rate_id).map_err(|v| violations.push(v)).ok();
        let (Some(asked), Some(discount_code), Some(destination), Some(rate), true) =
            (asked, discount_code, destination, rate, violations.is_empty())
        else {
            return Err(Error::InvalidArgument(violations).into());
        };
        let address = self.known_address(destination, &authorization).await?;
        if address.is_none() && rate.is_some() {
            let why = format!("is required to price {}: {NO_ADDRESS}", shipping::CHECKOUT_FIELD);
            return Err(Error::invalid(FieldViolation::new("shipping_address", why)).into());
        }
        let (lines, from_cart) = self.lines(asked, &authorization).await?;
        let country = address.as_ref().map(|a| a.country.as_str());
        let (priced, rates, tax_rate) = self.price_with_rates(&lines, from_cart, country).await?;
        let applied = match &discount_code {
            Some(code) => self.discount(code, &priced.total, &claims.sub, now_micros(), None).await?,
            None => Applied::default(),
        };
        let currency = priced.total.currency.clone();
        let items = Price { amount_minor: priced.total.amount_minor - applied.items_off, ..priced.total.clone() };
        // Shipping is priced once the destination is known; until then the total is the items'.
        let (shipping, options) = match &address {
            Some(address) => {
                let chosen = shipping::choose(&rates, rate.as_deref(), &address.country, &items)
                    .map_err(|refusal| Error::invalid(refusal.violation()))?;
                (Some(chosen), shipping::options(&rates, &address.country, &items))
            }
            None => (None, Vec::new()),
        };
        let chosen = shipping.clone().flatten();
        let (discount_minor, total) = settle(&priced.total, applied, chosen.as_ref())?;
        let included = tax_included(tax_rate, &priced, &total);
        // Like shipping, tax is known once the destination is.
        let tax = address.is_some().then(|| money(&tax_of(&total.currency, included.as_ref())));
        let taxes = taxes_to_wire(&total.currency, included.as_ref());
        let price_of = |amount_minor| money(&Price { currency: currency.clone(), amount_minor });
        Ok(Response::new(PreviewOrderResponse {
            items: lines_to_wire(&priced.lines, &currency),
            discount: Some(price_of(discount_minor)),
            subtotal: Some(money(&priced.total)),
            total: Some(money(&total)),
            discount_code: discount_code.unwrap_or_default(),
            shipping: shipping.map(|s| price_of(s.map_or(0, |s| s.amount_minor))),
            shipping_rate_id: chosen.as_ref().map(|s| s.rate_id.clone()).unwrap_or_default(),
            shipping_rate_name: chosen.map(|s| s.name).unwrap_or_default(),
            shipping_options: options
                .into_iter()
                .map(|o| ShippingOption {
                    price: Some(price_of(o.amount_minor)),
                    shipping_rate_id: o.rate_id,
                    name: o.name,
                })
                .collect(),
            taxes,
            tax,
        }))
    }

    async fn get_order(&self, request: Request<GetOrderRequest>) -> Result<Response<GetOrderResponse>, GrpcStatus> {
        let claims = caller(&request)?.clone();
        let order = self.visible(&request.into_inner().id, &claims).await?;
        Ok(Response::new(GetOrderResponse { order: Some(order_to_wire(order)) }))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, GrpcStatus> {
        let claims = caller(&request)?.clone();
        let req = request.into_inner();
        let mut violations = Vec::new();
        let Paging { size, after, period } =
            paging(req.page_size, &req.page_token, (req.start_time.as_ref(), req.end_time.as_ref()), &mut violations);
        let status = status_from_wire(req.status).unwrap_or_else(|v| {
            violations.push(v);
            None
        });
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations).into());
        }
        let needs = format!("orders needs {ORDERS_ADMIN}");
        let customer_id = listed_customer(&claims, req.customer_id, is_admin(&claims), &needs)?;
        let rows = self.store.list(&ListQuery { customer_id, status, after, period, limit: size + 1 }).await?;
        let (rows, next_page_token) = platform::paging::page(rows, size, |last| last.cursor().encode());
        Ok(Response::new(ListOrdersResponse { orders: rows.into_iter().map(order_to_wire).collect(), next_page_token }))
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<CancelOrderResponse>, GrpcStatus> {
        let claims = caller(&request)?.clone();
        let req = request.into_inner();
        let reason = req.reason.trim().to_owned();
        if reason.chars().count() > domain::MAX_TEXT {
            return Err(
                Error::invalid(FieldViolation::new("reason", format!("is longer than {}", domain::MAX_TEXT))).into()
            );
        }
        let order = self.visible(&req.id, &claims).await?;
        let refuse = |message: &str| Error::FailedPrecondition { reason: ORDER_STATE, message: message.to_owned() };
        match (order.status, order.step) {
            (Status::Pending, _) => return Err(refuse("checkout in progress; try again when it has finished").into()),
            (Status::Failed, _) => return Err(refuse("the order failed; there is nothing to cancel").into()),
            (Status::Cancelled, _) | (Status::Confirmed, Step::Cancel) => {}
            (Status::Confirmed, _) => {
                let reason = if reason.is_empty() { "cancelled by the customer".to_owned() } else { reason };
                let change = Change { cancel_reason: Some(reason), ..Change::to(Status::Confirmed, Step::Cancel) };
                // A concurrent cancel may have moved it first; either way the saga takes it from here.
                self.store
                    .advance(&order.id, (order.status, order.step), &change, None, "cancel asked", now_micros())
                    .await?;
            }
        }
        let id = order.id;
        let order = self.store.order(&id).await?.ok_or_else(|| Error::order_not_found(&id))?;
        let order = self.settled_order(order).await?;
        if (order.status, order.step) == (Status::Confirmed, Step::Done) {
            // The saga found the parcel with the carrier and left the order as it was.
            return Err(Error::FailedPrecondition {
                reason: ORDER_SHIPPED,
                message: domain::CANCEL_REFUSED_SHIPPED.to_owned(),
            }
            .into());
        }
        Ok(Response::new(CancelOrderResponse { order: Some(order_to_wire(order)) }))
    }
}
