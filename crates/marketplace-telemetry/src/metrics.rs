//! Every Prometheus metric the marketplace's services export, in one
//! registry per process: with `serve --target all` the gateway's
//! `/metrics` and the admin port show the same registry, and the labels
//! (`component`, `grpc_service`) tell the parts apart.
//!
//! `docs/metrics.md` is the table of these metrics; a test in this module
//! fails when a metric is missing from it or it names one that is not
//! here.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets in seconds, from half a millisecond to ten seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The metrics of one process. Cheap to clone: clones share the registry.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Families>);

#[derive(Debug)]
struct Families {
    registry: Registry,
    build_info: IntGaugeVec,
    server_handled: IntCounterVec,
    server_seconds: HistogramVec,
    client_handled: IntCounterVec,
    client_seconds: HistogramVec,
    graphql_requests: IntCounterVec,
    graphql_seconds: HistogramVec,
    graphql_subscriptions: IntGauge,
    store_seconds: HistogramVec,
    store_errors: IntCounterVec,
    store_up: IntGaugeVec,
    pool_connections: IntGaugeVec,
    pool_max: IntGaugeVec,
    pool_acquire_seconds: HistogramVec,
    cache_requests: IntCounterVec,
    cache_entries: IntGaugeVec,
    breaker_state: IntGaugeVec,
    breaker_rejected: IntCounterVec,
    retries: IntCounterVec,
    pools: Mutex<Vec<PoolSource>>,
}

/// A database pool whose size is read when metrics are gathered.
struct PoolSource {
    component: String,
    stats: Box<dyn Fn() -> PoolStats + Send + Sync>,
}

impl std::fmt::Debug for PoolSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolSource")
            .field("component", &self.component)
            .finish_non_exhaustive()
    }
}

/// A database pool's connections at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections, idle or in use.
    pub open: u32,
    /// Open connections waiting to be used.
    pub idle: u32,
    /// Most connections the pool opens.
    pub max: u32,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
            labels,
        ),
    )
}

