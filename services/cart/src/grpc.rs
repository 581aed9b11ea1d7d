//! The gRPC face of the cart: wire messages in, domain rules, store and catalog, wire messages out.

use api::common::Money;
use api::mercato::cart::v1::cart_service_server::CartService;
use api::mercato::cart::v1::{
    AddItemRequest, AddItemResponse, Cart, CartItem, ClearCartRequest, ClearCartResponse, GetCartRequest,
    GetCartResponse, RemoveItemRequest, RemoveItemResponse, UpdateItemRequest, UpdateItemResponse,
};
use platform::auth::caller;
use platform::db::Db;
use platform::events::RelayHandle;
use platform::grpc::Channel;
use platform::telemetry::REQUEST_ID_HEADER;
use platform::time::{now_micros, timestamp};
use tonic::{Request, Response, Status};

use crate::catalog::Catalog;
use crate::domain::{self, ClearRefusal, Offer, Price, PricedCart};
use crate::error::Error;
use crate::store::{NewLine, Store};

/// The scope that lets a caller clear another customer's cart (the orders service, after an order is
/// confirmed).
pub const ORDERS_ADMIN: &str = "orders:admin";

/// Implements `mercato.cart.v1.CartService`.
#[derive(Debug, Clone)]
pub struct CartApi {
    store: Store,
    catalog: Catalog,
    relay: RelayHandle,
}

impl CartApi {
    /// The service over a migrated database, pricing carts with the catalog behind `catalog`; `relay` is woken
    /// when events were written.
    pub fn new(db: Db, catalog: Channel, relay: RelayHandle) -> Self {
        Self { store: Store::new(db), catalog: Catalog::new(catalog), relay }
    }

    /// The cart of `customer_id` at the catalog's current prices.
    async fn priced(&self, customer_id: &str, request_id: Option<&str>) -> Result<Cart, Error> {
        let stored = self.store.cart(customer_id).await?;
        let offers = self.catalog.offers(&stored.lines, request_id).await?;
        let priced = domain::price_cart(stored.lines.into_iter().zip(offers).collect());
        Ok(cart_to_wire(customer_id, stored.update_time, priced))
    }
}

pub(crate) fn money(price: Price) -> Money {
    Money { currency: price.currency, amount_minor: price.amount_minor }
}

fn cart_to_wire(customer_id: &str, update_time: Option<i64>, priced: PricedCart) -> Cart {
    Cart {
        customer_id: customer_id.to_owned(),
        items: priced
            .lines
            .into_iter()
            .map(|l| CartItem {
                product_id: l.product_id,
                sku: l.sku,
                name: l.name,
                quantity: l.quantity,
                unit_price: l.unit_price.map(money),
                line_total: l.line_total.map(money),
                available: l.available,
            })
            .collect(),
        totals: priced.totals.into_iter().map(money).collect(),
        item_count: priced.item_count,
        update_time: update_time.map(timestamp),
    }
}

/// The caller's customer id (the token's subject) and the request id to pass on to the catalog.
pub(crate) fn customer<T>(request: &Request<T>) -> Result<(String, Option<String>), Status> {
    let sub = caller(request)?.sub.clone();
    if sub.is_empty() {
        return Err(Status::unauthenticated("the access token names no subject"));
    }
    let request_id = request.metadata().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Ok((sub, request_id))
}

#[tonic::async_trait]
impl CartService for CartApi {
    async fn get_cart(&self, request: Request<GetCartRequest>) -> Result<Response<GetCartResponse>, Status> {
        let (customer_id, request_id) = customer(&request)?;
        let cart = self.priced(&customer_id, request_id.as_deref()).await?;
        Ok(Response::new(GetCartResponse { cart: Some(cart) }))
    }

    async fn add_item(&self, request: Request<AddItemRequest>) -> Result<Response<AddItemResponse>, Status> {
        let (customer_id, request_id) = customer(&request)?;
        let req = request.into_inner();
        domain::validate_line(&req.product_id, req.quantity).map_err(Error::InvalidArgument)?;
        let listing = match self.catalog.offer(&req.product_id, request_id.as_deref()).await? {
            Offer::OnSale(listing) => listing,
            Offer::Inactive => return Err(Error::product_inactive(&req.product_id).into()),
            Offer::Missing => return Err(Error::product_not_found(&req.product_id).into()),
        };
        let line =
            NewLine { product_id: &req.product_id, sku: &listing.sku, name: &listing.name, quantity: req.quantity };
        self.store.add(&customer_id, &line, now_micros()).await?;
        self.relay.wake();
        tracing::info!(customer_id = %customer_id, product_id = %req.product_id, quantity = req.quantity, "item added");
        let cart = self.priced(&customer_id, request_id.as_deref()).await?;
        Ok(Response::new(AddItemResponse { cart: Some(cart) }))
    }

    async fn update_item(&self, request: Request<UpdateItemRequest>) -> Result<Response<UpdateItemResponse>, Status> {
        let (customer_id, request_id) = customer(&request)?;
        let req = request.into_inner();
        domain::validate_line(&req.product_id, req.quantity).map_err(Error::InvalidArgument)?;
        self.store.set_quantity(&customer_id, &req.product_id, req.quantity, now_micros()).await?;
        let cart = self.priced(&customer_id, request_id.as_deref()).await?;
        Ok(Response::new(UpdateItemResponse { cart: Some(cart) }))
    }

    async fn remove_item(&self, request: Request<RemoveItemRequest>) -> Result<Response<RemoveItemResponse>, Status> {
        let (customer_id, request_id) = customer(&request)?;
        let product_id = request.into_inner().product_id;
        domain::validate_product_id(&product_id).map_err(Error::invalid)?;
        self.store.remove(&customer_id, &product_id, now_micros()).await?;
        let cart = self.priced(&customer_id, request_id.as_deref()).await?;
        Ok(Response::new(RemoveItemResponse { cart: Some(cart) }))
    }

    async fn clear_cart(&self, request: Request<ClearCartRequest>) -> Result<Response<ClearCartResponse>, Status> {
        let (caller_id, request_id) = customer(&request)?;
        let may_act_for_others = caller(&request)?.has_scope(ORDERS_ADMIN);
        let requested = request.into_inner().customer_id;
        let customer_id = domain::clear_target(&caller_id, may_act_for_others, &requested).map_err(|r| match r {
            ClearRefusal::Invalid(v) => Error::invalid(v),
            // As with orders and payments, another customer's cart does not exist for the caller.
            ClearRefusal::Denied => Error::NotFound(format!("customer {requested:?} has no cart you can see")),
        })?;
        self.store.clear(&customer_id, now_micros()).await?;
        tracing::info!(customer_id = %customer_id, by = %caller_id, "cart cleared");
        let cart = self.priced(&customer_id, request_id.as_deref()).await?;
        Ok(Response::new(ClearCartResponse { cart: Some(cart) }))
    }
}
