//! The reconciler: one pass over one Marketplace, as a pipeline.
//!
//! 1. **read**: the Marketplace as the controller's cache has it (its
//!    namespace and generation);
//! 2. **validate**: what the CRD's schema and CEL rules cannot say (nothing
//!    yet; the step stays so the pipeline keeps its shape);
//! 3. **build**: the desired children from the pure [`builders`], with the
//!    one input that is not pure, the database passwords: a database Secret
//!    is created once, with a random password, and afterwards its password is
//!    read back and passed to the builder, never regenerated;
//! 4. **apply**: each child with server-side apply under [`MANAGER`], unless
//!    the object in the cluster already carries the [`APPLIED_HASH`] of the
//!    same desired object (see below);
//! 5. **delete**: children of this Marketplace (found by
//!    [`builders::instance_selector`]) whose names are no longer desired,
//!    including the monitoring objects of a mode no longer in use;
//! 6. **status**: `observedGeneration`, a condition per component, `Ready`,
//!    `Progressing` and `Degraded`, written only when it changed.
//!
//! With `spec.paused` steps 3 to 5 are skipped; the status is still kept.
//!
//! # Monitoring
//!
//! `spec.monitoring.mode: Auto` depends on the cluster: whether it serves
//! `monitoring.coreos.com/v1` ServiceMonitors is asked of the API server's
//! discovery (one `GET /apis/monitoring.coreos.com/v1`) and the answer is
//! kept for [`DISCOVERY_TTL`] in the [`Context`], so fifty Marketplaces do
//! not ask fifty times, and installing the Prometheus Operator is noticed
//! at the next reconcile after that (a change of a Marketplace, of a child,
//! or the [`RESYNC`]). The resolved mode picks the objects
//! ([`builders::monitoring`]): a ServiceMonitor, applied as a
//! `DynamicObject`; or the `prometheus.io/*` annotations, merged here into
//! the metadata of the account, catalog and order Services (Services, not
//! pods: see the builder), plus the scrape ConfigMap. Switching modes
//! deletes the other mode's objects by label; the annotations go with the
//! next apply of the Services, since server-side apply removes the fields
//! its manager no longer sets. ServiceMonitors are listed and deleted only
//! when the API exists. `mode: ServiceMonitor` on a cluster without the API
//! applies everything else, then fails the reconcile with
//! [`Error::ServiceMonitorsNotServed`] so it is retried with backoff.
//!
//! # No writes when nothing changed
//!
//! Every child carries the annotation [`APPLIED_HASH`]: the SHA-1 of the
//! desired object's JSON, computed before the annotation is added (the
//! builders are deterministic and serialize maps in key order, so the same
//! Marketplace always gives the same hash). Before applying, the reconciler
//! reads the live object's metadata; when the annotation equals the hash,
//! the apply is skipped. A child deleted by hand has no live object and is
//! applied again. The price: a field of a child changed by hand (not
//! through the Marketplace) is not reverted until the desired object itself
//! changes.
//!
//! # What is never deleted here
//!
//! - PersistentVolumeClaims: they hold the data; their lifetime follows
//!   `spec.volumes` (see [`builders::stores::database_statefulset`]).
//! - Database Secrets: the retained database volume was initialised with
//!   their password, so a Secret deleted when a database goes external or its
//!   service is disabled would leave a volume nobody can log in to once it
//!   comes back. Garbage collection removes them with the Marketplace.
//!
//! # Condition types
//!
//! `Ready`, `Progressing`, `Degraded`, and one per enabled component:
//! `AccountReady`, `CatalogReady`, `OrderReady` (Deployments),
//! `AccountDatabaseReady`, `OrderDatabaseReady`, `SearchReady` (managed
//! StatefulSets). A component is ready when its workload has observed its
//! latest generation and `status.readyReplicas >= spec.replicas`. The
//! gateway has no condition until it is built.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::builders::monitoring::{self, SERVICE_MONITOR_API_VERSION};
use crate::builders::{self, Component, MANAGER, child_name, services, stores};
use crate::crd::{Marketplace, MarketplaceStatus};

/// The annotation holding the hash of the desired object last applied.
pub const APPLIED_HASH: &str = "marketplace.dev/applied-hash";

/// How long after a successful reconcile the Marketplace is looked at again
/// even if nothing it watches changed.
pub const RESYNC: Duration = Duration::from_secs(5 * 60);

