//! How Prometheus finds the services' metrics: a ServiceMonitor when the
//! cluster serves `monitoring.coreos.com/v1` (the Prometheus Operator), or
//! `prometheus.io/*` annotations plus a ConfigMap with a ready
//! `scrape_configs` block for a Prometheus configured by hand.
//!
//! # The scrape targets (a contract the services will keep)
//!
//! Every scraped component serves Prometheus metrics over plain HTTP at
//! [`METRICS_PATH`], on the port [`metrics_port`] names:
//!
//! - the account, catalog and order services on an admin port
//!   [`METRICS_PORT`], named [`METRICS_PORT_NAME`] in their container and
//!   Service. They do not serve it yet: the objects built here point at
//!   that contract so that monitoring works as soon as they do. Until then
//!   a ServiceMonitor finds no port named `metrics` (no targets) and
//!   annotation-based scrapes fail. The NetworkPolicies already admit
//!   scrapes on that port from any namespace while monitoring is on
//!   ([`super::stores::network_policies`]).
//! - the gateway on its one HTTP port (GraphQL, health and metrics),
//!   `ports::GATEWAY`, named [`HTTP_PORT_NAME`].
//!
//! # Where the annotations go
//!
//! On the Services, not on the pods: the usual Prometheus configurations
//! (the `kubernetes-service-endpoints` job of the community chart, and the
//! block in [`scrape_config_map`]) discover `role: endpoints` and read the
//! Service's annotations; annotating the pods as well would make the chart's
//! `kubernetes-pods` job scrape every pod a second time, and changing a pod
//! template restarts the pods, which a monitoring switch should not do.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject};
use marketplace_config::ports;
use serde_json::json;

use super::services::HTTP_PORT_NAME;
use super::{APP_NAME, Component, MANAGER, owner_reference};
use crate::crd::{Marketplace, MonitoringMode};

/// The name of the gRPC services' admin port serving metrics.
pub const METRICS_PORT_NAME: &str = "metrics";

/// The number of the gRPC services' admin port serving metrics.
pub const METRICS_PORT: u16 = 9090;

/// The HTTP path of the services' metrics.
pub const METRICS_PATH: &str = "/metrics";

/// The `app.kubernetes.io/component` label of the monitoring objects.
pub const MONITORING_COMPONENT: &str = "monitoring";

/// The ConfigMap key holding the `scrape_configs` block.
pub const SCRAPE_CONFIG_KEY: &str = "scrape_configs.yaml";

/// The API group and version of the Prometheus Operator's ServiceMonitor.
pub const SERVICE_MONITOR_API_VERSION: &str = "monitoring.coreos.com/v1";

/// The components whose metrics are scraped.
pub const SCRAPED: [Component; 4] = [
    Component::Account,
    Component::Catalog,
    Component::Order,
    Component::Gateway,
];

/// The name and number of the port a scraped component serves metrics on;
/// `None` for the stores, which are not scraped.
pub fn metrics_port(component: Component) -> Option<(&'static str, u16)> {
    match component {
        Component::Gateway => Some((HTTP_PORT_NAME, ports::GATEWAY)),
        Component::Account | Component::Catalog | Component::Order => {
            Some((METRICS_PORT_NAME, METRICS_PORT))
        }
        Component::AccountDatabase | Component::OrderDatabase | Component::Search => None,
    }
}

/// What the reconciler makes for monitoring, once `Auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitoring {
    ServiceMonitor,
    Annotations,
    Disabled,
}

/// Resolves `spec.monitoring.mode`: `Auto` means a ServiceMonitor when the
/// cluster serves [`SERVICE_MONITOR_API_VERSION`], annotations otherwise.
pub fn resolve(marketplace: &Marketplace, service_monitors_served: bool) -> Monitoring {
    match marketplace.spec.monitoring.mode {
        MonitoringMode::Auto if service_monitors_served => Monitoring::ServiceMonitor,
        MonitoringMode::Auto | MonitoringMode::Annotations => Monitoring::Annotations,
        MonitoringMode::ServiceMonitor => Monitoring::ServiceMonitor,
        MonitoringMode::Disabled => Monitoring::Disabled,
    }
}

