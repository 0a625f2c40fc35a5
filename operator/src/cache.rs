//! The controller's caches of the children it made.
//!
//! Each kind of child is watched once, cluster-wide, filtered by the
//! `app.kubernetes.io/managed-by` label, and reflected into a [`Store`].
//! The same watch streams trigger the controller (a child's owner
//! reference routes its change to its Marketplace), so a store is always
//! at least as new as the event that started a reconcile.
//!
//! The reconciler reads children only from these stores: whether a child
//! already carries the hash of the desired object, which children are no
//! longer wanted, whether workloads are ready, a database's password. A
//! converged Marketplace therefore costs no API request at all when it is
//! reconciled again.
//!
//! What is kept: whole Deployments and StatefulSets (their status decides
//! readiness), Services (the gateway endpoint reads a load balancer's
//! address) and Secrets (the database passwords), all without their
//! `managedFields`, which are most of an object's size and never read;
//! only the metadata of ConfigMaps, NetworkPolicies and
//! PodDisruptionBudgets, fetched as metadata from the API server.
//!
//! The database and search volume claims are made by the StatefulSet
//! controller, not the operator, so they have no owner reference to route
//! their changes: their metadata is cached too, and a change reconciles
//! the Marketplace named by their instance label, which adopts them when
//! `spec.volumes.deleteWithMarketplace` asks for it.
//!
//! ServiceMonitors' API may appear or vanish while the operator runs, so
//! their metadata is watched only while the cluster serves them
//! ([`watch_service_monitors`]), and their cache
//! ([`ServiceMonitorCache`]) answers only while that watch is in sync;
//! otherwise the reconciler reads them from the API server. A change to
//! one (deleted by hand, say) reconciles its Marketplace at once.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::builders::{MANAGER, monitoring};
use crate::crd::Marketplace;

/// The stores of every cached kind of child.
#[derive(Clone)]
pub struct Caches {
    /// `Some(true)` once every store has been filled, `Some(false)` if a
    /// store's writer went away before that.
    ready: tokio::sync::watch::Receiver<Option<bool>>,
    pub deployments: Store<Deployment>,
    pub stateful_sets: Store<StatefulSet>,
    pub services: Store<Service>,
    pub secrets: Store<Secret>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    pub pod_disruption_budgets: Store<PartialObjectMeta<PodDisruptionBudget>>,
    pub claims: Store<PartialObjectMeta<PersistentVolumeClaim>>,
    pub service_monitors: ServiceMonitorCache,
}

impl Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("deployments", &self.deployments.len())
            .field("stateful_sets", &self.stateful_sets.len())
            .field("services", &self.services.len())
            .field("secrets", &self.secrets.len())
            .field("config_maps", &self.config_maps.len())
            .field("network_policies", &self.network_policies.len())
            .field("pod_disruption_budgets", &self.pod_disruption_budgets.len())
            .field("claims", &self.claims.len())
            .field("service_monitors", &self.service_monitors)
            .finish()
    }
}

impl Caches {
    /// Watches every kind of child for `controller`: each watch both fills
    /// its store and triggers the owning Marketplace's reconcile.
    /// ServiceMonitors are watched while the cluster serves them
    /// ([`watch_service_monitors`]).
    pub fn watch(
        client: &Client,
        controller: Controller<Marketplace>,
    ) -> (Controller<Marketplace>, Self) {
        let (deployments, stream) = reflect::<Deployment>(client);
        let controller = controller.owns_stream(stream);
        let (stateful_sets, stream) = reflect::<StatefulSet>(client);
        let controller = controller.owns_stream(stream);
        let (services, stream) = reflect::<Service>(client);
        let controller = controller.owns_stream(stream);
        let (secrets, stream) = reflect::<Secret>(client);
        let controller = controller.owns_stream(stream);
        let (config_maps, stream) = reflect::<PartialObjectMeta<ConfigMap>>(client);
        let controller = controller.owns_stream(stream);
        let (network_policies, stream) = reflect::<PartialObjectMeta<NetworkPolicy>>(client);
        let controller = controller.owns_stream(stream);
        let (pod_disruption_budgets, stream) =
            reflect::<PartialObjectMeta<PodDisruptionBudget>>(client);
        let controller = controller.owns_stream(stream);
        let (claims, stream) = reflect::<PartialObjectMeta<PersistentVolumeClaim>>(client);
        let controller = controller.watches_stream(stream, |claim| {
            let instance = claim.labels().get("app.kubernetes.io/instance")?;
            Some(ObjectRef::new(instance).within(claim.metadata.namespace.as_deref()?))
        });
        let (controller, service_monitors) = watch_service_monitors(client, controller);
        // `Store::wait_until_ready` wakes only the last of several tasks
        // waiting on it at once (it polls a oneshot receiver, which keeps one
        // waker), and reconciles of many Marketplaces wait at once when the
        // operator starts. So one task waits on the stores and publishes
        // the answer on a watch channel, which wakes every waiter.
        let (publish, ready) = tokio::sync::watch::channel(None);
        let caches = Self {
            ready,
            deployments,
            stateful_sets,
            services,
            secrets,
            config_maps,
            network_policies,
            pod_disruption_budgets,
            claims,
            service_monitors,
        };
        let stores = caches.clone();
        tokio::spawn(async move {
            let filled = stores.filled().await.is_ok();
            let _ = publish.send(Some(filled));
        });
        (controller, caches)
    }