/// How long the answer to "does the cluster serve ServiceMonitors?" is kept.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(10);

/// Why a reconcile failed; the controller retries with [`Backoff`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Marketplace has no namespace")]
    NotNamespaced,
    #[error("the database Secret {0} exists but has no password; refusing to generate a new one")]
    SecretWithoutPassword(String),
    #[error("{action} {kind} {name}: {source}")]
    Kube {
        action: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "spec.monitoring.mode is ServiceMonitor but the cluster does not serve \
         monitoring.coreos.com/v1 ServiceMonitors; install the Prometheus Operator's \
         CRDs, or use mode Auto or Annotations"
    )]
    ServiceMonitorsNotServed,
    #[error("serializing {kind} {name}: {source}")]
    Serialize {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What every reconcile shares: the client, the per-object backoff and
/// what discovery said about ServiceMonitors.
pub struct Context {
    pub client: Client,
    pub backoff: Backoff,
    /// When discovery was last asked, and whether ServiceMonitors were served.
    service_monitors: Mutex<Option<(Instant, bool)>>,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("backoff", &self.backoff)
            .field("service_monitors", &self.service_monitors)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            backoff: Backoff::default(),
            service_monitors: Mutex::new(None),
        }
    }

    /// Whether the cluster serves `monitoring.coreos.com/v1` ServiceMonitors,
    /// asked of discovery at most once per [`DISCOVERY_TTL`].
    pub async fn serves_service_monitors(&self) -> Result<bool, Error> {
        let cached = *self
            .service_monitors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((asked, served)) = cached
            && asked.elapsed() < DISCOVERY_TTL
        {
            return Ok(served);
        }
        let served = serves_service_monitors(&self.client).await?;
        *self
            .service_monitors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), served));
        Ok(served)
    }
}

/// Asks discovery whether `monitoring.coreos.com/v1` has ServiceMonitors.
async fn serves_service_monitors(client: &Client) -> Result<bool, Error> {
    match client
        .list_api_group_resources(SERVICE_MONITOR_API_VERSION)
        .await
    {
        Ok(resources) => Ok(resources
            .resources
            .iter()
            .any(|resource| resource.kind == "ServiceMonitor")),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(source) => Err(Error::Kube {
            action: "discovering",
            kind: "ServiceMonitor",
            name: SERVICE_MONITOR_API_VERSION.to_owned(),
            source,
        }),
    }
}

/// Exponential backoff per Marketplace: 1 s after the first failure,
/// doubling up to 5 minutes; a success resets it.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(5 * 60);

    /// Counts a failure of `marketplace` and returns how long to wait.
    pub fn failed(&self, marketplace: &Marketplace) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(key(marketplace)).or_insert(0);
        *count = count.saturating_add(1);
        let doublings = (*count - 1).min(16);
        Self::FIRST.saturating_mul(1 << doublings).min(Self::MAX)
    }

    /// Forgets the failures of `marketplace`.
    pub fn succeeded(&self, marketplace: &Marketplace) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key(marketplace));
    }
}

fn key(marketplace: &Marketplace) -> (String, String) {
    (
        marketplace.namespace().unwrap_or_default(),
        marketplace.name_any(),
    )
}

/// The controller's reconcile function.
pub async fn reconcile(
    marketplace: Arc<Marketplace>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let result = run(&marketplace, &context).await;
    if result.is_ok() {
        context.backoff.succeeded(&marketplace);
    }
    result.map(|()| Action::requeue(RESYNC))
}

/// The controller's error policy: retry with the object's backoff.
pub fn error_policy(marketplace: Arc<Marketplace>, error: &Error, context: Arc<Context>) -> Action {
    let delay = context.backoff.failed(&marketplace);
    tracing::warn!(
        marketplace = %marketplace.name_any(),
        namespace = marketplace.namespace().unwrap_or_default(),
        retry_in = ?delay,
        "reconcile failed: {error}"
    );
    Action::requeue(delay)
}

