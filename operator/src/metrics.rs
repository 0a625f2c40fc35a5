//! The operator's Prometheus metrics and the small HTTP server that exposes
//! them (`/metrics`) with `/healthz`.
//!
//! API writes are counted below the reconciler, in a layer of the
//! Kubernetes client's HTTP stack ([`Metrics::count_writes`]): every
//! request that is not a read is a write, whichever code path made it.
//!
//! kube-runtime's controller does not expose its queue of scheduled
//! reconciles, so the work the operator has in hand is shown by the
//! reconciles running now ([`Metrics::reconcile_started`]) next to the rate
//! at which they finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::reconcile::Error;

/// The operator's metrics, cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    errors: IntCounterVec,
    duration: Histogram,
    in_flight: IntGauge,
    api_writes: IntCounterVec,
    leader: IntGauge,
    /// Seconds since the epoch of the last turn of the main loop; `/healthz`
    /// fails when it is older than [`Metrics::STALE`].
    heartbeat: Arc<AtomicU64>,
}

impl Metrics {
    /// How long the main loop may be silent before `/healthz` fails.
    pub const STALE: Duration = Duration::from_secs(60);

    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "marketplace_operator_reconciliations_total",
                "Reconciles of a Marketplace, by result.",
            ),
            &["result"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "marketplace_operator_reconcile_errors_total",
                "Failed reconciles, by reason.",
            ),
            &["reason"],
        )?;
        let duration = Histogram::with_opts(HistogramOpts::new(
            "marketplace_operator_reconcile_duration_seconds",
            "How long one reconcile of a Marketplace took.",
        ))?;
        let in_flight = IntGauge::new(
            "marketplace_operator_reconciles_in_flight",
            "Reconciles of a Marketplace running now.",
        )?;
        let api_writes = IntCounterVec::new(
            Opts::new(
                "marketplace_operator_api_writes_total",
                "Write requests to the Kubernetes API by the controller, by HTTP verb.",
            ),
            &["verb"],
        )?;
        let leader = IntGauge::new(
            "marketplace_operator_leader",
            "1 while this replica holds the leader Lease, else 0.",
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(api_writes.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        // Both results exist from the start so that a scrape can tell "none
        // yet" from "not exported".
        for result in ["success", "error"] {
            reconciliations.with_label_values(&[result]);
        }
        let metrics = Self {
            registry,
            reconciliations,
            errors,
            duration,
            in_flight,
            api_writes,
            leader,
            heartbeat: Arc::default(),
        };
        metrics.beat();
        Ok(metrics)
    }

    /// Counts a reconcile as running until the returned guard is dropped,
    /// which also happens when the reconcile panics or is cancelled.
    pub fn reconcile_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Records one reconcile: its duration and its result.
    pub fn reconciled(&self, duration: Duration, error: Option<&Error>) {
        self.duration.observe(duration.as_secs_f64());
        match error {
            None => self.reconciliations.with_label_values(&["success"]).inc(),
            Some(error) => {
                self.reconciliations.with_label_values(&["error"]).inc();
                self.errors.with_label_values(&[&error_reason(error)]).inc();
            }
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Says the main loop is alive.
    pub fn beat(&self) {
        self.heartbeat.store(now_seconds(), Ordering::Relaxed);
    }

    fn healthy(&self) -> bool {
        now_seconds().saturating_sub(self.heartbeat.load(Ordering::Relaxed))
            <= Self::STALE.as_secs()
    }

    /// A client layer counting the write requests (anything but GET, HEAD
    /// and OPTIONS) that pass through it, by lower-case HTTP verb.
    pub fn count_writes<B>(
        &self,
    ) -> tower::util::MapRequestLayer<impl Fn(http::Request<B>) -> http::Request<B> + Clone + use<B>>
    {
        let writes = self.api_writes.clone();
        tower::util::MapRequestLayer::new(move |request: http::Request<B>| {
            let method = request.method();
            if !matches!(
                *method,
                http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
            ) {
                writes
                    .with_label_values(&[&method.as_str().to_ascii_lowercase()])
                    .inc();
            }
            request
        })
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|error| prometheus::Error::Msg(error.to_string()))
    }

    /// Serves `/metrics` and `/healthz` on `listener` until `shutdown`.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = Router::new()
            .route("/metrics", get(metrics_page))
            .route("/healthz", get(healthz))
            .with_state(self);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// A reconcile counted in `marketplace_operator_reconciles_in_flight`
/// while this lives.
#[derive(Debug)]
#[must_use = "the reconcile counts as running only while the guard lives"]
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Binds the metrics address; separate from [`Metrics::serve`] so a bad
/// address is a startup error.
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await
}

async fn metrics_page(State(metrics): State<Metrics>) -> (StatusCode, String) {
    match metrics.render() {
        Ok(text) => (StatusCode::OK, text),
        Err(error) => {
            tracing::warn!("rendering the metrics: {error}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the metrics could not be rendered\n".to_owned(),
            )
        }
    }
}

async fn healthz(State(metrics): State<Metrics>) -> (StatusCode, &'static str) {
    if metrics.healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the main loop is stuck\n")
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A short, stable name for what went wrong: the error's variant in
/// snake case, refined by the API status for Kubernetes errors
/// (`kube_conflict`, `kube_forbidden`, ...).
pub fn error_reason(error: &Error) -> String {
    if let Error::Kube { source, .. } = error {
        let kind = match source {
            kube::Error::Api(status) => match status.code {
                400 => "bad_request",
                401 | 403 => "forbidden",
                404 => "not_found",
                409 => "conflict",
                422 => "invalid",
                429 => "throttled",
                500..=599 => "server_error",
                _ => "api_error",
            },
            _ => "transport",
        };
        return format!("kube_{kind}");
    }
    // The variant name, without walking the enum, so a new variant gets a
    // reason without touching this function.
    let debug = format!("{error:?}");
    let variant: String = debug
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    snake_case(&variant)
}

fn snake_case(name: &str) -> String {
    let mut snake = String::with_capacity(name.len() + 4);
    for (index, character) in name.chars().enumerate() {
        if character.is_ascii_uppercase() {
            if index > 0 {
                snake.push('_');
            }
            snake.push(character.to_ascii_lowercase());
        } else {
            snake.push(character);
        }
    }
    snake
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn an_error_reason_is_the_variant_in_snake_case() {
        assert_eq!(error_reason(&Error::NotNamespaced), "not_namespaced");
        assert_eq!(
            error_reason(&Error::SecretWithoutPassword("shop-account-db".to_owned())),
            "secret_without_password"
        );
    }

    #[test]
    fn a_kubernetes_error_reason_names_the_api_status() {
        let status = kube::core::Status::failure("conflict", "Conflict").with_code(409);
        let error = Error::Kube {
            action: "applying",
            kind: "Deployment",
            name: "shop-account".to_owned(),
            source: kube::Error::Api(Box::new(status)),
        };

        assert_eq!(error_reason(&error), "kube_conflict");
    }

    #[test]
    fn the_rendered_metrics_count_reconciles_by_result_and_errors_by_reason() {
        let metrics = Metrics::new().unwrap();

        metrics.reconciled(Duration::from_millis(20), None);
        metrics.reconciled(Duration::from_millis(30), Some(&Error::NotNamespaced));
        metrics.set_leader(true);
        let text = metrics.render().unwrap();

        assert!(
            text.contains("marketplace_operator_reconciliations_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("marketplace_operator_reconciliations_total{result=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "marketplace_operator_reconcile_errors_total{reason=\"not_namespaced\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("marketplace_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
        assert!(text.contains("marketplace_operator_leader 1"), "{text}");
    }

    #[test]
    fn a_reconcile_counts_as_in_flight_until_its_guard_drops_even_by_a_panic() {
        let metrics = Metrics::new().unwrap();
        let in_flight = || {
            metrics
                .render()
                .unwrap()
                .lines()
                .find_map(|line| {
                    line.strip_prefix("marketplace_operator_reconciles_in_flight ")
                        .map(str::to_owned)
                })
                .unwrap()
        };

        assert_eq!(in_flight(), "0");
        let first = metrics.reconcile_started();
        let second = metrics.reconcile_started();
        assert_eq!(in_flight(), "2");
        drop(first);
        assert_eq!(in_flight(), "1");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = second;
            panic!("the reconcile panics");
        }));
        assert!(panicked.is_err());
        assert_eq!(in_flight(), "0");
    }

    #[test]
    fn the_write_counter_counts_writes_and_not_reads() {
        use tower::{Layer, Service, ServiceExt};

        let metrics = Metrics::new().unwrap();
        let layer = metrics.count_writes::<()>();
        let mut service = layer.layer(tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(())
        }));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for method in [http::Method::GET, http::Method::PATCH, http::Method::DELETE] {
            let request = http::Request::builder().method(method).body(()).unwrap();
            runtime
                .block_on(async { service.ready().await.unwrap().call(request).await })
                .unwrap();
        }
        let text = metrics.render().unwrap();

        assert!(
            text.contains("marketplace_operator_api_writes_total{verb=\"patch\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("marketplace_operator_api_writes_total{verb=\"delete\"} 1"),
            "{text}"
        );
        assert!(!text.contains("verb=\"get\""), "{text}");
    }
}
