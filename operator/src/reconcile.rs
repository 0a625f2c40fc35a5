//! The reconciler: one pass over one Marketplace, as a pipeline.
//!
//! 1. **read**: the Marketplace as the controller's cache has it, and its
//!    children from the [`Caches`] (never from the API server: a converged
//!    Marketplace is reconciled again without a single API request);
//! 2. **validate**: what the CRD's schema and CEL rules cannot know: that
//!    the Secrets an external database points at exist and hold the key.
//!    A problem found here is reported (`Degraded`, an event, the backoff)
//!    but does not stop the pipeline: the pods wait for the Secret by
//!    themselves and start when it appears;
//! 3. **build**: the desired children from the pure [`builders`], with the
//!    one input that is not pure, the database passwords: a database Secret
//!    is created once, with a random password, and afterwards its password is
//!    read back and passed to the builder, never regenerated;
//! 4. **apply**: each child with server-side apply under [`MANAGER`], unless
//!    the cached child already carries the [`APPLIED_HASH`] of the same
//!    desired object (see below);
//! 5. **delete**: children this Marketplace controls whose names are no
//!    longer desired, including the monitoring objects of a mode no longer
//!    in use; and the Marketplace's ownership of its volume claims set as
//!    `spec.volumes.deleteWithMarketplace` says;
//! 6. **status**: `observedGeneration`, a condition per component, `Ready`,
//!    `Progressing` and `Degraded`, the gateway endpoint; written only when
//!    it changed, with an event for each transition of `Ready`, `Degraded`
//!    and pausing.
//!
//! With `spec.paused` steps 3 to 5 are skipped; the status is still kept.
//! A failed step still ends in step 6, so the failure shows as `Degraded`.
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
//! the metadata of the scraped components' Services (Services, not pods:
//! see the builder), plus the scrape ConfigMap. Switching modes deletes the
//! other mode's objects; the annotations go with the next apply of the
//! Services, since server-side apply removes the fields its manager no
//! longer sets. ServiceMonitors are read only when their API exists (it can
//! come and go while the operator runs): from their cache while its watch
//! is in sync ([`crate::cache::ServiceMonitorCache`]), else from the API
//! server. `mode: ServiceMonitor` on a cluster without the API applies
//! everything else, then fails the reconcile with
//! [`Error::ServiceMonitorsNotServed`] so it is retried with backoff.
//!
//! # No writes when nothing changed
//!
//! Every child carries the annotation [`APPLIED_HASH`]: the SHA-1 of the
//! desired object's JSON, computed before the annotation is added (the
//! builders are deterministic and serialize maps in key order, so the same
//! Marketplace always gives the same hash). When the cached child carries
//! the hash, the apply is skipped. A child deleted by hand leaves the cache
//! (and its deletion triggers a reconcile) and is applied again. The price:
//! a field of a child changed by hand (not through the Marketplace) is not
//! reverted until the desired object itself changes. A cache that lags
//! behind an apply of this operator only costs a repeated, idempotent
//! apply; a database password is never decided on a cache miss (the API
//! server is asked first).
//!
//! # What is never deleted here
//!
//! - PersistentVolumeClaims: they hold the data. Deleting a StatefulSet
//!   never deletes them; with `spec.volumes.deleteWithMarketplace` the
//!   Marketplace owns them (step 5 adds or removes the owner reference), so
//!   they go with it (see [`builders::stores::database_statefulset`]).
//! - Database Secrets: the retained database volume was initialised with
//!   their password, so a Secret deleted when a database goes external or its
//!   service is disabled would leave a volume nobody can log in to once it
//!   comes back. They have the same lifetime as the volumes: without
//!   `spec.volumes.deleteWithMarketplace` nothing owns them and they stay
//!   when the Marketplace is deleted (one created again under the same name
//!   reads them back); with it the Marketplace owns them and garbage
//!   collection removes them with it.
//!
//! # Conditions
//!
//! `Ready`, `Progressing`, `Degraded`, and one per enabled component:
//! `GatewayReady`, `AccountReady`, `CatalogReady`, `OrderReady`
//! (Deployments), `AccountDatabaseReady`, `OrderDatabaseReady`,
//! `SearchReady` (managed StatefulSets). A component is ready when its
//! workload has observed its latest generation and `status.readyReplicas >=
//! spec.replicas`; it has failed when its Deployment reports
//! `ProgressDeadlineExceeded` or a `ReplicaFailure`. `Degraded` is true
//! while the last reconcile failed (its reason names why, such as
//! `ExternalSecretNotFound` or `ApplyFailed`) or a component has failed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::builders::monitoring::{self, SERVICE_MONITOR_API_VERSION};
use crate::builders::{self, Component, MANAGER, child_name, services, stores};
use crate::cache::{Caches, cached, children_of};
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
    #[error(
        "{field}.name is {name}, but there is no Secret {name} in the Marketplace's \
         namespace; create it with the database URL under the key {key}"
    )]
    ExternalSecretNotFound {
        field: &'static str,
        name: String,
        key: String,
    },
    #[error(
        "{field} names the key {key} of the Secret {name}, which has no such key \
         (or an empty value); put the database URL under that key"
    )]
    ExternalSecretKeyMissing {
        field: &'static str,
        name: String,
        key: String,
    },
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
    #[error("the controller's caches of the children stopped")]
    CachesStopped,
}

