//! Distributed tracing as an operator sees it: a checkout sent with a W3C `traceparent` arrives at a real
//! OTLP/gRPC collector as one trace — the gateway's server span, its call to orders, the orders service's
//! server span, its calls to the catalog and to payments with their server spans, and the cart consuming
//! `order.confirmed` — each span the child of the one that caused it. On SQLite and on PostgreSQL.
//!
//! The platform runs in this process, so it shares the process's one subscriber and tracer provider: the
//! first test installs them (exporting to the collector every 100 ms) on a runtime that lives as long as
//! the test binary, as `mercato` does on its own runtime from `OTEL_EXPORTER_OTLP_ENDPOINT`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use e2e::{Storage, TestPlatform};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::json;

/// A span as the collector received it, with the `service.name` of the resource that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    fn attribute(&self, key: &str) -> Option<String> {
        attribute(&self.span.attributes, key)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match value {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// The OTLP/gRPC trace service of the test: keeps every span it is sent.
#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().map_err(|_| tonic::Status::internal("poisoned"))?;
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| Received { service: service.clone(), span }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// The collector, started with the process's telemetry on first use.
#[allow(clippy::expect_used)]
fn collector() -> &'static Collector {
    static COLLECTOR: OnceLock<Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("collector runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("collector port");
                let address = listener.local_addr().expect("collector address");
                let collector = Collector::default();
                let server = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(collector.clone()))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
                tokio::spawn(server);
                let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), format!("http://{address}"))];
                let mut export = platform::telemetry::TraceExport::from_vars(vars, "mercato");
                export.batch_delay = Some(Duration::from_millis(100));
                let quiet = [("MERCATO_LOG".to_owned(), "warn".to_owned())];
                let settings = platform::Settings::from_vars(quiet).expect("settings");
                let telemetry = platform::telemetry::init(&settings, &export).expect("telemetry");
                assert!(telemetry.exports(), "the first installation in this process exports");
                ready.send(collector).expect("hand over the collector");
                // Keep the runtime (and the exporter on it) for the rest of the process.
                std::future::pending::<()>().await;
                drop(telemetry);
            });
        });
        started.recv().expect("the collector starts")
    })
}

/// Every span of `trace_id` the collector has received.
fn spans_of(collector: &Collector, trace_id: &str) -> Vec<Received> {
    let spans = collector.spans.lock().map(|s| s.clone()).unwrap_or_default();
    spans.into_iter().filter(|s| s.trace_id() == trace_id).collect()
}

/// The spans of one checkout's trace, each found by its name, kind and parent.
#[derive(Debug)]
struct Checkout {
    gateway: Received,
    orders: Received,
    catalog_call: Received,
    catalog: Received,
    payments_call: Received,
    consumed: Received,
}

fn find<'a>(spans: &'a [Received], name: &str, kind: SpanKind, parent: &str) -> Result<&'a Received, String> {
    spans
        .iter()
        .find(|s| s.span.name == name && s.span.kind == kind as i32 && s.parent_id() == parent)
        .ok_or_else(|| format!("no {kind:?} span {name:?} whose parent is {parent}"))
}

/// The checkout's spans with their parent/child links, or what is missing so far.
fn checkout_trace(spans: &[Received], caller_span: &str) -> Result<Checkout, String> {
    let gateway = find(spans, "POST /v1/orders", SpanKind::Server, caller_span)?;
    let create = "mercato.orders.v1.OrderService/CreateOrder";
    let gateway_call = find(spans, create, SpanKind::Client, &gateway.span_id())?;
    let orders = find(spans, create, SpanKind::Server, &gateway_call.span_id())?;
    let reserve = "mercato.catalog.v1.CatalogService/ReserveStock";
    let catalog_call = find(spans, reserve, SpanKind::Client, &orders.span_id())?;
    let catalog = find(spans, reserve, SpanKind::Server, &catalog_call.span_id())?;
    let pay = "mercato.payments.v1.PaymentService/CreatePayment";
    let payments_call = find(spans, pay, SpanKind::Client, &orders.span_id())?;
    find(spans, pay, SpanKind::Server, &payments_call.span_id())?;
    let published = find(spans, "publish order.confirmed", SpanKind::Producer, &orders.span_id())?;
    let consumed = spans
        .iter()
        .find(|s| {
            s.span.name == "process order.confirmed"
                && s.span.kind == SpanKind::Consumer as i32
                && s.parent_id() == published.span_id()
                && s.attribute("messaging.consumer.group.name").as_deref() == Some("cart")
        })
        .ok_or("no span of the cart consuming order.confirmed under its publish span")?;
    Ok(Checkout {
        gateway: gateway.clone(),
        orders: orders.clone(),
        catalog_call: catalog_call.clone(),
        catalog: catalog.clone(),
        payments_call: payments_call.clone(),
        consumed: consumed.clone(),
    })
}