async fn run(marketplace: &Marketplace, context: &Context) -> Result<(), Error> {
    let client = &context.client;
    // read
    let namespace = marketplace.namespace().ok_or(Error::NotNamespaced)?;
    // validate
    validate(marketplace)?;
    let mut missing_service_monitors = false;
    if !marketplace.spec.paused {
        // build
        let served = context.serves_service_monitors().await?;
        let desired = desired(marketplace, client, &namespace, served).await?;
        missing_service_monitors = !served && !desired.service_monitors.is_empty();
        // apply
        desired.apply(client, &namespace).await?;
        // delete
        desired
            .delete_unwanted(marketplace, client, &namespace)
            .await?;
    }
    // status
    update_status(marketplace, client, &namespace).await?;
    if missing_service_monitors {
        return Err(Error::ServiceMonitorsNotServed);
    }
    Ok(())
}

/// What the schema cannot check. Nothing yet.
fn validate(_marketplace: &Marketplace) -> Result<(), Error> {
    Ok(())
}

/// The desired children of one Marketplace, by kind.
#[derive(Debug, Default)]
struct Desired {
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    pod_disruption_budgets: Vec<PodDisruptionBudget>,
    secrets: Vec<Secret>,
    stateful_sets: Vec<StatefulSet>,
    network_policies: Vec<NetworkPolicy>,
    config_maps: Vec<ConfigMap>,
    service_monitors: Vec<DynamicObject>,
    /// Whether the cluster serves ServiceMonitors (they can be listed).
    service_monitors_served: bool,
}

async fn desired(
    marketplace: &Marketplace,
    client: &Client,
    namespace: &str,
    service_monitors_served: bool,
) -> Result<Desired, Error> {
    let mut desired = Desired {
        service_monitors_served,
        ..Desired::default()
    };
    for component in [Component::Account, Component::Catalog, Component::Order] {
        desired
            .deployments
            .extend(services::deployment(marketplace, component));
        desired
            .services
            .extend(services::service(marketplace, component).map(|service| {
                let scrape_annotations =
                    monitoring::scrape_annotations(marketplace, component, service_monitors_served);
                annotated(service, component, &scrape_annotations)
            }));
        desired
            .pod_disruption_budgets
            .extend(services::pod_disruption_budget(marketplace, component));
    }
    for component in [Component::AccountDatabase, Component::OrderDatabase] {
        // Probe with an empty password whether the database is managed at
        // all before reading or generating one.
        if stores::database_secret(marketplace, component, "").is_none() {
            continue;
        }
        let password = database_password(marketplace, client, namespace, component).await?;
        desired
            .secrets
            .extend(stores::database_secret(marketplace, component, &password));
        desired
            .services
            .extend(stores::database_service(marketplace, component));
        desired
            .stateful_sets
            .extend(stores::database_statefulset(marketplace, component));
    }
    desired.services.extend(stores::search_service(marketplace));
    desired
        .services
        .extend(stores::search_headless_service(marketplace));
    desired
        .stateful_sets
        .extend(stores::search_statefulset(marketplace));
    desired.network_policies = stores::network_policies(marketplace);
    desired.config_maps.extend(monitoring::scrape_config_map(
        marketplace,
        service_monitors_served,
    ));
    desired.service_monitors.extend(monitoring::service_monitor(
        marketplace,
        service_monitors_served,
    ));
    Ok(desired)
}

/// A component's Service with the scrape annotations merged into its own,
/// when the component is scraped.
fn annotated(
    mut service: Service,
    component: Component,
    scrape_annotations: &BTreeMap<String, String>,
) -> Service {
    if monitoring::SCRAPED.contains(&component) && !scrape_annotations.is_empty() {
        service
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(scrape_annotations.clone());
    }
    service
}

/// The password of a managed database: the one in its Secret when the
/// Secret exists, a new random one otherwise.
async fn database_password(
    marketplace: &Marketplace,
    client: &Client,
    namespace: &str,
    component: Component,
) -> Result<String, Error> {
    let name = child_name(marketplace, component);
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let existing = secrets.get_opt(&name).await.map_err(|source| Error::Kube {
        action: "reading",
        kind: "Secret",
        name: name.clone(),
        source,
    })?;
    let Some(secret) = existing else {
        return Ok(uuid::Uuid::new_v4().simple().to_string());
    };
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(stores::secret_keys::PASSWORD))
        .and_then(|password| String::from_utf8(password.0.clone()).ok())
        .filter(|password| !password.is_empty())
        .ok_or(Error::SecretWithoutPassword(name))
}

