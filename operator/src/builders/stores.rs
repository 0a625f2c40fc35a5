//! The managed stores: a PostgreSQL StatefulSet (with its credentials
//! Secret and headless Service) per database, the Elasticsearch StatefulSet
//! of the catalog with its Services, and the NetworkPolicies that keep every
//! store reachable only from its service.
//!
//! Every builder returns `None` when the store is external or the component
//! that uses it is disabled, so the reconciler deletes what is no longer
//! wanted.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction,
    Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{Component, child_meta, child_name, labels, owner_reference, selector_labels};
use crate::crd::{ManagedDatabase, ManagedSearch, Marketplace, MonitoringMode};

/// The PostgreSQL role every managed database is owned by.
pub const DATABASE_USER: &str = "marketplace";

/// The port of every managed PostgreSQL.
pub const POSTGRES_PORT: i32 = 5432;

/// The HTTP port of the managed Elasticsearch.
pub const SEARCH_HTTP_PORT: i32 = 9200;

/// The transport port the managed Elasticsearch nodes talk to each other on.
pub const SEARCH_TRANSPORT_PORT: i32 = 9300;

/// The port the gateway's pods listen on (GraphQL, health and metrics).
pub const GATEWAY_PORT: i32 = marketplace_config::ports::GATEWAY as i32;

// The gRPC ports of the services, in the type Kubernetes uses for ports.
const ACCOUNT_PORT: i32 = marketplace_config::ports::ACCOUNT as i32;
const CATALOG_PORT: i32 = marketplace_config::ports::CATALOG as i32;
const ORDER_PORT: i32 = marketplace_config::ports::ORDER as i32;

/// The uid and gid of the `postgres` user in the official PostgreSQL image.
const POSTGRES_UID: i64 = 999;

/// The uid and gid of the `elasticsearch` user in the official image.
const ELASTICSEARCH_UID: i64 = 1000;

/// The Secret keys of a managed database's credentials.
pub mod secret_keys {
    pub const USERNAME: &str = "username";
    pub const PASSWORD: &str = "password";
    pub const DATABASE: &str = "database";
    pub const URL: &str = "url";
}

/// Where the database volume is mounted. PostgreSQL's data lives one level
/// below (`PGDATA`), because `initdb` refuses a non-empty directory and
/// some volumes come with a `lost+found`.
const POSTGRES_MOUNT: &str = "/var/lib/postgresql/data";
const POSTGRES_PGDATA: &str = "/var/lib/postgresql/data/pgdata";

const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// The name of the volume claim template of every store.
const DATA_VOLUME: &str = "data";

/// The managed database of a component and the database's name, when the
/// component runs and its database is managed.
fn managed_database(
    marketplace: &Marketplace,
    component: Component,
) -> Option<(&ManagedDatabase, &'static str)> {
    let (service, database) = match component {
        Component::AccountDatabase => (&marketplace.spec.account, "account"),
        Component::OrderDatabase => (&marketplace.spec.order, "order"),
        _ => return None,
    };
    if !service.enabled {
        return None;
    }
    service
        .database
        .managed
        .as_ref()
        .map(|managed| (managed, database))
}

/// The managed Elasticsearch, when the catalog runs and its search store is
/// managed.
fn managed_search(marketplace: &Marketplace) -> Option<&ManagedSearch> {
    let catalog = &marketplace.spec.catalog;
    if !catalog.enabled {
        return None;
    }
    catalog.search.managed.as_ref()
}

fn namespace(marketplace: &Marketplace) -> String {
    marketplace
        .namespace()
        .unwrap_or_else(|| "default".to_owned())
}

/// The URL of a managed database, as the contract with the services says:
/// `postgres://marketplace:<password>@<mp>-<db>.<namespace>.svc:5432/<database>`.
/// The password is percent-encoded, so any generated password is safe in it.
pub fn database_url(marketplace: &Marketplace, component: Component, password: &str) -> String {
    let database = match component {
        Component::OrderDatabase => "order",
        _ => "account",
    };
    format!(
        "postgres://{DATABASE_USER}:{}@{}.{}.svc:{POSTGRES_PORT}/{database}",
        percent_encode_userinfo(password),
        child_name(marketplace, component),
        namespace(marketplace),
    )
}