impl Error {
    /// The `reason` of the `Degraded` condition (and of the warning event)
    /// a failed reconcile sets: stable, in PascalCase.
    pub fn condition_reason(&self) -> &'static str {
        match self {
            Self::NotNamespaced => "NotNamespaced",
            Self::SecretWithoutPassword(_) => "DatabaseSecretWithoutPassword",
            Self::ExternalSecretNotFound { .. } => "ExternalSecretNotFound",
            Self::ExternalSecretKeyMissing { .. } => "ExternalSecretKeyMissing",
            Self::Kube {
                action: "applying", ..
            } => "ApplyFailed",
            Self::Kube {
                action: "deleting", ..
            } => "DeleteFailed",
            Self::Kube { .. } => "ApiRequestFailed",
            Self::ServiceMonitorsNotServed => "ServiceMonitorsNotServed",
            Self::Serialize { .. } => "InternalError",
            Self::CachesStopped => "CachesStopped",
        }
    }
}

/// What every reconcile shares: the client, the caches of the children,
/// the event recorder, the per-object backoff and what discovery said
/// about ServiceMonitors.
pub struct Context {
    pub client: Client,
    pub backoff: Backoff,
    caches: Caches,
    recorder: Recorder,
    /// When discovery was last asked, and whether ServiceMonitors were served.
    service_monitors: Mutex<Option<(Instant, bool)>>,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("backoff", &self.backoff)
            .field("caches", &self.caches)
            .field("service_monitors", &self.service_monitors)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// `caches` must be the ones watching for the controller that runs
    /// [`reconcile`] ([`Caches::watch`]); events are published through
    /// `recorder`.
    pub fn new(client: Client, caches: Caches, recorder: Recorder) -> Self {
        Self {
            client,
            backoff: Backoff::default(),
            caches,
            recorder,
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
pub(crate) async fn serves_service_monitors(client: &Client) -> Result<bool, Error> {
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
    let namespace = marketplace.namespace().ok_or(Error::NotNamespaced)?;
    if !context.caches.ready().await {
        return Err(Error::CachesStopped);
    }
    let result = pipeline(marketplace, context, &namespace).await;
    let status = update_status(marketplace, context, &namespace, result.as_ref().err()).await;
    match (result, status) {
        (Err(error), Err(status_error)) => {
            tracing::warn!(
                marketplace = marketplace.name_any(),
                namespace,
                "could not report the failure in the status: {status_error}"
            );
            Err(error)
        }
        (Err(error), Ok(())) | (Ok(()), Err(error)) => Err(error),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Steps 2 to 5. A validation problem is returned after the children are
/// applied, like a missing ServiceMonitor API.
async fn pipeline(
    marketplace: &Marketplace,
    context: &Context,
    namespace: &str,
) -> Result<(), Error> {
    let client = &context.client;
    let problem = validate(marketplace, client, namespace).await?;
    if !marketplace.spec.paused {
        let served = context.serves_service_monitors().await?;
        let desired = desired(marketplace, context, namespace, served).await?;
        desired.apply(client, &context.caches, namespace).await?;
        desired
            .delete_unwanted(marketplace, client, &context.caches, namespace)
            .await?;
        own_claims(marketplace, client, &context.caches, namespace).await?;
        if !served && !desired.service_monitors.is_empty() {
            return Err(Error::ServiceMonitorsNotServed);
        }
    }
    problem.map_or(Ok(()), Err)
}

/// What the schema cannot check: the Secrets of external databases, in the
/// Marketplace's namespace, must exist and hold a non-empty value under
/// their key. Returns the first problem found; `Err` only when the API
/// server could not be asked.
async fn validate(
    marketplace: &Marketplace,
    client: &Client,
    namespace: &str,
) -> Result<Option<Error>, Error> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let spec = &marketplace.spec;
    for (enabled, database, field) in [
        (
            spec.account.enabled,
            &spec.account.database,
            "spec.account.database.external.secretRef",
        ),
        (
            spec.order.enabled,
            &spec.order.database,
            "spec.order.database.external.secretRef",
        ),
    ] {
        let Some(external) = database.external.as_ref().filter(|_| enabled) else {
            continue;
        };
        let reference = &external.secret_ref;
        let secret = secrets
            .get_opt(&reference.name)
            .await
            .map_err(|source| Error::Kube {
                action: "reading",
                kind: "Secret",
                name: reference.name.clone(),
                source,
            })?;
        let Some(secret) = secret else {
            return Ok(Some(Error::ExternalSecretNotFound {
                field,
                name: reference.name.clone(),
                key: reference.key.clone(),
            }));
        };
        let has_value = secret
            .data
            .as_ref()
            .and_then(|data| data.get(&reference.key))
            .is_some_and(|value| !value.0.is_empty())
            || secret
                .string_data
                .as_ref()
                .and_then(|data| data.get(&reference.key))
                .is_some_and(|value| !value.is_empty());
        if !has_value {
            return Ok(Some(Error::ExternalSecretKeyMissing {
                field,
                name: reference.name.clone(),
                key: reference.key.clone(),
            }));
        }
    }
    Ok(None)
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
    context: &Context,
    namespace: &str,
    service_monitors_served: bool,
) -> Result<Desired, Error> {
    let mut desired = Desired {
        service_monitors_served,
        ..Desired::default()
    };
    for component in [
        Component::Gateway,
        Component::Account,
        Component::Catalog,
        Component::Order,
    ] {
        desired
            .deployments
            .extend(services::deployment(marketplace, component));
        desired
            .services
            .extend(services::service(marketplace, component).map(|service| {
                annotated(
                    service,
                    &monitoring::scrape_annotations(
                        marketplace,
                        component,
                        service_monitors_served,
                    ),
                )
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
        let password = database_password(marketplace, context, namespace, component).await?;
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

/// A component's Service with its scrape annotations (if any) merged into
/// its own.
fn annotated(mut service: Service, scrape_annotations: &BTreeMap<String, String>) -> Service {
    if !scrape_annotations.is_empty() {
        service
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .extend(scrape_annotations.clone());
    }
    service
}

/// The password of a managed database: the one in its Secret when the
/// Secret exists, a new random one otherwise. The cache answers when it
/// has the Secret; a miss is confirmed with the API server, since deciding
/// on a stale cache would replace a password the volume was made with.
async fn database_password(
    marketplace: &Marketplace,
    context: &Context,
    namespace: &str,
    component: Component,
) -> Result<String, Error> {
    let name = child_name(marketplace, component);
    let existing = match cached(&context.caches.secrets, namespace, &name) {
        Some(secret) => Some(Secret::clone(&secret)),
        None => Api::<Secret>::namespaced(context.client.clone(), namespace)
            .get_opt(&name)
            .await
            .map_err(|source| Error::Kube {
                action: "reading",
                kind: "Secret",
                name: name.clone(),
                source,
            })?,
    };
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
    /// Applies the children in two waves, each with up to
    /// [`APPLY_CONCURRENCY`] requests in flight: first what the workloads'
    /// pods use (Secrets, Services, NetworkPolicies, PDBs, the scrape
    /// ConfigMap, ServiceMonitors), then the StatefulSets and Deployments,
    /// so that no pod is created before its Secret and policies exist.
    async fn apply(&self, client: &Client, caches: &Caches, namespace: &str) -> Result<(), Error> {
        let mut first: Vec<Step<'_>> = Vec::new();
        first.extend(applies(client, namespace, &self.secrets, &caches.secrets));
        first.extend(applies(client, namespace, &self.services, &caches.services));
        first.extend(applies(
            client,
            namespace,
            &self.network_policies,
            &caches.network_policies,
        ));
        first.extend(applies(
            client,
            namespace,
            &self.pod_disruption_budgets,
            &caches.pod_disruption_budgets,
        ));
        first.extend(applies(
            client,
            namespace,
            &self.config_maps,
            &caches.config_maps,
        ));
        if self.service_monitors_served {
            let api = service_monitors(client, namespace);
            first.extend(self.service_monitors.iter().map(|object| {
                let api = api.clone();
                let step: Step<'_> = Box::pin(async move {
                    let name = object.name_any();
                    let live = match caches.service_monitors.get(namespace, &name) {
                        Some(cached) => cached.map(|live| live.metadata.clone()),
                        // The cache is not in sync: ask the API server.
                        None => api
                            .get_metadata_opt(&name)
                            .await
                            .map_err(|source| Error::Kube {
                                action: "reading",
                                kind: "ServiceMonitor",
                                name: name.clone(),
                                source,
                            })?
                            .map(|live| live.metadata),
                    };
                    apply(&api, "ServiceMonitor", object, live.as_ref()).await
                });
                step
            }));
        }
        concurrently(first).await?;
        let mut workloads: Vec<Step<'_>> = Vec::new();
        workloads.extend(applies(
            client,
            namespace,
            &self.stateful_sets,
            &caches.stateful_sets,
        ));
        workloads.extend(applies(
            client,
            namespace,
            &self.deployments,
            &caches.deployments,
        ));
        concurrently(workloads).await
    }

    async fn delete_unwanted(
        &self,
        marketplace: &Marketplace,
        client: &Client,
        caches: &Caches,
        namespace: &str,
    ) -> Result<(), Error> {
        let mut steps: Vec<Step<'_>> = Vec::new();
        steps.extend(deletes(
            marketplace,
            client,
            namespace,
            &self.deployments,
            &caches.deployments,
        ));
        steps.extend(deletes(
            marketplace,
            client,
            namespace,
            &self.services,
            &caches.services,
        ));
        steps.extend(deletes(
            marketplace,
            client,
            namespace,
            &self.stateful_sets,
            &caches.stateful_sets,
        ));
        steps.extend(deletes(
            marketplace,
            client,
            namespace,
            &self.pod_disruption_budgets,
            &caches.pod_disruption_budgets,
        ));
        steps.extend(deletes(
            marketplace,
            client,
            namespace,
            &self.network_policies,
            &caches.network_policies,
        ));
        steps.extend(deletes(
            marketplace,
            client,
            namespace,
            &self.config_maps,
            &caches.config_maps,
        ));
        concurrently(steps).await?;
        if self.service_monitors_served {
            delete_unwanted_service_monitors(
                marketplace,
                client,
                caches,
                namespace,
                &self.service_monitors,
            )
            .await?;
        }
        Ok(())
    }
}

/// One API request of a reconcile (with what decides whether it is needed).
type Step<'a> = BoxFuture<'a, Result<(), Error>>;

/// How many of one reconcile's applies or deletes are in flight at once.
/// A Marketplace has about 30 children; one at a time, the first reconcile
/// waits for 30 round trips in a row.
pub const APPLY_CONCURRENCY: usize = 16;

/// Runs `steps` with up to [`APPLY_CONCURRENCY`] in flight; the first
/// error ends the run (the others are dropped, and every step is
/// idempotent, so the retry redoes what is left).
async fn concurrently(steps: Vec<Step<'_>>) -> Result<(), Error> {
    futures::stream::iter(steps)
        .buffer_unordered(APPLY_CONCURRENCY)
        .try_collect()
        .await
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

/// What a cache holds of a child: the whole object or its metadata.
trait Cached: Resource<DynamicType = ()> + Clone + Send + Sync + 'static {}

impl<C> Cached for C where C: Resource<DynamicType = ()> + Clone + Send + Sync + 'static {}

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

/// What [`apply`] needs of an object, typed or dynamic.
trait Applied: Resource + Serialize + DeserializeOwned + Clone + Debug {}

impl<K> Applied for K where K: Resource + Serialize + DeserializeOwned + Clone + Debug {}

/// The applies of `objects`, each skipped when the cached child carries
/// its hash.
fn applies<'a, K: Child, C: Cached>(
    client: &Client,
    namespace: &str,
    objects: &'a [K],
    cache: &'a Store<C>,
) -> impl Iterator<Item = Step<'a>> + use<'a, K, C> {
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let namespace = namespace.to_owned();
    objects.iter().map(move |object| {
        let api = api.clone();
        let live = cached(cache, &namespace, &object.name_any());
        let step: Step<'a> = Box::pin(async move {
            apply(
                &api,
                kind::<K>(),
                object,
                live.as_deref().map(Resource::meta),
            )
            .await
        });
        step
    })
}

/// Applies `object` unless `live` (the child as last seen) already carries
/// its hash.
async fn apply<K: Applied>(
    api: &Api<K>,
    kind: &'static str,
    object: &K,
    live: Option<&ObjectMeta>,
) -> Result<(), Error> {
    let name = object.name_any();
    let hash = applied_hash(object).map_err(|source| Error::Serialize {
        kind,
        name: name.clone(),
        source,
    })?;
    let unchanged = live
        .and_then(|live| live.annotations.as_ref())
        .and_then(|annotations| annotations.get(APPLIED_HASH))
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

/// The deletes of the cached children of `marketplace` of kind `K` that
/// are not in `desired`.
fn deletes<K: Child, C: Cached>(
    marketplace: &Marketplace,
    client: &Client,
    namespace: &str,
    desired: &[K],
    cache: &Store<C>,
) -> Vec<Step<'static>> {
    let wanted: BTreeSet<String> = desired.iter().map(ResourceExt::name_any).collect();
    let api = Api::<K>::namespaced(client.clone(), namespace);
    children_of(cache, marketplace)
        .iter()
        .filter(|live| live.meta().deletion_timestamp.is_none())
        .map(|live| live.name_any())
        .filter(|name| !wanted.contains(name))
        .map(|name| {
            let api = api.clone();
            let step: Step<'static> =
                Box::pin(async move { delete(&api, kind::<K>(), name).await });
            step
        })
        .collect()
}

/// Makes the Marketplace an owner of its volume claims, or no longer one,
/// as `spec.volumes.deleteWithMarketplace` says (see
/// [`stores::claim_owner_patch`]); claims already right cost nothing.
async fn own_claims(
    marketplace: &Marketplace,
    client: &Client,
    caches: &Caches,
    namespace: &str,
) -> Result<(), Error> {
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace);
    let params = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let steps: Vec<Step<'static>> = caches
        .claims
        .state_filter(|claim| {
            stores::is_claim_of(marketplace, &claim.metadata)
                && claim.metadata.deletion_timestamp.is_none()
        })
        .iter()
        .filter_map(|claim| {
            let patch = stores::claim_owner_patch(marketplace, &claim.metadata)?;
            let name = claim.name_any();
            let (api, params) = (api.clone(), params.clone());
            let step: Step<'static> = Box::pin(async move {
                match api.patch(&name, &params, &Patch::Strategic(patch)).await {
                    Ok(_) => {
                        tracing::info!(name, "set the Marketplace's ownership of the volume claim");
                        Ok(())
                    }
                    // Gone meanwhile: nothing left to own.
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                    Err(source) => Err(Error::Kube {
                        action: "patching the owners of",
                        kind: "PersistentVolumeClaim",
                        name,
                        source,
                    }),
                }
            });
            Some(step)
        })
        .collect();
    concurrently(steps).await
}

/// Deletes the ServiceMonitors of `marketplace` (found by label, in the
/// cache while it is in sync, else from the API server) that are not in
/// `desired`.
async fn delete_unwanted_service_monitors(
    marketplace: &Marketplace,
    client: &Client,
    caches: &Caches,
    namespace: &str,
    desired: &[DynamicObject],
) -> Result<(), Error> {
    let api = service_monitors(client, namespace);
    let wanted: BTreeSet<String> = desired.iter().map(ResourceExt::name_any).collect();
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            MANAGER.to_owned(),
        ),
        (
            "app.kubernetes.io/instance".to_owned(),
            marketplace.name_any(),
        ),
    ]);
    let live: Vec<ObjectMeta> = match caches.service_monitors.matching(namespace, &labels) {
        Some(cached) => cached.iter().map(|live| live.metadata.clone()).collect(),
        None => {
            let selector = builders::instance_selector(marketplace);
            api.list_metadata(&ListParams::default().labels(&selector))
                .await
                .map_err(|source| Error::Kube {
                    action: "listing",
                    kind: "ServiceMonitor",
                    name: selector.clone(),
                    source,
                })?
                .into_iter()
                .map(|live| live.metadata)
                .collect()
        }
    };
    for meta in live {
        let name = meta.name.unwrap_or_default();
        if !wanted.contains(&name) && meta.deletion_timestamp.is_none() {
            delete(&api, "ServiceMonitor", name).await?;
        }
    }
    Ok(())
}

