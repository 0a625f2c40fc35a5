//! The `Marketplace` custom resource (`marketplace.dev/v1alpha1`).
//!
//! These types are the source of `deploy/crds/marketplace.dev_marketplaces.yaml`
//! (`cargo xtask codegen`): doc comments become the schema's descriptions,
//! serde defaults become the API server's defaults, and the `schemars` and
//! `x_kube` attributes become the validation the API server enforces.
//!
//! Defaults are applied by the API server when a field is absent. A store's
//! `managed`/`external` choice is an exception by design: `database` or
//! `search` left out entirely defaults to `managed` with its defaults, but a
//! store object that is present must name exactly one of the two, so the
//! default never combines with a user's `external` into an invalid pair.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group the project owns.
pub const GROUP: &str = "marketplace.dev";

/// The image repository of the one `marketplace` binary.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "ghcr.io/marketplace/marketplace";

/// The PostgreSQL image a managed database runs by default.
pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:15";

/// The Elasticsearch image a managed search store runs by default.
pub const DEFAULT_ELASTICSEARCH_IMAGE: &str =
    "docker.elastic.co/elasticsearch/elasticsearch:7.17.29";

/// The longest Marketplace name whose children all have valid names: the
/// longest child, the StatefulSet `<name>-account-db`, labels its pods with
/// its revision, `<name>-account-db-<hash of up to 10>`, which as a label
/// value may have at most 63 characters.
pub const MAX_NAME_LENGTH: usize = 41;

/// The desired marketplace: which components run, how many of each, and
/// where their stores are. Every field is optional.
// Two printer columns share `type_ = "string"`, which clippy mistakes for a
// repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "marketplace.dev",
    version = "v1alpha1",
    kind = "Marketplace",
    namespaced,
    shortname = "mp",
    status = "MarketplaceStatus",
    derive = "PartialEq",
    validation = kube::core::Rule::new(format!("self.metadata.name.size() <= {MAX_NAME_LENGTH}"))
        .message(format!(
            "metadata.name may have at most {MAX_NAME_LENGTH} characters: the Marketplace's \
             children are named after it (the longest is the StatefulSet <name>-account-db), \
             and Kubernetes limits their names and labels"
        )
        .as_str()),
    doc = "A running marketplace: the gateway, the account, catalog and order services, and the stores they use.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "The status of the Ready condition",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Gateway",
        type_ = "string",
        description = "Where the gateway is reachable",
        json_path = ".status.gatewayEndpoint"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(default, rename_all = "camelCase")]
pub struct MarketplaceSpec {
    /// The image every component runs (`marketplace serve --target ...`).
    pub image: Image,
    /// When true, the operator changes nothing in the cluster but keeps the
    /// status current.
    pub paused: bool,
    /// The GraphQL gateway, the only component reachable from outside.
    pub gateway: Gateway,
    /// The account service and its PostgreSQL database.
    pub account: DatabaseComponent,
    /// The catalog service and its Elasticsearch search store.
    pub catalog: Catalog,
    /// The order service and its PostgreSQL database.
    pub order: DatabaseComponent,
    /// How Prometheus finds the components' metrics.
    pub monitoring: Monitoring,
    /// Where the components export traces.
    pub tracing: Tracing,
    /// What happens to the stores' volumes when the Marketplace is deleted.
    pub volumes: Volumes,
}

/// The container image of the components.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Image {
    /// The image repository, without a tag.
    #[schemars(length(min = 1))]
    pub repository: String,
    /// The image tag; defaults to the operator's own version.
    #[schemars(length(min = 1))]
    pub tag: String,
    /// When the kubelet pulls the image.
    pub pull_policy: PullPolicy,
}

impl Default for Image {
    fn default() -> Self {
        Self {
            repository: DEFAULT_IMAGE_REPOSITORY.to_owned(),
            tag: env!("CARGO_PKG_VERSION").to_owned(),
            pull_policy: PullPolicy::IfNotPresent,
        }
    }
}

/// When the kubelet pulls an image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

