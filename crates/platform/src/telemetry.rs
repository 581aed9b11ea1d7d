//! Logs and traces. Logs are JSON lines (or pretty text on a terminal) with the fields of the enclosing span,
//! so every line written while serving a request carries its `request_id`, plus the `trace_id` and `span_id`
//! of the trace it belongs to. Spans always get ids and are always propagated (see [`crate::trace_context`]);
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set they become OpenTelemetry
//! spans exported over OTLP/gRPC, and otherwise a lighter layer gives them their ids ([`crate::trace_ids`]).

use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample,
};
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter::LevelFilter};

use crate::config::{LogFormat, Settings};
use crate::trace_ids::{Ids, TraceIdsLayer};

/// The metadata key (and HTTP header) that carries the request id between the gateway and the services.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Root spans that are never exported: probes asked every few seconds would drown the real traffic (their
/// children follow the decision of their root).
pub(crate) const UNTRACED_ROOTS: &[&str] =
    &["grpc.health.v1.Health/Check", "grpc.health.v1.Health/Watch", "GET /healthz", "GET /readyz"];

/// Setting up telemetry failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (e.g. an unusable endpoint URL).
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The OTLP exporter needs a Tokio runtime to run on.
    #[error("exporting traces needs a Tokio runtime; initialise telemetry inside one")]
    NoRuntime,
}

/// Where spans go and under which service name: the standard OpenTelemetry variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// Resource attribute `service.name` (`OTEL_SERVICE_NAME`, else the process's default).
    pub service_name: String,
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317` (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`); `None` exports nothing.
    pub otlp_endpoint: Option<String>,
    /// Pause between batch exports; `None` uses `OTEL_BSP_SCHEDULE_DELAY` or the SDK's default (5 s).
    pub batch_delay: Option<Duration>,
}

impl TraceExport {
    /// From the process environment, with `default_service_name` when `OTEL_SERVICE_NAME` is unset.
    pub fn from_env(default_service_name: &str) -> Self {
        Self::from_vars(std::env::vars(), default_service_name)
    }

    /// From `vars` (name, value), with `default_service_name` when `OTEL_SERVICE_NAME` is unset or empty.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>, default_service_name: &str) -> Self {
        let vars: std::collections::HashMap<String, String> =
            vars.into_iter().filter(|(k, v)| k.starts_with("OTEL_") && !v.trim().is_empty()).collect();
        let service_name = vars.get("OTEL_SERVICE_NAME").cloned().unwrap_or_else(|| default_service_name.to_owned());
        let otlp_endpoint =
            vars.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| vars.get("OTEL_EXPORTER_OTLP_ENDPOINT")).cloned();
        Self { service_name, otlp_endpoint, batch_delay: None }
    }
}

/// The installed tracer provider. [`Telemetry::shutdown`] exports what is still buffered; call it before the
/// Tokio runtime it was initialised in stops.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans leave this process.
    pub fn exports(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes buffered spans and stops the exporter. Blocks until done: call it outside async code.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("exporting the last traces failed: {error}");
        }
    }
}

/// Installs the global log subscriber. Calling it again (tests do) is harmless: the first one stays.
/// Spans get trace ids and are propagated, but nothing is exported; see [`init`].
pub fn init_logging(settings: &Settings) {
    let export = TraceExport { service_name: "mercato".to_owned(), otlp_endpoint: None, batch_delay: None };
    // Without an endpoint nothing can fail.
    let _ = init(settings, &export);
}

/// Installs the global log subscriber and the tracer provider: logs as the settings say, spans exported to
/// `export.otlp_endpoint` when it is set. With an endpoint it must run inside a Tokio runtime, which must
/// outlive the returned [`Telemetry`]. Calling it again is harmless: the first installation stays.
pub fn init(settings: &Settings, export: &TraceExport) -> Result<Telemetry, TelemetryError> {
    let mut provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(SkipProbes)))
        .with_resource(Resource::builder().with_service_name(export.service_name.clone()).build());
    let exporting = export.otlp_endpoint.is_some();
    if let Some(endpoint) = &export.otlp_endpoint {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TelemetryError::NoRuntime);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
        let mut batch = BatchConfigBuilder::default();
        if let Some(delay) = export.batch_delay {
            batch = batch.with_scheduled_delay(delay);
        }
        provider = provider
            .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batch.build()).build());
    }
    let provider = provider.build();
    let format = settings.log_format.unwrap_or(if std::io::stdout().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let dispatch = subscriber(exporting.then_some(&provider), &settings.log_filter, format, std::io::stdout);
    if dispatch.try_init().is_err() {
        // Already installed (a second call in the same process): keep the first one.
        let _ = provider.shutdown();
        return Ok(Telemetry { provider: None });
    }
    Ok(Telemetry { provider: exporting.then_some(provider) })
}

