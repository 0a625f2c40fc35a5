//! The gateway's Prometheus metrics, in a registry of its own so that
//! several gateways in one process (tests, `--target all`) never share
//! counters.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the gateway exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    client_handled: IntCounterVec,
    client_seconds: HistogramVec,
    subscriptions: IntGauge,
}

impl Metrics {
    // The definitions are constants and each is registered once into a
    // fresh registry, so these results are Ok on every run; a failure is a
    // defect that the unit test below catches.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let registry = Registry::new();
        let client_handled = IntCounterVec::new(
            Opts::new(
                "grpc_client_handled_total",
                "Calls the gateway made to a service, by method and gRPC status code.",
            ),
            &["grpc_service", "grpc_method", "grpc_code"],
        )
        .expect("a valid metric definition");
        let client_seconds = HistogramVec::new(
            HistogramOpts::new(
                "grpc_client_handling_seconds",
                "Time from sending a call to a service to its answer, by method.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["grpc_service", "grpc_method"],
        )
        .expect("a valid metric definition");
        let subscriptions = IntGauge::new(
            "graphql_subscriptions_active",
            "GraphQL subscriptions whose stream from the order service is open.",
        )
        .expect("a valid metric definition");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "marketplace_build_info",
                "Always 1; the labels say which build is running.",
            ),
            &["version", "component"],
        )
        .expect("a valid metric definition");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), "gateway"])
            .set(1);
        for collector in [
            Box::new(client_handled.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(client_seconds.clone()),
            Box::new(subscriptions.clone()),
            Box::new(build_info),
        ] {
            registry
                .register(collector)
                .expect("each metric is registered once");
        }
        Self {
            registry,
            client_handled,
            client_seconds,
            subscriptions,
        }
    }

    /// Counts one finished call to `service`.
    pub fn observe_call(&self, service: &str, method: &str, code: tonic::Code, elapsed: Duration) {
        self.client_handled
            .with_label_values(&[service, method, code_name(code)])
            .inc();
        self.client_seconds
            .with_label_values(&[service, method])
            .observe(elapsed.as_secs_f64());
    }

    /// A guard that counts one open subscription until it is dropped.
    pub fn subscription_opened(&self) -> SubscriptionGuard {
        self.subscriptions.inc();
        SubscriptionGuard(self.subscriptions.clone())
    }

    /// The text exposition format, for `/metrics`.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// See [`Metrics::subscription_opened`].
#[derive(Debug)]
pub struct SubscriptionGuard(IntGauge);

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The code's name as gRPC writes it (`NOT_FOUND`), as in grpc-go's and
/// grpc-java's client metrics.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_method_and_code() {
        let metrics = Metrics::new();
        metrics.observe_call(
            "catalog",
            "GetProducts",
            tonic::Code::Ok,
            Duration::from_millis(3),
        );
        metrics.observe_call(
            "catalog",
            "GetProducts",
            tonic::Code::NotFound,
            Duration::from_millis(3),
        );
        let guard = metrics.subscription_opened();

        let text = metrics.render();

        assert!(text.contains(
            r#"grpc_client_handled_total{grpc_code="OK",grpc_method="GetProducts",grpc_service="catalog"} 1"#
        ), "{text}");
        assert!(text.contains(
            r#"grpc_client_handled_total{grpc_code="NOT_FOUND",grpc_method="GetProducts",grpc_service="catalog"} 1"#
        ), "{text}");
        assert!(text.contains("graphql_subscriptions_active 1"), "{text}");
        drop(guard);
        assert!(metrics.render().contains("graphql_subscriptions_active 0"));
    }
}