fn product(sku: &str) -> serde_json::Value {
    json!({
        "sku": sku,
        "name": "Traced beans",
        "description": "Beans whose every move is traced",
        "price": {"currency": "EUR", "amountMinor": "900"},
        "category": "coffee",
        "active": true
    })
}

#[allow(clippy::expect_used, clippy::panic)]
async fn a_checkout_is_one_trace(storage: Storage) {
    let collector = collector();
    let Some(p) = TestPlatform::start(storage).await else { return };
    let admin = p.admin_token().await;
    let customer = p.customer_token("traced@example.com").await;
    let made = p.send("POST", "/v1/products", Some(&admin), Some(product("TRACE-1"))).await;
    let beans = made.json["id"].as_str().expect("product id").to_owned();
    p.send("POST", &format!("/v1/products/{beans}/inventory:adjust"), Some(&admin), Some(json!({"delta": 5}))).await;
    let added =
        p.send("POST", "/v1/cart/items", Some(&customer), Some(json!({"productId": beans, "quantity": 2}))).await;
    assert_eq!(added.status, 200, "{}", added.json);

    // The caller's trace: a fresh trace id and the id of the caller's own span.
    let trace_id = uuid::Uuid::now_v7().simple().to_string();
    let caller_span = uuid::Uuid::now_v7().simple().to_string()[16..].to_owned();
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let bearer = format!("Bearer {customer}");
    let address = json!({"name": "Ada", "line1": "1 Main St", "city": "Paris", "postalCode": "75001", "country": "FR"});
    let placed = p
        .send_with(
            "POST",
            "/v1/orders",
            &[("authorization", bearer.as_str()), ("idempotency-key", "traced-1"), ("traceparent", &traceparent)],
            Some(json!({"shippingAddress": address, "paymentMethod": "tok_visa"})),
        )
        .await;
    assert_eq!(placed.status, 201, "{}", placed.json);
    assert_eq!(placed.json["status"], "ORDER_STATUS_CONFIRMED", "{}", placed.json);

    // The answer names the gateway's span in the caller's trace: what a user quotes in a support ticket.
    let answered = placed.headers.get("traceparent").and_then(|v| v.to_str().ok()).expect("traceparent header");
    let parts: Vec<&str> = answered.split('-').collect();
    assert_eq!(parts.len(), 4, "{answered}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace_id.as_str(), "01"), "{answered}");
    assert_ne!(parts[2], caller_span, "the gateway's own span, not the caller's");

    let mut outcome = Err("nothing received yet".to_owned());
    for _ in 0..150 {
        outcome = checkout_trace(&spans_of(collector, &trace_id), &caller_span);
        if outcome.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let trace = outcome.unwrap_or_else(|missing| {
        let names: Vec<String> = spans_of(collector, &trace_id)
            .iter()
            .map(|s| format!("{} ({}) {} <- {}", s.span.name, s.span.kind, s.span_id(), s.parent_id()))
            .collect();
        panic!("trace {trace_id} is incomplete: {missing}; received {names:#?}")
    });

    assert_eq!(trace.gateway.span_id(), parts[2], "the header names the gateway's server span");
    assert_eq!(trace.gateway.attribute("http.route").as_deref(), Some("/v1/orders"));
    assert_eq!(trace.gateway.attribute("http.request.method").as_deref(), Some("POST"));
    assert_eq!(trace.gateway.attribute("http.response.status_code").as_deref(), Some("201"));
    for (span, service, method) in [
        (&trace.orders, "mercato.orders.v1.OrderService", "CreateOrder"),
        (&trace.catalog_call, "mercato.catalog.v1.CatalogService", "ReserveStock"),
        (&trace.catalog, "mercato.catalog.v1.CatalogService", "ReserveStock"),
        (&trace.payments_call, "mercato.payments.v1.PaymentService", "CreatePayment"),
    ] {
        assert_eq!(span.attribute("rpc.system").as_deref(), Some("grpc"), "{span:?}");
        assert_eq!(span.attribute("rpc.service").as_deref(), Some(service), "{span:?}");
        assert_eq!(span.attribute("rpc.method").as_deref(), Some(method), "{span:?}");
        assert_eq!(span.attribute("rpc.grpc.status_code").as_deref(), Some("0"), "{span:?}");
    }
    assert_eq!(trace.consumed.attribute("messaging.destination.name").as_deref(), Some("order.confirmed"));
    for span in spans_of(collector, &trace_id) {
        assert_eq!(span.service, "mercato", "service.name of `mercato up`: {span:?}");
    }
    p.stop().await;
}

#[tokio::test]
async fn a_checkout_is_one_trace_on_sqlite() {
    a_checkout_is_one_trace(Storage::Sqlite).await;
}

#[tokio::test]
async fn a_checkout_is_one_trace_on_postgres() {
    a_checkout_is_one_trace(Storage::Postgres).await;
}
