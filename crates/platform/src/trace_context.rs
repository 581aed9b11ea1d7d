//! W3C trace context (`traceparent`, `tracestate`) in and out of HTTP headers, gRPC metadata and event
//! envelopes, so that one request is one trace from the gateway through every service and event consumer.
//!
//! Spans are `tracing` spans; the layer installed by [`crate::telemetry`] gives each one a trace and span id
//! (OpenTelemetry's when spans are exported, [`crate::trace_ids`] otherwise). Without either layer (unit tests
//! of other crates) nothing is extracted or injected.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (and metadata key) carrying the trace id, the parent span id and the sampling flag.
pub const TRACEPARENT: &str = "traceparent";
/// The header carrying vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";

/// The remote parent that `headers` name, if they carry a valid `traceparent`.
pub fn extract(headers: &http::HeaderMap) -> Option<opentelemetry::Context> {
    let traceparent = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok())?;
    if !well_formed(traceparent) {
        return None;
    }
    valid(TraceContextPropagator::new().extract(&HeaderExtractor(headers)))
}

/// The remote parent that an event's `traceparent` names, if it is valid.
pub fn extract_traceparent(traceparent: &str) -> Option<opentelemetry::Context> {
    if !well_formed(traceparent) {
        return None;
    }
    let carrier = [(TRACEPARENT, traceparent)];
    valid(TraceContextPropagator::new().extract(&PairExtractor(&carrier)))
}

/// Makes `span` a child of the remote parent in `headers`; without a valid `traceparent` it stays a child of
/// whatever span is current (or starts a new trace).
pub fn adopt_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if let Some(parent) = extract(headers) {
        set_parent(span, parent);
    }
}

/// Makes `span` a child of the remote parent an event's `traceparent` names, if it is valid.
pub fn adopt_traceparent(span: &tracing::Span, traceparent: &str) {
    if let Some(parent) = extract_traceparent(traceparent) {
        set_parent(span, parent);
    }
}

fn set_parent(span: &tracing::Span, parent: opentelemetry::Context) {
    if !crate::trace_ids::set_parent(span, parent.span().span_context()) {
        // Fails only without either layer, where there is no trace to join.
        let _ = span.set_parent(parent);
    }
}

/// Writes `span`'s trace context into `headers` (replacing what the caller sent, if anything).
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let Some(context) = span_context(span) else { return };
    if let Ok(value) = http::HeaderValue::from_bytes(&traceparent_bytes(&context)) {
        headers.insert(TRACEPARENT, value);
    }
    // W3C asks not to send an empty `tracestate`.
    let state = context.trace_state().header();
    match http::HeaderValue::from_str(&state) {
        Ok(value) if !state.is_empty() => {
            headers.insert(TRACESTATE, value);
        }
        _ => {
            headers.remove(TRACESTATE);
        }
    }
}

/// `span`'s `traceparent` value, or an empty string when it has no valid trace context.
pub fn traceparent(span: &tracing::Span) -> String {
    span_context(span).map(|context| format_traceparent(&context)).unwrap_or_default()
}

/// The `traceparent` of the current span (what the outbox stores with an event), or an empty string.
pub fn current_traceparent() -> String {
    traceparent(&tracing::Span::current())
}

/// The trace id and span id of `span` as lowercase hex, when it has a valid trace context.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    span_context(span).map(|context| (context.trace_id().to_string(), context.span_id().to_string()))
}

/// `span`'s own trace context, from whichever layer [`crate::telemetry`] installed: its own ids when nothing
/// is exported, OpenTelemetry's when spans are.
fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    let context = match crate::trace_ids::get(span) {
        Some(context) => context,
        None => span.context().span().span_context().clone(),
    };
    context.is_valid().then_some(context)
}

fn format_traceparent(span_context: &SpanContext) -> String {
    if !span_context.is_valid() {
        return String::new();
    }
    traceparent_bytes(span_context).iter().map(|&b| char::from(b)).collect()
}

/// `00-<trace id>-<span id>-<flags>` in lowercase hex, written without `fmt` (every request and every call
/// to a service writes one or two).
fn traceparent_bytes(span_context: &SpanContext) -> [u8; 55] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 55];
    let mut at = 0;
    let mut put = |bytes: &[u8], out: &mut [u8; 55]| {
        for byte in bytes {
            out[at] = HEX[usize::from(byte >> 4)];
            out[at + 1] = HEX[usize::from(byte & 0x0f)];
            at += 2;
        }
        at += 1; // the dash after each part
    };
    put(&[0], &mut out);
    put(&span_context.trace_id().to_bytes(), &mut out);
    put(&span_context.span_id().to_bytes(), &mut out);
    put(&[span_context.trace_flags().to_u8()], &mut out);
    out
}

/// Whether `traceparent` has the W3C shape: `version-traceid-parentid-flags`, lowercase hex of 2, 32, 16
/// and 2 digits, version `ff` forbidden, and exactly four parts in version 00 (later versions may add more).
/// The propagator alone is lenient about lengths.
fn well_formed(traceparent: &str) -> bool {
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let hex =
        |part: &str, len: usize| part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match parts.as_slice() {
        [version, trace_id, parent_id, flags, rest @ ..] => {
            hex(version, 2)
                && *version != "ff"
                && (rest.is_empty() || *version != "00")
                && hex(trace_id, 32)
                && hex(parent_id, 16)
                && hex(flags, 2)
        }
        _ => false,
    }
}