    /// Waits until every store has been filled once (at once after that);
    /// `false` if a store can no longer be filled.
    pub async fn ready(&self) -> bool {
        let mut ready = self.ready.clone();
        ready
            .wait_for(Option::is_some)
            .await
            .is_ok_and(|ready| *ready == Some(true))
    }

    /// Waits until every store has been filled once. Only one task may wait
    /// on this (see [`Caches::watch`]).
    async fn filled(&self) -> Result<(), reflector::store::WriterDropped> {
        self.deployments.wait_until_ready().await?;
        self.stateful_sets.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.secrets.wait_until_ready().await?;
        self.config_maps.wait_until_ready().await?;
        self.network_policies.wait_until_ready().await?;
        self.pod_disruption_budgets.wait_until_ready().await?;
        self.claims.wait_until_ready().await
    }
}

/// Reconciles a Marketplace when a Secret its external databases name
/// appears, changes or goes, so that fixing a missing Secret is noticed at
/// once rather than at the next retry of the backoff. Only Secrets'
/// metadata is watched (their values never reach the operator this way),
/// and they are not kept: the Marketplaces are found in the controller's
/// own store.
pub fn watch_external_secrets(
    client: &Client,
    controller: Controller<Marketplace>,
) -> Controller<Marketplace> {
    let marketplaces = controller.store();
    let secrets = watcher(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    controller.watches_stream(secrets, move |secret| {
        let namespace = secret.metadata.namespace.clone().unwrap_or_default();
        let name = secret.metadata.name.clone().unwrap_or_default();
        marketplaces
            .state_filter(|marketplace| {
                marketplace.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && external_secret_names(marketplace).any(|secret| secret == name)
            })
            .iter()
            .map(|marketplace| ObjectRef::from_obj(marketplace.as_ref()))
            .collect::<Vec<_>>()
    })
}

/// How often discovery is asked whether the cluster serves ServiceMonitors
/// while it does not, and how long a failed ServiceMonitor watch waits
/// before it starts over.
const SERVICE_MONITOR_POLL: Duration = Duration::from_secs(60);

/// The metadata of the ServiceMonitors the operator made, as last seen by
/// their watch, which runs only while the cluster serves them. It answers
/// only while that watch is in sync: from its first complete list until it
/// fails (the API removed, say) and starts over.
#[derive(Clone)]
pub struct ServiceMonitorCache {
    resource: ApiResource,
    store: Store<PartialObjectMeta<DynamicObject>>,
    synced: Arc<AtomicBool>,
}

impl Debug for ServiceMonitorCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceMonitorCache")
            .field("len", &self.store.len())
            .field("synced", &self.synced.load(Ordering::Acquire))
            .finish()
    }
}

impl ServiceMonitorCache {
    /// The ServiceMonitor `name` in `namespace`: `Some(None)` when the
    /// cache knows there is none, `None` when the cache is not in sync.
    #[allow(clippy::option_option)]
    pub fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Option<Arc<PartialObjectMeta<DynamicObject>>>> {
        self.in_sync().then(|| {
            self.store
                .get(&ObjectRef::new_with(name, self.resource.clone()).within(namespace))
        })
    }