/// The ServiceMonitor API, for a `DynamicObject` API.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource {
        group: "monitoring.coreos.com".to_owned(),
        version: "v1".to_owned(),
        api_version: SERVICE_MONITOR_API_VERSION.to_owned(),
        kind: "ServiceMonitor".to_owned(),
        plural: "servicemonitors".to_owned(),
    }
}

/// The name of the ServiceMonitor and of the scrape ConfigMap's prefix.
pub fn service_monitor_name(marketplace: &Marketplace) -> String {
    format!("{}-metrics", marketplace.name_any())
}

/// The name of the ConfigMap holding the `scrape_configs` block.
pub fn scrape_config_map_name(marketplace: &Marketplace) -> String {
    format!("{}-scrape-config", marketplace.name_any())
}

/// Labels and owner of the monitoring objects: like every child's, with
/// the component `monitoring`.
fn meta(marketplace: &Marketplace, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: marketplace.namespace(),
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
            (
                "app.kubernetes.io/instance".to_owned(),
                marketplace.name_any(),
            ),
            (
                "app.kubernetes.io/component".to_owned(),
                MONITORING_COMPONENT.to_owned(),
            ),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                MANAGER.to_owned(),
            ),
        ])),
        owner_references: owner_reference(marketplace).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// The ServiceMonitor selecting this marketplace's scraped Services, when
/// monitoring resolves to ServiceMonitor. It has one endpoint per metrics
/// port name (the services' `metrics` first, then the gateway's `http`); a
/// Service without a port of that name gives the endpoint no targets, so
/// each component is scraped once, on its own port.
pub fn service_monitor(
    marketplace: &Marketplace,
    service_monitors_served: bool,
) -> Option<DynamicObject> {
    if resolve(marketplace, service_monitors_served) != Monitoring::ServiceMonitor {
        return None;
    }
    let components: Vec<&str> = SCRAPED.iter().map(|c| c.as_str()).collect();
    let mut object = DynamicObject::new(
        &service_monitor_name(marketplace),
        &service_monitor_resource(),
    );
    object.metadata = meta(marketplace, service_monitor_name(marketplace));
    object.data = json!({
        "spec": {
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/instance": marketplace.name_any(),
                    "app.kubernetes.io/managed-by": MANAGER,
                },
                "matchExpressions": [{
                    "key": "app.kubernetes.io/component",
                    "operator": "In",
                    "values": components,
                }],
            },
            "namespaceSelector": { "matchNames": [marketplace.namespace()] },
            "endpoints": endpoint_port_names()
                .into_iter()
                .map(|port| json!({
                    "port": port,
                    "path": METRICS_PATH,
                    "interval": marketplace.spec.monitoring.interval,
                }))
                .collect::<Vec<_>>(),
        }
    });
    Some(object)
}

/// The metrics port names, each once, in the order of [`SCRAPED`].
fn endpoint_port_names() -> Vec<&'static str> {
    let mut names = Vec::new();
    for (name, _) in SCRAPED.into_iter().filter_map(metrics_port) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The `prometheus.io/*` annotations of one component's Service, naming
/// the container port it serves metrics on (8080 for the gateway, 9090 for
/// the gRPC services); empty for a component that is not scraped, or
/// unless monitoring resolves to annotations.
pub fn scrape_annotations(
    marketplace: &Marketplace,
    component: Component,
    service_monitors_served: bool,
) -> BTreeMap<String, String> {
    let Some((_, port)) = metrics_port(component) else {
        return BTreeMap::new();
    };
    if resolve(marketplace, service_monitors_served) != Monitoring::Annotations {
        return BTreeMap::new();
    }
    BTreeMap::from([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), port.to_string()),
        ("prometheus.io/path".to_owned(), METRICS_PATH.to_owned()),
    ])
}

