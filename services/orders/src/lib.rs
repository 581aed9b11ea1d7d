//! The orders service of Mercato: orders and the checkout saga.
//!
//! Checkout is an orchestrated saga with its state persisted in the orders database (see [`saga`]):
//! reserve stock, capture the payment, commit the stock, confirm; on failure, compensate (release the
//! stock, refund the payment). A crash at any step resumes when the service starts again.
//!
//! Cancelling a confirmed order first cancels its shipment with the deliveries service (refused once the
//! parcel is with the carrier: the order then stays CONFIRMED), then refunds its payment and publishes
//! `order.cancelled`; putting the sold units back in stock is the catalog's job when it consumes that event
//! (the orders service holds `inventory:reserve`, not `inventory:write`).
//!
//! - [`domain`]: the rules, free of I/O.
//! - [`discount`], [`discount_store`], [`discount_grpc`]: discount codes (`mercato.orders.v1.DiscountCodeService`):
//!   their rules, their SQL, their handlers. A code's use is counted in the transaction that places the order
//!   ([`store::Store::insert_order`]) and given back in the one that fails or cancels it.
//! - [`shipping`], [`shipping_store`], [`shipping_grpc`]: shipping rates (`mercato.orders.v1.ShippingRateService`):
//!   which rates serve an order and what it is charged, their SQL, their handlers. Checkout charges one.
//! - [`tax`], [`tax_store`], [`tax_grpc`]: tax rates by country (`mercato.orders.v1.TaxRateService`): how much tax
//!   an order's total includes (prices include it), their SQL, their handlers. Checkout reads the destination's.
//! - [`invoice`], [`invoice_store`], [`invoice_grpc`], [`invoice_document`]: invoices and credit notes
//!   (`mercato.orders.v1.InvoiceService`), numbered without gaps per kind and year: an order's invoice is written
//!   once its stock is sold, just before it is confirmed, a refund's credit note when its `payment.refunded`
//!   event arrives; each one as an HTML page to print.
//! - [`returns`], [`return_store`], [`return_grpc`], [`return_refund`]: returns (`mercato.orders.v1.ReturnService`):
//!   a customer asks to send back items of a delivered order within the return window, staff approve or reject
//!   and receive the parcel, which puts the units back in stock (`return.received`) and refunds the items' share.
//! - [`store`]: all SQL, the same on SQLite and PostgreSQL.
//! - [`ports`]: what it asks of the catalog, the cart, the payments, the deliveries and the users service
//!   ([`SagaPorts`]).
//! - [`saga`]: the checkout saga and its recovery.
//! - [`grpc`]: the handlers of `mercato.orders.v1.OrderService`.
//! - [`events`]: what it publishes (`order.*` and `return.*`, through the outbox) and consumes (`payment.refunded`:
//!   how much of an order has been given back, and the refund's credit note; `shipment.delivered`: when an order
//!   was delivered, from which its return window runs).
//! - [`error`]: the crate's one error type and its mapping to gRPC statuses.

pub mod discount;
pub mod discount_grpc;
pub mod discount_store;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod invoice;
pub mod invoice_document;
pub mod invoice_grpc;
pub mod invoice_store;
pub mod ports;
pub mod return_grpc;
pub mod return_refund;
pub mod return_store;
pub mod returns;
pub mod saga;
pub mod shipping;
pub mod shipping_grpc;
pub mod shipping_store;
pub mod store;
pub mod tax;
pub mod tax_grpc;
pub mod tax_store;

use std::sync::Arc;
use std::time::Duration;

use api::mercato::orders::v1::discount_code_service_server::DiscountCodeServiceServer;
use api::mercato::orders::v1::invoice_service_server::InvoiceServiceServer;
use api::mercato::orders::v1::order_service_server::OrderServiceServer;
use api::mercato::orders::v1::return_service_server::ReturnServiceServer;
use api::mercato::orders::v1::shipping_rate_service_server::ShippingRateServiceServer;
use api::mercato::orders::v1::tax_rate_service_server::TaxRateServiceServer;
use platform::Settings;
use platform::auth::{ServiceTokens, TokenVerifier};
use platform::db::Db;
use platform::events::{EventBus, Relay};
use platform::grpc::GrpcService;
use tokio_util::sync::CancellationToken;