// The definitions are constants, each registered once into a fresh
// registry, so these results are Ok on every run; a failure is a defect
// that this module's tests catch.
#[allow(clippy::expect_used)]
fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: prometheus::Result<C>,
) -> C {
    let collector = collector.expect("a valid metric definition");
    registry
        .register(Box::new(collector.clone()))
        .expect("each metric is registered once");
    collector
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        if let Err(error) = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::error!(%error, "the process metrics are unavailable");
        }
        let graphql_subscriptions = register(
            &r,
            IntGauge::new(
                "graphql_subscriptions_active",
                "GraphQL subscriptions whose stream from the order service is open.",
            ),
        );
        let families = Families {
            build_info: gauge(
                &r,
                "marketplace_build_info",
                "Always 1; the labels say which build runs which component.",
                &["version", "component"],
            ),
            server_handled: counter(
                &r,
                "grpc_server_handled_total",
                "gRPC calls a service finished, by method and status code.",
                &["grpc_service", "grpc_method", "grpc_code"],
            ),
            server_seconds: histogram(
                &r,
                "grpc_server_handling_seconds",
                "Time a service took to answer a gRPC call, by method.",
                &["grpc_service", "grpc_method"],
            ),
            client_handled: counter(
                &r,
                "grpc_client_handled_total",
                "gRPC calls a component made to another service, by method and status code.",
                &["component", "grpc_service", "grpc_method", "grpc_code"],
            ),
            client_seconds: histogram(
                &r,
                "grpc_client_handling_seconds",
                "Time from a component sending a gRPC call to its answer, by method.",
                &["component", "grpc_service", "grpc_method"],
            ),
            graphql_requests: counter(
                &r,
                "graphql_requests_total",
                "GraphQL operations the gateway ran, by type, root fields and outcome \
                 (OK or the first error's code).",
                &["operation_type", "operation", "code"],
            ),
            graphql_seconds: histogram(
                &r,
                "graphql_request_duration_seconds",
                "Time the gateway took to run a GraphQL operation, by type and root fields.",
                &["operation_type", "operation"],
            ),
            graphql_subscriptions,
            store_seconds: histogram(
                &r,
                "marketplace_store_operation_seconds",
                "Time of each storage operation (database or search), by store and operation.",
                &["component", "store", "operation"],
            ),
            store_errors: counter(
                &r,
                "marketplace_store_errors_total",
                "Storage operations that failed: unavailable (store down or breaker open) \
                 or unexpected.",
                &["component", "store", "operation", "kind"],
            ),
            store_up: gauge(
                &r,
                "marketplace_store_up",
                "1 while the component's store answers its readiness check, else 0.",
                &["component", "store"],
            ),
            pool_connections: gauge(
                &r,
                "marketplace_db_pool_connections",
                "Open database connections, idle or in use.",
                &["component", "state"],
            ),
            pool_max: gauge(
                &r,
                "marketplace_db_pool_max_connections",
                "Most connections the database pool opens.",
                &["component"],
            ),
            pool_acquire_seconds: histogram(
                &r,
                "marketplace_db_pool_acquire_seconds",
                "Time waited for a database connection from the pool.",
                &["component"],
            ),
            cache_requests: counter(
                &r,
                "marketplace_cache_requests_total",
                "Lookups in the gateway's read cache, by cache and result (hit or miss).",
                &["cache", "result"],
            ),
            cache_entries: gauge(
                &r,
                "marketplace_cache_entries",
                "Entries the gateway's read cache holds.",
                &["cache"],
            ),
            breaker_state: gauge(
                &r,
                "marketplace_circuit_breaker_state",
                "State of the circuit breaker of each dependency: 0 closed, 1 open, 2 half-open.",
                &["component", "dependency"],
            ),
            breaker_rejected: counter(
                &r,
                "marketplace_circuit_breaker_rejected_total",
                "Calls failed at once because the dependency's circuit breaker was open.",
                &["component", "dependency"],
            ),
            retries: counter(
                &r,
                "marketplace_retries_total",
                "Repeated attempts of calls safe to repeat, after a failure of the dependency.",
                &["component", "dependency"],
            ),
            pools: Mutex::new(Vec::new()),
            registry: r,
        };
        Self(Arc::new(families))
    }

    /// The registry, for collectors registered elsewhere.
    pub fn registry(&self) -> &Registry {
        &self.0.registry
    }

    /// Records that this process runs `component`.
    pub fn build_info(&self, component: &str) {
        self.0
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), component])
            .set(1);
    }

    /// Counts one gRPC call a service answered with `code`.
    pub fn observe_server_call(&self, service: &str, method: &str, code: i32, elapsed: Duration) {
        self.0
            .server_handled
            .with_label_values(&[service, method, code_name(code)])
            .inc();
        self.0
            .server_seconds
            .with_label_values(&[service, method])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one gRPC call `component` made to `service`.
    pub fn observe_client_call(
        &self,
        component: &str,
        service: &str,
        method: &str,
        code: i32,
        elapsed: Duration,
    ) {
        self.0
            .client_handled
            .with_label_values(&[component, service, method, code_name(code)])
            .inc();
        self.0
            .client_seconds
            .with_label_values(&[component, service, method])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one GraphQL operation.
    pub fn observe_graphql(
        &self,
        operation_type: &str,
        operation: &str,
        code: &str,
        elapsed: Duration,
    ) {
        self.0
            .graphql_requests
            .with_label_values(&[operation_type, operation, code])
            .inc();
        self.0
            .graphql_seconds
            .with_label_values(&[operation_type, operation])
            .observe(elapsed.as_secs_f64());
    }

    /// A guard that counts one open subscription until it is dropped.
    pub fn subscription_opened(&self) -> SubscriptionGuard {
        self.0.graphql_subscriptions.inc();
        SubscriptionGuard(self.0.graphql_subscriptions.clone())
    }

    /// The metrics of `component`'s `store` (`postgres`, `sqlite`,
    /// `elasticsearch`, `tantivy`).
    pub fn store(&self, component: &str, store: &str) -> StoreMetrics {
        StoreMetrics {
            metrics: self.clone(),
            component: component.to_owned(),
            store: store.to_owned(),
            up: self.0.store_up.with_label_values(&[component, store]),
        }
    }

    /// Reports `component`'s database pool: `stats` is read whenever the
    /// metrics are gathered; the returned histogram takes acquire waits.
    pub fn pool(
        &self,
        component: &str,
        stats: impl Fn() -> PoolStats + Send + Sync + 'static,
    ) -> prometheus::Histogram {
        self.0
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(PoolSource {
                component: component.to_owned(),
                stats: Box::new(stats),
            });
        self.0.pool_acquire_seconds.with_label_values(&[component])
    }

    /// The metrics of one of the gateway's caches.
    pub fn cache(&self, cache: &str) -> CacheMetrics {
        CacheMetrics {
            hits: self.0.cache_requests.with_label_values(&[cache, "hit"]),
            misses: self.0.cache_requests.with_label_values(&[cache, "miss"]),
            entries: self.0.cache_entries.with_label_values(&[cache]),
        }
    }

    /// The metrics of the circuit breaker `component` keeps for
    /// `dependency`.
    pub fn breaker(&self, component: &str, dependency: &str) -> BreakerMetrics {
        BreakerMetrics {
            state: self
                .0
                .breaker_state
                .with_label_values(&[component, dependency]),
            rejected: self
                .0
                .breaker_rejected
                .with_label_values(&[component, dependency]),
            retries: self.0.retries.with_label_values(&[component, dependency]),
        }
    }

    /// The text exposition format, for `/metrics`.
    pub fn render(&self) -> String {
        self.update_pools();
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.0.registry.gather(), &mut buffer) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    fn update_pools(&self) {
        let pools = self.0.pools.lock().unwrap_or_else(PoisonError::into_inner);
        for pool in pools.iter() {
            let stats = (pool.stats)();
            let idle = stats.idle.min(stats.open);
            let gauge = |state: &str| {
                self.0
                    .pool_connections
                    .with_label_values(&[pool.component.as_str(), state])
            };
            gauge("idle").set(i64::from(idle));
            gauge("in_use").set(i64::from(stats.open - idle));
            self.0
                .pool_max
                .with_label_values(&[pool.component.as_str()])
                .set(i64::from(stats.max));
        }
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

/// See [`Metrics::store`].
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    metrics: Metrics,
    component: String,
    store: String,
    up: IntGauge,
}

/// How a storage operation failed, for `marketplace_store_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The store is down or its breaker is open.
    Unavailable,
    /// Anything else.
    Unexpected,
}

impl StoreMetrics {
    /// Records one operation that took `elapsed` and failed with `error`,
    /// if it did.
    pub fn observe(&self, operation: &str, elapsed: Duration, error: Option<StoreErrorKind>) {
        let labels = [self.component.as_str(), self.store.as_str(), operation];
        self.metrics
            .0
            .store_seconds
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
        // Both error series of an operation exist from its first call, at
        // 0 until it fails, so that rates and alerts see a zero rather
        // than no data.
        for (kind, name) in [
            (StoreErrorKind::Unavailable, "unavailable"),
            (StoreErrorKind::Unexpected, "unexpected"),
        ] {
            let counter = self
                .metrics
                .0
                .store_errors
                .with_label_values(&[labels[0], labels[1], labels[2], name]);
            if error == Some(kind) {
                counter.inc();
            }
        }
    }

    /// Records whether the store answers its readiness check.
    pub fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    pub fn store(&self) -> &str {
        &self.store
    }
}

/// See [`Metrics::cache`].
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    hits: IntCounter,
    misses: IntCounter,
    entries: IntGauge,
}