impl Desired {
    async fn apply(&self, client: &Client, namespace: &str) -> Result<(), Error> {
        apply_all(client, namespace, &self.secrets).await?;
        apply_all(client, namespace, &self.services).await?;
        apply_all(client, namespace, &self.stateful_sets).await?;
        apply_all(client, namespace, &self.deployments).await?;
        apply_all(client, namespace, &self.pod_disruption_budgets).await?;
        apply_all(client, namespace, &self.network_policies).await?;
        apply_all(client, namespace, &self.config_maps).await?;
        if self.service_monitors_served {
            let api = service_monitors(client, namespace);
            for object in &self.service_monitors {
                apply(&api, "ServiceMonitor", object).await?;
            }
        }
        Ok(())
    }

    async fn delete_unwanted(
        &self,
        marketplace: &Marketplace,
        client: &Client,
        namespace: &str,
    ) -> Result<(), Error> {
        delete_unwanted(marketplace, client, namespace, &self.deployments).await?;
        delete_unwanted(marketplace, client, namespace, &self.services).await?;
        delete_unwanted(marketplace, client, namespace, &self.stateful_sets).await?;
        delete_unwanted(marketplace, client, namespace, &self.pod_disruption_budgets).await?;
        delete_unwanted(marketplace, client, namespace, &self.network_policies).await?;
        delete_unwanted(marketplace, client, namespace, &self.config_maps).await?;
        if self.service_monitors_served {
            delete_unwanted_in(
                marketplace,
                &service_monitors(client, namespace),
                "ServiceMonitor",
                &self.service_monitors,
            )
            .await?;
        }
        Ok(())
    }
}

/// What the reconciler needs of a child's kind.
trait Child:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + k8s_openapi::Resource
    + Serialize
    + DeserializeOwned
    + Clone
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Child for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// The stable hash of a desired object, before [`APPLIED_HASH`] is added.
pub fn applied_hash<K: Serialize>(object: &K) -> Result<String, serde_json::Error> {
    let json = serde_json::to_vec(object)?;
    Ok(sha1_smol::Sha1::from(json).digest().to_string())
}

/// The ServiceMonitors of a namespace.
fn service_monitors(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &monitoring::service_monitor_resource(),
    )
}

/// What [`apply`] and [`delete_unwanted_in`] need of an object, typed or
/// dynamic.
trait Applied: Resource + Serialize + DeserializeOwned + Clone + Debug {}

impl<K> Applied for K where K: Resource + Serialize + DeserializeOwned + Clone + Debug {}

async fn apply_all<K: Child>(client: &Client, namespace: &str, objects: &[K]) -> Result<(), Error> {
    let api = Api::<K>::namespaced(client.clone(), namespace);
    for object in objects {
        apply(&api, kind::<K>(), object).await?;
    }
    Ok(())
}

async fn apply<K: Applied>(api: &Api<K>, kind: &'static str, object: &K) -> Result<(), Error> {
    let name = object.name_any();
    let hash = applied_hash(object).map_err(|source| Error::Serialize {
        kind,
        name: name.clone(),
        source,
    })?;
    let live = api
        .get_metadata_opt(&name)
        .await
        .map_err(|source| Error::Kube {
            action: "reading",
            kind,
            name: name.clone(),
            source,
        })?;
    let unchanged = live
        .as_ref()
        .and_then(|live| live.annotations().get(APPLIED_HASH))
        .is_some_and(|applied| *applied == hash);
    if unchanged {
        return Ok(());
    }
    let mut object = object.clone();
    object
        .annotations_mut()
        .insert(APPLIED_HASH.to_owned(), hash);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .map_err(|source| Error::Kube {
        action: "applying",
        kind,
        name: name.clone(),
        source,
    })?;
    tracing::info!(kind, name, namespace = api_namespace(&object), "applied");
    Ok(())
}

async fn delete_unwanted<K: Child>(
    marketplace: &Marketplace,
    client: &Client,
    namespace: &str,
    desired: &[K],
) -> Result<(), Error> {
    let api = Api::<K>::namespaced(client.clone(), namespace);
    delete_unwanted_in(marketplace, &api, kind::<K>(), desired).await
}

async fn delete_unwanted_in<K: Applied>(
    marketplace: &Marketplace,
    api: &Api<K>,
    kind: &'static str,
    desired: &[K],
) -> Result<(), Error> {
    let namespace = marketplace.namespace().unwrap_or_default();
    let wanted: BTreeSet<String> = desired.iter().map(ResourceExt::name_any).collect();
    let selector = builders::instance_selector(marketplace);
    let live = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::Kube {
            action: "listing",
            kind,
            name: selector.clone(),
            source,
        })?;
    for object in live {
        let name = object.name_any();
        if wanted.contains(&name) || object.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(kind, name, namespace, "deleted"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Kube {
                    action: "deleting",
                    kind,
                    name,
                    source,
                });
            }
        }
    }
    Ok(())
}