async fn delete<K: Applied>(api: &Api<K>, kind: &'static str, name: String) -> Result<(), Error> {
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {
            tracing::info!(kind, name, "deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube {
            action: "deleting",
            kind,
            name,
            source,
        }),
    }
}

fn kind<K: k8s_openapi::Resource>() -> &'static str {
    K::KIND
}

fn api_namespace<K: Resource>(object: &K) -> String {
    object.meta().namespace.clone().unwrap_or_default()
}

/// How a component's workload is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    Ready,
    /// Starting, updating or scaling: not ready yet, nothing wrong.
    NotReady,
    /// The workload's controller reports that it cannot make progress.
    Failed(String),
}

/// The health of each enabled component's workload, in [`Component::ALL`]
/// order, from the caches.
fn component_health(
    marketplace: &Marketplace,
    caches: &Caches,
    namespace: &str,
) -> Vec<(Component, Health)> {
    let mut health = Vec::new();
    for component in Component::ALL {
        let name = child_name(marketplace, component);
        let state = match component {
            Component::Gateway | Component::Account | Component::Catalog | Component::Order => {
                if services::deployment(marketplace, component).is_none() {
                    continue;
                }
                cached(&caches.deployments, namespace, &name)
                    .map_or(Health::NotReady, |live| deployment_health(&live))
            }
            Component::AccountDatabase | Component::OrderDatabase | Component::Search => {
                let wanted = match component {
                    Component::Search => stores::search_statefulset(marketplace).is_some(),
                    _ => stores::database_statefulset(marketplace, component).is_some(),
                };
                if !wanted {
                    continue;
                }
                let ready = cached(&caches.stateful_sets, namespace, &name).is_some_and(|live| {
                    workload_ready(
                        live.metadata.generation,
                        live.spec.as_ref().and_then(|spec| spec.replicas),
                        live.status.as_ref().and_then(|s| s.observed_generation),
                        live.status.as_ref().map(|s| s.ready_replicas.unwrap_or(0)),
                    )
                });
                if ready {
                    Health::Ready
                } else {
                    Health::NotReady
                }
            }
        };
        health.push((component, state));
    }
    health
}

