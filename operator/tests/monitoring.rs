//! Prometheus scrape configuration on the kwok cluster, with the operator
//! binary running: the `Annotations` mode annotates the services and ships
//! the scrape ConfigMap, the `ServiceMonitor` mode makes a ServiceMonitor,
//! and switching modes removes the other mode's objects.
//!
//! The ServiceMonitor CRD is cluster-wide and the tests of a run share one
//! cluster, so whether it is installed is not something a test may expect
//! of `Auto`: these tests set the mode explicitly, and `Auto`'s resolution
//! is covered by the unit tests of `builders::monitoring`. The CRD, once
//! installed here, is left for the rest of the run (removing it would pull
//! the API from under another test); it is the same minimal CRD every time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{CONVERGE, Operator, get, install, wait_ready};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use marketplace_operator::builders::monitoring::{
    self, SCRAPE_CONFIG_KEY, service_monitor_resource,
};
use marketplace_operator::crd::{Marketplace, MarketplaceSpec};
use marketplace_testkit::eventually;
use marketplace_testkit::kubernetes::{self, TestNamespace};
use serde_json::json;

/// The Services that carry the scrape annotations, with the port each
/// names: the gRPC services' admin port, the gateway's HTTP port.
const SCRAPED: [(&str, &str); 4] = [
    ("shop-account", "9090"),
    ("shop-catalog", "9090"),
    ("shop-order", "9090"),
    ("shop-gateway", "8080"),
];

/// How many GETs of a single ServiceMonitor the API server has served
/// (`apiserver_request_total`, every response code).
async fn service_monitor_gets(client: Client) -> u64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let metrics = client.request_text(request).await.unwrap();
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("apiserver_request_total{")
                && line.contains("resource=\"servicemonitors\"")
                && line.contains("verb=\"GET\"")
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A minimal stand-in for the Prometheus Operator's ServiceMonitor CRD:
/// the group, version and kind, and any content.
fn service_monitor_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "servicemonitors.monitoring.coreos.com" },
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {
                "plural": "servicemonitors",
                "singular": "servicemonitor",
                "kind": "ServiceMonitor",
                "listKind": "ServiceMonitorList",
            },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": true,
                    }
                },
            }],
        },
    }))
    .unwrap()
}

/// The `prometheus.io/*` annotations of a Service (empty when it has none).
async fn scrape_annotations(services: &Api<Service>, name: &str) -> Vec<(String, String)> {
    get(services, name)
        .await
        .and_then(|service| service.metadata.annotations)
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| key.starts_with("prometheus.io/"))
        .collect()
}

/// Whether every scraped Service carries the scrape annotations (`true`) or
/// none of them does (`false`).
async fn services_annotated(services: &Api<Service>, annotated: bool) -> bool {
    for (name, port) in SCRAPED {
        let annotations = scrape_annotations(services, name).await;
        let expected: Vec<(String, String)> = if annotated {
            vec![
                ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
                ("prometheus.io/port".to_owned(), port.to_owned()),
                ("prometheus.io/scrape".to_owned(), "true".to_owned()),
            ]
        } else {
            Vec::new()
        };
        if annotations != expected {
            return false;
        }
    }
    true
}

async fn set_monitoring(marketplaces: &Api<Marketplace>, monitoring: serde_json::Value) {
    marketplaces
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "monitoring": monitoring } })),
        )
        .await
        .unwrap();
}

async fn create(namespace: &TestNamespace, monitoring: serde_json::Value) -> Api<Marketplace> {
    let spec: MarketplaceSpec =
        serde_json::from_value(json!({ "monitoring": monitoring })).unwrap();
    let marketplaces = namespace.api::<Marketplace>();
    marketplaces
        .create(&PostParams::default(), &Marketplace::new("shop", spec))
        .await
        .unwrap();
    marketplaces
}

#[tokio::test]
async fn annotations_mode_annotates_the_services_and_ships_a_scrape_config_until_disabled() {
    let Some(namespace) = kubernetes::namespace().await else {
        return;
    };
    install(namespace.client(), Marketplace::crd()).await;
    let _operator = Operator::start(&namespace);
    let marketplaces = create(&namespace, json!({ "mode": "Annotations" })).await;
    let services = namespace.api::<Service>();
    let config_maps = namespace.api::<ConfigMap>();

    let config_map = eventually("ConfigMap shop-scrape-config", CONVERGE, || {
        get(&config_maps, "shop-scrape-config")
    })
    .await;
    let block = &config_map.data.unwrap()[SCRAPE_CONFIG_KEY];
    let block: serde_json::Value = serde_yaml::from_str(block).unwrap();
    let job = &block["scrape_configs"][0];
    assert_eq!(job["scrape_interval"], "30s");
    assert_eq!(
        job["kubernetes_sd_configs"][0]["namespaces"]["names"],
        json!([namespace.name()])
    );
    eventually("the services to be annotated", CONVERGE, || async {
        services_annotated(&services, true).await.then_some(())
    })
    .await;
    // The stores are not scraped.
    let store = eventually("Service shop-account-db", CONVERGE, || {
        get(&services, "shop-account-db")
    })
    .await;
    assert!(
        !store
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("prometheus.io/scrape")
    );

    set_monitoring(&marketplaces, json!({ "mode": "Disabled" })).await;
    eventually("the scrape configuration to go", CONVERGE, || async {
        let gone = get(&config_maps, "shop-scrape-config").await.is_none()
            && services_annotated(&services, false).await;
        gone.then_some(())
    })
    .await;
}

