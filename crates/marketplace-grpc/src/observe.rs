//! Telemetry of every gRPC call, as tower layers rather than per handler:
//! [`ServerLayer`] around a server's routes and [`ObservedChannel`] around
//! a client's channel. Both give the call a span (joined to the caller's
//! trace through W3C `traceparent`), carry the request id (`x-request-id`)
//! and count the call in the process's [`Metrics`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderName, Request, Response};
use marketplace_telemetry::Metrics;
use marketplace_telemetry::context::{self, REQUEST_ID_HEADER, RequestContext};
use tonic::body::Body;
use tonic::transport::Channel;
use tower::{Layer, Service};
use tracing::Instrument as _;

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// `/package.Service/Method` split into service and method.
fn rpc(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("unknown", "unknown"))
}

/// Health checks and reflection are served but not counted, traced or
/// logged: probes would drown the calls that matter.
fn is_infrastructure(service: &str) -> bool {
    service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.")
}

/// The status code of a response: from its headers when the call failed
/// before any message (a "trailers-only" answer, how tonic sends every
/// error a handler returns), else OK. An error a stream ends with later is
/// in the trailers, which this does not wait for.
fn status_code<B>(response: &Response<B>) -> i32 {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Wraps a server's routes: each call runs in a `grpc.server` span, as
/// part of its [`RequestContext`], is logged when it finishes and counted
/// in `grpc_server_*`; the answer carries the request id.
#[derive(Debug, Clone)]
pub struct ServerLayer {
    component: &'static str,
    metrics: Metrics,
}

impl ServerLayer {
    pub fn new(component: &'static str, metrics: Metrics) -> Self {
        Self { component, metrics }
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ObservedServer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObservedServer {
            inner,
            component: self.component,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`ServerLayer`].
#[derive(Debug, Clone)]
pub struct ObservedServer<S> {
    inner: S,
    component: &'static str,
    metrics: Metrics,
}

impl<S, ResBody> Service<Request<Body>> for ObservedServer<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let (service, method) = rpc(&path);
        if is_infrastructure(service) {
            return Box::pin(self.inner.call(request));
        }
        let (service, method) = (service.to_owned(), method.to_owned());
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            request_id = tracing::field::Empty,
        );
        let context = RequestContext::for_request(self.component, request.headers(), &span);
        span.record("request_id", &*context.request_id);
        let request_id = context.header_value();
        let started = Instant::now();
        let mut counted = Counted::server(self.metrics.clone(), service.clone(), method.clone());
        let call = self.inner.call(request);
        let observed = async move {
            let result = call.await;
            let elapsed = started.elapsed();
            let mut response = result?;
            let code = status_code(&response);
            counted.finish(code);
            tracing::Span::current().record("rpc.grpc.status_code", code);
            tracing::info!(
                grpc_code = marketplace_telemetry::metrics::code_name(code),
                elapsed_ms = elapsed.as_secs_f64() * 1000.0,
                "{service}/{method} answered"
            );
            if let Some(value) = request_id {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
            }
            Ok(response)
        };
        Box::pin(context.scope(observed.instrument(span)))
    }
}

/// A client channel whose every call runs in a `grpc.client` span, carries
/// the current request id and trace context, and is counted in
/// `grpc_client_*` under the calling `component`.
#[derive(Debug, Clone)]
pub struct ObservedChannel {
    inner: Channel,
    component: &'static str,
    metrics: Metrics,
}

impl ObservedChannel {
    pub fn new(inner: Channel, component: &'static str, metrics: Metrics) -> Self {
        Self {
            inner,
            component,
            metrics,
        }
    }

    /// The channel itself, for calls that are not to be observed (health
    /// checks).
    pub fn channel(&self) -> &Channel {
        &self.inner
    }
}

impl Service<Request<Body>> for ObservedChannel {
    type Response = <Channel as Service<Request<Body>>>::Response;
    type Error = <Channel as Service<Request<Body>>>::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let (service, method) = rpc(&path);
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        context::inject(&span, request.headers_mut());
        let (service, method) = (service.to_owned(), method.to_owned());
        let mut counted = Counted::client(self.metrics.clone(), self.component, service, method);
        let call = self.inner.call(request);
        let observed = async move {
            let result = call.await;
            let code = match &result {
                Ok(response) => status_code(response),
                // The channel's own failures: no connection (UNAVAILABLE)
                // or its deadline (tonic answers CANCELLED).
                Err(error) => channel_failure_code(error),
            };
            tracing::Span::current().record("rpc.grpc.status_code", code);
            counted.finish(code);
            result
        };
        Box::pin(observed.instrument(span))
    }
}

/// Counts one call when it finishes, or as CANCELLED when its future is
/// dropped first: the caller gave up (its deadline passed, or its own
/// caller went away), which is exactly what an operator needs to see.
struct Counted {
    metrics: Metrics,
    /// The calling component, for a client call; `None` on the server.
    component: Option<&'static str>,
    service: String,
    method: String,
    started: Instant,
    finished: bool,
}

impl Counted {
    fn client(metrics: Metrics, component: &'static str, service: String, method: String) -> Self {
        Self::new(metrics, Some(component), service, method)
    }

    fn server(metrics: Metrics, service: String, method: String) -> Self {
        Self::new(metrics, None, service, method)
    }

    fn new(
        metrics: Metrics,
        component: Option<&'static str>,
        service: String,
        method: String,
    ) -> Self {
        Self {
            metrics,
            component,
            service,
            method,
            started: Instant::now(),
            finished: false,
        }
    }

    fn finish(&mut self, code: i32) {
        self.finished = true;
        let elapsed = self.started.elapsed();
        match self.component {
            Some(component) => self.metrics.observe_client_call(
                component,
                &self.service,
                &self.method,
                code,
                elapsed,
            ),
            None => self
                .metrics
                .observe_server_call(&self.service, &self.method, code, elapsed),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(tonic::Code::Cancelled as i32);
        }
    }
}

/// The code tonic gives a failure of the channel itself: CANCELLED for its
/// deadline ("Timeout expired"), UNAVAILABLE for anything else (no
/// connection).
fn channel_failure_code(error: &(dyn std::error::Error + 'static)) -> i32 {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return tonic::Code::Cancelled as i32;
        }
        source = error.source();
    }
    tonic::Code::Unavailable as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_names_the_service_and_the_method() {
        assert_eq!(
            rpc("/marketplace.order.v1.OrderService/CreateOrder"),
            ("marketplace.order.v1.OrderService", "CreateOrder")
        );
        assert_eq!(rpc("/nonsense"), ("unknown", "unknown"));
        assert!(is_infrastructure("grpc.health.v1.Health"));
        assert!(!is_infrastructure("marketplace.order.v1.OrderService"));
    }

    #[test]
    fn an_answer_without_a_status_header_is_ok_and_a_trailers_only_error_has_its_code() {
        let ok = Response::new(());
        let mut not_found = Response::new(());
        not_found
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("5"));

        assert_eq!(status_code(&ok), 0);
        assert_eq!(status_code(&not_found), 5);
    }
}
