//! The request being served, and what travels with it to other services.
//!
//! A server starts each request with [`RequestContext::for_request`]: the
//! caller's `x-request-id` when it sent a usable one, else a new one; the
//! caller's W3C `traceparent` becomes the parent of the request's span.
//! While the request is served (its future runs inside
//! [`RequestContext::scope`]) every log line carries the ids, and every
//! outbound call made through [`inject`] carries them on.

use std::future::Future;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header that names a request across every service it touches.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id taken from a caller; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// The request a task is serving.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The request id: the caller's, or generated here.
    pub request_id: Arc<str>,
    /// The OpenTelemetry trace id (32 hex digits), once the request's span
    /// has one.
    pub trace_id: Option<Arc<str>>,
    /// The part of the marketplace serving it (`gateway`, `order`, ...),
    /// which matters when one process runs several.
    pub component: &'static str,
}

impl RequestContext {
    /// The context of a request arriving with `headers`, served by
    /// `component` inside `span`: `span`'s parent becomes the caller's
    /// trace (if it sent one), and the trace id is read back from it.
    pub fn for_request(component: &'static str, headers: &HeaderMap, span: &tracing::Span) -> Self {
        let request_id = request_id_from(headers);
        let parent = extract(headers);
        if parent.span().span_context().is_valid() {
            // Fails only when no OpenTelemetry layer is installed, and
            // then there is no trace to join.
            let _ = span.set_parent(parent);
        }
        Self {
            request_id,
            trace_id: trace_id_of(span),
            component,
        }
    }

    /// The context of the request the current task serves, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `future` as part of this request.
    pub fn scope<F: Future>(self, future: F) -> tokio::task::futures::TaskLocalFuture<Self, F> {
        CURRENT.scope(self, future)
    }

    /// Runs `future` as part of the current request, if there is one: for
    /// work a request spawns onto another task.
    pub fn carry<F: Future>(future: F) -> impl Future<Output = F::Output> {
        let current = Self::current();
        async move {
            match current {
                Some(context) => context.scope(future).await,
                None => future.await,
            }
        }
    }

    /// The `x-request-id` value to answer with.
    pub fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.request_id).ok()
    }
}

/// The caller's request id if it is usable (printable ASCII without
/// spaces, at most 128 characters), else a new UUID.
pub fn request_id_from(headers: &HeaderMap) -> Arc<str> {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| usable(id))
        .map_or_else(|| Arc::from(uuid::Uuid::new_v4().to_string()), Arc::from)
}

fn usable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The trace id of `span`, if OpenTelemetry gave it one.
pub fn trace_id_of(span: &tracing::Span) -> Option<Arc<str>> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| Arc::from(span_context.trace_id().to_string()))
}

/// The caller's trace context from `traceparent` (and `tracestate`).
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Adds the current request's `x-request-id` and the W3C `traceparent` of
/// `span` (the span of the outbound call) to the headers of an outbound
/// request.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    if let Some(value) = RequestContext::current().and_then(|c| c.header_value()) {
        headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_str(id).unwrap());
        headers
    }

    #[test]
    fn a_callers_request_id_is_kept() {
        assert_eq!(&*request_id_from(&headers("checkout-42")), "checkout-42");
    }

    #[test]
    fn a_missing_or_unusable_request_id_is_replaced_by_a_new_uuid() {
        let long = "x".repeat(129);
        for given in [None, Some(""), Some("has space"), Some(long.as_str())] {
            let headers = given.map_or_else(HeaderMap::new, headers);
            let id = request_id_from(&headers);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{given:?} gave {id}");
        }
    }

    #[tokio::test]
    async fn the_context_is_the_current_one_inside_its_scope_and_in_carried_work() {
        let context = RequestContext {
            request_id: Arc::from("r-1"),
            trace_id: None,
            component: "order",
        };
        assert!(RequestContext::current().is_none());

        let seen = context
            .scope(async {
                let spawned = tokio::spawn(RequestContext::carry(async {
                    RequestContext::current().map(|c| c.request_id)
                }));
                spawned.await.unwrap()
            })
            .await;

        assert_eq!(seen.as_deref(), Some("r-1"));
    }

    #[test]
    fn a_callers_traceparent_is_read() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );

        let context = extract(&headers);

        assert_eq!(
            context.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
    }
}