/// The subscriber: span ids and trace context for every span at INFO and above, whatever the log filter says
/// (so that traces and propagation do not depend on it) — through OpenTelemetry when `exporter` is given, else
/// through [`crate::trace_ids`] — and log lines through `log_filter` to `writer`.
fn subscriber<W>(exporter: Option<&SdkTracerProvider>, log_filter: &str, format: LogFormat, writer: W) -> Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let exported = exporter.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("mercato"))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            // Nothing here reads OpenTelemetry's thread-local context (parents come from `tracing`'s span tree,
            // and `trace_context` asks spans directly), so entering a span need not attach one: that was paid on
            // every poll of every instrumented future.
            .with_context_activation(false)
            .with_filter(LevelFilter::INFO)
    });
    let ids_only = exporter.is_none().then(|| TraceIdsLayer::default().with_filter(LevelFilter::INFO));
    let dispatch_slot = Arc::new(OnceLock::new());
    let (json, pretty) = match format {
        LogFormat::Json => {
            let slot = dispatch_slot.clone();
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(writer)
                .map_event_format(|inner| WithTraceIds { inner, dispatch: slot })
                .with_filter(filter);
            (Some(layer), None)
        }
        LogFormat::Pretty => {
            (None, Some(tracing_subscriber::fmt::layer().compact().with_writer(writer).with_filter(filter)))
        }
    };
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(ids_only).with(exported).with(json).with(pretty));
    let _ = dispatch_slot.set(dispatch.downgrade());
    dispatch
}

/// Samples every root span except probes'; used under `ParentBased`, so children follow their parent.
#[derive(Debug, Clone, Copy)]
struct SkipProbes;

impl ShouldSample for SkipProbes {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        _trace_id: TraceId,
        name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let decision =
            if UNTRACED_ROOTS.contains(&name) { SamplingDecision::Drop } else { SamplingDecision::RecordAndSample };
        let trace_state = parent_context.map(|cx| cx.span().span_context().trace_state().clone()).unwrap_or_default();
        SamplingResult { decision, attributes: Vec::new(), trace_state }
    }
}

