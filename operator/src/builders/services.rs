//! The services: the GraphQL gateway and the gRPC services (account,
//! catalog, order). Each gets a Deployment, a Service and, above one
//! replica, a PodDisruptionBudget.
//!
//! Every pod runs the one `marketplace` image as `serve --target <component>`
//! and is configured only through the variables named in
//! [`marketplace_config::env`], so the operator can never set a variable no
//! service reads. Nothing here is random or time-dependent: the same
//! Marketplace always builds the same objects, so applying them again
//! changes nothing.
//!
//! The gRPC services are probed natively over gRPC on their ClusterIP
//! port; the gateway is probed over HTTP (`/healthz`, `/readyz`) and its
//! Service type and port come from `spec.gateway.service`. The stores have
//! builders of their own; every builder here returns `None` for them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, GRPCAction, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use marketplace_config::{env, ports};

use super::{Component, child_meta, child_name, labels, selector_labels, stores};
use crate::crd::{Database, Marketplace, PullPolicy, Search, ServiceType};

/// The name of the one container of every service pod.
pub const CONTAINER_NAME: &str = "marketplace";

/// The name of the gRPC port, on the container and on the Service.
pub const GRPC_PORT_NAME: &str = "grpc";

/// The name of the gateway's HTTP port (GraphQL, health, metrics), on the
/// container and on the Service.
pub const HTTP_PORT_NAME: &str = "http";

/// The name of a gRPC service's admin port (`/metrics`, `/healthz`,
/// `/readyz`), on the container and on the Service.
pub const ADMIN_PORT_NAME: &str = super::monitoring::METRICS_PORT_NAME;

/// The gateway's liveness check: 200 while the process serves at all.
pub const LIVENESS_PATH: &str = "/healthz";

/// The gateway's readiness check: 200 while it can serve requests.
pub const READINESS_PATH: &str = "/readyz";

/// The user (and group) the services run as: `nonroot` of the distroless
/// base images, so the pod runs under the restricted Pod Security Standard.
pub const RUN_AS_USER: i64 = 65532;

/// The CPU request of a service pod whose spec gives no resources.
pub const DEFAULT_CPU_REQUEST: &str = "50m";

/// The memory request of a service pod whose spec gives no resources.
pub const DEFAULT_MEMORY_REQUEST: &str = "64Mi";

/// How long (in probe periods) a starting pod may take before the kubelet
/// restarts it: migrations and index creation at start-up wait for a store
/// that may itself still be starting, so five minutes.
/// How long a stopping gateway pod keeps answering, closing each connection
/// after its answer, before it stops accepting: a terminating pod leaves
/// the Service's endpoints at once, but kube-proxy and load balancers take
/// a few seconds to stop sending it new connections. Well within the
/// default 30 s grace period.
pub const GATEWAY_DRAIN_PERIOD: &str = "5s";

const STARTUP_PERIOD_SECONDS: i32 = 5;
const STARTUP_FAILURE_THRESHOLD: i32 = 60;

/// The gRPC port of a service; `None` for the gateway and the stores.
pub fn port(component: Component) -> Option<u16> {
    match component {
        Component::Account => Some(ports::ACCOUNT),
        Component::Catalog => Some(ports::CATALOG),
        Component::Order => Some(ports::ORDER),
        _ => None,
    }
}

/// The fully qualified gRPC service name a service's health checks ask
/// about (`grpc.health.v1.Health/Check` with this `service`).
pub fn health_service_name(component: Component) -> Option<&'static str> {
    match component {
        Component::Account => Some("marketplace.account.v1.AccountService"),
        Component::Catalog => Some("marketplace.catalog.v1.CatalogService"),
        Component::Order => Some("marketplace.order.v1.OrderService"),
        _ => None,
    }
}

/// The in-cluster URL of a service's gRPC Service, such as
/// `http://shop-account.team-a.svc:8081`; `None` for the gateway and the
/// stores.
pub fn grpc_url(marketplace: &Marketplace, component: Component) -> Option<String> {
    let port = port(component)?;
    Some(format!(
        "http://{}:{port}",
        service_host(marketplace, &child_name(marketplace, component))
    ))
}