/// The GraphQL gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Gateway {
    /// Whether the gateway runs.
    pub enabled: bool,
    /// How many gateway pods run.
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// CPU and memory requests and limits of each gateway pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The Service in front of the gateway.
    pub service: GatewayService,
    /// Origins browsers may call the gateway from (CORS), such as
    /// `https://shop.example.com`; none by default. The gateway reads them
    /// as one comma-separated list, so an origin holds no comma or space.
    #[schemars(inner(regex(pattern = r"^[^,\s]+$")))]
    pub cors_origins: Vec<String>,
}

impl Default for Gateway {
    fn default() -> Self {
        Self {
            enabled: true,
            replicas: 1,
            resources: None,
            service: GatewayService::default(),
            cors_origins: Vec::new(),
        }
    }
}

/// The Service in front of the gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct GatewayService {
    /// The Service type: `LoadBalancer` or `NodePort` to reach the gateway
    /// from outside the cluster.
    #[serde(rename = "type")]
    pub type_: ServiceType,
    /// The port the Service listens on.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for GatewayService {
    fn default() -> Self {
        Self {
            type_: ServiceType::ClusterIP,
            port: 8080,
        }
    }
}

/// A Kubernetes Service type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// A service backed by a PostgreSQL database (account, order).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct DatabaseComponent {
    /// Whether the service runs.
    pub enabled: bool,
    /// How many pods of the service run.
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// CPU and memory requests and limits of each pod of the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The service's database; a managed PostgreSQL when left out.
    pub database: Database,
}

impl Default for DatabaseComponent {
    fn default() -> Self {
        Self {
            enabled: true,
            replicas: 1,
            resources: None,
            database: Database::default(),
        }
    }
}

/// A PostgreSQL database: exactly one of `managed` or `external`.
///
/// There is deliberately no container-level serde default: an empty object
/// is refused like it is by the API server, and only a missing `database`
/// means the managed default.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(transform = exactly_one_of_managed_or_external)]
pub struct Database {
    /// A PostgreSQL StatefulSet the operator runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedDatabase>,
    /// A database run elsewhere, reached by a URL kept in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalDatabase>,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            managed: Some(ManagedDatabase::default()),
            external: None,
        }
    }
}

/// A PostgreSQL StatefulSet the operator runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ManagedDatabase {
    /// The size of the database's volume.
    #[schemars(schema_with = "positive_quantity")]
    pub storage: Quantity,
    /// The StorageClass of the volume; the cluster's default when left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// The PostgreSQL image.
    #[schemars(length(min = 1))]
    pub image: String,
}

impl Default for ManagedDatabase {
    fn default() -> Self {
        Self {
            storage: Quantity("1Gi".to_owned()),
            storage_class_name: None,
            image: DEFAULT_POSTGRES_IMAGE.to_owned(),
        }
    }
}

/// A database run elsewhere.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDatabase {
    /// The Secret, in the Marketplace's namespace, holding the database URL
    /// (`postgres://user:password@host:port/database`).
    pub secret_ref: SecretKeyRef,
}

/// A key of a Secret in the Marketplace's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key within the Secret.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

impl Default for SecretKeyRef {
    fn default() -> Self {
        Self {
            name: String::new(),
            key: default_secret_key(),
        }
    }
}

fn default_secret_key() -> String {
    "url".to_owned()
}

/// The catalog service and its search store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Catalog {
    /// Whether the catalog service runs.
    pub enabled: bool,
    /// How many catalog pods run.
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// CPU and memory requests and limits of each catalog pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The catalog's search store; a managed Elasticsearch when left out.
    pub search: Search,
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            enabled: true,
            replicas: 1,
            resources: None,
            search: Search::default(),
        }
    }
}

/// An Elasticsearch search store: exactly one of `managed` or `external`.
///
/// Like [`Database`], only a missing `search` means the managed default.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(transform = exactly_one_of_managed_or_external)]
pub struct Search {
    /// An Elasticsearch StatefulSet the operator runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedSearch>,
    /// An Elasticsearch 7 cluster run elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSearch>,
}

