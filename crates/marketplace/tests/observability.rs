//! What the running services tell their operators: the metrics of
//! `docs/metrics.md` after a known workload, one trace per GraphQL request
//! across every service (received by a real OpenTelemetry Collector), and
//! the request id on every service's log lines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::{self, Cluster, http_get, sample};
use common::{Graphql, known_workload};
use marketplace_config::env;
use marketplace_testkit::otel::SpanKind;
use serde_json::{Value, json};

const ACCOUNT: &str = "marketplace.account.v1.AccountService";
const CATALOG: &str = "marketplace.catalog.v1.CatalogService";
const ORDER: &str = "marketplace.order.v1.OrderService";

/// `/metrics` of the gateway and of each service's admin port.
fn scrape(cluster: &Cluster) -> [(&'static str, String); 4] {
    let admin = |served: &common::Served| {
        let (status, text) = http_get(&served.admin_address(), "/metrics");
        assert_eq!(status, 200);
        text
    };
    let (status, gateway) = http_get(&cluster.gateway.address, "/metrics");
    assert_eq!(status, 200);
    [
        ("gateway", gateway),
        ("account", admin(&cluster.account)),
        ("catalog", admin(&cluster.catalog)),
        ("order", admin(&cluster.order)),
    ]
}

/// The names in the table of `docs/metrics.md`.
fn documented_metrics() -> Vec<(String, String)> {
    include_str!("../../../docs/metrics.md")
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[2].to_owned())
        })
        .collect()
}

/// The labels of a served call.
fn served(
    service: &'static str,
    method: &'static str,
    code: &'static str,
) -> [(&'static str, &'static str); 3] {
    [
        ("grpc_service", service),
        ("grpc_method", method),
        ("grpc_code", code),
    ]
}

/// The labels of a GraphQL operation's outcome.
fn operation(
    kind: &'static str,
    field: &'static str,
    code: &'static str,
) -> [(&'static str, &'static str); 3] {
    [
        ("operation_type", kind),
        ("operation", field),
        ("code", code),
    ]
}

#[track_caller]
fn assert_sample(text: &str, name: &str, labels: &[(&str, &str)], expected: f64) {
    let value = sample(text, name, labels)
        .unwrap_or_else(|| panic!("no {name} with {labels:?} in:\n{text}"));
    assert_eq!(value, expected, "{name} with {labels:?}");
}