impl CacheMetrics {
    pub fn hit(&self) {
        self.hits.inc();
    }

    pub fn miss(&self) {
        self.misses.inc();
    }

    pub fn set_entries(&self, entries: u64) {
        self.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
    }
}

/// See [`Metrics::breaker`].
#[derive(Debug, Clone)]
pub struct BreakerMetrics {
    state: IntGauge,
    rejected: IntCounter,
    retries: IntCounter,
}

impl BreakerMetrics {
    pub fn set_state(&self, state: i64) {
        self.state.set(state);
    }

    pub fn rejected(&self) {
        self.rejected.inc();
    }

    pub fn retried(&self) {
        self.retries.inc();
    }
}

/// A gRPC status code's name as gRPC writes it (`NOT_FOUND`), as in
/// grpc-go's and grpc-java's metrics.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every metric family of [`Metrics`], with its labels, as
    /// `name{label,label}`, after one use of each so that labelled
    /// families appear in the output.
    fn families() -> BTreeSet<String> {
        let metrics = Metrics::new();
        metrics.build_info("order");
        metrics.observe_server_call("s", "m", 0, Duration::ZERO);
        metrics.observe_client_call("c", "s", "m", 14, Duration::ZERO);
        metrics.observe_graphql("query", "products", "OK", Duration::ZERO);
        let store = metrics.store("order", "postgres");
        store.observe("create", Duration::ZERO, Some(StoreErrorKind::Unavailable));
        store.set_up(true);
        let acquire = metrics.pool("order", || PoolStats {
            open: 3,
            idle: 1,
            max: 16,
        });
        acquire.observe(0.001);
        let cache = metrics.cache("product");
        cache.hit();
        cache.miss();
        cache.set_entries(1);
        let breaker = metrics.breaker("order", "catalog");
        breaker.set_state(0);
        breaker.rejected();
        breaker.retried();
        let _ = metrics.render();
        metrics
            .registry()
            .gather()
            .iter()
            .map(|family| {
                let labels: Vec<&str> = family
                    .get_metric()
                    .first()
                    .map(|m| m.get_label().iter().map(|l| l.name()).collect())
                    .unwrap_or_default();
                format!("{}{{{}}}", family.name(), labels.join(","))
            })
            .collect()
    }

    /// The families the table in `docs/metrics.md` lists, in the same
    /// form: the first column holds the name, the second the labels.
    fn documented() -> BTreeSet<String> {
        let table = include_str!("../../../docs/metrics.md");
        table
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let name = cells[1].trim_matches('`');
                let mut labels: Vec<&str> = cells[3]
                    .split(',')
                    .map(|l| l.trim().trim_matches('`'))
                    .filter(|l| !l.is_empty() && *l != "(none)")
                    .collect();
                labels.sort_unstable();
                format!("{name}{{{}}}", labels.join(","))
            })
            .collect()
    }

    #[test]
    fn the_metrics_table_lists_every_metric_with_its_labels_and_nothing_else() {
        let exported: BTreeSet<String> = families()
            .into_iter()
            // The process collector's metrics are the standard ones every
            // Prometheus client exports; the table names them as a group.
            .filter(|f| !f.starts_with("process_"))
            .collect();
        let documented: BTreeSet<String> = documented()
            .into_iter()
            .filter(|f| !f.starts_with("process_"))
            .collect();
        assert_eq!(
            exported.difference(&documented).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "exported but not in docs/metrics.md"
        );
        assert_eq!(
            documented.difference(&exported).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "in docs/metrics.md but not exported"
        );
    }

    #[test]
    fn pool_sizes_are_read_when_gathered() {
        let metrics = Metrics::new();
        let _ = metrics.pool("account", || PoolStats {
            open: 5,
            idle: 2,
            max: 16,
        });

        let text = metrics.render();

        assert!(
            text.contains(
                r#"marketplace_db_pool_connections{component="account",state="in_use"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"marketplace_db_pool_connections{component="account",state="idle"} 2"#)
        );
        assert!(text.contains(r#"marketplace_db_pool_max_connections{component="account"} 16"#));
    }

    #[test]
    fn codes_are_named_as_grpc_names_them() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(5), "NOT_FOUND");
        assert_eq!(code_name(14), "UNAVAILABLE");
        assert_eq!(code_name(99), "UNKNOWN");
    }
}
