//! Composition of the platform in one process: bind every listener, start every service and the gateway,
//! stop them together. The `mercato` binary is a thin CLI over this; end-to-end tests use it directly.

use std::net::SocketAddr;
use std::sync::Arc;

pub mod probe;

use anyhow::Context;
use platform::Settings;
use platform::events::{AmqpBus, EventBus, GatedBus, InProcessBus};
use platform::metrics::Readiness;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The services `mercato up` runs, in start order (auth first: the others fetch its keys).
pub const SERVICES: &[&str] = &[
    auth::NAME,
    users::NAME,
    catalog::NAME,
    cart::NAME,
    orders::NAME,
    payments::NAME,
    ledger::NAME,
    refunds::NAME,
    deliveries::NAME,
    notifications::NAME,
    analytics::NAME,
    support::NAME,
];

/// Prefix of Mercato's exchanges and queues on RabbitMQ (`mercato.events`, `mercato.<consumer>`, ...).
pub const AMQP_PREFIX: &str = "mercato";

/// Every consumer of the platform's events, with the event types it takes.
pub fn consumers() -> [(&'static str, Vec<&'static str>); 7] {
    [
        (orders::events::CONSUMER, orders::events::event_types()),
        (users::events::CONSUMER, users::events::event_types()),
        (cart::events::CONSUMER, cart::events::event_types()),
        (catalog::events::CONSUMER, catalog::events::event_types()),
        (deliveries::events::CONSUMER, deliveries::events::event_types()),
        (notifications::events::CONSUMER, notifications::events::event_types()),
        (analytics::events::CONSUMER, analytics::events::event_types()),
    ]
}

/// The RabbitMQ bus of a process: connected under `prefix`, and declaring the queue of every consumer of the
/// platform before it publishes, wherever that consumer runs. In a deployment of one process per service, an
/// event published before its consumer's service first started would otherwise find no queue and be lost.
pub async fn amqp_bus(url: &str, prefix: &str) -> anyhow::Result<Arc<AmqpBus>> {
    let bus = AmqpBus::connect(url, prefix).await.context("connecting to RabbitMQ")?;
    for (consumer, event_types) in consumers() {
        bus.expect_consumer(consumer, &event_types);
    }
    Ok(Arc::new(bus))
}

/// How to start the platform.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Seed the demo catalog when it is empty.
    pub demo: bool,
    /// Bind every listener on 127.0.0.1 port 0 (tests), ignoring the addresses in the settings.
    pub ephemeral_ports: bool,
    /// Prefix of the RabbitMQ exchanges and queues instead of `mercato` (tests sharing one broker).
    pub amqp_prefix: Option<String>,
}