fn deployment_health(live: &Deployment) -> Health {
    let status = live.status.as_ref();
    let conditions: &[DeploymentCondition] = status
        .and_then(|status| status.conditions.as_deref())
        .unwrap_or_default();
    let failure = conditions.iter().find(|condition| {
        (condition.type_ == "Progressing"
            && condition.status == "False"
            && condition.reason.as_deref() == Some("ProgressDeadlineExceeded"))
            || (condition.type_ == "ReplicaFailure" && condition.status == "True")
    });
    if let Some(failure) = failure {
        return Health::Failed(
            failure
                .message
                .clone()
                .or_else(|| failure.reason.clone())
                .unwrap_or_else(|| failure.type_.clone()),
        );
    }
    let ready = workload_ready(
        live.metadata.generation,
        live.spec.as_ref().and_then(|spec| spec.replicas),
        status.and_then(|s| s.observed_generation),
        status.and_then(|s| s.ready_replicas),
    );
    if ready {
        Health::Ready
    } else {
        Health::NotReady
    }
}

/// A workload is ready when its controller has seen its latest spec and at
/// least the desired number of replicas (1 when unset) are ready.
pub fn workload_ready(
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
    context: &Context,
    namespace: &str,
    failure: Option<&Error>,
) -> Result<(), Error> {
    let health = component_health(marketplace, &context.caches, namespace);
    let gateway_endpoint = gateway_endpoint(marketplace, &context.caches, namespace);
    let current = marketplace.status.clone().unwrap_or_default();
    let status = desired_status(
        marketplace,
        &Observed {
            health: &health,
            failure,
            gateway_endpoint,
        },
        &current,
        Time(k8s_openapi::jiff::Timestamp::now()),
    );
    if status == current {
        return Ok(());
    }
    let api = Api::<Marketplace>::namespaced(context.client.clone(), namespace);
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
    let reference = marketplace.object_ref(&());
    for event in transitions(&current, &status) {
        if let Err(error) = context.recorder.publish(&event, &reference).await {
            tracing::warn!(
                marketplace = name,
                namespace,
                reason = event.reason,
                "publishing an event: {error}"
            );
        }
    }
    Ok(())
}