#[track_caller]
fn assert_positive(text: &str, name: &str, labels: &[(&str, &str)]) {
    let value = sample(text, name, labels)
        .unwrap_or_else(|| panic!("no {name} with {labels:?} in:\n{text}"));
    assert!(value > 0.0, "{name} with {labels:?} is {value}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_known_workload_every_documented_metric_is_exported_with_its_labels_and_counts() {
    let Some(real) = cluster::real_stores().await else {
        return;
    };
    tokio::task::spawn_blocking(move || {
        let cluster = cluster::start(&real.stores, &[(env::GATEWAY_CACHE_TTL, "1m".to_owned())]);
        let graphql = Graphql::new(&cluster.gateway.address);

        known_workload(&graphql);
        let [(_, gateway), (_, account), (_, catalog), (_, order)] = scrape(&cluster);

        // Served calls, by code, on each service's own admin port.
        assert_sample(
            &account,
            "grpc_server_handled_total",
            &served(ACCOUNT, "CreateAccount", "OK"),
            1.0,
        );
        assert_sample(
            &catalog,
            "grpc_server_handled_total",
            &served(CATALOG, "CreateProduct", "OK"),
            2.0,
        );
        assert_sample(
            &order,
            "grpc_server_handled_total",
            &served(ORDER, "CreateOrder", "OK"),
            1.0,
        );
        assert_sample(
            &order,
            "grpc_server_handled_total",
            &served(ORDER, "CreateOrder", "NOT_FOUND"),
            1.0,
        );
        assert_sample(
            &catalog,
            "grpc_server_handled_total",
            &served(CATALOG, "ListProducts", "OK"),
            1.0,
        );
        assert_sample(
            &catalog,
            "grpc_server_handled_total",
            &served(CATALOG, "SearchProducts", "OK"),
            1.0,
        );
        assert_sample(
            &order,
            "grpc_server_handling_seconds_count",
            &[("grpc_service", ORDER), ("grpc_method", "CreateOrder")],
            2.0,
        );
        // Outbound calls, by caller.
        assert_sample(
            &order,
            "grpc_client_handled_total",
            &[
                ("component", "order"),
                ("grpc_service", CATALOG),
                ("grpc_method", "GetProducts"),
                ("grpc_code", "OK"),
            ],
            2.0,
        );
        assert_sample(
            &gateway,
            "grpc_client_handled_total",
            &[
                ("component", "gateway"),
                ("grpc_service", ORDER),
                ("grpc_method", "CreateOrder"),
                ("grpc_code", "NOT_FOUND"),
            ],
            1.0,
        );
        assert_sample(
            &gateway,
            "grpc_client_handling_seconds_count",
            &[
                ("component", "gateway"),
                ("grpc_service", ACCOUNT),
                ("grpc_method", "CreateAccount"),
            ],
            1.0,
        );
        // GraphQL operations, by root field and outcome.
        assert_sample(
            &gateway,
            "graphql_requests_total",
            &operation("mutation", "createAccount", "OK"),
            1.0,
        );
        assert_sample(
            &gateway,
            "graphql_requests_total",
            &operation("mutation", "createProduct", "OK"),
            2.0,
        );
        assert_sample(
            &gateway,
            "graphql_requests_total",
            &operation("mutation", "createOrder", "OK"),
            1.0,
        );
        assert_sample(
            &gateway,
            "graphql_requests_total",
            &operation("mutation", "createOrder", "NOT_FOUND"),
            1.0,
        );
        assert_sample(
            &gateway,
            "graphql_requests_total",
            &operation("query", "products", "OK"),
            3.0,
        );
        assert_sample(
            &gateway,
            "graphql_request_duration_seconds_count",
            &[("operation_type", "query"), ("operation", "accounts")],
            1.0,
        );
        // The second identical listing came from the cache.
        assert_sample(
            &gateway,
            "marketplace_cache_requests_total",
            &[("cache", "product_page"), ("result", "hit")],
            1.0,
        );
        assert_sample(
            &gateway,
            "marketplace_cache_requests_total",
            &[("cache", "product_page"), ("result", "miss")],
            2.0,
        );
        // Storage: operations, the stores being up, the pools.
        assert_sample(
            &account,
            "marketplace_store_up",
            &[("component", "account"), ("store", "postgres")],
            1.0,
        );
        assert_sample(
            &order,
            "marketplace_store_up",
            &[("component", "order"), ("store", "postgres")],
            1.0,
        );
        assert_sample(
            &catalog,
            "marketplace_store_up",
            &[("component", "catalog"), ("store", "elasticsearch")],
            1.0,
        );
        assert_positive(
            &account,
            "marketplace_store_operation_seconds_count",
            &[("component", "account"), ("store", "postgres")],
        );
        assert_positive(
            &order,
            "marketplace_store_operation_seconds_count",
            &[("component", "order"), ("store", "postgres")],
        );
        assert_positive(
            &catalog,
            "marketplace_store_operation_seconds_count",
            &[("component", "catalog"), ("store", "elasticsearch")],
        );
        assert_sample(
            &account,
            "marketplace_db_pool_max_connections",
            &[("component", "account")],
            16.0,
        );
        assert_positive(
            &order,
            "marketplace_db_pool_acquire_seconds_count",
            &[("component", "order")],
        );
        for text in [&account, &order] {
            assert!(
                sample(
                    text,
                    "marketplace_db_pool_connections",
                    &[("state", "idle")]
                )
                .is_some(),
                "{text}"
            );
            assert!(
                sample(
                    text,
                    "marketplace_db_pool_connections",
                    &[("state", "in_use")]
                )
                .is_some(),
                "{text}"
            );
        }
        // Nothing failed, so every breaker is closed and nothing retried.
        for (caller, dependency, text) in [
            ("gateway", "catalog", &gateway),
            ("gateway", "order", &gateway),
            ("order", "catalog", &order),
            ("order", "account", &order),
        ] {
            let labels = [("component", caller), ("dependency", dependency)];
            assert_sample(text, "marketplace_circuit_breaker_state", &labels, 0.0);
            assert_sample(text, "marketplace_retries_total", &labels, 0.0);
            assert_sample(
                text,
                "marketplace_circuit_breaker_rejected_total",
                &labels,
                0.0,
            );
        }
        for (component, text) in [
            ("gateway", &gateway),
            ("account", &account),
            ("catalog", &catalog),
            ("order", &order),
        ] {
            assert!(
                sample(text, "marketplace_build_info", &[("component", component)]) == Some(1.0),
                "{text}"
            );
            assert_positive(text, "process_resident_memory_bytes", &[]);
        }

        // Every documented metric is exported by some process (histograms
        // as their `_count` series).
        let all = format!("{gateway}{account}{catalog}{order}");
        let exported: BTreeSet<&str> = all
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .collect();
        for (name, kind) in documented_metrics() {
            let series = if kind == "histogram" {
                format!("{name}_count")
            } else {
                name.clone()
            };
            assert!(
                exported.contains(series.as_str()),
                "{series} is documented but not exported"
            );
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn one_create_order_is_one_trace_across_every_service_and_its_request_id_is_on_their_logs() {
    let Some(collector) = marketplace_testkit::otel::collector().await else {
        return;
    };
    let Some(real) = cluster::real_stores().await else {
        return;
    };
    let endpoint = collector.grpc_endpoint();
    let spans = tokio::task::spawn_blocking(move || {
        let cluster = cluster::start(&real.stores, &[(env::OTLP_ENDPOINT, endpoint)]);
        let graphql = Graphql::new(&cluster.gateway.address);
        let (account, products) = known_workload(&graphql);

        let request_id = format!("order-{}", std::process::id());
        let mut response = graphql
            .agent()
            .post(format!("{}/graphql", graphql.base))
            .header("x-request-id", &request_id)
            .send_json(json!({
                "query": "mutation($o: OrderInput!) { createOrder(order: $o) { id } }",
                "variables": { "o": { "accountId": account, "products": [
                    { "id": products[0], "quantity": 1 }
                ] } },
            }))
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            Some(request_id.as_str())
        );
        let body: Value = response.body_mut().read_json().unwrap();
        assert!(body.get("errors").is_none(), "{body}");

        // Each process logged the request under its id, and with one trace id.
        let mut trace_ids = BTreeSet::new();
        for (service, served) in [
            ("gateway", &cluster.gateway),
            ("order", &cluster.order),
            ("account", &cluster.account),
            ("catalog", &cluster.catalog),
        ] {
            let lines: Vec<Value> = common::wait_for(
                &format!("the {service} service logs request {request_id}"),
                Duration::from_secs(10),
                || {
                    let lines: Vec<Value> = served
                        .json_logs()
                        .into_iter()
                        .filter(|line| line["request_id"] == request_id.as_str())
                        .collect();
                    (!lines.is_empty()).then_some(lines)
                },
            );
            for line in &lines {
                assert_eq!(line["service"], service, "{line}");
                trace_ids.insert(line["trace_id"].as_str().unwrap_or_default().to_owned());
            }
        }
        assert_eq!(
            trace_ids.len(),
            1,
            "one trace id on every line: {trace_ids:?}"
        );
        let trace_id = trace_ids.into_iter().next().unwrap();
        assert_eq!(trace_id.len(), 32, "{trace_id}");
        // The processes export their spans in batches; stopping them
        // flushes what is left.
        let mut cluster = cluster;
        for served in [
            &mut cluster.gateway,
            &mut cluster.order,
            &mut cluster.account,
            &mut cluster.catalog,
        ] {
            cluster::terminate(served);
            let exit = common::wait_for("the process exits", Duration::from_secs(20), || {
                served.child.try_wait().unwrap()
            });
            assert!(exit.success(), "{exit}");
        }
        trace_id
    })
    .await
    .unwrap();

    let trace_id = &spans;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let trace = loop {
        let received = collector.spans();
        let trace: Vec<_> = received
            .iter()
            .filter(|span| &span.trace_id == trace_id)
            .cloned()
            .collect();
        let services: BTreeSet<&str> = trace.iter().map(|s| s.service_name.as_str()).collect();
        if services.len() == 4 {
            break trace;
        }
        if std::time::Instant::now() > deadline {
            let all: BTreeSet<(&str, &str)> = received
                .iter()
                .map(|s| (s.service_name.as_str(), s.trace_id.as_str()))
                .collect();
            panic!(
                "the trace {trace_id} has spans of {services:?} only; received {} spans: {all:?}",
                received.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // One root: the gateway's GraphQL request; every other span's parent
    // is in the same trace.
    let roots: Vec<_> = trace.iter().filter(|span| span.is_root()).collect();
    assert_eq!(roots.len(), 1, "{roots:#?}");
    assert_eq!(roots[0].service_name, "gateway");
    let ids: BTreeSet<&str> = trace.iter().map(|span| span.span_id.as_str()).collect();
    for span in &trace {
        assert!(
            span.is_root() || ids.contains(span.parent_span_id.as_str()),
            "orphan {span:#?}"
        );
    }
    // A server span per RPC, each the child of the caller's client span.
    let server = |service: &str, rpc: &str| {
        trace
            .iter()
            .find(|span| {
                span.service_name == service
                    && span.kind == SpanKind::Server
                    && span.name.ends_with(rpc)
            })
            .unwrap_or_else(|| panic!("no {service} server span for {rpc} in {trace:#?}"))
    };
    for (service, rpc, caller) in [
        ("order", "OrderService/CreateOrder", "gateway"),
        ("account", "AccountService/GetAccount", "order"),
        ("catalog", "CatalogService/GetProducts", "order"),
    ] {
        let span = server(service, rpc);
        let parent = trace
            .iter()
            .find(|candidate| candidate.span_id == span.parent_span_id)
            .unwrap();
        assert_eq!(
            parent.service_name, caller,
            "{span:#?} is called by {parent:#?}"
        );
        assert_eq!(parent.kind, SpanKind::Client);
    }
    // And a span per storage call: the order is stored in PostgreSQL.
    assert!(
        trace.iter().any(|span| span.service_name == "order"
            && span.kind == SpanKind::Client
            && span.attributes.get("db.system").map(String::as_str) == Some("postgresql")),
        "no PostgreSQL span in {trace:#?}"
    );
}
