//! The chart's Grafana dashboards and Prometheus alert rules
//! (deploy/helm/marketplace-operator): the dashboards are well-formed for
//! Grafana, the rules pass `promtool check rules` and their unit tests, and
//! every metric they query is exported by the running services. The
//! operator's metrics (`marketplace_operator_*`) are checked against the
//! running operator in operator/tests/dashboards.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::cluster::{self, Cluster, http_get};
use common::{Graphql, known_workload};
use marketplace_config::env;
use marketplace_testkit::promql::{self, RULES_FILE};
use serde_json::{Value, json};

/// The prefix of the operator's metrics, which no service exports.
const OPERATOR_PREFIX: &str = "marketplace_operator_";

/// How every panel, target and query variable names its data source.
const DATASOURCE: &str = "${datasource}";

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/marketplace-operator")
}

#[test]
fn every_dashboard_has_a_unique_uid_tags_and_unique_panel_ids() {
    let dashboards = promql::dashboards(&chart());
    let files: Vec<&str> = dashboards.iter().map(|(file, _)| file.as_str()).collect();
    assert_eq!(
        files,
        [
            "account.json",
            "catalog.json",
            "gateway.json",
            "operator.json",
            "order.json",
            "overview.json"
        ]
    );

    let mut uids = BTreeSet::new();
    for (file, dashboard) in &dashboards {
        let uid = dashboard["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty(), "{file} has no uid");
        assert!(uids.insert(uid.to_owned()), "{file} repeats the uid {uid}");
        assert!(
            dashboard["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file} has no title"
        );
        assert!(
            dashboard["tags"]
                .as_array()
                .is_some_and(|tags| tags.contains(&json!("marketplace"))),
            "{file} is not tagged marketplace"
        );
        assert!(
            dashboard["schemaVersion"].as_u64() >= Some(39),
            "{file}: schemaVersion {}",
            dashboard["schemaVersion"]
        );
        let panels = promql::panels(dashboard);
        assert!(!panels.is_empty(), "{file} has no panels");
        let mut ids = BTreeSet::new();
        for panel in panels {
            let id = panel["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: a panel without a numeric id: {panel}"));
            assert!(ids.insert(id), "{file} repeats the panel id {id}");
            for field in ["x", "y", "w", "h"] {
                assert!(
                    panel["gridPos"][field].is_u64(),
                    "{file}: panel {id} has no gridPos.{field}"
                );
            }
        }
    }
}

#[test]
fn every_panel_target_and_query_variable_uses_the_datasource_variable() {
    for (file, dashboard) in promql::dashboards(&chart()) {
        let variables = dashboard["templating"]["list"].as_array().unwrap();
        let datasource = variables
            .iter()
            .find(|variable| variable["name"] == "datasource")
            .unwrap_or_else(|| panic!("{file} has no datasource variable"));
        assert_eq!(datasource["type"], "datasource", "{file}");
        assert_eq!(datasource["query"], "prometheus", "{file}");

        let uses_variable = |value: &Value| value["uid"] == DATASOURCE;
        for panel in promql::panels(&dashboard) {
            let targets = panel["targets"].as_array();
            if panel["type"] == "row" {
                assert!(targets.is_none_or(Vec::is_empty), "{file}: {panel}");
                continue;
            }
            let title = &panel["title"];
            assert!(
                uses_variable(&panel["datasource"]),
                "{file}: panel {title} has the datasource {}",
                panel["datasource"]
            );
            let targets = targets.unwrap_or_else(|| panic!("{file}: panel {title} has no targets"));
            assert!(!targets.is_empty(), "{file}: panel {title} has no targets");
            for target in targets {
                assert!(
                    uses_variable(&target["datasource"]),
                    "{file}: a target of panel {title} has the datasource {}",
                    target["datasource"]
                );
                assert!(
                    target["expr"].as_str().is_some_and(|expr| !expr.is_empty()),
                    "{file}: a target of panel {title} has no expr"
                );
            }
        }
        for variable in variables.iter().filter(|v| v["type"] == "query") {
            assert!(
                uses_variable(&variable["datasource"]),
                "{file}: the variable {} has the datasource {}",
                variable["name"],
                variable["datasource"]
            );
        }
    }
}

#[test]
fn every_dashboard_and_alert_query_is_promql_naming_a_metric() {
    // Panics naming the query when one is not PromQL or names no metric.
    let used = promql::chart_metric_names(&chart());

    let rules = std::fs::read_to_string(chart().join(RULES_FILE)).unwrap();
    let alerts = promql::rule_queries(RULES_FILE, &rules).unwrap();
    assert!(alerts.len() >= 5, "{alerts:?}");
    assert!(
        used.keys().any(|name| name.starts_with(OPERATOR_PREFIX)),
        "{used:?}"
    );
}

/// Runs promtool with `args` in the rules' directory; its output when it
/// fails.
fn promtool(promtool: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new(promtool)
        .args(args)
        .current_dir(chart().join("rules"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!("promtool {} failed:\n{text}", args.join(" ")))
    }
}

#[test]
fn the_alert_rules_pass_promtool_check_rules_and_their_unit_tests() {
    let Some(binary) = marketplace_testkit::program("promtool") else {
        return;
    };

    let checked = promtool(&binary, &["check", "rules", "marketplace.rules.yaml"]);
    let tested = promtool(&binary, &["test", "rules", "marketplace.rules.test.yaml"]);

    let checked = checked.unwrap_or_else(|error| panic!("{error}"));
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = tested.unwrap_or_else(|error| panic!("{error}"));
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The names of every sample the four processes export.
fn exported(cluster: &Cluster) -> BTreeSet<String> {
    let mut scrapes = vec![http_get(&cluster.gateway.address, "/metrics")];
    for served in [&cluster.account, &cluster.catalog, &cluster.order] {
        scrapes.push(http_get(&served.admin_address(), "/metrics"));
    }
    scrapes
        .into_iter()
        .flat_map(|(status, text)| {
            assert_eq!(status, 200, "{text}");
            promql::exported_names(&text)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboards_and_alerts_query_is_exported_by_a_running_service() {
    let used: BTreeMap<String, Vec<String>> = promql::chart_metric_names(&chart())
        .into_iter()
        .filter(|(name, _)| !name.starts_with(OPERATOR_PREFIX))
        .collect();
    let Some(real) = cluster::real_stores().await else {
        return;
    };
    let exported = tokio::task::spawn_blocking(move || {
        let cluster = cluster::start(&real.stores, &[(env::GATEWAY_CACHE_TTL, "1m".to_owned())]);
        // Enough of everything that each metric family has its series.
        known_workload(&Graphql::new(&cluster.gateway.address));
        exported(&cluster)
    })
    .await
    .unwrap();

    let missing = promql::not_exported(&used, &exported);
    assert!(
        missing.is_empty(),
        "queried but not exported by the gateway, account, catalog or order service:\n{}",
        missing.join("\n")
    );
    eprintln!(
        "{} metric names queried, all exported: {}",
        used.len(),
        used.keys().cloned().collect::<Vec<_>>().join(", ")
    );
}