/// Where the gateway is reachable, from its cached Service.
fn gateway_endpoint(marketplace: &Marketplace, caches: &Caches, namespace: &str) -> Option<String> {
    let live = cached(
        &caches.services,
        namespace,
        &child_name(marketplace, Component::Gateway),
    );
    builders::gateway::gateway_endpoint(marketplace, live.as_deref())
}

/// What a reconcile saw, for [`desired_status`].
#[derive(Debug)]
struct Observed<'a> {
    health: &'a [(Component, Health)],
    /// Why this reconcile failed, if it did.
    failure: Option<&'a Error>,
    gateway_endpoint: Option<String>,
}

/// The status a Marketplace should have, given what the reconcile saw.
/// A condition whose status did not change keeps its `lastTransitionTime`
/// from `current`; `now` is used for the others.
fn desired_status(
    marketplace: &Marketplace,
    observed: &Observed<'_>,
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
    let not_ready: Vec<&str> = observed
        .health
        .iter()
        .filter(|(_, health)| *health != Health::Ready)
        .map(|(component, _)| component.as_str())
        .collect();
    let failed: Vec<String> = observed
        .health
        .iter()
        .filter_map(|(component, health)| match health {
            Health::Failed(why) => Some(format!("{component}: {why}")),
            _ => None,
        })
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
    conditions.push(if let Some(failure) = observed.failure {
        condition(
            "Degraded",
            true,
            failure.condition_reason(),
            failure.to_string(),
        )
    } else if !failed.is_empty() {
        condition("Degraded", true, "ComponentsFailed", failed.join("; "))
    } else {
        condition("Degraded", false, "NoErrors", String::new())
    });
    for (component, health) in observed.health {
        let (ready, reason, message) = match health {
            Health::Ready => (true, "Ready", "the desired replicas are ready".to_owned()),
            Health::NotReady => (
                false,
                "NotReady",
                "waiting for the desired replicas to be ready".to_owned(),
            ),
            Health::Failed(why) => (false, "Failed", why.clone()),
        };
        conditions.push(condition(
            condition_type(*component),
            ready,
            reason,
            message,
        ));
    }
    MarketplaceStatus {
        observed_generation: generation,
        conditions,
        gateway_endpoint: observed.gateway_endpoint.clone(),
    }
}

