//! Trace and span ids for `tracing` spans when nothing exports them: a layer that gives each span a W3C span
//! context (its parent's trace id and sampling flag, a span id of its own) and nothing else.
//!
//! Why not always OpenTelemetry's layer: with no exporter it still turned every span's fields into attributes,
//! ran the sampler and built an SDK span to drop at its end — a tenth of the gateway's CPU per request
//! (`bench/gateway.md`). Logs need only the ids, and the services downstream only the `traceparent`; this layer
//! keeps both exactly as the OpenTelemetry layer makes them (the same sampling rule: every root is sampled except
//! probes, children follow their parent), so a process that exports and one that does not join the same traces.

use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The span context this layer keeps in a span's extensions.
#[derive(Debug, Clone)]
pub(crate) struct Ids(pub(crate) SpanContext);

/// The layer: see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct TraceIdsLayer {
    ids: RandomIdGenerator,
}

impl<S> tracing_subscriber::Layer<S> for TraceIdsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = if attrs.is_contextual() {
            ctx.lookup_current()
        } else {
            attrs.parent().and_then(|parent| ctx.span(parent))
        };
        let inherited = parent.and_then(|parent| parent.extensions().get::<Ids>().map(|ids| ids.0.clone()));
        let context = match inherited {
            Some(parent) => SpanContext::new(
                parent.trace_id(),
                self.ids.new_span_id(),
                parent.trace_flags(),
                false,
                parent.trace_state().clone(),
            ),
            None => {
                let flags = if is_probe(attrs) { TraceFlags::default() } else { TraceFlags::SAMPLED };
                SpanContext::new(self.ids.new_trace_id(), self.ids.new_span_id(), flags, false, TraceState::default())
            }
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Ids(context));
        }
    }
}

/// Whether a root span is a probe's (its `otel.name` is one of [`crate::telemetry::UNTRACED_ROOTS`]). Every
/// request's server span is a root when made (its remote parent is adopted after), so the name is compared
/// without allocating: written into a buffer on the stack, where anything longer than a probe's name overflows.
fn is_probe(attrs: &Attributes<'_>) -> bool {
    #[derive(Default)]
    struct OtelName {
        buffer: ShortName,
        seen: bool,
    }
    impl Visit for OtelName {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "otel.name" {
                self.seen = std::fmt::Write::write_str(&mut self.buffer, value).is_ok();
            }
        }
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "otel.name" {
                self.seen = std::fmt::Write::write_fmt(&mut self.buffer, format_args!("{value:?}")).is_ok();
            }
        }
    }
    let mut name = OtelName::default();
    attrs.record(&mut name);
    name.seen && crate::telemetry::UNTRACED_ROOTS.iter().any(|probe| probe.as_bytes() == name.buffer.as_bytes())
}

/// A name of at most 32 bytes (the longest probe name has 27); writing more fails.
#[derive(Default)]
struct ShortName {
    bytes: [u8; 32],
    len: usize,
}

impl ShortName {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Write for ShortName {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let end = self.len + text.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `span`'s context kept by this layer, when the subscriber has it.
pub(crate) fn get(span: &tracing::Span) -> Option<SpanContext> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = registry.span(id)?;
        let ids = data.extensions().get::<Ids>()?.0.clone();
        Some(ids)
    })
    .flatten()
}

/// Makes `span` (and the spans it starts from now on) part of `parent`'s trace, keeping its own span id; false
/// when this layer does not keep `span`'s context.
pub(crate) fn set_parent(span: &tracing::Span, parent: &SpanContext) -> bool {
    span.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() else { return false };
        let Some(data) = registry.span(id) else { return false };
        let mut extensions = data.extensions_mut();
        let Some(ids) = extensions.get_mut::<Ids>() else { return false };
        ids.0 = SpanContext::new(
            parent.trace_id(),
            ids.0.span_id(),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        );
        true
    })
    .unwrap_or(false)
}