pub use error::Error;
pub use grpc::OrdersApi;
pub use ports::{Channels, Credentials, GrpcPorts, SagaPorts};
pub use saga::SagaOptions;

/// The service's name: its database, its settings, its service client id and its logs go by it.
pub const NAME: &str = "orders";

/// The orders service's schema migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the orders service as configured: opens its database, trusts the auth service's keys, reaches the
/// catalog, cart, payments, deliveries and users services at their configured URLs (with this service's own
/// tokens, client secret `MERCATO_ORDERS_CLIENT_SECRET`, or the customer's for their cart and addresses),
/// publishes its events to `bus` and consumes the payments' refunds from it, and serves on `listener` until
/// `shutdown` is cancelled.
pub async fn run(
    listener: platform::grpc::Listener,
    settings: Settings,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let auth = platform::grpc::service_channel(&settings, "auth")?;
    let tokens = ServiceTokens::from_settings(&settings, NAME, auth.clone()).ok_or_else(|| Error::Setting {
        variable: "MERCATO_ORDERS_CLIENT_SECRET".to_owned(),
        problem: "is not set: the orders service needs its client secret to reserve stock and take payments".to_owned(),
    })?;
    let channel = |service: &str| platform::grpc::service_channel(&settings, service);
    let channels = Channels {
        catalog: channel("catalog")?,
        cart: channel("cart")?,
        payments: channel("payments")?,
        deliveries: channel("deliveries")?,
        users: channel("users")?,
    };
    let ports = GrpcPorts::new(channels, Credentials::Service(Arc::new(tokens)));
    let db = Db::open(&settings, NAME).await?;
    db.migrate(&MIGRATOR, NAME).await?;
    events::subscribe(bus.as_ref(), store::Store::new(db.clone()));
    let verifier = Arc::new(TokenVerifier::from_auth_service(auth));
    let options = SagaOptions {
        requires_verified_email: settings.checkout_requires_verified_email,
        return_window_days: settings.return_window_days,
        return_shipping: settings.return_shipping,
        ..SagaOptions::default()
    };
    let result = serve(listener, db.clone(), verifier, Arc::new(ports), bus, options, shutdown).await;
    db.close().await;
    result
}

/// Migrates `db`, resumes every checkout left in flight, then serves the orders service on `listener` with
/// tokens checked by `verifier`, other services reached through `ports`, and events published to `bus`,
/// until `shutdown` is cancelled. (The consumer of the payments' refunds is subscribed by [`run`], or by the
/// caller: [`events::subscribe`].) Saga runs still going at shutdown stop where they are and resume on the
/// next start.
pub async fn serve(
    listener: impl Into<platform::grpc::Listener>,
    db: Db,
    verifier: Arc<TokenVerifier>,
    ports: Arc<dyn SagaPorts>,
    bus: Arc<dyn EventBus>,
    options: SagaOptions,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let listener = listener.into();
    tracing::info!(backend = db.backend(), addr = ?listener.local_addr().ok(), tls = listener.is_tls(), "orders serving");
    let store = store::Store::new(db.clone());
    let relay = Relay::new(NAME, db, bus);
    let saga_stop = shutdown.child_token();
    let refunder = Arc::new(return_refund::Refunder::new(store.clone(), ports.clone()));
    let policy = returns::ReturnPolicy { window_days: options.return_window_days, shipping: options.return_shipping };
    let returns = return_grpc::ReturnsApi::new(store.clone(), refunder.clone(), policy);
    let refund_interval = options.recovery_interval;
    let saga = saga::Saga::new(store.clone(), ports.clone(), relay.handle(), options, saga_stop.clone());
    saga.spawn_recovery();
    let discounts = discount_grpc::DiscountCodesApi::new(store.clone());
    let shipping_rates = shipping_grpc::ShippingRatesApi::new(store.clone());
    let tax_rates = tax_grpc::TaxRatesApi::new(store.clone());
    let invoices = invoice_grpc::InvoicesApi::new(store.clone());
    let api = OrdersApi::new(store, saga.clone(), ports);
    let service = GrpcService::new(OrderServiceServer::new(api))
        .with(DiscountCodeServiceServer::new(discounts))
        .with(ShippingRateServiceServer::new(shipping_rates))
        .with(TaxRateServiceServer::new(tax_rates))
        .with(InvoiceServiceServer::new(invoices))
        .with(ReturnServiceServer::new(returns))
        .background(|stop| relay.run(stop))
        .background(move |stop| refunder.run(refund_interval, stop));
    let served = platform::grpc::serve(service, listener, verifier, shutdown).await;
    // Sagas and the relay stop with the server; what they left resumes on the next start.
    saga.shutdown().await;
    saga_stop.cancel();
    Ok(served?)
}