fn kind<K: k8s_openapi::Resource>() -> &'static str {
    K::KIND
}

fn api_namespace<K: Resource>(object: &K) -> String {
    object.meta().namespace.clone().unwrap_or_default()
}

/// Whether each enabled component's workload is ready, in
/// [`Component::ALL`] order.
async fn component_readiness(
    marketplace: &Marketplace,
    client: &Client,
    namespace: &str,
) -> Result<Vec<(Component, bool)>, Error> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let stateful_sets = Api::<StatefulSet>::namespaced(client.clone(), namespace);
    let mut readiness = Vec::new();
    for component in Component::ALL {
        let name = child_name(marketplace, component);
        let ready = match component {
            Component::Gateway => continue,
            Component::Account | Component::Catalog | Component::Order => {
                if services::deployment(marketplace, component).is_none() {
                    continue;
                }
                let live = get(&deployments, &name).await?;
                live.is_some_and(|live| {
                    workload_ready(
                        live.metadata.generation,
                        live.spec.and_then(|spec| spec.replicas),
                        live.status.as_ref().and_then(|s| s.observed_generation),
                        live.status.as_ref().and_then(|s| s.ready_replicas),
                    )
                })
            }
            Component::AccountDatabase | Component::OrderDatabase | Component::Search => {
                let wanted = match component {
                    Component::Search => stores::search_statefulset(marketplace).is_some(),
                    _ => stores::database_statefulset(marketplace, component).is_some(),
                };
                if !wanted {
                    continue;
                }
                let live = get(&stateful_sets, &name).await?;
                live.is_some_and(|live| {
                    workload_ready(
                        live.metadata.generation,
                        live.spec.and_then(|spec| spec.replicas),
                        live.status.as_ref().and_then(|s| s.observed_generation),
                        live.status.as_ref().map(|s| s.ready_replicas.unwrap_or(0)),
                    )
                })
            }
        };
        readiness.push((component, ready));
    }
    Ok(readiness)
}

async fn get<K: Child>(api: &Api<K>, name: &str) -> Result<Option<K>, Error> {
    api.get_opt(name).await.map_err(|source| Error::Kube {
        action: "reading",
        kind: kind::<K>(),
        name: name.to_owned(),
        source,
    })
}

/// A workload is ready when its controller has seen its latest spec and at
/// least the desired number of replicas (1 when unset) are ready.
fn workload_ready(
    generation: Option<i64>,
    replicas: Option<i32>,
    observed_generation: Option<i64>,
    ready_replicas: Option<i32>,
) -> bool {
    let observed = observed_generation.unwrap_or(0) >= generation.unwrap_or(0);
    observed && ready_replicas.unwrap_or(0) >= replicas.unwrap_or(1)
}

/// The condition type of a component: `AccountReady`, `AccountDatabaseReady`, ...
pub fn condition_type(component: Component) -> &'static str {
    match component {
        Component::Gateway => "GatewayReady",
        Component::Account => "AccountReady",
        Component::Catalog => "CatalogReady",
        Component::Order => "OrderReady",
        Component::AccountDatabase => "AccountDatabaseReady",
        Component::OrderDatabase => "OrderDatabaseReady",
        Component::Search => "SearchReady",
    }
}

async fn update_status(
    marketplace: &Marketplace,
    client: &Client,
    namespace: &str,
) -> Result<(), Error> {
    let readiness = component_readiness(marketplace, client, namespace).await?;
    let current = marketplace.status.clone().unwrap_or_default();
    let status = desired_status(
        marketplace,
        &readiness,
        &current,
        Time(k8s_openapi::jiff::Timestamp::now()),
    );
    if status == current {
        return Ok(());
    }
    let api = Api::<Marketplace>::namespaced(client.clone(), namespace);
    let name = marketplace.name_any();
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Kube {
            action: "updating the status of",
            kind: "Marketplace",
            name: name.clone(),
            source,
        })?;
    tracing::info!(marketplace = name, namespace, "status updated");
    Ok(())
}