impl Default for Search {
    fn default() -> Self {
        Self {
            managed: Some(ManagedSearch::default()),
            external: None,
        }
    }
}

/// An Elasticsearch StatefulSet the operator runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ManagedSearch {
    /// How many Elasticsearch nodes run.
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// The size of each node's volume.
    #[schemars(schema_with = "positive_quantity")]
    pub storage: Quantity,
    /// The StorageClass of the volumes; the cluster's default when left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// The JVM heap of each node (`-Xms`/`-Xmx`), such as `512m` or `2g`.
    #[schemars(regex(pattern = r"^[0-9]+[mg]$"))]
    pub heap: String,
    /// The Elasticsearch 7.17 image.
    #[schemars(length(min = 1))]
    pub image: String,
}

impl Default for ManagedSearch {
    fn default() -> Self {
        Self {
            replicas: 1,
            storage: Quantity("1Gi".to_owned()),
            storage_class_name: None,
            heap: "512m".to_owned(),
            image: DEFAULT_ELASTICSEARCH_IMAGE.to_owned(),
        }
    }
}

/// An Elasticsearch 7 cluster run elsewhere.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ExternalSearch {
    /// The cluster's URL, such as `http://elasticsearch.search:9200`.
    #[schemars(length(min = 1))]
    pub url: String,
}

/// How Prometheus finds the components' metrics.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Monitoring {
    /// `Auto` makes ServiceMonitors when the cluster serves
    /// `monitoring.coreos.com/v1` and scrape annotations otherwise;
    /// `ServiceMonitor` and `Annotations` force one; `Disabled` makes neither.
    pub mode: MonitoringMode,
    /// How often Prometheus scrapes, as a Prometheus duration such as `30s`.
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub interval: String,
}

impl Default for Monitoring {
    fn default() -> Self {
        Self {
            mode: MonitoringMode::Auto,
            interval: "30s".to_owned(),
        }
    }
}

/// How Prometheus finds the components' metrics.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MonitoringMode {
    #[default]
    Auto,
    ServiceMonitor,
    Annotations,
    Disabled,
}

/// Where the components export traces.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Tracing {
    /// The OTLP endpoint, such as `http://otel-collector:4317`; no traces
    /// are exported when left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
}

/// What happens to the stores' volumes when the Marketplace is deleted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Volumes {
    /// When true, the database and search volume claims are deleted with the
    /// Marketplace, and so are the managed databases' password Secrets; by
    /// default both are kept, so the data survives and a Marketplace created
    /// again under the same name logs in to its databases with the same
    /// passwords.
    pub delete_with_marketplace: bool,
}

/// What the operator last observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct MarketplaceStatus {
    /// The `metadata.generation` the status describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`, and one per component.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The gateway's GraphQL URL: in the cluster, such as
    /// `http://shop-gateway.team-a.svc:8080/graphql`, or at the load
    /// balancer's address once one is assigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_endpoint: Option<String>,
}

/// A storage size: a Kubernetes quantity greater than zero, as a string.
///
/// The API server does not check the format of quantities in custom
/// resources, so the CEL quantity library does. A plain string (not
/// int-or-string) keeps the rule simple and the field non-nullable.
fn positive_quantity(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 64,
        "x-kubernetes-validations": [{
            "rule": "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",
            "message": "must be a Kubernetes quantity greater than zero, such as 1Gi",
        }],
    })
}