/// The Deployment of a service; `None` when the component is disabled or
/// is a store.
pub fn deployment(marketplace: &Marketplace, component: Component) -> Option<Deployment> {
    let workload = Workload::of(marketplace, component)?;
    let name = child_name(marketplace, component);
    Some(Deployment {
        metadata: child_meta(marketplace, component, name),
        spec: Some(DeploymentSpec {
            replicas: Some(workload.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(marketplace, component)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(marketplace, component)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(marketplace, component, &workload)),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

/// The Service in front of a service's pods; `None` when the component is
/// disabled or is a store. The gRPC services get a ClusterIP Service on
/// their own port; the gateway's type and port come from
/// `spec.gateway.service`, forwarded to its `http` container port.
pub fn service(marketplace: &Marketplace, component: Component) -> Option<Service> {
    let workload = Workload::of(marketplace, component)?;
    Some(Service {
        metadata: child_meta(marketplace, component, child_name(marketplace, component)),
        spec: Some(ServiceSpec {
            type_: Some(service_type(workload.service_type).to_owned()),
            selector: Some(selector_labels(marketplace, component)),
            ports: Some(service_ports(&workload)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The Service's ports: the workload's own, and for a gRPC service its
/// admin port, which the ServiceMonitor scrapes.
fn service_ports(workload: &Workload<'_>) -> Vec<ServicePort> {
    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.to_owned()),
        protocol: Some("TCP".to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        ..ServicePort::default()
    };
    let mut ports = vec![port(workload.port_name, workload.service_port)];
    if matches!(workload.health, Health::Grpc(_)) {
        ports.push(port(ADMIN_PORT_NAME, i32::from(ports::ADMIN)));
    }
    ports
}

/// The container's ports: the workload's own, and for a gRPC service its
/// admin port (`/metrics`, `/healthz`, `/readyz`).
fn container_ports(workload: &Workload<'_>) -> Vec<ContainerPort> {
    let port = |name: &str, number: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(number),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    let mut ports = vec![port(workload.port_name, workload.port)];
    if matches!(workload.health, Health::Grpc(_)) {
        ports.push(port(ADMIN_PORT_NAME, ports::ADMIN));
    }
    ports
}

/// The PodDisruptionBudget of a service: at most one pod voluntarily
/// evicted at a time. `None` when the component is disabled, is a store,
/// or runs one replica or none (a budget on a single pod would
/// block node drains for good).
pub fn pod_disruption_budget(
    marketplace: &Marketplace,
    component: Component,
) -> Option<PodDisruptionBudget> {
    let workload = Workload::of(marketplace, component)?;
    if workload.replicas <= 1 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: child_meta(marketplace, component, child_name(marketplace, component)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(marketplace, component)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

/// What the spec says about one enabled service.
struct Workload<'a> {
    /// The container port the service listens on, and its name.
    port: u16,
    port_name: &'static str,
    health: Health,
    replicas: i32,
    resources: Option<&'a ResourceRequirements>,
    service_type: ServiceType,
    /// The port of the Service, forwarded to the named container port.
    service_port: i32,
}

/// How the kubelet checks a service's health.
#[derive(Clone, Copy)]
enum Health {
    /// Native gRPC health checks (`grpc.health.v1`) of this service name.
    Grpc(&'static str),
    /// HTTP GETs of [`LIVENESS_PATH`] and [`READINESS_PATH`].
    Http,
}

/// Which question a probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Live,
    Ready,
}

impl<'a> Workload<'a> {
    fn of(marketplace: &'a Marketplace, component: Component) -> Option<Self> {
        let spec = &marketplace.spec;
        if component == Component::Gateway {
            let gateway = &spec.gateway;
            return gateway.enabled.then_some(Self {
                port: ports::GATEWAY,
                port_name: HTTP_PORT_NAME,
                health: Health::Http,
                replicas: gateway.replicas,
                resources: gateway.resources.as_ref(),
                service_type: gateway.service.type_,
                service_port: gateway.service.port,
            });
        }
        let (enabled, replicas, resources) = match component {
            Component::Account => (
                spec.account.enabled,
                spec.account.replicas,
                spec.account.resources.as_ref(),
            ),
            Component::Catalog => (
                spec.catalog.enabled,
                spec.catalog.replicas,
                spec.catalog.resources.as_ref(),
            ),
            Component::Order => (
                spec.order.enabled,
                spec.order.replicas,
                spec.order.resources.as_ref(),
            ),
            _ => return None,
        };
        if !enabled {
            return None;
        }
        let port = port(component)?;
        Some(Self {
            port,
            port_name: GRPC_PORT_NAME,
            health: Health::Grpc(health_service_name(component)?),
            replicas,
            resources,
            service_type: ServiceType::ClusterIP,
            service_port: i32::from(port),
        })
    }
}

fn pod_spec(marketplace: &Marketplace, component: Component, workload: &Workload<'_>) -> PodSpec {
    let image = &marketplace.spec.image;
    PodSpec {
        containers: vec![Container {
            name: CONTAINER_NAME.to_owned(),
            image: Some(format!("{}:{}", image.repository, image.tag)),
            image_pull_policy: Some(pull_policy(image.pull_policy).to_owned()),
            args: Some(vec![
                "serve".to_owned(),
                "--target".to_owned(),
                component.as_str().to_owned(),
            ]),
            env: Some(env_vars(marketplace, component, workload.port)),
            ports: Some(container_ports(workload)),
            readiness_probe: Some(probe(workload, Check::Ready, 10, 3)),
            liveness_probe: Some(probe(workload, Check::Live, 10, 3)),
            startup_probe: Some(probe(
                workload,
                Check::Live,
                STARTUP_PERIOD_SECONDS,
                STARTUP_FAILURE_THRESHOLD,
            )),
            resources: Some(resources(workload.resources)),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".to_owned()]),
                    ..Capabilities::default()
                }),
                ..SecurityContext::default()
            }),
            ..Container::default()
        }],
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        // The services never call the Kubernetes API, and the
        // `<SERVICE>_PORT` variables of service links are noise at best.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..PodSpec::default()
    }
}

/// The service's configuration, every name from [`marketplace_config::env`].
/// The catalog's index name is left at the service's default; the gateway
/// gets no CORS variable when the spec allows no origin.
fn env_vars(marketplace: &Marketplace, component: Component, port: u16) -> Vec<EnvVar> {
    let listen_addr = format!("0.0.0.0:{port}");
    let spec = &marketplace.spec;
    match component {
        Component::Gateway => {
            let mut vars = vec![
                value(env::GATEWAY_LISTEN_ADDR, listen_addr),
                value(
                    env::GATEWAY_ACCOUNT_URL,
                    grpc_url(marketplace, Component::Account).unwrap_or_default(),
                ),
                value(
                    env::GATEWAY_CATALOG_URL,
                    grpc_url(marketplace, Component::Catalog).unwrap_or_default(),
                ),
                value(
                    env::GATEWAY_ORDER_URL,
                    grpc_url(marketplace, Component::Order).unwrap_or_default(),
                ),
                value(env::GATEWAY_DRAIN_PERIOD, GATEWAY_DRAIN_PERIOD.to_owned()),
            ];
            if !spec.gateway.cors_origins.is_empty() {
                vars.push(value(
                    env::GATEWAY_CORS_ORIGINS,
                    spec.gateway.cors_origins.join(","),
                ));
            }
            vars
        }
        Component::Account => vec![
            value(env::ACCOUNT_LISTEN_ADDR, listen_addr),
            database_url(
                env::ACCOUNT_DATABASE_URL,
                marketplace,
                &spec.account.database,
                Component::AccountDatabase,
            ),
        ],
        Component::Catalog => vec![
            value(env::CATALOG_LISTEN_ADDR, listen_addr),
            value(
                env::CATALOG_SEARCH_URL,
                search_url(marketplace, &spec.catalog.search),
            ),
        ],
        Component::Order => vec![
            value(env::ORDER_LISTEN_ADDR, listen_addr),
            database_url(
                env::ORDER_DATABASE_URL,
                marketplace,
                &spec.order.database,
                Component::OrderDatabase,
            ),
            value(
                env::ORDER_ACCOUNT_URL,
                grpc_url(marketplace, Component::Account).unwrap_or_default(),
            ),
            value(
                env::ORDER_CATALOG_URL,
                grpc_url(marketplace, Component::Catalog).unwrap_or_default(),
            ),
        ],
        _ => Vec::new(),
    }
}

fn value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..EnvVar::default()
    }
}

/// A database URL read from a Secret: the managed database's own Secret,
/// or the one the user named for an external database.
fn database_url(
    name: &str,
    marketplace: &Marketplace,
    database: &Database,
    store: Component,
) -> EnvVar {
    let (secret, key) = match &database.external {
        Some(external) => (
            external.secret_ref.name.clone(),
            external.secret_ref.key.clone(),
        ),
        None => (
            child_name(marketplace, store),
            stores::secret_keys::URL.to_owned(),
        ),
    };
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret,
                key,
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The external cluster's URL, or the managed Elasticsearch's Service.
fn search_url(marketplace: &Marketplace, search: &Search) -> String {
    match &search.external {
        Some(external) => external.url.clone(),
        None => stores::search_url(marketplace),
    }
}

/// `<service>.<namespace>.svc`, or the bare name (resolved in the pod's own
/// namespace) for a marketplace without a namespace, which the API server
/// never returns.
pub(super) fn service_host(marketplace: &Marketplace, service: &str) -> String {
    match marketplace.namespace() {
        Some(namespace) => format!("{service}.{namespace}.svc"),
        None => service.to_owned(),
    }
}

/// A health check. A gRPC service is ready when its native gRPC health
/// check of its own name says SERVING, which follows its store; it is live
/// while its admin port answers `/healthz`, so a store outage makes it
/// unready but never gets it restarted. The gateway answers its live and
/// ready paths on its HTTP port. Every field is explicit, so what the API
/// server stores equals what was built.
fn probe(
    workload: &Workload<'_>,
    check: Check,
    period_seconds: i32,
    failure_threshold: i32,
) -> Probe {
    let http = |path: &str, port: &str| HTTPGetAction {
        path: Some(path.to_owned()),
        port: IntOrString::String(port.to_owned()),
        scheme: Some("HTTP".to_owned()),
        ..HTTPGetAction::default()
    };
    let (grpc, http_get) = match workload.health {
        Health::Grpc(_) if check == Check::Live => {
            (None, Some(http(LIVENESS_PATH, ADMIN_PORT_NAME)))
        }
        Health::Grpc(service) => (
            Some(GRPCAction {
                port: i32::from(workload.port),
                service: Some(service.to_owned()),
            }),
            None,
        ),
        Health::Http => (
            None,
            Some(http(
                match check {
                    Check::Live => LIVENESS_PATH,
                    Check::Ready => READINESS_PATH,
                },
                workload.port_name,
            )),
        ),
    };
    Probe {
        grpc,
        http_get,
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(1),
        success_threshold: Some(1),
        ..Probe::default()
    }
}

/// The spec's resources, or small requests (50m CPU, 64Mi memory) and no
/// limits, so an unconfigured pod still gets scheduled by what it needs.
fn resources(given: Option<&ResourceRequirements>) -> ResourceRequirements {
    given.cloned().unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(DEFAULT_CPU_REQUEST.to_owned())),
            (
                "memory".to_owned(),
                Quantity(DEFAULT_MEMORY_REQUEST.to_owned()),
            ),
        ])),
        ..ResourceRequirements::default()
    })
}