/// The status a Marketplace should have, given its components' readiness.
/// A condition whose status did not change keeps its `lastTransitionTime`
/// from `current`; `now` is used for the others.
fn desired_status(
    marketplace: &Marketplace,
    readiness: &[(Component, bool)],
    current: &MarketplaceStatus,
    now: Time,
) -> MarketplaceStatus {
    let generation = marketplace.metadata.generation;
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" };
        let last_transition_time = current
            .conditions
            .iter()
            .find(|old| old.type_ == type_ && old.status == status)
            .map_or_else(|| now.clone(), |old| old.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time,
        }
    };
    let not_ready: Vec<&str> = readiness
        .iter()
        .filter(|(_, ready)| !ready)
        .map(|(component, _)| component.as_str())
        .collect();
    let all_ready = not_ready.is_empty();
    let mut conditions = Vec::new();
    if all_ready {
        conditions.push(condition(
            "Ready",
            true,
            "AllComponentsReady",
            "every enabled component is ready".to_owned(),
        ));
    } else {
        conditions.push(condition(
            "Ready",
            false,
            "ComponentsNotReady",
            format!("not ready: {}", not_ready.join(", ")),
        ));
    }
    conditions.push(if marketplace.spec.paused {
        condition(
            "Progressing",
            false,
            "Paused",
            "spec.paused is true: nothing is changed".to_owned(),
        )
    } else if all_ready {
        condition(
            "Progressing",
            false,
            "Reconciled",
            "every enabled component is ready".to_owned(),
        )
    } else {
        condition(
            "Progressing",
            true,
            "ComponentsStarting",
            format!("waiting for: {}", not_ready.join(", ")),
        )
    });
    conditions.push(condition("Degraded", false, "NoErrors", String::new()));
    for (component, ready) in readiness {
        let (reason, message) = if *ready {
            ("Ready", "the desired replicas are ready".to_owned())
        } else {
            (
                "NotReady",
                "waiting for the desired replicas to be ready".to_owned(),
            )
        };
        conditions.push(condition(
            condition_type(*component),
            *ready,
            reason,
            message,
        ));
    }
    MarketplaceStatus {
        observed_generation: generation,
        conditions,
        gateway_endpoint: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::builders::fixtures;
    use crate::crd::MarketplaceSpec;

    fn time(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn condition<'a>(status: &'a MarketplaceStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|condition| condition.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {status:?}"))
    }

    #[test]
    fn all_components_ready_make_the_marketplace_ready_and_not_progressing() {
        let marketplace = fixtures::marketplace(MarketplaceSpec::default());
        let readiness = [(Component::Account, true), (Component::Search, true)];

        let status = desired_status(
            &marketplace,
            &readiness,
            &MarketplaceStatus::default(),
            time(10),
        );

        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(condition(&status, "Ready").status, "True");
        assert_eq!(condition(&status, "Progressing").status, "False");
        assert_eq!(condition(&status, "Degraded").status, "False");
        assert_eq!(condition(&status, "AccountReady").status, "True");
        assert_eq!(condition(&status, "SearchReady").status, "True");
        assert_eq!(status.gateway_endpoint, None);
    }

    #[test]
    fn a_component_not_ready_keeps_the_marketplace_progressing_and_names_it() {
        let marketplace = fixtures::marketplace(MarketplaceSpec::default());
        let readiness = [
            (Component::Account, true),
            (Component::OrderDatabase, false),
        ];

        let status = desired_status(
            &marketplace,
            &readiness,
            &MarketplaceStatus::default(),
            time(10),
        );

        let ready = condition(&status, "Ready");
        assert_eq!(ready.status, "False");
        assert!(ready.message.contains("order-db"), "{}", ready.message);
        assert_eq!(condition(&status, "Progressing").status, "True");
        assert_eq!(condition(&status, "OrderDatabaseReady").status, "False");
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time_and_the_status_compares_equal() {
        let marketplace = fixtures::marketplace(MarketplaceSpec::default());
        let readiness = [(Component::Account, true)];
        let first = desired_status(
            &marketplace,
            &readiness,
            &MarketplaceStatus::default(),
            time(10),
        );

        let second = desired_status(&marketplace, &readiness, &first, time(20));

        assert_eq!(second, first);
    }

    #[test]
    fn a_changed_condition_gets_a_new_transition_time() {
        let marketplace = fixtures::marketplace(MarketplaceSpec::default());
        let first = desired_status(
            &marketplace,
            &[(Component::Account, false)],
            &MarketplaceStatus::default(),
            time(10),
        );

        let second = desired_status(
            &marketplace,
            &[(Component::Account, true)],
            &first,
            time(20),
        );

        assert_eq!(condition(&second, "Ready").last_transition_time, time(20));
        assert_eq!(
            condition(&second, "Degraded").last_transition_time,
            time(10)
        );
    }

    #[test]
    fn a_paused_marketplace_is_not_progressing() {
        let marketplace = fixtures::marketplace(MarketplaceSpec {
            paused: true,
            ..MarketplaceSpec::default()
        });

        let status = desired_status(
            &marketplace,
            &[(Component::Account, false)],
            &MarketplaceStatus::default(),
            time(10),
        );

        let progressing = condition(&status, "Progressing");
        assert_eq!(progressing.status, "False");
        assert_eq!(progressing.reason, "Paused");
    }

    #[test]
    fn a_workload_is_ready_only_with_its_replicas_ready_at_its_latest_generation() {
        assert!(workload_ready(Some(2), Some(2), Some(2), Some(2)));
        assert!(workload_ready(Some(2), Some(0), Some(2), None));
        assert!(!workload_ready(Some(2), Some(2), Some(2), Some(1)));
        assert!(!workload_ready(Some(3), Some(1), Some(2), Some(1)));
        assert!(!workload_ready(Some(1), None, Some(1), None));
    }

    #[test]
    fn the_applied_hash_is_stable_and_follows_the_desired_object() {
        let marketplace = fixtures::marketplace(MarketplaceSpec::default());
        let deployment = services::deployment(&marketplace, Component::Account).unwrap();
        let mut scaled = deployment.clone();
        scaled.spec.as_mut().unwrap().replicas = Some(2);

        assert_eq!(
            applied_hash(&deployment).unwrap(),
            applied_hash(&deployment.clone()).unwrap()
        );
        assert_ne!(
            applied_hash(&deployment).unwrap(),
            applied_hash(&scaled).unwrap()
        );
    }

    #[test]
    fn scrape_annotations_go_on_the_scraped_services_and_change_their_applied_hash() {
        let marketplace = fixtures::marketplace(MarketplaceSpec::default());
        let service = services::service(&marketplace, Component::Catalog).unwrap();
        let annotations = monitoring::scrape_annotations(&marketplace, Component::Catalog, false);

        let with = annotated(service.clone(), Component::Catalog, &annotations);
        let without = annotated(service.clone(), Component::Catalog, &BTreeMap::new());
        let store = annotated(service.clone(), Component::Search, &annotations);

        let merged = with.metadata.annotations.as_ref().unwrap();
        assert_eq!(merged["prometheus.io/scrape"], "true");
        assert_eq!(merged["prometheus.io/port"], "9090");
        assert_eq!(merged["prometheus.io/path"], "/metrics");
        assert_eq!(without, service);
        assert_eq!(store, service);
        assert_ne!(
            applied_hash(&with).unwrap(),
            applied_hash(&without).unwrap()
        );
        assert_eq!(
            applied_hash(&with).unwrap(),
            applied_hash(&annotated(service, Component::Catalog, &annotations)).unwrap()
        );
    }

    #[test]
    fn the_applied_hash_of_a_service_monitor_follows_the_interval() {
        let mut marketplace = fixtures::marketplace(MarketplaceSpec::default());
        let first = monitoring::service_monitor(&marketplace, true).unwrap();
        marketplace.spec.monitoring.interval = "1m".to_owned();
        let second = monitoring::service_monitor(&marketplace, true).unwrap();

        assert_eq!(
            applied_hash(&first).unwrap(),
            applied_hash(&first.clone()).unwrap()
        );
        assert_ne!(
            applied_hash(&first).unwrap(),
            applied_hash(&second).unwrap()
        );
    }

    #[test]
    fn the_backoff_doubles_from_a_second_to_five_minutes_and_resets_on_success() {
        let marketplace = fixtures::marketplace(MarketplaceSpec::default());
        let backoff = Backoff::default();

        let delays: Vec<u64> = (0..10)
            .map(|_| backoff.failed(&marketplace).as_secs())
            .collect();
        backoff.succeeded(&marketplace);

        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff.failed(&marketplace), Duration::from_secs(1));
    }
}