    /// The ServiceMonitors in `namespace` whose labels include all of
    /// `labels`; `None` when the cache is not in sync.
    pub fn matching(
        &self,
        namespace: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Option<Vec<Arc<PartialObjectMeta<DynamicObject>>>> {
        self.in_sync().then(|| {
            self.store.state_filter(|monitor| {
                monitor.metadata.namespace.as_deref() == Some(namespace)
                    && labels
                        .iter()
                        .all(|(key, value)| monitor.labels().get(key) == Some(value))
            })
        })
    }

    fn in_sync(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

/// Watches the metadata of the ServiceMonitors the operator made while the
/// cluster serves them, keeping [`ServiceMonitorCache`] and reconciling
/// the owner of one that changes or goes, so one deleted or edited by hand
/// is put back at once rather than at the next resync. The watch starts
/// once discovery finds the API (asked every [`SERVICE_MONITOR_POLL`]);
/// when it fails (the API removed, say) the cache stops answering, the
/// watch ends and all starts over.
pub fn watch_service_monitors(
    client: &Client,
    controller: Controller<Marketplace>,
) -> (Controller<Marketplace>, ServiceMonitorCache) {
    let resource = monitoring::service_monitor_resource();
    let writer =
        reflector::store::Writer::<PartialObjectMeta<DynamicObject>>::new(resource.clone());
    let cache = ServiceMonitorCache {
        resource: resource.clone(),
        store: writer.as_reader(),
        synced: Arc::new(AtomicBool::new(false)),
    };
    // Each watch in turn fills the one store (a relist replaces its
    // contents at `InitDone`).
    let writer = Arc::new(Mutex::new(writer));
    let synced = Arc::clone(&cache.synced);
    let watches = futures::stream::unfold(
        (client.clone(), resource.clone(), true),
        move |(client, resource, first)| {
            let writer = Arc::clone(&writer);
            let synced = Arc::clone(&synced);
            async move {
                if !first {
                    tokio::time::sleep(SERVICE_MONITOR_POLL).await;
                }
                while !crate::reconcile::serves_service_monitors(&client)
                    .await
                    .unwrap_or(false)
                {
                    tokio::time::sleep(SERVICE_MONITOR_POLL).await;
                }
                let config = watcher::Config::default()
                    .labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
                let failed = Arc::clone(&synced);
                // An Api of PartialObjectMeta makes metadata-only requests.
                let watch = watcher(
                    Api::<PartialObjectMeta<DynamicObject>>::all_with(client.clone(), &resource),
                    config,
                )
                .take_while(move |event| {
                    if let Err(error) = event {
                        failed.store(false, Ordering::Release);
                        tracing::debug!("watching ServiceMonitors: {error}; starting over");
                    }
                    futures::future::ready(event.is_ok())
                })
                .inspect(move |event| {
                    if let Ok(event) = event {
                        writer
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .apply_watcher_event(event);
                        if matches!(event, watcher::Event::InitDone) {
                            synced.store(true, Ordering::Release);
                        }
                    }
                })
                .touched_objects();
                Some((watch, (client, resource, false)))
            }
        },
    )
    .flatten();
    (controller.owns_stream_with(watches, resource), cache)
}

/// The names of the Secrets a Marketplace's external databases read.
fn external_secret_names(marketplace: &Marketplace) -> impl Iterator<Item = &str> {
    [
        &marketplace.spec.account.database,
        &marketplace.spec.order.database,
    ]
    .into_iter()
    .filter_map(|database| database.external.as_ref())
    .map(|external| external.secret_ref.name.as_str())
}

/// One child of `kind` in a store, by namespace and name.
pub fn cached<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<std::sync::Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

/// The children in a store that `marketplace` controls: in its namespace,
/// with its controller owner reference (by UID, so the children of an
/// earlier Marketplace of the same name, still being garbage-collected,
/// are not taken for its own).
pub fn children_of<K>(store: &Store<K>, marketplace: &Marketplace) -> Vec<std::sync::Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (Some(namespace), Some(uid)) = (
        marketplace.meta().namespace.as_deref(),
        marketplace.meta().uid.as_deref(),
    ) else {
        return Vec::new();
    };
    store.state_filter(|object| {
        object.meta().namespace.as_deref() == Some(namespace)
            && object
                .owner_references()
                .iter()
                .any(|owner| owner.controller == Some(true) && owner.uid == uid)
    })
}

/// A reflector over every object of `K` the operator manages, without
/// `managedFields`, and the store it fills.
fn reflect<K>(client: &Client) -> (Store<K>, BoxStream<'static, Result<K, watcher::Error>>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let config =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let stream = watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .modify(|object| object.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects()
        .boxed();
    (store, stream)
}