/// A store names exactly one of `managed` and `external`; the schema alone
/// cannot say so, a CEL rule can.
fn exactly_one_of_managed_or_external(schema: &mut schemars::Schema) {
    schema.insert(
        "x-kubernetes-validations".to_owned(),
        serde_json::json!([{
            "rule": "has(self.managed) != has(self.external)",
            "message": "exactly one of managed or external must be set",
        }]),
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn spec(json: serde_json::Value) -> MarketplaceSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn an_empty_spec_runs_every_component_once_with_managed_stores() {
        let spec = spec(serde_json::json!({}));

        assert_eq!(spec, MarketplaceSpec::default());
        assert_eq!(spec.image.repository, "ghcr.io/marketplace/marketplace");
        assert_eq!(spec.image.tag, env!("CARGO_PKG_VERSION"));
        assert_eq!(spec.image.pull_policy, PullPolicy::IfNotPresent);
        assert!(!spec.paused);
        assert!(spec.gateway.enabled);
        assert_eq!(spec.gateway.replicas, 1);
        assert_eq!(spec.gateway.resources, None);
        assert_eq!(spec.gateway.service.type_, ServiceType::ClusterIP);
        assert_eq!(spec.gateway.service.port, 8080);
        assert!(spec.gateway.cors_origins.is_empty());
        for component in [&spec.account, &spec.order] {
            assert!(component.enabled);
            assert_eq!(component.replicas, 1);
            assert_eq!(component.resources, None);
            let managed = component.database.managed.as_ref().unwrap();
            assert_eq!(managed.storage, Quantity("1Gi".to_owned()));
            assert_eq!(managed.storage_class_name, None);
            assert_eq!(managed.image, "postgres:15");
            assert_eq!(component.database.external, None);
        }
        assert!(spec.catalog.enabled);
        assert_eq!(spec.catalog.replicas, 1);
        let search = spec.catalog.search.managed.as_ref().unwrap();
        assert_eq!(search.replicas, 1);
        assert_eq!(search.storage, Quantity("1Gi".to_owned()));
        assert_eq!(search.heap, "512m");
        assert_eq!(
            search.image,
            "docker.elastic.co/elasticsearch/elasticsearch:7.17.29"
        );
        assert_eq!(spec.catalog.search.external, None);
        assert_eq!(spec.monitoring.mode, MonitoringMode::Auto);
        assert_eq!(spec.monitoring.interval, "30s");
        assert_eq!(spec.tracing.otlp_endpoint, None);
        assert!(!spec.volumes.delete_with_marketplace);
    }

    #[test]
    fn an_external_database_gets_no_managed_default_alongside_it() {
        let spec = spec(serde_json::json!({
            "order": { "database": { "external": { "secretRef": { "name": "orders" } } } }
        }));

        assert_eq!(spec.order.database.managed, None);
        let external = spec.order.database.external.unwrap();
        assert_eq!(external.secret_ref.name, "orders");
        assert_eq!(external.secret_ref.key, "url");
    }

    #[test]
    fn a_managed_store_with_no_fields_gets_the_managed_defaults() {
        let spec = spec(serde_json::json!({
            "account": { "database": { "managed": {} } },
            "catalog": { "search": { "managed": {} } },
        }));

        assert_eq!(spec.account.database, Database::default());
        assert_eq!(spec.catalog.search, Search::default());
    }

    #[test]
    fn a_partly_given_component_keeps_the_defaults_of_the_rest() {
        let spec = spec(serde_json::json!({ "gateway": { "replicas": 3 } }));

        assert_eq!(spec.gateway.replicas, 3);
        assert!(spec.gateway.enabled);
        assert_eq!(spec.gateway.service, GatewayService::default());
    }

    #[test]
    fn a_cors_origin_with_a_comma_or_space_is_refused_by_the_schema() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(Marketplace::crd()).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];

        let origins =
            &schema["properties"]["spec"]["properties"]["gateway"]["properties"]["corsOrigins"];

        // The gateway splits its one variable at commas.
        assert_eq!(origins["items"]["pattern"], r"^[^,\s]+$");
    }

    #[test]
    fn the_example_marketplace_parses_into_the_types() {
        let example = include_str!("../../examples/marketplace.yaml");

        let marketplace: Marketplace = serde_yaml::from_str(example).unwrap();

        assert_eq!(marketplace.spec.gateway.replicas, 2);
        assert!(marketplace.spec.account.database.managed.is_some());
        assert_eq!(marketplace.spec.monitoring.mode, MonitoringMode::Auto);
    }
}