/// A running platform.
#[derive(Debug)]
pub struct Running {
    /// Where the gateway listens.
    pub gateway: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` of the process listen.
    pub metrics: SocketAddr,
    /// Where each service's gRPC server listens.
    pub services: Vec<(&'static str, SocketAddr)>,
    /// The settings as the services got them (URLs point at the bound addresses).
    pub settings: Settings,
    readiness: Readiness,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
    shutdown: CancellationToken,
}

async fn bind(addr: SocketAddr, ephemeral: bool, what: &str) -> anyhow::Result<TcpListener> {
    let addr = if ephemeral { SocketAddr::from(([127, 0, 0, 1], 0)) } else { addr };
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for {what}"))
}

/// The address a service listens on in `up`: the host and port of its URL.
fn service_addr(settings: &Settings, service: &str) -> anyhow::Result<SocketAddr> {
    let url = settings.service_url(service);
    let authority = url.split("://").nth(1).unwrap_or(&url).trim_end_matches('/');
    let authority = authority.replace("localhost", "127.0.0.1");
    authority.parse().with_context(|| {
        format!("MERCATO_{}_URL={url}: `up` needs an IP address and port to listen on", service.to_uppercase())
    })
}

/// Starts every service and the gateway in this process. Returns once every listener is bound.
pub async fn up(mut settings: Settings, options: UpOptions, shutdown: CancellationToken) -> anyhow::Result<Running> {
    // Every service runs in this process: secrets not given are made up for this run only.
    for (service, _) in platform::config::SERVICE_PORTS {
        settings.service_secrets.entry((*service).to_owned()).or_insert_with(platform::auth::generate_secret);
    }
    let mut listeners = Vec::new();
    for service in SERVICES {
        let listener = bind(service_addr(&settings, service)?, options.ephemeral_ports, service).await?;
        let addr = listener.local_addr()?;
        settings.service_urls.insert((*service).to_owned(), format!("{}://{addr}", settings.service_scheme()));
        listeners.push((*service, listener, addr));
    }
    let http = bind(settings.http_addr, options.ephemeral_ports, "the gateway").await?;
    let metrics = bind(settings.metrics_addr, options.ephemeral_ports, "metrics").await?;
    settings.http_addr = http.local_addr()?;
    settings.metrics_addr = metrics.local_addr()?;

    if options.demo {
        let added = catalog::seed_demo(&settings).await.context("seeding the demo catalog")?;
        if added > 0 {
            tracing::info!(products = added, "seeded the demo catalog");
        }
        let added = orders::seed_demo(&settings).await.context("seeding the demo shipping and tax rates")?;
        if added > 0 {
            tracing::info!(rates = added, "seeded the demo shipping and tax rates");
        }
    }

    // One bus for the whole process: every service's relay publishes to it and its consumers subscribe to it.
    // Through RabbitMQ when configured, else in this process. Either way the gate stays closed until every
    // service serves, so every consumer has subscribed before the first event (perhaps left in an outbox by an
    // earlier run) is published.
    let backend: Arc<dyn EventBus> = match &settings.amqp_url {
        Some(url) => {
            let prefix = options.amqp_prefix.as_deref().unwrap_or(AMQP_PREFIX);
            amqp_bus(url, prefix).await?
        }
        None => Arc::new(InProcessBus::new()),
    };
    let gate = Arc::new(GatedBus::closed(backend));
    let bus: Arc<dyn EventBus> = gate.clone();
    let readiness = Readiness::new();
    let mut tasks = JoinSet::new();
    let mut services = Vec::new();
    for (service, listener, addr) in listeners {
        services.push((service, addr));
        // With MERCATO_GRPC_TLS_* each server speaks TLS; the files are read (and checked) here, before serving.
        let listener = platform::grpc::Listener::new(listener, &settings)?;
        let (settings, bus, stop) = (settings.clone(), bus.clone(), shutdown.clone());
        tasks.spawn(async move { (service, run_service(service, listener, settings, bus, stop).await) });
    }
    {
        let (settings, stop) = (settings.clone(), shutdown.clone());
        tasks.spawn(async move {
            let served = match gateway::Gateway::new(&settings) {
                Ok(edge) => gateway::serve_gateway(http, edge.ready_when_serving(SERVICES), &settings, stop).await,
                Err(e) => Err(e),
            };
            ("gateway", served.map_err(Into::into))
        });
    }
    {
        let (router, stop) = (platform::metrics::router(readiness.clone()), shutdown.clone());
        tasks.spawn(async move {
            let served = axum::serve(metrics, router).with_graceful_shutdown(stop.cancelled_owned()).await;
            ("metrics", served.map_err(Into::into))
        });
    }
    // Channels as the services call each other: over TLS when it is configured.
    let channels = SERVICES.iter().map(|s| platform::grpc::service_channel(&settings, s)).collect::<Result<_, _>>()?;
    tokio::spawn(open_when_serving(gate, channels, shutdown.clone()));
    readiness.set(true);
    Ok(Running {
        gateway: settings.http_addr,
        metrics: settings.metrics_addr,
        services,
        settings,
        readiness,
        tasks,
        shutdown,
    })
}

impl Running {
    /// Waits until every server has stopped. If one fails, the others are told to stop and its error is
    /// returned.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let (name, result) = joined.context("a server task panicked")?;
            if let Err(e) = result {
                tracing::error!(server = name, error = %format!("{e:#}"), "server stopped with an error");
                self.readiness.set(false);
                self.shutdown.cancel();
                first_error.get_or_insert(e.context(format!("{name} failed")));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Asks every server to stop.
    pub fn stop(&self) {
        self.readiness.set(false);
        self.shutdown.cancel();
    }
}

/// Runs one service (or the gateway) on its own, as `mercato serve <name>` does.
pub async fn serve_one(name: &str, settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let readiness = Readiness::new();
    let metrics = TcpListener::bind(settings.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", settings.metrics_addr))?;
    let metrics_task = {
        let (router, stop) = (platform::metrics::router(readiness.clone()), shutdown.clone());
        tokio::spawn(async move { axum::serve(metrics, router).with_graceful_shutdown(stop.cancelled_owned()).await })
    };
    let result = if name == "gateway" {
        let http = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("cannot listen on {} for the gateway", settings.http_addr))?;
        let scheme = if settings.gateway_tls.is_some() { "https" } else { "http" };
        println!("gateway listening on {scheme}://{}", http.local_addr()?);
        readiness.set(true);
        // As many workers as the process's runtime has threads (`TOKIO_WORKER_THREADS`, else one per CPU).
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        gateway::workers::serve_on_workers(http, &settings, workers, shutdown.clone())
            .await
            .map_err(anyhow::Error::from)
    } else {
        let port = platform::config::default_grpc_port(name)
            .filter(|_| SERVICES.contains(&name))
            .with_context(|| format!("unknown service {name:?}; expected one of: gateway, {}", SERVICES.join(", ")))?;
        let addr = settings.grpc_addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], port)));
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for {name}"))?;
        let scheme = if settings.grpc_tls.is_some() { "TLS" } else { "plain" };
        println!("{name} gRPC ({scheme}) listening on {}", listener.local_addr()?);
        // Ready (`/readyz`) once the gRPC server takes calls, after the service's migrations.
        let listener = platform::grpc::Listener::new(listener, &settings)?.reporting(readiness.clone());
        // Without a broker, events of a lone service reach only consumers in the same process.
        let bus: Arc<dyn EventBus> = match &settings.amqp_url {
            Some(url) => amqp_bus(url, AMQP_PREFIX).await?,
            None => Arc::new(InProcessBus::new()),
        };
        run_service(name, listener, settings, bus, shutdown.clone()).await
    };
    shutdown.cancel();
    let _ = metrics_task.await;
    result
}

/// Opens `bus` once every service behind `channels` answers its health check with SERVING.
async fn open_when_serving(bus: Arc<GatedBus>, channels: Vec<platform::grpc::Channel>, shutdown: CancellationToken) {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    for channel in channels {
        let mut client = HealthClient::new(channel);
        loop {
            let check = client.check(HealthCheckRequest { service: String::new() }).await;
            if check.is_ok_and(|r| r.get_ref().status == ServingStatus::Serving as i32) {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
            }
        }
    }
    bus.open();
    tracing::debug!("event bus open: every service serves");
}

/// Runs service `name` on `listener` until `shutdown` is cancelled.
async fn run_service(
    name: &str,
    listener: platform::grpc::Listener,
    settings: Settings,
    bus: Arc<dyn EventBus>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match name {
        "auth" => auth::run(listener, settings, bus, shutdown).await?,
        "users" => users::run(listener, settings, bus, shutdown).await?,
        "catalog" => catalog::run(listener, settings, bus, shutdown).await?,
        "cart" => cart::run(listener, settings, bus, shutdown).await?,
        "ledger" => ledger::run(listener, settings, bus, shutdown).await?,
        "payments" => payments::run(listener, settings, bus, shutdown).await?,
        "orders" => orders::run(listener, settings, bus, shutdown).await?,
        "refunds" => refunds::run(listener, settings, bus, shutdown).await?,
        "deliveries" => deliveries::run(listener, settings, bus, shutdown).await?,
        "notifications" => notifications::run(listener, settings, bus, shutdown).await?,
        "analytics" => analytics::run(listener, settings, bus, shutdown).await?,
        "support" => support::run(listener, settings, bus, shutdown).await?,
        other => anyhow::bail!("unknown service {other:?}"),
    }
    Ok(())
}

/// Applies the migrations of the named services (all when empty).
pub async fn migrate(settings: &Settings, only: &[String]) -> anyhow::Result<Vec<&'static str>> {
    if let Some(unknown) = only.iter().find(|s| !SERVICES.contains(&s.as_str())) {
        anyhow::bail!("unknown service {unknown:?}; expected one of: {}", SERVICES.join(", "));
    }
    let mut done = Vec::new();
    for service in SERVICES {
        if !only.is_empty() && !only.iter().any(|s| s == service) {
            continue;
        }
        match *service {
            "auth" => auth::migrate(settings).await?,
            "users" => users::migrate(settings).await?,
            "catalog" => catalog::migrate(settings).await?,
            "cart" => cart::migrate(settings).await?,
            "ledger" => ledger::migrate(settings).await?,
            "payments" => payments::migrate(settings).await?,
            "orders" => orders::migrate(settings).await?,
            "refunds" => refunds::migrate(settings).await?,
            "deliveries" => deliveries::migrate(settings).await?,
            "notifications" => notifications::migrate(settings).await?,
            "analytics" => analytics::migrate(settings).await?,
            "support" => support::migrate(settings).await?,
            other => anyhow::bail!("no migrations known for {other}"),
        }
        done.push(*service);
    }
    Ok(done)
}

/// A capture or refund changed this recently may still be on its way to the ledger (posted by the payments
/// service's retry loop); the audit reports only older unposted ones.
pub const POSTING_IN_FLIGHT: std::time::Duration = std::time::Duration::from_secs(60);

/// An order confirmed this recently may still have its `order.confirmed` on the way to deliveries (the relay
/// publishes after the commit); the audit reports only older confirmed orders without a shipment.
pub const SHIPMENT_IN_FLIGHT: std::time::Duration = std::time::Duration::from_secs(60);

/// An order still in checkout after this long is reported by the audit as stuck.
pub const ORDER_STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Orders read per page by [`backfill_purchases`].
const BACKFILL_PAGE: i64 = 500;

/// Tells the catalog who bought what from every order confirmed so far (cancelled ones as cancelled), as
/// `order.confirmed` and `order.cancelled` have since reviews came: customers who bought before an upgrade may
/// review what they bought. Reads the orders' database and writes the catalog's, as `audit` reads several; a
/// purchase the catalog knows stays as it is, so running it again changes nothing. Returns how many orders it read.
pub async fn backfill_purchases(settings: &Settings) -> anyhow::Result<usize> {
    catalog::migrate(settings).await?;
    let orders_db = platform::Db::open(settings, orders::NAME).await?;
    let catalog_db = platform::Db::open(settings, catalog::NAME).await?;
    let result = async {
        let mut after = String::new();
        let mut read = 0;
        loop {
            let page = orders::purchases(&orders_db, &after, BACKFILL_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.order_id.clone();
            for p in &page {
                catalog::record_purchase(&catalog_db, &p.customer_id, &p.order_id, &p.product_ids, p.cancelled).await?;
            }
            read += page.len();
        }
        anyhow::Ok(read)
    }
    .await;
    orders_db.close().await;
    catalog_db.close().await;
    result
}

/// Tells the orders service when each order the deliveries service delivered so far was delivered, as
/// `shipment.delivered` has since returns came: an order delivered before an upgrade may be returned within its
/// window. Reads the deliveries' database and writes the orders'; a delivery the orders service knows stays as it
/// is, so running it again changes nothing. Returns how many deliveries were news.
pub async fn backfill_deliveries(settings: &Settings) -> anyhow::Result<usize> {
    let deliveries_db = platform::Db::open(settings, deliveries::NAME).await?;
    let delivered = deliveries::delivered_orders(&deliveries_db).await;
    deliveries_db.close().await;
    let orders_db = platform::Db::open(settings, orders::NAME).await?;
    let result = async {
        let mut news = 0;
        for (order_id, deliver_time) in delivered? {
            if orders::record_delivery(&orders_db, &order_id, deliver_time).await? {
                news += 1;
            }
        }
        anyhow::Ok(news)
    }
    .await;
    orders_db.close().await;
    result
}

/// Checks the books against the facts; returns every violation found (none means the books are sound).
///
/// Today: every ledger transaction balances per currency, every stored balance equals the sum of its
/// postings, every captured payment and refund has its ledger transaction, and no payment is refunded beyond
/// what was captured, every confirmed order has its stock committed and its payment captured for its total
/// and (once [`SHIPMENT_IN_FLIGHT`] has passed) a shipment, no order is stuck in checkout, and every refunded return
/// was refunded by the payments service, for its amount.
pub async fn audit(settings: &Settings) -> anyhow::Result<Vec<String>> {
    let mut violations = Vec::new();
    let db = platform::Db::open(settings, ledger::NAME).await?;
    let found = ledger::audit(&db).await;
    db.close().await;
    violations.extend(found?.into_iter().map(|v| format!("ledger: {v}")));
    let db = platform::Db::open(settings, payments::NAME).await?;
    let found = payments::audit_settled(&db, POSTING_IN_FLIGHT).await;
    db.close().await;
    violations.extend(found?.into_iter().map(|v| format!("payments: {v}")));
    let db = platform::Db::open(settings, orders::NAME).await?;
    let found = orders::audit(&db, ORDER_STUCK_AFTER).await;
    db.close().await;
    violations.extend(found?.into_iter().map(|v| format!("orders: {v}")));
    let db = platform::Db::open(settings, refunds::NAME).await?;
    let found = refunds::audit(&db).await;
    db.close().await;
    violations.extend(found?.into_iter().map(|v| format!("refunds: {v}")));
    violations.extend(audit_confirmed_orders(settings).await?);
    violations.extend(audit_returns(settings).await?);
    Ok(violations)
}

/// Checks that every return the orders service refunded was refunded by the payments service: its refund
/// completed, of the order's payment, for the return's amount.
async fn audit_returns(settings: &Settings) -> anyhow::Result<Vec<String>> {
    let db = platform::Db::open(settings, orders::NAME).await?;
    let refunded = orders::refunded_returns(&db).await;
    db.close().await;
    let db = platform::Db::open(settings, payments::NAME).await?;
    let completed = payments::completed_refunds(&db).await;
    db.close().await;
    let (refunded, completed) = (refunded?, completed?);
    let mut violations = Vec::new();
    for r in refunded {
        let amount = format!("{} {}", r.refund_minor, r.currency);
        match completed.get(&r.refund_id) {
            None => violations
                .push(format!("orders: return {} refunded {amount} but payments made no refund {}", r.id, r.refund_id)),
            Some(made)
                if (made.payment_id.as_str(), made.currency.as_str(), made.amount_minor)
                    != (r.payment_id.as_str(), r.currency.as_str(), r.refund_minor) =>
            {
                violations.push(format!(
                    "orders: return {} refunded {amount} of payment {} but refund {} gave back {} {} of payment {}",
                    r.id, r.payment_id, r.refund_id, made.amount_minor, made.currency, made.payment_id
                ));
            }
            Some(_) => {}
        }
    }
    Ok(violations)
}

/// Checks what no single service can: every confirmed order's stock was committed in the catalog, its
/// payment was captured, for that order, the order's total and the tax it includes, and deliveries made its
/// shipment.
async fn audit_confirmed_orders(settings: &Settings) -> anyhow::Result<Vec<String>> {
    let db = platform::Db::open(settings, orders::NAME).await?;
    let confirmed = orders::confirmed_orders(&db).await;
    db.close().await;
    let db = platform::Db::open(settings, catalog::NAME).await?;
    let committed = catalog::committed_reservations(&db).await;
    db.close().await;
    let db = platform::Db::open(settings, payments::NAME).await?;
    let captured = payments::captured_payments(&db).await;
    db.close().await;
    let db = platform::Db::open(settings, deliveries::NAME).await?;
    let shipped = deliveries::orders_with_shipments(&db).await;
    db.close().await;
    let (confirmed, committed, captured, shipped) = (confirmed?, committed?, captured?, shipped?);
    let settled_before =
        platform::time::now_micros() - i64::try_from(SHIPMENT_IN_FLIGHT.as_micros()).unwrap_or(i64::MAX);
    let mut violations = Vec::new();
    for order in confirmed {
        if order.update_time < settled_before && !shipped.contains(&order.id) {
            violations.push(format!("deliveries: order {} is confirmed but has no shipment", order.id));
        }
        if !committed.contains(&order.id) {
            violations.push(format!("orders: order {} is confirmed but its stock was not committed", order.id));
        }
        match captured.get(&order.payment_id) {
            None => violations.push(format!(
                "orders: order {} is confirmed but payment {:?} was not captured",
                order.id, order.payment_id
            )),
            Some(p) if p.order_id != order.id => {
                violations
                    .push(format!("orders: order {} is paid by payment {} of order {}", order.id, p.id, p.order_id));
            }
            Some(p) if (p.currency.as_str(), p.amount_minor) != (order.currency.as_str(), order.total_minor) => {
                violations.push(format!(
                    "orders: order {} totals {} {} but payment {} captured {} {}",
                    order.id, order.total_minor, order.currency, p.id, p.amount_minor, p.currency
                ));
            }
            // The books owe the tax the order included: the payment booked it apart from sales.
            Some(p) if p.tax_minor != order.tax_minor => {
                violations.push(format!(
                    "orders: order {} includes {} {} of tax but payment {} booked {} {} as tax",
                    order.id, order.tax_minor, order.currency, p.id, p.tax_minor, p.currency
                ));
            }
            Some(_) => {}
        }
    }
    Ok(violations)
}