/// The ConfigMap `<marketplace>-scrape-config` with a `scrape_configs:`
/// block to paste into a Prometheus configuration, when monitoring
/// resolves to annotations: endpoints of the marketplace's namespace, kept
/// when their Service belongs to this marketplace, is annotated for
/// scraping, and the endpoint's port is its component's metrics port
/// (`http` for the gateway, `metrics` for the gRPC services).
pub fn scrape_config_map(
    marketplace: &Marketplace,
    service_monitors_served: bool,
) -> Option<ConfigMap> {
    if resolve(marketplace, service_monitors_served) != Monitoring::Annotations {
        return None;
    }
    let name = marketplace.name_any();
    let namespace = marketplace.namespace().unwrap_or_default();
    // Relabel regexes are anchored; a dot in a name must match only a dot.
    let instance = name.replace('.', "\\.");
    // `<component>;<port name>` of each scraped component, so the gateway
    // is scraped on `http` and no other component is.
    let component_ports = SCRAPED
        .into_iter()
        .filter_map(|component| {
            metrics_port(component).map(|(port, _)| format!("{component};{port}"))
        })
        .collect::<Vec<_>>()
        .join("|");
    let block = json!({
        "scrape_configs": [{
            "job_name": format!("marketplace/{namespace}/{name}"),
            "scrape_interval": marketplace.spec.monitoring.interval,
            "metrics_path": METRICS_PATH,
            "kubernetes_sd_configs": [{
                "role": "endpoints",
                "namespaces": { "names": [namespace] },
            }],
            "relabel_configs": [
                {
                    "source_labels": ["__meta_kubernetes_service_label_app_kubernetes_io_instance"],
                    "action": "keep",
                    "regex": instance,
                },
                {
                    "source_labels": ["__meta_kubernetes_service_label_app_kubernetes_io_managed_by"],
                    "action": "keep",
                    "regex": MANAGER,
                },
                {
                    "source_labels": ["__meta_kubernetes_service_annotation_prometheus_io_scrape"],
                    "action": "keep",
                    "regex": "true",
                },
                {
                    "source_labels": [
                        "__meta_kubernetes_service_label_app_kubernetes_io_component",
                        "__meta_kubernetes_endpoint_port_name",
                    ],
                    "action": "keep",
                    "regex": component_ports,
                },
                {
                    "source_labels": ["__meta_kubernetes_namespace"],
                    "target_label": "namespace",
                },
                {
                    "source_labels": ["__meta_kubernetes_service_label_app_kubernetes_io_component"],
                    "target_label": "component",
                },
                {
                    "source_labels": ["__meta_kubernetes_pod_name"],
                    "target_label": "pod",
                },
            ],
        }]
    });
    // A `serde_json::Value` always serializes to YAML.
    let yaml = serde_yaml::to_string(&block).unwrap_or_default();
    Some(ConfigMap {
        metadata: meta(marketplace, scrape_config_map_name(marketplace)),
        data: Some(BTreeMap::from([(SCRAPE_CONFIG_KEY.to_owned(), yaml)])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::builders::{fixtures, services};
    use crate::crd::{MarketplaceSpec, Monitoring as MonitoringSpec};

    fn marketplace(mode: MonitoringMode) -> Marketplace {
        fixtures::marketplace(MarketplaceSpec {
            monitoring: MonitoringSpec {
                mode,
                interval: "15s".to_owned(),
            },
            ..MarketplaceSpec::default()
        })
    }

    #[test]
    fn auto_resolves_to_a_service_monitor_when_the_cluster_serves_them_and_annotations_otherwise() {
        let auto = marketplace(MonitoringMode::Auto);

        assert_eq!(resolve(&auto, true), Monitoring::ServiceMonitor);
        assert_eq!(resolve(&auto, false), Monitoring::Annotations);
        assert!(service_monitor(&auto, true).is_some());
        assert!(scrape_config_map(&auto, true).is_none());
        assert!(scrape_annotations(&auto, Component::Order, true).is_empty());
        assert!(service_monitor(&auto, false).is_none());
        assert!(scrape_config_map(&auto, false).is_some());
        assert!(!scrape_annotations(&auto, Component::Order, false).is_empty());
    }

    #[test]
    fn explicit_modes_ignore_what_the_cluster_serves() {
        for served in [true, false] {
            let monitor = marketplace(MonitoringMode::ServiceMonitor);
            assert_eq!(resolve(&monitor, served), Monitoring::ServiceMonitor);
            let annotations = marketplace(MonitoringMode::Annotations);
            assert_eq!(resolve(&annotations, served), Monitoring::Annotations);
            let disabled = marketplace(MonitoringMode::Disabled);
            assert_eq!(resolve(&disabled, served), Monitoring::Disabled);
        }
    }

    #[test]
    fn the_service_monitor_selects_this_marketplaces_services_on_the_metrics_port() {
        let marketplace = marketplace(MonitoringMode::ServiceMonitor);

        let monitor = service_monitor(&marketplace, false).unwrap();

        assert_eq!(
            monitor.types.as_ref().unwrap().api_version,
            "monitoring.coreos.com/v1"
        );
        assert_eq!(monitor.types.as_ref().unwrap().kind, "ServiceMonitor");
        assert_eq!(monitor.metadata.name.as_deref(), Some("shop-metrics"));
        assert_eq!(monitor.metadata.namespace.as_deref(), Some("team-a"));
        let labels = monitor.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "shop");
        assert_eq!(labels["app.kubernetes.io/managed-by"], MANAGER);
        assert_eq!(labels["app.kubernetes.io/component"], "monitoring");
        assert_eq!(
            monitor.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Marketplace"
        );
        let spec = &monitor.data["spec"];
        assert_eq!(
            spec["selector"]["matchLabels"],
            json!({
                "app.kubernetes.io/instance": "shop",
                "app.kubernetes.io/managed-by": "marketplace-operator",
            })
        );
        assert_eq!(
            spec["selector"]["matchExpressions"][0]["values"],
            json!(["account", "catalog", "order", "gateway"])
        );
        assert_eq!(spec["namespaceSelector"]["matchNames"], json!(["team-a"]));
        assert_eq!(
            spec["endpoints"],
            json!([
                { "port": "metrics", "path": "/metrics", "interval": "15s" },
                { "port": "http", "path": "/metrics", "interval": "15s" },
            ])
        );
        assert!(scrape_config_map(&marketplace, false).is_none());
        for component in Component::ALL {
            assert!(scrape_annotations(&marketplace, component, false).is_empty());
        }
    }

    #[test]
    fn annotations_mode_annotates_the_services_and_ships_a_scrape_config() {
        let marketplace = marketplace(MonitoringMode::Annotations);

        let config_map = scrape_config_map(&marketplace, true).unwrap();

        for component in [Component::Account, Component::Catalog, Component::Order] {
            assert_eq!(
                scrape_annotations(&marketplace, component, true),
                BTreeMap::from([
                    ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
                    ("prometheus.io/port".to_owned(), "9090".to_owned()),
                    ("prometheus.io/scrape".to_owned(), "true".to_owned()),
                ])
            );
        }
        assert!(service_monitor(&marketplace, true).is_none());
        assert_eq!(
            config_map.metadata.name.as_deref(),
            Some("shop-scrape-config")
        );
        assert_eq!(
            config_map.metadata.labels.as_ref().unwrap()["app.kubernetes.io/instance"],
            "shop"
        );
        let yaml = &config_map.data.as_ref().unwrap()[SCRAPE_CONFIG_KEY];
        let block: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        let job = &block["scrape_configs"][0];
        assert_eq!(job["job_name"], "marketplace/team-a/shop");
        assert_eq!(job["scrape_interval"], "15s");
        assert_eq!(job["metrics_path"], "/metrics");
        assert_eq!(
            job["kubernetes_sd_configs"],
            json!([{ "role": "endpoints", "namespaces": { "names": ["team-a"] } }])
        );
        let keeps: Vec<(&serde_json::Value, &str)> = job["relabel_configs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|rule| rule["action"] == "keep")
            .map(|rule| (&rule["source_labels"], rule["regex"].as_str().unwrap()))
            .collect();
        assert_eq!(
            keeps,
            [
                (
                    &json!(["__meta_kubernetes_service_label_app_kubernetes_io_instance"]),
                    "shop"
                ),
                (
                    &json!(["__meta_kubernetes_service_label_app_kubernetes_io_managed_by"]),
                    "marketplace-operator"
                ),
                (
                    &json!(["__meta_kubernetes_service_annotation_prometheus_io_scrape"]),
                    "true"
                ),
                // Each component on its own metrics port only.
                (
                    &json!([
                        "__meta_kubernetes_service_label_app_kubernetes_io_component",
                        "__meta_kubernetes_endpoint_port_name",
                    ]),
                    "account;metrics|catalog;metrics|order;metrics|gateway;http"
                ),
            ]
        );
    }

    #[test]
    fn the_gateway_is_scraped_on_its_http_port_and_the_stores_not_at_all() {
        let marketplace = marketplace(MonitoringMode::Annotations);

        assert_eq!(
            scrape_annotations(&marketplace, Component::Gateway, false),
            BTreeMap::from([
                ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
                ("prometheus.io/port".to_owned(), "8080".to_owned()),
                ("prometheus.io/scrape".to_owned(), "true".to_owned()),
            ])
        );
        assert_eq!(metrics_port(Component::Gateway), Some(("http", 8080)));
        for store in [
            Component::AccountDatabase,
            Component::OrderDatabase,
            Component::Search,
        ] {
            assert!(!SCRAPED.contains(&store));
            assert_eq!(metrics_port(store), None);
            assert!(scrape_annotations(&marketplace, store, false).is_empty());
        }
        for component in SCRAPED {
            assert!(metrics_port(component).is_some(), "{component}");
        }
    }

    #[test]
    fn the_gateways_metrics_port_is_a_named_port_of_its_service_and_pods() {
        // The gRPC services' admin port is a contract they will keep (see
        // the module docs), not yet a port of their objects.
        let marketplace = marketplace(MonitoringMode::Annotations);

        let gateway = services::service(&marketplace, Component::Gateway).unwrap();
        let ports = gateway.spec.unwrap().ports.unwrap();

        let (name, number) = metrics_port(Component::Gateway).unwrap();
        assert!(ports.iter().any(|port| port.name.as_deref() == Some(name)));
        let deployment = services::deployment(&marketplace, Component::Gateway).unwrap();
        let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
        let container_port = container
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .find(|port| port.name.as_deref() == Some(name))
            .unwrap();
        assert_eq!(container_port.container_port, i32::from(number));
    }

    #[test]
    fn a_dotted_marketplace_name_is_matched_literally_by_the_scrape_config() {
        let mut marketplace = marketplace(MonitoringMode::Annotations);
        marketplace.metadata.name = Some("shop.eu".to_owned());

        let config_map = scrape_config_map(&marketplace, false).unwrap();

        let yaml = &config_map.data.as_ref().unwrap()[SCRAPE_CONFIG_KEY];
        assert!(yaml.contains(r"shop\.eu"), "{yaml}");
    }

    #[test]
    fn disabled_monitoring_makes_nothing() {
        let marketplace = marketplace(MonitoringMode::Disabled);

        for served in [true, false] {
            assert!(service_monitor(&marketplace, served).is_none());
            assert!(scrape_config_map(&marketplace, served).is_none());
            for component in Component::ALL {
                assert!(scrape_annotations(&marketplace, component, served).is_empty());
            }
        }
    }
}