/// A JSON event format that adds the `trace_id` and `span_id` of the innermost traced span to each line.
struct WithTraceIds<F> {
    inner: F,
    /// The subscriber this format is part of, to read spans' trace context (set once it exists).
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl<F> WithTraceIds<F> {
    fn ids<S, N>(&self, ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let dispatch = self.dispatch.get()?.upgrade()?;
        ctx.event_scope()?.find_map(|span| {
            let span_context = match span.extensions().get::<Ids>() {
                Some(ids) => ids.0.clone(),
                None => tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?.span().span_context().clone(),
            };
            span_context.is_valid().then(|| (span_context.trace_id().to_string(), span_context.span_id().to_string()))
        })
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let Some((trace_id, span_id)) = self.ids(ctx) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        // The JSON format writes one object per line: the ids become its last members (hex, nothing to escape).
        match line.trim_end().strip_suffix('}') {
            Some(object) => writeln!(writer, "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"),
            None => writer.write_str(&line),
        }
    }
}

/// Where a test subscriber writes its log lines.
#[cfg(test)]
pub(crate) type TestBuffer = Arc<std::sync::Mutex<Vec<u8>>>;

/// The test subscribers of both kinds: ids only (nothing exported), then through OpenTelemetry (an SDK
/// provider without an exporter).
#[cfg(test)]
pub(crate) fn test_dispatches() -> Vec<(&'static str, Dispatch, TestBuffer)> {
    let provider = SdkTracerProvider::builder().with_sampler(Sampler::ParentBased(Box::new(SkipProbes))).build();
    let (ids_only, ids_buffer) = test_dispatch_with(None);
    let (exported, exported_buffer) = test_dispatch_with(Some(&provider));
    vec![("ids only", ids_only, ids_buffer), ("OpenTelemetry", exported, exported_buffer)]
}

#[cfg(test)]
fn test_dispatch_with(exporter: Option<&SdkTracerProvider>) -> (Dispatch, TestBuffer) {
    let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = buffer.clone();
    let writer = move || SharedWriter(sink.clone());
    (subscriber(exporter, "info", LogFormat::Json, writer), buffer)
}

#[cfg(test)]
struct SharedWriter(Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for SharedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace_context;

    fn lines(buffer: &std::sync::Mutex<Vec<u8>>) -> Vec<serde_json::Value> {
        let bytes = buffer.lock().expect("buffer").clone();
        String::from_utf8(bytes)
            .expect("utf-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("every line is JSON"))
            .collect()
    }

    #[test]
    fn log_lines_in_a_traced_span_carry_its_trace_and_span_ids() {
        for (kind, dispatch, buffer) in test_dispatches() {
            log_lines_carry_ids(kind, &dispatch, &buffer);
        }
    }

    fn log_lines_carry_ids(kind: &str, dispatch: &Dispatch, buffer: &std::sync::Mutex<Vec<u8>>) {
        tracing::dispatcher::with_default(dispatch, || {
            let span = tracing::info_span!("grpc", request_id = "req-1");
            let mut headers = http::HeaderMap::new();
            headers.insert(
                trace_context::TRACEPARENT,
                http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            );
            trace_context::adopt_parent(&span, &headers);
            span.in_scope(|| {
                let child = tracing::info_span!("inner");
                child.in_scope(|| tracing::info!("deep inside"));
                tracing::info!(answer = 42, "served");
            });
            tracing::info!("outside any span");
            let (_, span_id) = trace_context::ids(&span).expect("ids");
            let lines = lines(buffer);
            assert_eq!(lines.len(), 3, "{kind}: {lines:?}");
            let inner = &lines[0];
            assert_eq!(inner["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{kind}: {inner}");
            assert_ne!(inner["span_id"], span_id.as_str(), "{kind}: the innermost span's id: {inner}");
            let served = &lines[1];
            assert_eq!(served["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{kind}: {served}");
            assert_eq!(served["span_id"], span_id.as_str(), "{kind}: {served}");
            assert_eq!(served["span"]["request_id"], "req-1", "{kind}: the request id stays: {served}");
            assert_eq!(served["fields"]["answer"], 42, "{kind}: {served}");
            let outside = &lines[2];
            assert!(outside.get("trace_id").is_none(), "{kind}: no trace outside spans: {outside}");
        });
    }

    #[test]
    fn probes_are_not_sampled_but_everything_else_is() {
        for (kind, dispatch, _) in test_dispatches() {
            tracing::dispatcher::with_default(&dispatch, || {
                let probe = tracing::info_span!("grpc", "otel.name" = "grpc.health.v1.Health/Check");
                let gateway_probe = tracing::info_span!("http", "otel.name" = %format!("GET {}", "/readyz"));
                let call = tracing::info_span!("grpc", "otel.name" = "mercato.catalog.v1.CatalogService/GetProduct");
                assert!(trace_context::traceparent(&probe).ends_with("-00"), "{kind}: a probe is not exported");
                assert!(trace_context::traceparent(&gateway_probe).ends_with("-00"), "{kind}: named by Display");
                assert!(trace_context::traceparent(&call).ends_with("-01"), "{kind}: a call is exported");
                let child = probe.in_scope(|| tracing::info_span!("grpc", "otel.name" = "x.v1.S/Child"));
                assert!(trace_context::traceparent(&child).ends_with("-00"), "{kind}: a probe's children follow it");
                let explicit = tracing::info_span!(parent: &call, "inner");
                let (call_trace, _) = trace_context::ids(&call).expect("ids");
                let (child_trace, _) = trace_context::ids(&explicit).expect("ids");
                assert_eq!(call_trace, child_trace, "{kind}: an explicit parent's trace");
            });
        }
    }

    #[test]
    fn the_standard_variables_choose_the_service_name_and_the_endpoint() {
        let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let none = TraceExport::from_vars(vars(&[]), "mercato-orders");
        assert_eq!(none.service_name, "mercato-orders");
        assert_eq!(none.otlp_endpoint, None, "nothing is exported without an endpoint");
        let set = TraceExport::from_vars(
            vars(&[("OTEL_SERVICE_NAME", "shop"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]),
            "mercato",
        );
        assert_eq!(set.service_name, "shop");
        assert_eq!(set.otlp_endpoint.as_deref(), Some("http://collector:4317"));
        let traces_only = TraceExport::from_vars(
            vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
                ("OTEL_SERVICE_NAME", ""),
            ]),
            "mercato",
        );
        assert_eq!(traces_only.otlp_endpoint.as_deref(), Some("http://traces:4317"));
        assert_eq!(traces_only.service_name, "mercato", "an empty name is no name");
    }

    #[test]
    fn exporting_outside_a_runtime_is_refused_not_a_panic() {
        let settings = Settings::from_vars(Vec::new()).expect("settings");
        let export = TraceExport {
            service_name: "mercato".to_owned(),
            otlp_endpoint: Some("http://127.0.0.1:4317".to_owned()),
            batch_delay: None,
        };
        assert!(matches!(init(&settings, &export), Err(TelemetryError::NoRuntime)));
    }
}