/// Gives a shop without shipping rates the demo's ([`shipping::demo_rates`]), one without tax rates the
/// demo's ([`tax::demo_rates`]), and one that has not said who issues its invoices the demo's
/// ([`invoice::demo_issuer`]), in the configured database; answers how many rates were added (none when it has
/// both).
pub async fn seed_demo(settings: &Settings) -> Result<usize, Error> {
    let db = Db::open(settings, NAME).await?;
    let result = seed_demo_into(&db).await;
    db.close().await;
    result
}

/// [`seed_demo`] on an open database (migrated first).
pub async fn seed_demo_into(db: &Db) -> Result<usize, Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let store = store::Store::new(db.clone());
    let now = platform::time::now_micros();
    let mut added = 0;
    if store.shipping_rates().await?.is_empty() {
        for rate in shipping::demo_rates(now) {
            // A start racing this one may have added it first.
            if store.insert_shipping_rate(&rate).await? {
                added += 1;
            }
        }
    }
    if store.tax_rates().await?.is_empty() {
        for rate in tax::demo_rates(now) {
            // Setting one twice (a racing start) leaves it as it was.
            store.set_tax_rate(&rate).await?;
            added += 1;
        }
    }
    if store.invoice_issuer().await?.is_none() {
        store.set_invoice_issuer(&invoice::demo_issuer(), now).await?;
    }
    Ok(added)
}

/// Applies the orders service's pending migrations to the configured database.
pub async fn migrate(settings: &Settings) -> Result<(), Error> {
    let db = Db::open(settings, NAME).await?;
    let result = db.migrate(&MIGRATOR, NAME).await;
    db.close().await;
    Ok(result?)
}

/// Checks an open orders database (migrated first): lists, in words, orders whose checkout (or
/// cancellation) has been stuck longer than `stuck_after`, confirmed or cancelled orders without a payment id,
/// invoices amiss (an order confirmed without one, numbers with gaps, more credited than charged), and returns
/// received longer than `stuck_after` ago whose refund is neither made nor refused. Empty
/// means all is well. Changes nothing but pending migrations.
pub async fn audit(db: &Db, stuck_after: Duration) -> Result<Vec<String>, Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    let stuck_before = platform::time::now_micros() - i64::try_from(stuck_after.as_micros()).unwrap_or(i64::MAX);
    store::Store::new(db.clone()).audit(stuck_before).await
}

/// Records that order `order_id` was delivered at `deliver_time` (migrated first), as `shipment.delivered` does:
/// for `mercato backfill-deliveries`. Answers whether it was news (a delivery known stays as it is).
pub async fn record_delivery(db: &Db, order_id: &str, deliver_time: i64) -> Result<bool, Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    store::Store::new(db.clone()).record_delivery(order_id, deliver_time).await
}

/// Every return whose refund was made (migrated first), for an operator's audit: the payments service must have
/// made each refund, of that payment, for that amount.
pub async fn refunded_returns(db: &Db) -> Result<Vec<return_store::RefundedReturn>, Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    store::Store::new(db.clone()).refunded_returns().await
}

/// Up to `limit` orders that were confirmed (and may have been cancelled since) after order id `after`, by id,
/// with their products: what the catalog needs to know who bought what (`mercato backfill-purchases`).
pub async fn purchases(db: &Db, after: &str, limit: i64) -> Result<Vec<store::Purchase>, Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    store::Store::new(db.clone()).purchases(after, limit).await
}

/// Every confirmed order with its payment and total, for checks against the catalog and payments that only
/// an operator's audit, reading every service's database, can make.
pub async fn confirmed_orders(db: &Db) -> Result<Vec<store::ConfirmedOrder>, Error> {
    db.migrate(&MIGRATOR, NAME).await?;
    store::Store::new(db.clone()).confirmed().await
}