fn service_type(type_: ServiceType) -> &'static str {
    match type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    }
}

fn pull_policy(policy: PullPolicy) -> &'static str {
    match policy {
        PullPolicy::Always => "Always",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Never => "Never",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::builders::{MANAGER, fixtures};
    use crate::crd::{
        DatabaseComponent, ExternalDatabase, ExternalSearch, MarketplaceSpec, SecretKeyRef,
    };

    /// Everything built here: the gateway and the gRPC services.
    const WORKLOADS: [Component; 4] = [
        Component::Gateway,
        Component::Account,
        Component::Catalog,
        Component::Order,
    ];

    fn default_marketplace() -> Marketplace {
        fixtures::marketplace(MarketplaceSpec::default())
    }

    fn external_stores() -> Marketplace {
        let mut spec = MarketplaceSpec::default();
        spec.account.database = Database {
            managed: None,
            external: Some(ExternalDatabase {
                secret_ref: SecretKeyRef {
                    name: "accounts-pg".to_owned(),
                    key: "dsn".to_owned(),
                },
            }),
        };
        spec.order.database = Database {
            managed: None,
            external: Some(ExternalDatabase {
                secret_ref: SecretKeyRef {
                    name: "orders-pg".to_owned(),
                    key: "connection-url".to_owned(),
                },
            }),
        };
        spec.catalog.search = Search {
            managed: None,
            external: Some(ExternalSearch {
                url: "https://search.example.com:9243".to_owned(),
            }),
        };
        fixtures::marketplace(spec)
    }

    fn container(deployment: &Deployment) -> &Container {
        let pod = pod(deployment);
        assert_eq!(pod.containers.len(), 1);
        &pod.containers[0]
    }

    fn pod(deployment: &Deployment) -> &PodSpec {
        deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
    }

    fn env_names(container: &Container) -> Vec<&str> {
        container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|var| var.name.as_str())
            .collect()
    }

    fn env<'a>(container: &'a Container, name: &str) -> &'a EnvVar {
        container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|var| var.name == name)
            .unwrap_or_else(|| panic!("{name} is not set"))
    }

    fn literal<'a>(container: &'a Container, name: &str) -> &'a str {
        let var = env(container, name);
        assert!(var.value_from.is_none(), "{name} is not a literal");
        var.value.as_deref().unwrap()
    }

    fn secret<'a>(container: &'a Container, name: &str) -> (&'a str, &'a str) {
        let var = env(container, name);
        assert!(var.value.is_none(), "{name} has a literal value");
        let selector = var
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        (selector.name.as_str(), selector.key.as_str())
    }

    fn disabled(component: Component) -> Marketplace {
        let mut spec = MarketplaceSpec::default();
        match component {
            Component::Account => spec.account.enabled = false,
            Component::Catalog => spec.catalog.enabled = false,
            Component::Order => spec.order.enabled = false,
            Component::Gateway => spec.gateway.enabled = false,
            _ => unreachable!(),
        }
        fixtures::marketplace(spec)
    }

    fn with_replicas(replicas: i32) -> Marketplace {
        let mut spec = MarketplaceSpec::default();
        spec.gateway.replicas = replicas;
        spec.account.replicas = replicas;
        spec.catalog.replicas = replicas;
        spec.order.replicas = replicas;
        fixtures::marketplace(spec)
    }

    #[test]
    fn each_service_runs_the_marketplace_image_serving_its_own_target() {
        let marketplace = default_marketplace();

        for component in WORKLOADS {
            let deployment = deployment(&marketplace, component).unwrap();
            let container = container(&deployment);

            assert_eq!(container.name, "marketplace");
            assert_eq!(
                container.image.as_deref(),
                Some(
                    format!(
                        "ghcr.io/marketplace/marketplace:{}",
                        env!("CARGO_PKG_VERSION")
                    )
                    .as_str()
                )
            );
            assert_eq!(
                container.args.as_ref().unwrap(),
                &["serve", "--target", component.as_str()]
            );
            assert_eq!(container.command, None);
            assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
        }
    }

    #[test]
    fn the_image_and_pull_policy_come_from_the_spec() {
        let mut spec = MarketplaceSpec::default();
        spec.image.repository = "registry.local/shop/marketplace".to_owned();
        spec.image.tag = "1.2.3".to_owned();
        spec.image.pull_policy = PullPolicy::Always;
        let marketplace = fixtures::marketplace(spec);

        for component in WORKLOADS {
            let deployment = deployment(&marketplace, component).unwrap();
            let container = container(&deployment);
            assert_eq!(
                container.image.as_deref(),
                Some("registry.local/shop/marketplace:1.2.3")
            );
            assert_eq!(container.image_pull_policy.as_deref(), Some("Always"));
        }
        let mut never = marketplace.clone();
        never.spec.image.pull_policy = PullPolicy::Never;
        let deployment = deployment(&never, Component::Order).unwrap();
        assert_eq!(
            container(&deployment).image_pull_policy.as_deref(),
            Some("Never")
        );
    }

    #[test]
    fn account_listens_on_its_port_and_reads_the_managed_database_secret() {
        let deployment = deployment(&default_marketplace(), Component::Account).unwrap();
        let container = container(&deployment);

        assert_eq!(
            env_names(container),
            [env::ACCOUNT_LISTEN_ADDR, env::ACCOUNT_DATABASE_URL]
        );
        assert_eq!(literal(container, env::ACCOUNT_LISTEN_ADDR), "0.0.0.0:8081");
        assert_eq!(
            secret(container, env::ACCOUNT_DATABASE_URL),
            ("shop-account-db", "url")
        );
    }

    #[test]
    fn account_reads_an_external_database_url_from_the_users_secret_verbatim() {
        let deployment = deployment(&external_stores(), Component::Account).unwrap();
        let container = container(&deployment);

        assert_eq!(
            env_names(container),
            [env::ACCOUNT_LISTEN_ADDR, env::ACCOUNT_DATABASE_URL]
        );
        assert_eq!(
            secret(container, env::ACCOUNT_DATABASE_URL),
            ("accounts-pg", "dsn")
        );
    }

    #[test]
    fn catalog_listens_on_its_port_and_searches_the_managed_elasticsearch() {
        let deployment = deployment(&default_marketplace(), Component::Catalog).unwrap();
        let container = container(&deployment);

        assert_eq!(
            env_names(container),
            [env::CATALOG_LISTEN_ADDR, env::CATALOG_SEARCH_URL]
        );
        assert_eq!(literal(container, env::CATALOG_LISTEN_ADDR), "0.0.0.0:8082");
        assert_eq!(
            literal(container, env::CATALOG_SEARCH_URL),
            "http://shop-search.team-a.svc:9200"
        );
    }

    #[test]
    fn catalog_searches_an_external_elasticsearch_by_the_given_url() {
        let deployment = deployment(&external_stores(), Component::Catalog).unwrap();
        let container = container(&deployment);

        assert_eq!(
            env_names(container),
            [env::CATALOG_LISTEN_ADDR, env::CATALOG_SEARCH_URL]
        );
        assert_eq!(
            literal(container, env::CATALOG_SEARCH_URL),
            "https://search.example.com:9243"
        );
    }

    #[test]
    fn order_listens_on_its_port_reads_its_database_secret_and_calls_account_and_catalog() {
        let deployment = deployment(&default_marketplace(), Component::Order).unwrap();
        let container = container(&deployment);

        assert_eq!(
            env_names(container),
            [
                env::ORDER_LISTEN_ADDR,
                env::ORDER_DATABASE_URL,
                env::ORDER_ACCOUNT_URL,
                env::ORDER_CATALOG_URL,
            ]
        );
        assert_eq!(literal(container, env::ORDER_LISTEN_ADDR), "0.0.0.0:8083");
        assert_eq!(
            secret(container, env::ORDER_DATABASE_URL),
            ("shop-order-db", "url")
        );
        assert_eq!(
            literal(container, env::ORDER_ACCOUNT_URL),
            "http://shop-account.team-a.svc:8081"
        );
        assert_eq!(
            literal(container, env::ORDER_CATALOG_URL),
            "http://shop-catalog.team-a.svc:8082"
        );
    }

    #[test]
    fn order_reads_an_external_database_url_from_the_users_secret_verbatim() {
        let deployment = deployment(&external_stores(), Component::Order).unwrap();
        let container = container(&deployment);

        assert_eq!(
            secret(container, env::ORDER_DATABASE_URL),
            ("orders-pg", "connection-url")
        );
        assert_eq!(
            literal(container, env::ORDER_ACCOUNT_URL),
            "http://shop-account.team-a.svc:8081"
        );
    }

    #[test]
    fn every_variable_the_deployments_set_is_one_a_service_reads() {
        let mut with_origins = default_marketplace();
        with_origins.spec.gateway.cors_origins = vec!["https://shop.example.com".to_owned()];

        for marketplace in [default_marketplace(), external_stores(), with_origins] {
            for component in WORKLOADS {
                let deployment = deployment(&marketplace, component).unwrap();
                for name in env_names(container(&deployment)) {
                    assert!(
                        env::ALL.contains(&name),
                        "{component} sets {name}, which no service reads"
                    );
                }
            }
        }
    }

    #[test]
    fn the_grpc_port_is_named_and_probed_natively_for_the_services_own_health() {
        let marketplace = default_marketplace();
        let expected = [
            (
                Component::Account,
                8081,
                "marketplace.account.v1.AccountService",
            ),
            (
                Component::Catalog,
                8082,
                "marketplace.catalog.v1.CatalogService",
            ),
            (Component::Order, 8083, "marketplace.order.v1.OrderService"),
        ];

        for (component, port, health) in expected {
            let deployment = deployment(&marketplace, component).unwrap();
            let container = container(&deployment);
            let ports = container.ports.as_ref().unwrap();
            assert_eq!(ports.len(), 2);
            assert_eq!(ports[0].name.as_deref(), Some("grpc"));
            assert_eq!(ports[0].container_port, port);
            assert_eq!(ports[1].name.as_deref(), Some("metrics"));
            assert_eq!(ports[1].container_port, 9090);
            // Ready while the store is: the gRPC health check follows it.
            let ready = container.readiness_probe.as_ref().unwrap();
            let grpc = ready.grpc.as_ref().unwrap();
            assert_eq!(grpc.port, port);
            assert_eq!(grpc.service.as_deref(), Some(health));
            assert!(ready.http_get.is_none() && ready.tcp_socket.is_none());
            assert!(ready.exec.is_none());
            // Live while the process answers at all: a store outage must
            // not get the pod restarted.
            for probe in [&container.liveness_probe, &container.startup_probe] {
                let probe = probe.as_ref().unwrap();
                let http = probe.http_get.as_ref().unwrap();
                assert_eq!(http.path.as_deref(), Some("/healthz"));
                assert_eq!(http.port, IntOrString::String("metrics".to_owned()));
                assert!(probe.grpc.is_none() && probe.exec.is_none());
            }
            let startup = container.startup_probe.as_ref().unwrap();
            let patience = startup.period_seconds.unwrap() * startup.failure_threshold.unwrap();
            assert!(
                patience >= 120,
                "start-up may take {patience}s, too little for migrations"
            );
        }
    }

    #[test]
    fn pods_run_under_the_restricted_security_profile() {
        let marketplace = default_marketplace();

        for component in WORKLOADS {
            let deployment = deployment(&marketplace, component).unwrap();
            let pod = pod(&deployment);
            let pod_context = pod.security_context.as_ref().unwrap();
            assert_eq!(pod_context.run_as_non_root, Some(true));
            assert_eq!(pod_context.run_as_user, Some(65532));
            assert_eq!(
                pod_context.seccomp_profile.as_ref().unwrap().type_,
                "RuntimeDefault"
            );
            let context = container(&deployment).security_context.as_ref().unwrap();
            assert_eq!(context.allow_privilege_escalation, Some(false));
            assert_eq!(context.read_only_root_filesystem, Some(true));
            assert_eq!(context.privileged, None);
            let capabilities = context.capabilities.as_ref().unwrap();
            assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
            assert_eq!(capabilities.add, None);
            assert_eq!(pod.automount_service_account_token, Some(false));
        }
    }

    #[test]
    fn pods_without_resources_in_the_spec_request_a_little_and_set_no_limits() {
        let marketplace = default_marketplace();

        for component in WORKLOADS {
            let deployment = deployment(&marketplace, component).unwrap();
            let resources = container(&deployment).resources.as_ref().unwrap();
            let requests = resources.requests.as_ref().unwrap();
            assert_eq!(requests["cpu"], Quantity("50m".to_owned()));
            assert_eq!(requests["memory"], Quantity("64Mi".to_owned()));
            assert_eq!(resources.limits, None);
        }
    }

    #[test]
    fn resources_in_the_spec_are_used_as_given() {
        let given = ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "cpu".to_owned(),
                Quantity("250m".to_owned()),
            )])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("256Mi".to_owned()),
            )])),
            ..ResourceRequirements::default()
        };
        let mut spec = MarketplaceSpec::default();
        spec.gateway.resources = Some(given.clone());
        spec.account.resources = Some(given.clone());
        spec.catalog.resources = Some(given.clone());
        spec.order.resources = Some(given.clone());
        let marketplace = fixtures::marketplace(spec);

        for component in WORKLOADS {
            let deployment = deployment(&marketplace, component).unwrap();
            assert_eq!(container(&deployment).resources.as_ref(), Some(&given));
        }
        // One component's resources do not leak into another's.
        let mut only_order = default_marketplace();
        only_order.spec.order.resources = Some(given.clone());
        let account = deployment(&only_order, Component::Account).unwrap();
        assert_ne!(container(&account).resources.as_ref(), Some(&given));
    }

    #[test]
    fn replicas_come_from_the_spec() {
        let mut spec = MarketplaceSpec::default();
        spec.gateway.replicas = 4;
        spec.account.replicas = 2;
        spec.catalog.replicas = 0;
        spec.order = DatabaseComponent {
            replicas: 5,
            ..DatabaseComponent::default()
        };
        let marketplace = fixtures::marketplace(spec);

        for (component, replicas) in [
            (Component::Gateway, 4),
            (Component::Account, 2),
            (Component::Catalog, 0),
            (Component::Order, 5),
        ] {
            let deployment = deployment(&marketplace, component).unwrap();
            assert_eq!(deployment.spec.unwrap().replicas, Some(replicas));
        }
    }

    #[test]
    fn every_object_is_named_labelled_owned_and_selects_its_own_pods() {
        let marketplace = with_replicas(2);

        for component in WORKLOADS {
            let name = format!("shop-{component}");
            let deployment = deployment(&marketplace, component).unwrap();
            let service = service(&marketplace, component).unwrap();
            let budget = pod_disruption_budget(&marketplace, component).unwrap();
            for meta in [&deployment.metadata, &service.metadata, &budget.metadata] {
                assert_eq!(meta.name.as_deref(), Some(name.as_str()));
                assert_eq!(meta.namespace.as_deref(), Some("team-a"));
                assert_eq!(meta.labels.as_ref(), Some(&labels(&marketplace, component)));
                let owners = meta.owner_references.as_ref().unwrap();
                assert_eq!(owners.len(), 1);
                assert_eq!(owners[0].kind, "Marketplace");
                assert_eq!(owners[0].name, "shop");
                assert_eq!(owners[0].controller, Some(true));
            }
            let selector = selector_labels(&marketplace, component);
            let spec = deployment.spec.as_ref().unwrap();
            assert_eq!(spec.selector.match_labels.as_ref(), Some(&selector));
            assert_eq!(spec.selector.match_expressions, None);
            let template = spec.template.metadata.as_ref().unwrap();
            assert_eq!(
                template.labels.as_ref(),
                Some(&labels(&marketplace, component))
            );
            assert_eq!(
                template.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
                MANAGER
            );
            // Monitoring annotations are the monitoring builder's job.
            assert_eq!(template.annotations, None);
            assert_eq!(
                service.spec.as_ref().unwrap().selector.as_ref(),
                Some(&selector)
            );
            let budget_selector = budget.spec.as_ref().unwrap().selector.as_ref().unwrap();
            assert_eq!(budget_selector.match_labels.as_ref(), Some(&selector));
        }
    }

    #[test]
    fn each_service_is_a_cluster_ip_on_its_named_grpc_port_and_its_metrics_port() {
        let marketplace = default_marketplace();

        for (component, port) in [
            (Component::Account, 8081),
            (Component::Catalog, 8082),
            (Component::Order, 8083),
        ] {
            let spec = service(&marketplace, component).unwrap().spec.unwrap();
            assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
            let ports = spec.ports.unwrap();
            assert_eq!(ports.len(), 2);
            assert_eq!(ports[0].name.as_deref(), Some("grpc"));
            assert_eq!(ports[0].port, port);
            assert_eq!(
                ports[0].target_port,
                Some(IntOrString::String("grpc".to_owned()))
            );
            // The port the ServiceMonitor scrapes.
            assert_eq!(ports[1].name.as_deref(), Some("metrics"));
            assert_eq!(ports[1].port, 9090);
            assert_eq!(
                ports[1].target_port,
                Some(IntOrString::String("metrics".to_owned()))
            );
            assert_eq!(
                grpc_url(&marketplace, component).unwrap(),
                format!("http://shop-{component}.team-a.svc:{port}")
            );
        }
    }

    #[test]
    fn a_disabled_service_gets_no_deployment_service_or_budget() {
        for component in WORKLOADS {
            let mut marketplace = disabled(component);
            marketplace.spec.gateway.replicas = 3;
            marketplace.spec.account.replicas = 3;
            marketplace.spec.catalog.replicas = 3;
            marketplace.spec.order.replicas = 3;

            assert!(deployment(&marketplace, component).is_none());
            assert!(service(&marketplace, component).is_none());
            assert!(pod_disruption_budget(&marketplace, component).is_none());
            // The others are untouched.
            for other in WORKLOADS.into_iter().filter(|&other| other != component) {
                assert!(deployment(&marketplace, other).is_some());
                assert!(service(&marketplace, other).is_some());
                assert!(pod_disruption_budget(&marketplace, other).is_some());
            }
        }
    }

    #[test]
    fn a_disabled_service_is_still_called_at_its_url_by_order() {
        // Order's wiring does not depend on whether account runs: the
        // Service name is stable, so enabling account again needs no
        // change to order's pods.
        let marketplace = disabled(Component::Account);
        let deployment = deployment(&marketplace, Component::Order).unwrap();

        assert_eq!(
            literal(container(&deployment), env::ORDER_ACCOUNT_URL),
            "http://shop-account.team-a.svc:8081"
        );
    }

    #[test]
    fn the_stores_are_not_built_here() {
        let marketplace = with_replicas(3);

        for component in [
            Component::AccountDatabase,
            Component::OrderDatabase,
            Component::Search,
        ] {
            assert!(deployment(&marketplace, component).is_none());
            assert!(service(&marketplace, component).is_none());
            assert!(pod_disruption_budget(&marketplace, component).is_none());
            assert!(grpc_url(&marketplace, component).is_none());
        }
        // The gateway serves HTTP, not gRPC.
        assert!(grpc_url(&marketplace, Component::Gateway).is_none());
    }

    #[test]
    fn the_gateway_listens_on_8080_and_calls_each_service_at_its_grpc_url() {
        let deployment = deployment(&default_marketplace(), Component::Gateway).unwrap();
        let container = container(&deployment);

        assert_eq!(
            env_names(container),
            [
                env::GATEWAY_LISTEN_ADDR,
                env::GATEWAY_ACCOUNT_URL,
                env::GATEWAY_CATALOG_URL,
                env::GATEWAY_ORDER_URL,
                env::GATEWAY_DRAIN_PERIOD,
            ]
        );
        assert_eq!(literal(container, env::GATEWAY_LISTEN_ADDR), "0.0.0.0:8080");
        assert_eq!(
            literal(container, env::GATEWAY_ACCOUNT_URL),
            "http://shop-account.team-a.svc:8081"
        );
        assert_eq!(
            literal(container, env::GATEWAY_CATALOG_URL),
            "http://shop-catalog.team-a.svc:8082"
        );
        assert_eq!(
            literal(container, env::GATEWAY_ORDER_URL),
            "http://shop-order.team-a.svc:8083"
        );
    }

    #[test]
    fn the_gateway_drains_for_longer_than_endpoints_take_to_update() {
        let deployment = deployment(&default_marketplace(), Component::Gateway).unwrap();

        assert_eq!(
            literal(container(&deployment), env::GATEWAY_DRAIN_PERIOD),
            "5s"
        );
    }

    #[test]
    fn the_gateways_cors_origins_are_passed_joined_by_commas() {
        let mut marketplace = default_marketplace();
        marketplace.spec.gateway.cors_origins = vec![
            "https://shop.example.com".to_owned(),
            "http://localhost:3000".to_owned(),
        ];

        let deployment = deployment(&marketplace, Component::Gateway).unwrap();

        assert_eq!(
            literal(container(&deployment), env::GATEWAY_CORS_ORIGINS),
            "https://shop.example.com,http://localhost:3000"
        );
    }

    #[test]
    fn the_gateway_gets_no_cors_variable_when_the_spec_allows_no_origin() {
        let deployment = deployment(&default_marketplace(), Component::Gateway).unwrap();

        assert!(!env_names(container(&deployment)).contains(&env::GATEWAY_CORS_ORIGINS));
    }

    #[test]
    fn the_gateways_http_port_is_named_and_probed_over_http() {
        let deployment = deployment(&default_marketplace(), Component::Gateway).unwrap();
        let container = container(&deployment);

        let ports = container.ports.as_ref().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        assert_eq!(ports[0].container_port, 8080);
        assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
        for (probe, path) in [
            (&container.startup_probe, "/healthz"),
            (&container.liveness_probe, "/healthz"),
            (&container.readiness_probe, "/readyz"),
        ] {
            let probe = probe.as_ref().unwrap();
            let http = probe.http_get.as_ref().unwrap();
            assert_eq!(http.path.as_deref(), Some(path));
            assert_eq!(http.port, IntOrString::String("http".to_owned()));
            assert_eq!(http.scheme.as_deref(), Some("HTTP"));
            assert_eq!(http.host, None);
            assert!(probe.grpc.is_none() && probe.tcp_socket.is_none());
            assert!(probe.exec.is_none());
        }
        let startup = container.startup_probe.as_ref().unwrap();
        assert!(startup.period_seconds.unwrap() * startup.failure_threshold.unwrap() >= 120);
    }

    #[test]
    fn the_gateways_service_has_the_spec_type_and_port_forwarded_to_http() {
        for (type_, name, port) in [
            (ServiceType::ClusterIP, "ClusterIP", 8080),
            (ServiceType::NodePort, "NodePort", 8080),
            (ServiceType::LoadBalancer, "LoadBalancer", 80),
        ] {
            let mut marketplace = default_marketplace();
            marketplace.spec.gateway.service.type_ = type_;
            marketplace.spec.gateway.service.port = port;

            let spec = service(&marketplace, Component::Gateway)
                .unwrap()
                .spec
                .unwrap();

            assert_eq!(spec.type_.as_deref(), Some(name));
            assert_eq!(
                spec.selector.as_ref(),
                Some(&selector_labels(&marketplace, Component::Gateway))
            );
            let ports = spec.ports.unwrap();
            assert_eq!(ports.len(), 1);
            assert_eq!(ports[0].name.as_deref(), Some("http"));
            assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
            assert_eq!(ports[0].port, port);
            assert_eq!(
                ports[0].target_port,
                Some(IntOrString::String("http".to_owned()))
            );
            // The API server allocates node ports; the operator leaves
            // them to it.
            assert_eq!(ports[0].node_port, None);
        }
    }

    #[test]
    fn the_gateways_service_port_leaves_its_container_port_at_8080() {
        let mut marketplace = default_marketplace();
        marketplace.spec.gateway.service.port = 80;

        let deployment = deployment(&marketplace, Component::Gateway).unwrap();
        let container = container(&deployment);

        assert_eq!(container.ports.as_ref().unwrap()[0].container_port, 8080);
        assert_eq!(literal(container, env::GATEWAY_LISTEN_ADDR), "0.0.0.0:8080");
    }

    #[test]
    fn a_budget_is_made_only_above_one_replica_and_allows_one_pod_down() {
        for replicas in [0, 1] {
            let marketplace = with_replicas(replicas);
            for component in WORKLOADS {
                assert!(
                    pod_disruption_budget(&marketplace, component).is_none(),
                    "{component} with {replicas} replicas got a budget"
                );
            }
        }
        for replicas in [2, 7] {
            let marketplace = with_replicas(replicas);
            for component in WORKLOADS {
                let spec = pod_disruption_budget(&marketplace, component)
                    .unwrap()
                    .spec
                    .unwrap();
                assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
                assert_eq!(spec.min_available, None);
            }
        }
    }

    #[test]
    fn building_twice_gives_the_same_objects() {
        let marketplace = with_replicas(2);

        for component in WORKLOADS {
            assert_eq!(
                deployment(&marketplace, component),
                deployment(&marketplace, component)
            );
            assert_eq!(
                service(&marketplace, component),
                service(&marketplace, component)
            );
            assert_eq!(
                pod_disruption_budget(&marketplace, component),
                pod_disruption_budget(&marketplace, component)
            );
        }
    }
}
