//! The chart's Grafana dashboards and alert rules against the operator:
//! every `marketplace_operator_*` metric they query is exported by the
//! operator binary once it has reconciled a Marketplace and failed one, and
//! the chart renders the rule file as a PrometheusRule and the dashboards'
//! ConfigMaps as the values say. The services' metrics are checked
//! in crates/marketplace/tests/dashboards.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Operator, install_crd, workspace_root};
use kube::api::PostParams;
use marketplace_operator::crd::{Marketplace, MarketplaceSpec};
use marketplace_testkit::eventually;
use marketplace_testkit::kubernetes;
use marketplace_testkit::promql::{self, RULES_FILE};
use serde::Deserialize;
use serde_json::{Value, json};

const OPERATOR_PREFIX: &str = "marketplace_operator_";

fn chart() -> PathBuf {
    workspace_root().join("deploy/helm/marketplace-operator")
}

/// A free local port: bound, read and released.
fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn every_operator_metric_the_dashboards_and_alerts_query_is_exported_after_a_success_and_a_failure()
 {
    let used: BTreeMap<String, Vec<String>> = promql::chart_metric_names(&chart())
        .into_iter()
        .filter(|(name, _)| name.starts_with(OPERATOR_PREFIX))
        .collect();
    assert!(!used.is_empty());
    let Some(namespace) = kubernetes::namespace().await else {
        return;
    };
    install_crd(namespace.client()).await;
    let operator = Operator::start_with_metrics_on(&namespace, free_address());
    let marketplaces = namespace.api::<Marketplace>();
    // The README's example reconciles successfully; a Marketplace whose
    // external database Secret does not exist fails every reconcile, which
    // is what gives the error counter a series.
    let example: Marketplace =
        serde_yaml::from_str(include_str!("../../examples/marketplace.yaml")).unwrap();
    let broken: MarketplaceSpec = serde_json::from_value(json!({
        "order": { "database": { "external": { "secretRef": { "name": "orders-db" } } } },
    }))
    .unwrap();
    for marketplace in [example, Marketplace::new("broken", broken)] {
        marketplaces
            .create(&PostParams::default(), &marketplace)
            .await
            .unwrap();
    }

    let exported = eventually(
        "the operator to count a successful and a failed reconcile",
        Duration::from_secs(60),
        || async {
            let (status, text) = operator.get("/metrics")?;
            assert_eq!(status, 200, "{text}");
            let failed = text.lines().any(|line| {
                line.starts_with(
                    "marketplace_operator_reconcile_errors_total{reason=\"external_secret_not_found\"}",
                )
            });
            (failed && operator.successes() > 0.0).then(|| promql::exported_names(&text))
        },
    )
    .await;

    let missing = promql::not_exported(&used, &exported);
    assert!(
        missing.is_empty(),
        "queried but not exported by the operator:\n{}",
        missing.join("\n")
    );
}

/// The objects `helm template` renders from the chart with `args`.
fn render(helm: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let output = Command::new(helm)
        .args(["template", "release"])
        .arg(chart())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "helm template {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|object| !object.is_null())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|object| object["kind"] == kind)
        .collect()
}

#[test]
fn the_prometheus_rule_holds_the_rule_files_groups_and_the_dashboards_go_where_the_values_say() {
    // operator/tests/chart.rs checks that each dashboard file is shipped
    // unchanged, with the sidecar's label.
    let Some(helm) = marketplace_testkit::program("helm") else {
        return;
    };

    let objects = render(
        &helm,
        &[
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "prometheusRule.labels.release=prometheus",
            "--set",
            "dashboards.namespace=monitoring",
            "--set",
            "dashboards.label=dashboards",
            "--set",
            "dashboards.labelValue=marketplace",
        ],
    );

    let rules = of_kind(&objects, "PrometheusRule");
    assert_eq!(rules.len(), 1, "{rules:#?}");
    assert_eq!(rules[0]["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rules[0]["metadata"]["labels"]["release"], "prometheus");
    let file: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join(RULES_FILE)).unwrap()).unwrap();
    assert_eq!(rules[0]["spec"]["groups"], file["groups"]);
    let dashboards = promql::dashboards(&chart());
    let config_maps: Vec<&Value> = of_kind(&objects, "ConfigMap")
        .into_iter()
        .filter(|map| map["metadata"]["labels"]["dashboards"] == "marketplace")
        .collect();
    assert_eq!(config_maps.len(), dashboards.len(), "{config_maps:#?}");
    for map in config_maps {
        assert_eq!(map["metadata"]["namespace"], "monitoring", "{map}");
        assert!(
            map["metadata"]["labels"].get("grafana_dashboard").is_none(),
            "{map}"
        );
    }

    // By default no PrometheusRule; the dashboards can be turned off.
    assert!(of_kind(&render(&helm, &[]), "PrometheusRule").is_empty());
    let without = render(&helm, &["--set", "dashboards.enabled=false"]);
    assert!(
        of_kind(&without, "ConfigMap")
            .iter()
            .all(|map| map["metadata"]["labels"].get("grafana_dashboard").is_none()),
        "{without:#?}"
    );
}
