//! Traces of a send across the cluster: the receiving node's `chat.send`,
//! the owner's `conversation.send` with its `store.append`, and a
//! `fanout.deliver` on every node that queues the message to sockets, all
//! in one trace because each hop carries a [`TraceParent`] (in the
//! [`crate::msg::Request`], the peer messages, and each
//! [`crate::conn::Delivery`]).
//!
//! Spans go to OpenTelemetry's global tracer, which the node sets up when
//! `[telemetry] otlp_endpoint` is configured, and then calls [`enable`].
//! Until then (the default) nothing here calls into OpenTelemetry or
//! allocates: a root is never sampled, so no request carries a parent, so
//! no child is made either.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use chat_protocol::peer::TraceParent;
use opentelemetry::global::{self, BoxedSpan};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue};

static ON: AtomicBool = AtomicBool::new(false);
/// The sampling ratio's f64 bits.
static RATIO: AtomicU64 = AtomicU64::new(0);

/// The tracer's name (the instrumentation scope).
const SCOPE: &str = "chat";

/// Starts tracing: roots are sampled at `ratio` (0-1) from now on.
pub fn enable(ratio: f64) {
    RATIO.store(ratio.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    ON.store(true, Ordering::Release);
}

/// Whether this node traces.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// A span that ends when dropped.
pub struct Span {
    inner: BoxedSpan,
    ids: TraceParent,
}

impl Span {
    /// A new trace, if this one is sampled.
    pub fn root(name: &'static str) -> Option<Span> {
        if !enabled() {
            return None;
        }
        let ratio = f64::from_bits(RATIO.load(Ordering::Relaxed));
        if ratio < 1.0 && rand::random::<f64>() >= ratio {
            return None;
        }
        Some(Span::start(name, SpanKind::Server, &Context::new()))
    }

    /// A span under `parent` (from this node or another), if there is one.
    pub fn child(name: &'static str, parent: Option<TraceParent>) -> Option<Span> {
        let parent = parent?;
        if !enabled() {
            return None;
        }
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.span_id),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(remote);
        Some(Span::start(name, SpanKind::Internal, &cx))
    }

    fn start(name: &'static str, kind: SpanKind, cx: &Context) -> Span {
        let tracer = global::tracer(SCOPE);
        let inner = tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(&tracer, cx);
        let sc = inner.span_context();
        let ids = TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
        };
        Span { inner, ids }
    }

    /// Where the next hop's spans hang.
    pub fn parent(&self) -> TraceParent {
        self.ids
    }

    /// Sets an attribute.
    pub fn set(&mut self, key: &'static str, value: impl Into<Cow<'static, str>>) {
        self.inner
            .set_attribute(KeyValue::new(key, value.into().into_owned()));
    }

    /// Sets a numeric attribute.
    pub fn set_i64(&mut self, key: &'static str, value: i64) {
        self.inner.set_attribute(KeyValue::new(key, value));
    }

    /// Marks the span failed.
    pub fn fail(&mut self, why: impl Into<Cow<'static, str>>) {
        self.inner
            .set_status(opentelemetry::trace::Status::error(why.into()));
    }
}

/// The parent of `span`'s children, if it is traced.
pub fn parent_of(span: &Option<Span>) -> Option<TraceParent> {
    span.as_ref().map(Span::parent)
}