#[tokio::test]
async fn service_monitor_mode_makes_a_service_monitor_that_follows_the_spec_and_the_mode() {
    let Some(namespace) = kubernetes::namespace().await else {
        return;
    };
    install(namespace.client(), Marketplace::crd()).await;
    install(namespace.client(), service_monitor_crd()).await;
    let _operator = Operator::start(&namespace);
    let marketplaces = create(
        &namespace,
        json!({ "mode": "ServiceMonitor", "interval": "30s" }),
    )
    .await;
    let services = namespace.api::<Service>();
    let config_maps = namespace.api::<ConfigMap>();
    let service_monitors = Api::<DynamicObject>::namespaced_with(
        namespace.client(),
        namespace.name(),
        &service_monitor_resource(),
    );
    let interval =
        |monitor: &DynamicObject| monitor.data["spec"]["endpoints"][0]["interval"].clone();

    let monitor = eventually("ServiceMonitor shop-metrics", CONVERGE, || {
        get(&service_monitors, "shop-metrics")
    })
    .await;
    let first_uid = monitor.metadata.uid.clone();
    let labels = monitor.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/instance"], "shop");
    assert_eq!(
        labels["app.kubernetes.io/managed-by"],
        "marketplace-operator"
    );
    assert_eq!(
        monitor.metadata.owner_references.unwrap()[0].kind,
        "Marketplace"
    );
    let endpoint = &monitor.data["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], monitoring::METRICS_PORT_NAME);
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "30s");
    assert_eq!(
        monitor.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        "shop"
    );
    assert!(get(&config_maps, "shop-scrape-config").await.is_none());
    eventually("Service shop-catalog", CONVERGE, || {
        get(&services, "shop-catalog")
    })
    .await;
    assert!(services_annotated(&services, false).await);

    wait_ready(&namespace, "shop").await;
    // Converged, it is reconciled from the caches, its ServiceMonitor's
    // too: a Deployment deleted by hand is made again by a reconcile whose
    // first wave (the ServiceMonitor's among them) is done before its
    // workloads are applied, and nothing in this cluster but the operator
    // reading without its cache GETs a ServiceMonitor.
    let gets_before = service_monitor_gets(namespace.client()).await;
    let deployments = namespace.api::<Deployment>();
    let first_deployment = get(&deployments, "shop-catalog").await.unwrap();
    deployments
        .delete("shop-catalog", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the Deployment deleted by hand to be made again",
        CONVERGE,
        || async {
            let deployment = get(&deployments, "shop-catalog").await?;
            (deployment.metadata.uid != first_deployment.metadata.uid).then_some(())
        },
    )
    .await;
    assert_eq!(
        service_monitor_gets(namespace.client()).await,
        gets_before,
        "the reconcile read the ServiceMonitor from the API server, not its cache"
    );

    // Deleted by hand, it is made again at once: its deletion is watched
    // (a converged Marketplace has nothing else to reconcile it for until
    // the five-minute resync).
    service_monitors
        .delete("shop-metrics", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the ServiceMonitor deleted by hand to be made again",
        Duration::from_secs(15),
        || async {
            let monitor = get(&service_monitors, "shop-metrics").await?;
            (monitor.metadata.uid != first_uid).then_some(())
        },
    )
    .await;

    // A change of the spec reaches the ServiceMonitor.
    set_monitoring(
        &marketplaces,
        json!({ "mode": "ServiceMonitor", "interval": "1m" }),
    )
    .await;
    eventually(
        "the ServiceMonitor's interval to be 1m",
        CONVERGE,
        || async {
            let monitor = get(&service_monitors, "shop-metrics").await?;
            (interval(&monitor) == "1m").then_some(())
        },
    )
    .await;

    // Annotations instead: the ServiceMonitor goes, the ConfigMap comes.
    set_monitoring(&marketplaces, json!({ "mode": "Annotations" })).await;
    eventually("the switch to annotations", CONVERGE, || async {
        let switched = get(&service_monitors, "shop-metrics").await.is_none()
            && get(&config_maps, "shop-scrape-config").await.is_some()
            && services_annotated(&services, true).await;
        switched.then_some(())
    })
    .await;

    // Back to a ServiceMonitor: the ConfigMap and the annotations go.
    set_monitoring(&marketplaces, json!({ "mode": "ServiceMonitor" })).await;
    eventually("the switch back to a ServiceMonitor", CONVERGE, || async {
        let switched = get(&service_monitors, "shop-metrics").await.is_some()
            && get(&config_maps, "shop-scrape-config").await.is_none()
            && services_annotated(&services, false).await;
        switched.then_some(())
    })
    .await;

    // Disabled: nothing is left.
    set_monitoring(&marketplaces, json!({ "mode": "Disabled" })).await;
    eventually("the ServiceMonitor to go", CONVERGE, || async {
        let gone = get(&service_monitors, "shop-metrics").await.is_none()
            && get(&config_maps, "shop-scrape-config").await.is_none();
        gone.then_some(())
    })
    .await;
}