/// The URL of the managed Elasticsearch: `http://<mp>-search.<namespace>.svc:9200`.
pub fn search_url(marketplace: &Marketplace) -> String {
    format!(
        "http://{}.{}.svc:{SEARCH_HTTP_PORT}",
        child_name(marketplace, Component::Search),
        namespace(marketplace),
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode_userinfo(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The credentials Secret of a managed database (`<mp>-account-db` or
/// `<mp>-order-db`) with the keys `username`, `password`, `database` and
/// `url`; `None` when the database is external or its service disabled.
///
/// The password is generated by the caller and passed in, so this builder
/// stays pure: the reconciler generates it once, when the Secret does not
/// exist yet, and afterwards passes the password read back from the existing
/// Secret. It never regenerates it, because the database was initialised
/// with it and PostgreSQL does not read it again.
///
/// The values are in `data` (base64) rather than `stringData`: the API
/// server folds `stringData` into `data` and never returns it, so applying
/// `stringData` would differ from what is read back on every reconcile.
///
/// The Secret lives as long as the volume its password initialised: owned
/// by the Marketplace (and collected with it) only with
/// `spec.volumes.deleteWithMarketplace`; otherwise it has no owner, so a
/// Marketplace created again under the same name finds its password with
/// the retained volume instead of generating one the database never had.
pub fn database_secret(
    marketplace: &Marketplace,
    component: Component,
    password: &str,
) -> Option<Secret> {
    let (_, database) = managed_database(marketplace, component)?;
    let data = BTreeMap::from([
        (secret_keys::USERNAME, DATABASE_USER.to_owned()),
        (secret_keys::PASSWORD, password.to_owned()),
        (secret_keys::DATABASE, database.to_owned()),
        (
            secret_keys::URL,
            database_url(marketplace, component, password),
        ),
    ])
    .into_iter()
    .map(|(key, value)| (key.to_owned(), ByteString(value.into_bytes())))
    .collect();
    let mut metadata = child_meta(marketplace, component, child_name(marketplace, component));
    if !marketplace.spec.volumes.delete_with_marketplace {
        metadata.owner_references = None;
    }
    Some(Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

/// The headless Service of a managed database (`<mp>-account-db`, port 5432
/// named `postgres`), which gives the one pod the stable DNS name the URL
/// uses; `None` when the database is external or its service disabled.
pub fn database_service(marketplace: &Marketplace, component: Component) -> Option<Service> {
    managed_database(marketplace, component)?;
    Some(Service {
        metadata: child_meta(marketplace, component, child_name(marketplace, component)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector_labels(marketplace, component)),
            ports: Some(vec![service_port("postgres", POSTGRES_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The PostgreSQL StatefulSet of a managed database: one replica of the
/// spec's image, initialised from the credentials Secret, its data on a
/// volume claim of the spec's size; `None` when the database is external or
/// its service disabled.
///
/// Resources (the spec has none for stores): requests of 100m CPU and
/// 256Mi memory, enough for a marketplace's small databases, and a 512Mi
/// memory limit; no CPU limit, so a busy database is throttled only by
/// contention.
///
/// The volume claims come from the claim template, so the StatefulSet
/// controller makes them, and the retention policy is always `Retain`:
/// deleting the StatefulSet (the Marketplace deleted, or the database made
/// external or its service disabled) never deletes the data. With
/// `spec.volumes.deleteWithMarketplace` the reconciler makes the
/// Marketplace an owner of the claims ([`claim_owner_patch`]), so garbage
/// collection takes them with the Marketplace, and only then: also the
/// claims of a StatefulSet removed earlier.
pub fn database_statefulset(
    marketplace: &Marketplace,
    component: Component,
) -> Option<StatefulSet> {
    let (managed, database) = managed_database(marketplace, component)?;
    let name = child_name(marketplace, component);
    // `-h 127.0.0.1` probes the TCP listener: during initialisation the image
    // runs a temporary server on the Unix socket only, which must not count
    // as ready.
    let pg_isready = || ExecAction {
        command: Some(
            [
                "pg_isready",
                "-U",
                DATABASE_USER,
                "-d",
                database,
                "-h",
                "127.0.0.1",
                "-p",
                "5432",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
    };
    let password = EnvVar {
        name: "POSTGRES_PASSWORD".to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.clone(),
                key: secret_keys::PASSWORD.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let container = Container {
        name: "postgres".to_owned(),
        image: Some(managed.image.clone()),
        env: Some(vec![
            env("POSTGRES_USER", DATABASE_USER),
            env("POSTGRES_DB", database),
            password,
            env("PGDATA", POSTGRES_PGDATA),
        ]),
        ports: Some(vec![container_port("postgres", POSTGRES_PORT)]),
        startup_probe: Some(Probe {
            exec: Some(pg_isready()),
            period_seconds: Some(5),
            timeout_seconds: Some(5),
            // Five minutes for initdb and crash recovery on a slow volume.
            failure_threshold: Some(60),
            ..Probe::default()
        }),
        readiness_probe: Some(Probe {
            exec: Some(pg_isready()),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        liveness_probe: Some(Probe {
            exec: Some(pg_isready()),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        resources: Some(resources("100m", "256Mi", "512Mi")),
        security_context: Some(container_security_context(true)),
        volume_mounts: Some(vec![
            volume_mount(DATA_VOLUME, POSTGRES_MOUNT),
            // The root filesystem is read-only; PostgreSQL writes its socket
            // and lock files here.
            volume_mount("run", "/var/run/postgresql"),
            volume_mount("tmp", "/tmp"),
        ]),
        ..Container::default()
    };
    Some(StatefulSet {
        metadata: child_meta(marketplace, component, name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name),
            selector: LabelSelector {
                match_labels: Some(selector_labels(marketplace, component)),
                ..LabelSelector::default()
            },
            template: pod_template(
                marketplace,
                component,
                PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![empty_dir("run"), empty_dir("tmp")]),
                    security_context: Some(pod_security_context(POSTGRES_UID)),
                    // A clean shutdown checkpoints; a killed one replays WAL.
                    termination_grace_period_seconds: Some(60),
                    ..PodSpec::default()
                },
            ),
            volume_claim_templates: Some(vec![volume_claim(
                marketplace,
                component,
                &managed.storage,
                managed.storage_class_name.as_deref(),
            )]),
            persistent_volume_claim_retention_policy: Some(retention_policy()),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

/// The name of the headless Service the Elasticsearch nodes discover each
/// other through: `<mp>-search-headless`.
pub fn search_headless_service_name(marketplace: &Marketplace) -> String {
    format!("{}-headless", child_name(marketplace, Component::Search))
}

/// The Service the catalog reaches Elasticsearch through (`<mp>-search`,
/// port 9200 named `http`); `None` when the search store is external or the
/// catalog disabled.
pub fn search_service(marketplace: &Marketplace) -> Option<Service> {
    managed_search(marketplace)?;
    Some(Service {
        metadata: child_meta(
            marketplace,
            Component::Search,
            child_name(marketplace, Component::Search),
        ),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(marketplace, Component::Search)),
            ports: Some(vec![service_port("http", SEARCH_HTTP_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The headless Service of the Elasticsearch nodes (`<mp>-search-headless`,
/// ports 9200 `http` and 9300 `transport`), the StatefulSet's governing
/// Service and the discovery seed. It publishes nodes that are not ready,
/// because a node becomes ready only after it has found the others.
pub fn search_headless_service(marketplace: &Marketplace) -> Option<Service> {
    managed_search(marketplace)?;
    Some(Service {
        metadata: child_meta(
            marketplace,
            Component::Search,
            search_headless_service_name(marketplace),
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(marketplace, Component::Search)),
            ports: Some(vec![
                service_port("http", SEARCH_HTTP_PORT),
                service_port("transport", SEARCH_TRANSPORT_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The Elasticsearch StatefulSet of the catalog (`<mp>-search`); `None` when
/// the search store is external or the catalog disabled.
///
/// - One replica runs as a single node (`discovery.type=single-node`); more
///   discover each other through the headless Service and bootstrap with
///   every pod as an initial master.
/// - `node.store.allow_mmap=false` makes the node work without raising the
///   host's `vm.max_map_count`, so no privileged init container is needed
///   (on kind, for instance), at some cost in search speed.
/// - Security (TLS, users) is disabled: only the catalog may reach the nodes,
///   which the NetworkPolicies of [`network_policies`] enforce.
/// - Resources: the heap is half the memory, so memory is requested and
///   limited at twice the heap (1Gi for the default 512m); 250m CPU
///   requested, no CPU limit.
pub fn search_statefulset(marketplace: &Marketplace) -> Option<StatefulSet> {
    let managed = managed_search(marketplace)?;
    let name = child_name(marketplace, Component::Search);
    let mut environment = vec![
        env("cluster.name", &marketplace.name_any()),
        EnvVar {
            name: "node.name".to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        env(
            "ES_JAVA_OPTS",
            &format!("-Xms{heap} -Xmx{heap}", heap = managed.heap),
        ),
        env("node.store.allow_mmap", "false"),
        env("xpack.security.enabled", "false"),
    ];
    if managed.replicas <= 1 {
        environment.push(env("discovery.type", "single-node"));
    } else {
        let masters: Vec<String> = (0..managed.replicas)
            .map(|ordinal| format!("{name}-{ordinal}"))
            .collect();
        environment.push(env(
            "discovery.seed_hosts",
            &search_headless_service_name(marketplace),
        ));
        environment.push(env("cluster.initial_master_nodes", &masters.join(",")));
    }
    let memory = heap_memory(&managed.heap);
    let container = Container {
        name: "elasticsearch".to_owned(),
        image: Some(managed.image.clone()),
        env: Some(environment),
        ports: Some(vec![
            container_port("http", SEARCH_HTTP_PORT),
            container_port("transport", SEARCH_TRANSPORT_PORT),
        ]),
        startup_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(SEARCH_HTTP_PORT),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            // Ten minutes: a JVM start with index recovery on a slow volume.
            failure_threshold: Some(60),
            ..Probe::default()
        }),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/_cluster/health?local=true".to_owned()),
                port: IntOrString::Int(SEARCH_HTTP_PORT),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        // Liveness only asks whether the process listens: a red cluster is
        // not cured by restarting a node.
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(SEARCH_HTTP_PORT),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(20),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        resources: Some(match &memory {
            Some(memory) => resources("250m", &memory.0, &memory.0),
            None => ResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "cpu".to_owned(),
                    Quantity("250m".to_owned()),
                )])),
                ..ResourceRequirements::default()
            },
        }),
        // Elasticsearch writes its keystore, logs and temporary files under
        // its home directory, so the root filesystem stays writable.
        security_context: Some(container_security_context(false)),
        volume_mounts: Some(vec![volume_mount(
            DATA_VOLUME,
            "/usr/share/elasticsearch/data",
        )]),
        ..Container::default()
    };
    Some(StatefulSet {
        metadata: child_meta(marketplace, Component::Search, name),
        spec: Some(StatefulSetSpec {
            replicas: Some(managed.replicas),
            service_name: Some(search_headless_service_name(marketplace)),
            // All nodes start together: each waits for the others to elect
            // a master before it becomes ready.
            pod_management_policy: Some("Parallel".to_owned()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(marketplace, Component::Search)),
                ..LabelSelector::default()
            },
            template: pod_template(
                marketplace,
                Component::Search,
                PodSpec {
                    containers: vec![container],
                    security_context: Some(pod_security_context(ELASTICSEARCH_UID)),
                    termination_grace_period_seconds: Some(120),
                    ..PodSpec::default()
                },
            ),
            volume_claim_templates: Some(vec![volume_claim(
                marketplace,
                Component::Search,
                &managed.storage,
                managed.storage_class_name.as_deref(),
            )]),
            persistent_volume_claim_retention_policy: Some(retention_policy()),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

/// The memory of an Elasticsearch node: twice its heap (`512m` -> `1024Mi`,
/// `2g` -> `4Gi`); `None` for a heap the schema would refuse.
fn heap_memory(heap: &str) -> Option<Quantity> {
    let (digits, unit) = heap.split_at(heap.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    let unit = match unit {
        "m" => "Mi",
        "g" => "Gi",
        _ => return None,
    };
    Some(Quantity(format!("{}{unit}", amount.checked_mul(2)?)))
}

/// The NetworkPolicies of a marketplace: ingress to every one of its pods is
/// denied unless a policy below allows it.
///
/// - the gateway: from anywhere, on its HTTP port;
/// - account: from the gateway and order; catalog: from the gateway and
///   order; order: from the gateway;
/// - each managed database: only from its service; the managed
///   Elasticsearch: HTTP only from the catalog, transport from its own nodes.
///
/// Policies are made for the components that run (and the stores that are
/// managed). The gateway's rule also lets Prometheus scrape its `/metrics`
/// on that port; while monitoring is not `Disabled`, the gRPC services also
/// admit any pod of the cluster (Prometheus runs in a namespace of its own)
/// on their metrics port, and only on that one: never their gRPC port from
/// outside their callers.
pub fn network_policies(marketplace: &Marketplace) -> Vec<NetworkPolicy> {
    let spec = &marketplace.spec;
    let mut policies = vec![default_deny(marketplace)];
    if spec.gateway.enabled {
        policies.push(allow(
            marketplace,
            Component::Gateway,
            vec![NetworkPolicyIngressRule {
                from: None,
                ports: Some(vec![policy_port(GATEWAY_PORT)]),
            }],
        ));
    }
    for (enabled, component, callers, port) in [
        (
            spec.account.enabled,
            Component::Account,
            &[Component::Gateway, Component::Order][..],
            ACCOUNT_PORT,
        ),
        (
            spec.catalog.enabled,
            Component::Catalog,
            &[Component::Gateway, Component::Order][..],
            CATALOG_PORT,
        ),
        (
            spec.order.enabled,
            Component::Order,
            &[Component::Gateway][..],
            ORDER_PORT,
        ),
    ] {
        if enabled {
            let mut rules = vec![from(marketplace, callers, port)];
            rules.extend(scrape(marketplace, component));
            policies.push(allow(marketplace, component, rules));
        }
    }
    for (database, service) in [
        (Component::AccountDatabase, Component::Account),
        (Component::OrderDatabase, Component::Order),
    ] {
        if managed_database(marketplace, database).is_some() {
            policies.push(allow(
                marketplace,
                database,
                vec![from(marketplace, &[service], POSTGRES_PORT)],
            ));
        }
    }
    if managed_search(marketplace).is_some() {
        policies.push(allow(
            marketplace,
            Component::Search,
            vec![
                from(marketplace, &[Component::Catalog], SEARCH_HTTP_PORT),
                from(marketplace, &[Component::Search], SEARCH_TRANSPORT_PORT),
            ],
        ));
    }
    policies
}

/// The policy that selects every pod of the marketplace and allows nothing,
/// so only what the per-component policies allow gets in.
fn default_deny(marketplace: &Marketplace) -> NetworkPolicy {
    // It belongs to no one component, so it carries every label but that.
    let mut instance_labels = labels(marketplace, Component::Gateway);
    instance_labels.remove(COMPONENT_LABEL);
    let mut pod_labels = selector_labels(marketplace, Component::Gateway);
    pod_labels.remove(COMPONENT_LABEL);
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(format!("{}-default-deny", marketplace.name_any())),
            namespace: marketplace.namespace(),
            labels: Some(instance_labels),
            owner_references: owner_reference(marketplace).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(pod_labels),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: None,
            egress: None,
        }),
    }
}

fn allow(
    marketplace: &Marketplace,
    component: Component,
    ingress: Vec<NetworkPolicyIngressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: child_meta(marketplace, component, child_name(marketplace, component)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(marketplace, component)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(ingress),
            egress: None,
        }),
    }
}

/// Ingress on one port from the pods of some components of the same
/// marketplace (a peer without a namespace selector is in the policy's
/// namespace).
fn from(marketplace: &Marketplace, callers: &[Component], port: i32) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: Some(
            callers
                .iter()
                .map(|caller| NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(selector_labels(marketplace, *caller)),
                        ..LabelSelector::default()
                    }),
                    ..NetworkPolicyPeer::default()
                })
                .collect(),
        ),
        ports: Some(vec![policy_port(port)]),
    }
}

/// Ingress on a gRPC service's metrics port from any pod of the cluster,
/// unless monitoring is disabled.
fn scrape(marketplace: &Marketplace, component: Component) -> Option<NetworkPolicyIngressRule> {
    if marketplace.spec.monitoring.mode == MonitoringMode::Disabled {
        return None;
    }
    let (_, port) = super::monitoring::metrics_port(component)?;
    Some(NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            // An empty namespace selector: every namespace, no pods from
            // outside the cluster.
            namespace_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![policy_port(i32::from(port))]),
    })
}

fn policy_port(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some("TCP".to_owned()),
        port: Some(IntOrString::Int(port)),
        end_port: None,
    }
}

/// Claims are always kept when the StatefulSet goes (with the Marketplace,
/// or when its component is disabled or its store made external); with
/// `spec.volumes.deleteWithMarketplace` the Marketplace owns them instead
/// ([`claim_owner_patch`]). Scaling down keeps them too, so scaling up
/// again finds the data.
fn retention_policy() -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some("Retain".to_owned()),
        when_scaled: Some("Retain".to_owned()),
    }
}

/// The components whose StatefulSets have volume claims.
const STORES: [Component; 3] = [
    Component::AccountDatabase,
    Component::OrderDatabase,
    Component::Search,
];

/// Whether a volume claim is one of `marketplace`'s: in its namespace,
/// labelled as made from one of its claim templates.
pub fn is_claim_of(marketplace: &Marketplace, claim: &ObjectMeta) -> bool {
    let labels = claim.labels.as_ref();
    let label = |key: &str| {
        labels
            .and_then(|labels| labels.get(key))
            .map(String::as_str)
    };
    claim.namespace == marketplace.namespace()
        && label("app.kubernetes.io/managed-by") == Some(super::MANAGER)
        && label("app.kubernetes.io/instance") == Some(marketplace.name_any().as_str())
        && STORES
            .iter()
            .any(|store| label("app.kubernetes.io/component") == Some(store.as_str()))
}

/// The strategic-merge patch that makes one of `marketplace`'s volume
/// claims owned by it as `spec.volumes.deleteWithMarketplace` says, or
/// `None` when the claim already is. The owner reference is not a
/// controller reference (the StatefulSet controller manages the claim) and
/// does not block the Marketplace's deletion; the patch adds or removes
/// only this Marketplace's reference (owner references merge by uid).
pub fn claim_owner_patch(
    marketplace: &Marketplace,
    claim: &ObjectMeta,
) -> Option<serde_json::Value> {
    let uid = marketplace.metadata.uid.as_deref()?;
    let owned = claim
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == uid);
    let wanted = marketplace.spec.volumes.delete_with_marketplace;
    if owned == wanted {
        return None;
    }
    let reference = if wanted {
        let mut owner = owner_reference(marketplace)?;
        owner.controller = Some(false);
        owner.block_owner_deletion = Some(false);
        serde_json::to_value(owner).ok()?
    } else {
        serde_json::json!({ "$patch": "delete", "uid": uid })
    };
    Some(serde_json::json!({ "metadata": { "ownerReferences": [reference] } }))
}

/// The `data` claim template. Its metadata carries the labels (so the
/// claims can be found by instance) but no owner reference: the
/// StatefulSet controller owns the claims, as the retention policy says.
fn volume_claim(
    marketplace: &Marketplace,
    component: Component,
    storage: &Quantity,
    storage_class_name: Option<&str>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(labels(marketplace, component)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage_class_name.map(str::to_owned),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), storage.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn pod_template(marketplace: &Marketplace, component: Component, spec: PodSpec) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(marketplace, component)),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            // The stores call no Kubernetes API.
            automount_service_account_token: Some(false),
            ..spec
        }),
    }
}

/// Non-root as the image's own user, with the volume group-owned by it so
/// the user can write to a fresh volume.
fn pod_security_context(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

fn container_security_context(read_only_root_filesystem: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(read_only_root_filesystem),
        run_as_non_root: Some(true),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

fn resources(cpu: &str, memory_request: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory_request.to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(memory_limit.to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

fn volume_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::builders::fixtures;
    use crate::crd::{
        Database, ExternalDatabase, ExternalSearch, MarketplaceSpec, Search, SecretKeyRef,
    };

    fn default_marketplace() -> Marketplace {
        fixtures::marketplace(MarketplaceSpec::default())
    }

    fn external_database() -> Database {
        Database {
            managed: None,
            external: Some(ExternalDatabase {
                secret_ref: SecretKeyRef {
                    name: "orders".to_owned(),
                    key: "url".to_owned(),
                },
            }),
        }
    }

    fn managed_search_with(replicas: i32, heap: &str) -> Marketplace {
        let mut spec = MarketplaceSpec::default();
        let managed = spec.catalog.search.managed.as_mut().unwrap();
        managed.replicas = replicas;
        managed.heap = heap.to_owned();
        fixtures::marketplace(spec)
    }

    fn secret_value(secret: &Secret, key: &str) -> String {
        String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    fn pod_spec(statefulset: &StatefulSet) -> &PodSpec {
        statefulset
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
    }

    fn container(statefulset: &StatefulSet) -> &Container {
        &pod_spec(statefulset).containers[0]
    }

    fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
        container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|var| var.name == name)
            .and_then(|var| var.value.as_deref())
    }

    fn claim_template(statefulset: &StatefulSet) -> &PersistentVolumeClaim {
        &statefulset
            .spec
            .as_ref()
            .unwrap()
            .volume_claim_templates
            .as_ref()
            .unwrap()[0]
    }

    fn storage_request(claim: &PersistentVolumeClaim) -> &Quantity {
        &claim
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
    }

    fn ports(service: &Service) -> Vec<(String, i32)> {
        service
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|port| (port.name.clone().unwrap(), port.port))
            .collect()
    }

    fn assert_restricted(statefulset: &StatefulSet, uid: i64) {
        let pod = pod_spec(statefulset).security_context.as_ref().unwrap();
        assert_eq!(pod.run_as_non_root, Some(true));
        assert_eq!(pod.run_as_user, Some(uid));
        assert_eq!(pod.fs_group, Some(uid));
        assert_eq!(
            pod.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let container = container(statefulset).security_context.as_ref().unwrap();
        assert_eq!(container.allow_privilege_escalation, Some(false));
        assert_eq!(container.run_as_non_root, Some(true));
        assert_eq!(
            container.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            container.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
    }

    #[test]
    fn a_managed_database_gets_a_secret_with_the_contracted_keys_and_url() {
        let marketplace = default_marketplace();

        let secret = database_secret(&marketplace, Component::AccountDatabase, "s3cret").unwrap();

        assert_eq!(secret.metadata.name.as_deref(), Some("shop-account-db"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(secret.string_data, None);
        assert_eq!(secret_value(&secret, "username"), "marketplace");
        assert_eq!(secret_value(&secret, "password"), "s3cret");
        assert_eq!(secret_value(&secret, "database"), "account");
        assert_eq!(
            secret_value(&secret, "url"),
            "postgres://marketplace:s3cret@shop-account-db.team-a.svc:5432/account"
        );
    }

    #[test]
    fn a_database_secret_outlives_the_marketplace_as_long_as_its_volume_does() {
        let mut marketplace = default_marketplace();

        let kept = database_secret(&marketplace, Component::AccountDatabase, "pw").unwrap();
        marketplace.spec.volumes.delete_with_marketplace = true;
        let collected = database_secret(&marketplace, Component::OrderDatabase, "pw").unwrap();

        assert_eq!(kept.metadata.owner_references, None);
        let owners = collected.metadata.owner_references.unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "Marketplace");
        assert_eq!(owners[0].controller, Some(true));
    }

    #[test]
    fn the_order_database_secret_names_the_order_database() {
        let marketplace = default_marketplace();

        let secret = database_secret(&marketplace, Component::OrderDatabase, "pw").unwrap();

        assert_eq!(secret.metadata.name.as_deref(), Some("shop-order-db"));
        assert_eq!(secret_value(&secret, "database"), "order");
        assert_eq!(
            secret_value(&secret, "url"),
            "postgres://marketplace:pw@shop-order-db.team-a.svc:5432/order"
        );
    }

    #[test]
    fn a_password_with_reserved_characters_is_percent_encoded_in_the_url_only() {
        let marketplace = default_marketplace();

        let secret = database_secret(&marketplace, Component::AccountDatabase, "a@b/c:d%").unwrap();

        assert_eq!(secret_value(&secret, "password"), "a@b/c:d%");
        assert_eq!(
            secret_value(&secret, "url"),
            "postgres://marketplace:a%40b%2Fc%3Ad%25@shop-account-db.team-a.svc:5432/account"
        );
    }

    #[test]
    fn an_external_database_gets_no_secret_service_or_statefulset() {
        let marketplace = fixtures::marketplace(MarketplaceSpec {
            order: crate::crd::DatabaseComponent {
                database: external_database(),
                ..Default::default()
            },
            ..MarketplaceSpec::default()
        });

        assert_eq!(
            database_secret(&marketplace, Component::OrderDatabase, "pw"),
            None
        );
        assert_eq!(
            database_service(&marketplace, Component::OrderDatabase),
            None
        );
        assert_eq!(
            database_statefulset(&marketplace, Component::OrderDatabase),
            None
        );
        assert!(database_statefulset(&marketplace, Component::AccountDatabase).is_some());
    }

    #[test]
    fn a_disabled_service_gets_no_database() {
        let mut spec = MarketplaceSpec::default();
        spec.account.enabled = false;
        let marketplace = fixtures::marketplace(spec);

        assert_eq!(
            database_secret(&marketplace, Component::AccountDatabase, "pw"),
            None
        );
        assert_eq!(
            database_service(&marketplace, Component::AccountDatabase),
            None
        );
        assert_eq!(
            database_statefulset(&marketplace, Component::AccountDatabase),
            None
        );
        assert!(database_statefulset(&marketplace, Component::OrderDatabase).is_some());
    }

    #[test]
    fn only_database_components_have_databases() {
        let marketplace = default_marketplace();

        for component in [
            Component::Gateway,
            Component::Account,
            Component::Catalog,
            Component::Order,
            Component::Search,
        ] {
            assert_eq!(database_secret(&marketplace, component, "pw"), None);
            assert_eq!(database_statefulset(&marketplace, component), None);
        }
    }

    #[test]
    fn the_database_service_is_headless_on_port_5432() {
        let marketplace = default_marketplace();

        let service = database_service(&marketplace, Component::AccountDatabase).unwrap();

        assert_eq!(service.metadata.name.as_deref(), Some("shop-account-db"));
        let spec = service.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(
            spec.selector.as_ref().unwrap(),
            &selector_labels(&marketplace, Component::AccountDatabase)
        );
        assert_eq!(ports(&service), [("postgres".to_owned(), 5432)]);
    }

    #[test]
    fn the_database_runs_one_postgres_from_the_spec_image_with_credentials_from_the_secret() {
        let mut spec = MarketplaceSpec::default();
        spec.order.database.managed.as_mut().unwrap().image = "postgres:16".to_owned();
        let marketplace = fixtures::marketplace(spec);

        let statefulset = database_statefulset(&marketplace, Component::OrderDatabase).unwrap();

        assert_eq!(statefulset.metadata.name.as_deref(), Some("shop-order-db"));
        let spec = statefulset.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.service_name.as_deref(), Some("shop-order-db"));
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap(),
            &selector_labels(&marketplace, Component::OrderDatabase)
        );
        let template_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref();
        assert_eq!(
            template_labels.unwrap(),
            &labels(&marketplace, Component::OrderDatabase)
        );
        let postgres = container(&statefulset);
        assert_eq!(postgres.image.as_deref(), Some("postgres:16"));
        assert_eq!(env_value(postgres, "POSTGRES_USER"), Some("marketplace"));
        assert_eq!(env_value(postgres, "POSTGRES_DB"), Some("order"));
        assert_eq!(
            env_value(postgres, "PGDATA"),
            Some("/var/lib/postgresql/data/pgdata")
        );
        let password = postgres
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|var| var.name == "POSTGRES_PASSWORD")
            .unwrap();
        assert_eq!(password.value, None);
        let secret_ref = password
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(secret_ref.name, "shop-order-db");
        assert_eq!(secret_ref.key, "password");
        let data_mount = postgres
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|mount| mount.name == "data")
            .unwrap();
        assert_eq!(data_mount.mount_path, "/var/lib/postgresql/data");
    }

    #[test]
    fn the_database_is_probed_with_pg_isready_for_its_own_database() {
        let marketplace = default_marketplace();

        let statefulset = database_statefulset(&marketplace, Component::AccountDatabase).unwrap();

        let postgres = container(&statefulset);
        for probe in [
            &postgres.startup_probe,
            &postgres.readiness_probe,
            &postgres.liveness_probe,
        ] {
            let command = probe
                .as_ref()
                .unwrap()
                .exec
                .as_ref()
                .unwrap()
                .command
                .as_ref()
                .unwrap();
            assert_eq!(
                command[..5],
                ["pg_isready", "-U", "marketplace", "-d", "account"]
            );
        }
        let startup = postgres.startup_probe.as_ref().unwrap();
        assert!(startup.period_seconds.unwrap() * startup.failure_threshold.unwrap() >= 300);
    }

    #[test]
    fn the_database_has_default_resources_and_a_restricted_security_context() {
        let marketplace = default_marketplace();

        let statefulset = database_statefulset(&marketplace, Component::AccountDatabase).unwrap();

        assert_restricted(&statefulset, 999);
        let resources = container(&statefulset).resources.as_ref().unwrap();
        let requests = resources.requests.as_ref().unwrap();
        assert_eq!(requests["cpu"], Quantity("100m".to_owned()));
        assert_eq!(requests["memory"], Quantity("256Mi".to_owned()));
        assert_eq!(
            resources.limits.as_ref().unwrap()["memory"],
            Quantity("512Mi".to_owned())
        );
        assert_eq!(
            container(&statefulset)
                .security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
    }

    #[test]
    fn the_database_claim_template_has_the_spec_size_and_storage_class() {
        let mut spec = MarketplaceSpec::default();
        let managed = spec.account.database.managed.as_mut().unwrap();
        managed.storage = Quantity("20Gi".to_owned());
        managed.storage_class_name = Some("fast-ssd".to_owned());
        let marketplace = fixtures::marketplace(spec);

        let statefulset = database_statefulset(&marketplace, Component::AccountDatabase).unwrap();

        let claim = claim_template(&statefulset);
        assert_eq!(claim.metadata.name.as_deref(), Some("data"));
        assert_eq!(claim.metadata.owner_references, None);
        assert_eq!(storage_request(claim), &Quantity("20Gi".to_owned()));
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast-ssd"));
        assert_eq!(
            claim_spec.access_modes,
            Some(vec!["ReadWriteOnce".to_owned()])
        );
    }

    #[test]
    fn without_a_storage_class_the_claim_uses_the_cluster_default() {
        let marketplace = default_marketplace();

        let statefulset = database_statefulset(&marketplace, Component::OrderDatabase).unwrap();

        let claim = claim_template(&statefulset);
        assert_eq!(storage_request(claim), &Quantity("1Gi".to_owned()));
        assert_eq!(claim.spec.as_ref().unwrap().storage_class_name, None);
    }

    #[test]
    fn deleting_a_statefulset_never_deletes_its_volume_claims() {
        let mut spec = MarketplaceSpec::default();
        spec.volumes.delete_with_marketplace = true;
        for marketplace in [default_marketplace(), fixtures::marketplace(spec)] {
            for statefulset in [
                database_statefulset(&marketplace, Component::AccountDatabase).unwrap(),
                database_statefulset(&marketplace, Component::OrderDatabase).unwrap(),
                search_statefulset(&marketplace).unwrap(),
            ] {
                let policy = statefulset
                    .spec
                    .unwrap()
                    .persistent_volume_claim_retention_policy
                    .unwrap();
                assert_eq!(policy.when_deleted.as_deref(), Some("Retain"));
                assert_eq!(policy.when_scaled.as_deref(), Some("Retain"));
            }
        }
    }

    /// A claim as the StatefulSet controller makes it from a template.
    fn claim(marketplace: &Marketplace, component: Component) -> ObjectMeta {
        let statefulset = match component {
            Component::Search => search_statefulset(marketplace),
            _ => database_statefulset(marketplace, component),
        }
        .unwrap();
        let mut claim = claim_template(&statefulset).metadata.clone();
        claim.name = Some(format!("data-{}-0", statefulset.metadata.name.unwrap()));
        claim.namespace = marketplace.namespace();
        claim
    }

    #[test]
    fn the_claims_of_a_marketplace_are_found_by_namespace_instance_and_store() {
        let marketplace = default_marketplace();
        for store in [
            Component::AccountDatabase,
            Component::OrderDatabase,
            Component::Search,
        ] {
            assert!(is_claim_of(&marketplace, &claim(&marketplace, store)));
        }
        let own = claim(&marketplace, Component::OrderDatabase);

        let mut elsewhere = own.clone();
        elsewhere.namespace = Some("team-b".to_owned());
        let mut other_instance = own.clone();
        other_instance
            .labels
            .as_mut()
            .unwrap()
            .insert("app.kubernetes.io/instance".to_owned(), "other".to_owned());
        let mut not_managed = own.clone();
        not_managed
            .labels
            .as_mut()
            .unwrap()
            .remove("app.kubernetes.io/managed-by");
        let mut not_a_store = own;
        not_a_store
            .labels
            .as_mut()
            .unwrap()
            .insert("app.kubernetes.io/component".to_owned(), "order".to_owned());
        for claim in [elsewhere, other_instance, not_managed, not_a_store] {
            assert!(!is_claim_of(&marketplace, &claim), "{claim:?}");
        }
    }

    #[test]
    fn claims_get_the_marketplace_as_owner_only_when_it_deletes_them() {
        let kept = default_marketplace();
        let mut spec = MarketplaceSpec::default();
        spec.volumes.delete_with_marketplace = true;
        let deleted = fixtures::marketplace(spec);
        let uid = deleted.metadata.uid.clone().unwrap();
        let fresh = claim(&deleted, Component::AccountDatabase);

        // Retained: a claim nobody owns stays so.
        assert_eq!(claim_owner_patch(&kept, &fresh), None);

        // Deleted with the Marketplace: the claim gets a non-controller
        // owner reference, once.
        let patch = claim_owner_patch(&deleted, &fresh).unwrap();
        let reference = &patch["metadata"]["ownerReferences"][0];
        assert_eq!(reference["kind"], "Marketplace");
        assert_eq!(reference["name"], "shop");
        assert_eq!(reference["uid"], uid.as_str());
        assert_eq!(reference["controller"], false);
        assert_eq!(reference["blockOwnerDeletion"], false);
        let mut owned = fresh;
        owned.owner_references = Some(vec![serde_json::from_value(reference.clone()).unwrap()]);
        assert_eq!(claim_owner_patch(&deleted, &owned), None);

        // Retained again: only this Marketplace's reference is removed.
        let patch = claim_owner_patch(&kept, &owned).unwrap();
        assert_eq!(
            patch,
            serde_json::json!({ "metadata": { "ownerReferences": [
                { "$patch": "delete", "uid": uid }
            ] } })
        );
    }

    #[test]
    fn external_search_gets_no_elasticsearch() {
        let marketplace = fixtures::marketplace(MarketplaceSpec {
            catalog: crate::crd::Catalog {
                search: Search {
                    managed: None,
                    external: Some(ExternalSearch {
                        url: "http://es.search:9200".to_owned(),
                    }),
                },
                ..Default::default()
            },
            ..MarketplaceSpec::default()
        });

        assert_eq!(search_statefulset(&marketplace), None);
        assert_eq!(search_service(&marketplace), None);
        assert_eq!(search_headless_service(&marketplace), None);
    }

    #[test]
    fn a_disabled_catalog_gets_no_elasticsearch() {
        let mut spec = MarketplaceSpec::default();
        spec.catalog.enabled = false;
        let marketplace = fixtures::marketplace(spec);

        assert_eq!(search_statefulset(&marketplace), None);
        assert_eq!(search_service(&marketplace), None);
        assert_eq!(search_headless_service(&marketplace), None);
    }

    #[test]
    fn the_search_services_expose_http_and_the_headless_one_transport_too() {
        let marketplace = default_marketplace();

        let service = search_service(&marketplace).unwrap();
        let headless = search_headless_service(&marketplace).unwrap();

        assert_eq!(service.metadata.name.as_deref(), Some("shop-search"));
        assert_eq!(service.spec.as_ref().unwrap().cluster_ip, None);
        assert_eq!(ports(&service), [("http".to_owned(), 9200)]);
        assert_eq!(
            headless.metadata.name.as_deref(),
            Some("shop-search-headless")
        );
        let headless_spec = headless.spec.as_ref().unwrap();
        assert_eq!(headless_spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(headless_spec.publish_not_ready_addresses, Some(true));
        assert_eq!(
            ports(&headless),
            [("http".to_owned(), 9200), ("transport".to_owned(), 9300)]
        );
        for spec in [service.spec.as_ref().unwrap(), headless_spec] {
            assert_eq!(
                spec.selector.as_ref().unwrap(),
                &selector_labels(&marketplace, Component::Search)
            );
        }
        assert_eq!(
            search_url(&marketplace),
            "http://shop-search.team-a.svc:9200"
        );
    }

    #[test]
    fn one_elasticsearch_node_runs_as_a_single_node_cluster() {
        let marketplace = managed_search_with(1, "512m");

        let statefulset = search_statefulset(&marketplace).unwrap();

        assert_eq!(statefulset.metadata.name.as_deref(), Some("shop-search"));
        let spec = statefulset.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.service_name.as_deref(), Some("shop-search-headless"));
        let elasticsearch = container(&statefulset);
        assert_eq!(
            elasticsearch.image.as_deref(),
            Some(crate::crd::DEFAULT_ELASTICSEARCH_IMAGE)
        );
        assert_eq!(env_value(elasticsearch, "cluster.name"), Some("shop"));
        assert_eq!(
            env_value(elasticsearch, "discovery.type"),
            Some("single-node")
        );
        assert_eq!(env_value(elasticsearch, "discovery.seed_hosts"), None);
        assert_eq!(
            env_value(elasticsearch, "cluster.initial_master_nodes"),
            None
        );
        assert_eq!(
            env_value(elasticsearch, "node.store.allow_mmap"),
            Some("false")
        );
        assert_eq!(
            env_value(elasticsearch, "xpack.security.enabled"),
            Some("false")
        );
    }

    #[test]
    fn three_elasticsearch_nodes_discover_each_other_through_the_headless_service() {
        let marketplace = managed_search_with(3, "512m");

        let statefulset = search_statefulset(&marketplace).unwrap();

        assert_eq!(statefulset.spec.as_ref().unwrap().replicas, Some(3));
        let elasticsearch = container(&statefulset);
        assert_eq!(env_value(elasticsearch, "discovery.type"), None);
        assert_eq!(
            env_value(elasticsearch, "discovery.seed_hosts"),
            Some("shop-search-headless")
        );
        assert_eq!(
            env_value(elasticsearch, "cluster.initial_master_nodes"),
            Some("shop-search-0,shop-search-1,shop-search-2")
        );
        let node_name = elasticsearch
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|var| var.name == "node.name")
            .unwrap();
        assert_eq!(
            node_name
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.name"
        );
    }

    #[test]
    fn the_heap_sets_the_jvm_options_and_twice_the_heap_in_memory() {
        for (heap, memory) in [("512m", "1024Mi"), ("2g", "4Gi")] {
            let marketplace = managed_search_with(1, heap);

            let statefulset = search_statefulset(&marketplace).unwrap();

            let elasticsearch = container(&statefulset);
            assert_eq!(
                env_value(elasticsearch, "ES_JAVA_OPTS"),
                Some(format!("-Xms{heap} -Xmx{heap}").as_str())
            );
            let resources = elasticsearch.resources.as_ref().unwrap();
            let memory = Quantity(memory.to_owned());
            assert_eq!(resources.requests.as_ref().unwrap()["memory"], memory);
            assert_eq!(resources.limits.as_ref().unwrap()["memory"], memory);
        }
    }

    #[test]
    fn a_heap_the_schema_would_refuse_sets_no_memory() {
        assert_eq!(heap_memory("512"), None);
        assert_eq!(heap_memory("m"), None);
        assert_eq!(heap_memory(""), None);
        assert_eq!(heap_memory("1k"), None);
    }

    #[test]
    fn elasticsearch_is_probed_over_http_and_given_time_to_start() {
        let marketplace = default_marketplace();

        let statefulset = search_statefulset(&marketplace).unwrap();

        let elasticsearch = container(&statefulset);
        let readiness = elasticsearch
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            readiness.path.as_deref(),
            Some("/_cluster/health?local=true")
        );
        assert_eq!(readiness.port, IntOrString::Int(9200));
        let startup = elasticsearch.startup_probe.as_ref().unwrap();
        assert!(startup.period_seconds.unwrap() * startup.failure_threshold.unwrap() >= 300);
        assert!(elasticsearch.liveness_probe.is_some());
    }

    #[test]
    fn elasticsearch_runs_restricted_as_its_image_user_on_a_claim_of_the_spec_size() {
        let mut spec = MarketplaceSpec::default();
        let managed = spec.catalog.search.managed.as_mut().unwrap();
        managed.storage = Quantity("5Gi".to_owned());
        managed.storage_class_name = Some("standard".to_owned());
        let marketplace = fixtures::marketplace(spec);

        let statefulset = search_statefulset(&marketplace).unwrap();

        assert_restricted(&statefulset, 1000);
        assert!(
            pod_spec(&statefulset).init_containers.is_none(),
            "no privileged sysctl init container"
        );
        let claim = claim_template(&statefulset);
        assert_eq!(storage_request(claim), &Quantity("5Gi".to_owned()));
        assert_eq!(
            claim.spec.as_ref().unwrap().storage_class_name.as_deref(),
            Some("standard")
        );
    }

    fn policy<'a>(policies: &'a [NetworkPolicy], name: &str) -> Option<&'a NetworkPolicy> {
        policies
            .iter()
            .find(|policy| policy.metadata.name.as_deref() == Some(name))
    }

    /// The components each ingress rule of a policy admits, with its port.
    fn admitted(policy: &NetworkPolicy) -> Vec<(Option<Vec<String>>, i32)> {
        policy
            .spec
            .as_ref()
            .unwrap()
            .ingress
            .as_ref()
            .unwrap()
            .iter()
            .map(|rule| {
                let callers = rule.from.as_ref().map(|peers| {
                    peers
                        .iter()
                        .map(
                            |peer| match (&peer.namespace_selector, &peer.pod_selector) {
                                (Some(namespaces), None) => {
                                    assert_eq!(namespaces, &LabelSelector::default());
                                    ANY_POD.to_owned()
                                }
                                (None, Some(pods)) => {
                                    let labels = pods.match_labels.as_ref().unwrap();
                                    assert_eq!(labels["app.kubernetes.io/instance"], "shop");
                                    labels["app.kubernetes.io/component"].clone()
                                }
                                other => panic!("an unexpected peer {other:?}"),
                            },
                        )
                        .collect()
                });
                let ports = rule.ports.as_ref().unwrap();
                assert_eq!(ports.len(), 1);
                let Some(IntOrString::Int(port)) = ports[0].port else {
                    panic!("a numeric port");
                };
                (callers, port)
            })
            .collect()
    }

    /// A peer of every pod in every namespace.
    const ANY_POD: &str = "any pod of the cluster";

    fn names(components: &[&str]) -> Option<Vec<String>> {
        Some(components.iter().map(|&name| name.to_owned()).collect())
    }

    #[test]
    fn every_pod_of_the_marketplace_is_denied_ingress_by_default() {
        let marketplace = default_marketplace();

        let policies = network_policies(&marketplace);

        let deny = policy(&policies, "shop-default-deny").unwrap();
        assert_eq!(deny.metadata.namespace.as_deref(), Some("team-a"));
        assert!(deny.metadata.owner_references.is_some());
        let labels = deny.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "shop");
        assert!(!labels.contains_key("app.kubernetes.io/component"));
        let spec = deny.spec.as_ref().unwrap();
        let selector = spec.pod_selector.as_ref().unwrap().match_labels.as_ref();
        assert_eq!(
            selector.unwrap(),
            &BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_owned(),
                    "marketplace".to_owned()
                ),
                ("app.kubernetes.io/instance".to_owned(), "shop".to_owned()),
            ])
        );
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
        assert_eq!(spec.ingress, None);
    }

    #[test]
    fn each_service_is_reachable_only_from_its_callers_and_each_store_from_its_service() {
        let marketplace = default_marketplace();

        let policies = network_policies(&marketplace);

        assert_eq!(policies.len(), 8);
        let expected = [
            ("shop-gateway", vec![(None, 8080)]),
            (
                "shop-account",
                vec![
                    (names(&["gateway", "order"]), 8081),
                    (names(&[ANY_POD]), 9090),
                ],
            ),
            (
                "shop-catalog",
                vec![
                    (names(&["gateway", "order"]), 8082),
                    (names(&[ANY_POD]), 9090),
                ],
            ),
            (
                "shop-order",
                vec![(names(&["gateway"]), 8083), (names(&[ANY_POD]), 9090)],
            ),
            ("shop-account-db", vec![(names(&["account"]), 5432)]),
            ("shop-order-db", vec![(names(&["order"]), 5432)]),
            (
                "shop-search",
                vec![(names(&["catalog"]), 9200), (names(&["search"]), 9300)],
            ),
        ];
        for (name, rules) in expected {
            let policy = policy(&policies, name).unwrap();
            let component = name.trim_start_matches("shop-");
            let selector = policy.spec.as_ref().unwrap().pod_selector.as_ref();
            assert_eq!(
                selector.unwrap().match_labels.as_ref().unwrap()["app.kubernetes.io/component"],
                component
            );
            assert_eq!(admitted(policy), rules, "{name}");
        }
    }

    #[test]
    fn with_monitoring_disabled_no_service_admits_scrapes_on_its_metrics_port() {
        let mut spec = MarketplaceSpec::default();
        spec.monitoring.mode = MonitoringMode::Disabled;
        let marketplace = fixtures::marketplace(spec);

        let policies = network_policies(&marketplace);

        for (name, port) in [
            ("shop-account", 8081),
            ("shop-catalog", 8082),
            ("shop-order", 8083),
        ] {
            let rules = admitted(policy(&policies, name).unwrap());
            assert_eq!(rules.len(), 1, "{name}: {rules:?}");
            assert_eq!(rules[0].1, port, "{name}");
        }
        assert_eq!(
            admitted(policy(&policies, "shop-gateway").unwrap()),
            [(None, 8080)]
        );
    }

    #[test]
    fn disabled_components_and_external_stores_get_no_policy() {
        let mut spec = MarketplaceSpec::default();
        spec.gateway.enabled = false;
        spec.catalog.enabled = false;
        spec.order.database = external_database();
        let marketplace = fixtures::marketplace(spec);

        let policies = network_policies(&marketplace);

        let mut names: Vec<&str> = policies
            .iter()
            .map(|policy| policy.metadata.name.as_deref().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "shop-account",
                "shop-account-db",
                "shop-default-deny",
                "shop-order"
            ]
        );
    }
}