/// The events for a status change: one per transition of `Ready`,
/// `Degraded` (and of its reason while degraded) and pausing. A condition
/// seen for the first time is a transition only into `Ready=True` or
/// `Degraded=True`: a new Marketplace that is not ready yet is no news.
fn transitions(old: &MarketplaceStatus, new: &MarketplaceStatus) -> Vec<Event> {
    let find = |status: &MarketplaceStatus, type_: &str| {
        status
            .conditions
            .iter()
            .find(|condition| condition.type_ == type_)
            .cloned()
    };
    let event = |type_: EventType, reason: &str, note: &str| Event {
        type_,
        reason: reason.to_owned(),
        note: (!note.is_empty()).then(|| note.to_owned()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    let mut events = Vec::new();
    let (old_ready, new_ready) = (find(old, "Ready"), find(new, "Ready"));
    if let Some(new_ready) = new_ready {
        let was = old_ready.as_ref().map(|c| c.status.as_str());
        match (was, new_ready.status.as_str()) {
            (Some("True"), "True") | (Some("False") | None, "False") => {}
            (_, "True") => events.push(event(EventType::Normal, "Ready", &new_ready.message)),
            _ => events.push(event(EventType::Warning, "NotReady", &new_ready.message)),
        }
    }
    let (old_degraded, new_degraded) = (find(old, "Degraded"), find(new, "Degraded"));
    if let Some(new_degraded) = new_degraded {
        let was_degraded = old_degraded.as_ref().filter(|c| c.status == "True");
        if new_degraded.status == "True" {
            if was_degraded.is_none_or(|old| old.reason != new_degraded.reason) {
                events.push(event(
                    EventType::Warning,
                    &new_degraded.reason,
                    &new_degraded.message,
                ));
            }
        } else if was_degraded.is_some() {
            events.push(event(
                EventType::Normal,
                "Recovered",
                "the last reconcile succeeded and no component has failed",
            ));
        }
    }
    let paused = |status: &MarketplaceStatus| {
        find(status, "Progressing").is_some_and(|c| c.reason == "Paused")
    };
    match (paused(old), paused(new)) {
        (false, true) => events.push(event(
            EventType::Normal,
            "Paused",
            "spec.paused is true: the operator changes nothing",
        )),
        (true, false) => events.push(event(
            EventType::Normal,
            "Resumed",
            "spec.paused is false: the operator applies the spec again",
        )),
        _ => {}
    }
    events
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

    /// [`desired_status`] of plain readiness, with no failure.
    fn status_of(
        marketplace: &Marketplace,
        readiness: &[(Component, bool)],
        current: &MarketplaceStatus,
        now: Time,
    ) -> MarketplaceStatus {
        let health: Vec<(Component, Health)> = readiness
            .iter()
            .map(|(component, ready)| {
                (
                    *component,
                    if *ready {
                        Health::Ready
                    } else {
                        Health::NotReady
                    },
                )
            })
            .collect();
        let observed = Observed {
            health: &health,
            failure: None,
            gateway_endpoint: None,
        };
        desired_status(marketplace, &observed, current, now)
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

        let status = status_of(
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

        let status = status_of(
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
        let first = status_of(
            &marketplace,
            &readiness,
            &MarketplaceStatus::default(),
            time(10),
        );

        let second = status_of(&marketplace, &readiness, &first, time(20));

        assert_eq!(second, first);
    }

    #[test]
    fn a_changed_condition_gets_a_new_transition_time() {
        let marketplace = fixtures::marketplace(MarketplaceSpec::default());
        let first = status_of(
            &marketplace,
            &[(Component::Account, false)],
            &MarketplaceStatus::default(),
            time(10),
        );

        let second = status_of(
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

        let status = status_of(
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

        let with = annotated(service.clone(), &annotations);
        let without = annotated(service.clone(), &BTreeMap::new());

        let merged = with.metadata.annotations.as_ref().unwrap();
        assert_eq!(merged["prometheus.io/scrape"], "true");
        assert_eq!(merged["prometheus.io/port"], "9090");
        assert_eq!(merged["prometheus.io/path"], "/metrics");
        assert_eq!(without, service);
        assert_ne!(
            applied_hash(&with).unwrap(),
            applied_hash(&without).unwrap()
        );
        assert_eq!(
            applied_hash(&with).unwrap(),
            applied_hash(&annotated(service, &annotations)).unwrap()
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
    fn a_failed_reconcile_makes_the_marketplace_degraded_with_the_failures_reason() {
        let marketplace = fixtures::marketplace(MarketplaceSpec::default());
        let failure = Error::ExternalSecretNotFound {
            field: "spec.order.database.external.secretRef",
            name: "orders-db".to_owned(),
            key: "url".to_owned(),
        };
        let health = [(Component::Order, Health::NotReady)];

        let status = desired_status(
            &marketplace,
            &Observed {
                health: &health,
                failure: Some(&failure),
                gateway_endpoint: None,
            },
            &MarketplaceStatus::default(),
            time(10),
        );

        let degraded = condition(&status, "Degraded");
        assert_eq!(degraded.status, "True");
        assert_eq!(degraded.reason, "ExternalSecretNotFound");
        assert!(
            degraded
                .message
                .contains("spec.order.database.external.secretRef.name is orders-db"),
            "{}",
            degraded.message
        );
    }

    #[test]
    fn a_deployment_past_its_progress_deadline_has_failed_and_degrades_the_marketplace() {
        let marketplace = fixtures::marketplace(MarketplaceSpec::default());
        let mut deployment = services::deployment(&marketplace, Component::Catalog).unwrap();
        deployment.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".to_owned(),
                status: "False".to_owned(),
                reason: Some("ProgressDeadlineExceeded".to_owned()),
                message: Some("ReplicaSet shop-catalog-1 has timed out progressing.".to_owned()),
                ..DeploymentCondition::default()
            }]),
            ..k8s_openapi::api::apps::v1::DeploymentStatus::default()
        });
        let health = [(Component::Catalog, deployment_health(&deployment))];

        let status = desired_status(
            &marketplace,
            &Observed {
                health: &health,
                failure: None,
                gateway_endpoint: None,
            },
            &MarketplaceStatus::default(),
            time(10),
        );

        assert!(matches!(health[0].1, Health::Failed(_)));
        let degraded = condition(&status, "Degraded");
        assert_eq!(degraded.status, "True");
        assert_eq!(degraded.reason, "ComponentsFailed");
        assert!(
            degraded.message.contains("catalog: ReplicaSet"),
            "{}",
            degraded.message
        );
        assert_eq!(condition(&status, "CatalogReady").reason, "Failed");
    }

    #[test]
    fn a_deployment_with_its_replicas_ready_is_healthy_and_one_rolling_out_is_not_ready() {
        let marketplace = fixtures::marketplace(MarketplaceSpec::default());
        let mut deployment = services::deployment(&marketplace, Component::Account).unwrap();
        deployment.metadata.generation = Some(2);
        deployment.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            observed_generation: Some(2),
            ready_replicas: Some(1),
            ..k8s_openapi::api::apps::v1::DeploymentStatus::default()
        });
        let mut rolling = deployment.clone();
        rolling.metadata.generation = Some(3);

        assert_eq!(deployment_health(&deployment), Health::Ready);
        assert_eq!(deployment_health(&rolling), Health::NotReady);
    }

    fn reasons(events: &[Event]) -> Vec<(EventType, &str)> {
        events
            .iter()
            .map(|event| (event.type_, event.reason.as_str()))
            .collect()
    }

    #[test]
    fn becoming_ready_is_an_event_and_staying_ready_is_not() {
        let marketplace = fixtures::marketplace(MarketplaceSpec::default());
        let starting = status_of(
            &marketplace,
            &[(Component::Account, false)],
            &MarketplaceStatus::default(),
            time(10),
        );
        let ready = status_of(
            &marketplace,
            &[(Component::Account, true)],
            &starting,
            time(20),
        );

        assert!(transitions(&MarketplaceStatus::default(), &starting).is_empty());
        assert_eq!(
            reasons(&transitions(&starting, &ready)),
            [(EventType::Normal, "Ready")]
        );
        assert!(transitions(&ready, &ready).is_empty());
        assert_eq!(
            reasons(&transitions(&ready, &starting)),
            [(EventType::Warning, "NotReady")]
        );
    }

    #[test]
    fn degradation_and_recovery_are_events_and_a_repeated_failure_is_not() {
        let marketplace = fixtures::marketplace(MarketplaceSpec::default());
        let health = [(Component::Account, Health::NotReady)];
        let healthy = Observed {
            health: &health,
            failure: None,
            gateway_endpoint: None,
        };
        let failure = Error::ServiceMonitorsNotServed;
        let failing = Observed {
            health: &health,
            failure: Some(&failure),
            gateway_endpoint: None,
        };
        let fine = desired_status(
            &marketplace,
            &healthy,
            &MarketplaceStatus::default(),
            time(10),
        );
        let degraded = desired_status(&marketplace, &failing, &fine, time(20));
        let still = desired_status(&marketplace, &failing, &degraded, time(30));
        let recovered = desired_status(&marketplace, &healthy, &still, time(40));

        assert_eq!(
            reasons(&transitions(&fine, &degraded)),
            [(EventType::Warning, "ServiceMonitorsNotServed")]
        );
        assert!(transitions(&degraded, &still).is_empty());
        assert_eq!(
            reasons(&transitions(&still, &recovered)),
            [(EventType::Normal, "Recovered")]
        );
    }

    #[test]
    fn pausing_and_resuming_are_events() {
        let running = fixtures::marketplace(MarketplaceSpec::default());
        let paused = fixtures::marketplace(MarketplaceSpec {
            paused: true,
            ..MarketplaceSpec::default()
        });
        let readiness = [(Component::Account, true)];
        let before = status_of(
            &running,
            &readiness,
            &MarketplaceStatus::default(),
            time(10),
        );
        let during = status_of(&paused, &readiness, &before, time(20));
        let after = status_of(&running, &readiness, &during, time(30));

        assert_eq!(
            reasons(&transitions(&before, &during)),
            [(EventType::Normal, "Paused")]
        );
        assert_eq!(
            reasons(&transitions(&during, &after)),
            [(EventType::Normal, "Resumed")]
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