fn valid(context: opentelemetry::Context) -> Option<opentelemetry::Context> {
    context.span().span_context().is_valid().then_some(context)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct PairExtractor<'a>(&'a [(&'a str, &'a str)]);

impl Extractor for PairExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().expect("header value"));
        }
        headers
    }

    fn remote(context: &opentelemetry::Context) -> SpanContext {
        context.span().span_context().clone()
    }

    #[test]
    fn a_valid_traceparent_names_the_remote_parent() {
        let context = extract(&headers(&[(TRACEPARENT, PARENT), (TRACESTATE, "vendor=1")])).expect("a parent");
        let parent = remote(&context);
        assert_eq!(parent.trace_id().to_string(), TRACE_ID);
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parent.is_sampled());
        assert!(parent.is_remote());
        assert_eq!(parent.trace_state().get("vendor"), Some("1"));
        assert_eq!(format_traceparent(&parent), PARENT);
        let from_event = remote(&extract_traceparent(PARENT).expect("a parent from an envelope"));
        assert_eq!((from_event.trace_id(), from_event.span_id()), (parent.trace_id(), parent.span_id()));
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "",
        ] {
            assert!(extract(&headers(&[(TRACEPARENT, bad)])).is_none(), "{bad} was accepted");
            assert!(extract_traceparent(bad).is_none(), "{bad} was accepted from an envelope");
        }
    }

    #[test]
    fn a_missing_traceparent_is_no_parent() {
        assert!(extract(&http::HeaderMap::new()).is_none());
        assert!(extract(&headers(&[(TRACESTATE, "vendor=1")])).is_none());
        assert!(extract_traceparent("").is_none());
    }

    #[test]
    fn without_a_trace_nothing_is_injected() {
        // No OpenTelemetry layer in this test: spans have no trace context, so nothing goes out.
        let mut out = http::HeaderMap::new();
        inject(&tracing::Span::none(), &mut out);
        assert!(out.is_empty());
        assert_eq!(current_traceparent(), "");
        assert_eq!(ids(&tracing::Span::current()), None);
    }

    #[test]
    fn injecting_writes_the_spans_own_traceparent() {
        for (kind, dispatch, _) in crate::telemetry::test_dispatches() {
            tracing::dispatcher::with_default(&dispatch, || {
                let span = tracing::info_span!("server");
                adopt_parent(&span, &headers(&[(TRACEPARENT, PARENT)]));
                let mut out = http::HeaderMap::new();
                inject(&span, &mut out);
                let sent = out.get(TRACEPARENT).and_then(|v| v.to_str().ok()).expect("traceparent injected");
                let (trace_id, span_id) = ids(&span).expect("ids");
                assert_eq!(trace_id, TRACE_ID, "{kind}: the span joined the caller's trace");
                assert_eq!(sent, format!("00-{TRACE_ID}-{span_id}-01"), "{kind}: the callee's parent is this span");
                assert_ne!(span_id, "00f067aa0ba902b7", "{kind}: a span of its own, not the caller's");
                assert!(out.get(TRACESTATE).is_none(), "{kind}: no empty tracestate when the caller sent none");
                let _entered = span.enter();
                assert_eq!(current_traceparent(), sent, "{kind}");
                let child = tracing::info_span!("client");
                let (child_trace, child_span) = ids(&child).expect("ids");
                assert_eq!(child_trace, TRACE_ID, "{kind}: children stay in the caller's trace");
                assert_ne!(child_span, span_id, "{kind}: and have ids of their own");
            });
        }
    }

    #[test]
    fn the_callers_sampling_and_trace_state_go_on() {
        for (kind, dispatch, _) in crate::telemetry::test_dispatches() {
            tracing::dispatcher::with_default(&dispatch, || {
                let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
                let span = tracing::info_span!("server");
                adopt_parent(&span, &headers(&[(TRACEPARENT, unsampled), (TRACESTATE, "vendor=1")]));
                let mut out = http::HeaderMap::new();
                span.in_scope(|| inject(&tracing::info_span!("client"), &mut out));
                let sent = out.get(TRACEPARENT).and_then(|v| v.to_str().ok()).expect("traceparent");
                assert!(sent.starts_with(&format!("00-{TRACE_ID}-")), "{kind}: {sent}");
                assert!(sent.ends_with("-00"), "{kind}: the caller chose not to sample: {sent}");
                assert_eq!(out.get(TRACESTATE).and_then(|v| v.to_str().ok()), Some("vendor=1"), "{kind}");

                let consumer = tracing::info_span!("consumer");
                adopt_traceparent(&consumer, PARENT);
                assert_eq!(ids(&consumer).map(|(trace, _)| trace).as_deref(), Some(TRACE_ID), "{kind}: from an event");
                let fresh = tracing::info_span!("root");
                let (fresh_trace, _) = ids(&fresh).expect("a new trace for a root");
                assert_ne!(fresh_trace, TRACE_ID, "{kind}");
                assert!(traceparent(&fresh).ends_with("-01"), "{kind}: a root is sampled");
            });
        }
    }
}
