//! `marketplace-bench operator`: how fast a running operator turns
//! Marketplaces into their children and a Ready status, how much memory it
//! takes, and whether it stays quiet once they converged.
//!
//! xtask starts the release-built operator against the kwok cluster; this
//! driver only talks to the API server and to the operator's `/metrics`.
//! Each round creates N Marketplaces at once, copies of one manifest's spec
//! spread over fresh namespaces, and times each of them from the moment its
//! create returned:
//! - to **children**: the last of the children that the operator's own
//!   builders make for it was seen by a watch (the operator's work);
//! - to **workloads ready**: the last of its Deployments and StatefulSets
//!   has its replicas ready at its generation (the control plane's work:
//!   ReplicaSets, pods, scheduling, volume claims, kwok's pod stages);
//! - to **Ready**: its status says `Ready=True` for its generation (the
//!   operator noticing the workloads and writing the status).
//!
//! Then the operator's API write counter is read at convergence and again
//! after a quiet window, and its peak resident memory (VmHWM) is read from
//! `/proc`. The Marketplaces of a round stay while the next one runs, so
//! the operator of the last round also keeps the earlier ones converged.
//!
//! Ceiling rounds (`--ceiling`, see [`ceiling`]) come last: the driver
//! applies the children itself, timing what the API server alone allows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Node, NodeStatus, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, ServiceCIDR, ServiceCIDRSpec};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    ApiResource, DynamicObject, ObjectMeta, PartialObjectMeta, Patch, PatchParams, PostParams,
};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use marketplace_config::parse_duration;
use marketplace_operator::builders::{Component, MANAGER, monitoring, services, stores};
use marketplace_operator::crd::Marketplace;
use marketplace_operator::reconcile::workload_ready;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod ceiling;

#[derive(Debug, clap::Args)]
pub(crate) struct OperatorArgs {
    /// Where the operator serves `/metrics`.
    #[arg(long)]
    metrics_addr: SocketAddr,
    /// The operator's process id, for its memory (`/proc/PID/status`).
    #[arg(long)]
    operator_pid: u32,
    /// A Marketplace manifest; every instance gets a copy of its spec.
    #[arg(long)]
    spec: PathBuf,
    /// Marketplaces created at once in each round, round after round
    /// (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 50])]
    instances: Vec<usize>,
    /// Marketplaces created one after another, each create sent when the
    /// previous one returned (as `kubectl apply -f` sends a file of many),
    /// in further rounds after those of `--instances` (comma-separated;
    /// none by default).
    #[arg(long, value_delimiter = ',')]
    one_by_one: Vec<usize>,
    /// Ceiling rounds, after all others: this many paused Marketplaces
    /// whose children the driver applies itself, timing the API server
    /// alone (comma-separated; none by default).
    #[arg(long, value_delimiter = ',')]
    ceiling: Vec<usize>,
    /// How many applies a ceiling round keeps in flight.
    #[arg(long, default_value_t = 32)]
    ceiling_in_flight: usize,
    /// Marketplaces per namespace; every round makes fresh namespaces.
    #[arg(long, default_value_t = 5)]
    per_namespace: usize,
    /// How long the operator's API writes are counted once a round has
    /// converged.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    steady: Duration,
    /// How long a round may take to converge before the benchmark fails.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    deadline: Duration,
}

/// Targets of the operator issue.
const TARGET_CHILDREN_P50: Duration = Duration::from_secs(1);
const TARGET_PEAK_RSS_MIB: f64 = 50.0;
const TARGET_RSS_INSTANCES: usize = 50;

pub(crate) async fn run(args: OperatorArgs) -> Result<()> {
    if args.per_namespace == 0
        || args.instances.contains(&0)
        || args.one_by_one.contains(&0)
        || args.ceiling.contains(&0)
    {
        bail!("--instances, --one-by-one, --ceiling and --per-namespace must be at least 1");
    }
    let manifest = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading {}", args.spec.display()))?;
    let template: Marketplace = serde_yaml::from_str(&manifest)
        .with_context(|| format!("{} is not a Marketplace", args.spec.display()))?;
    let client = Client::try_default()
        .await
        .context("building a Kubernetes client from KUBECONFIG")?;
    let service_monitors = client
        .list_api_group_resources(monitoring::SERVICE_MONITOR_API_VERSION)
        .await
        .is_ok_and(|group| group.resources.iter().any(|r| r.kind == "ServiceMonitor"));
    if service_monitors {
        // The operator would make ServiceMonitors, which are not watched here.
        bail!("the cluster serves monitoring.coreos.com/v1 ServiceMonitors; run on one without");
    }
    let operator = OperatorProcess {
        metrics: args.metrics_addr,
        pid: args.operator_pid,
    };
    wait_leading(&operator).await?;
    make_room_for_services(&client).await?;
    let plan: Vec<(usize, Pace)> = args
        .instances
        .iter()
        .map(|&instances| (instances, Pace::AtOnce))
        .chain(
            args.one_by_one
                .iter()
                .map(|&instances| (instances, Pace::OneByOne)),
        )
        .collect();
    let pods = (plan.iter().map(|(instances, _)| instances).sum::<usize>()
        + args.ceiling.iter().sum::<usize>())
        * pods_of(&template);
    make_room_for_pods(&client, pods).await?;

    let seen = Arc::new(Mutex::new(Seen::default()));
    start_watches(&client, &seen);
    wait_synced(&seen).await?;

    let mut rounds = Vec::new();
    for (index, &(instances, pace)) in plan.iter().enumerate() {
        let round = run_round(
            &client, &args, &operator, &template, &seen, index, instances, pace,
        )
        .await?;
        round.print();
        rounds.push(round);
    }
    let mut ceilings = Vec::new();
    for (offset, &instances) in args.ceiling.iter().enumerate() {
        let index = plan.len() + offset;
        let namespaces =
            make_namespaces(&client, index, instances.div_ceil(args.per_namespace)).await?;
        let ceiling = ceiling::run(
            &client,
            &template,
            &namespaces,
            instances,
            args.per_namespace,
            args.ceiling_in_flight,
            operator.pid,
        )
        .await?;
        ceiling.print();
        ceilings.push(ceiling);
    }
    print_summary(&rounds, &ceilings, args.steady);
    Ok(())
}

/// The operator as this driver sees it: its metrics and its process.
#[derive(Debug, Clone, Copy)]
struct OperatorProcess {
    metrics: SocketAddr,
    pid: u32,
}

impl OperatorProcess {
    async fn counters(&self) -> Result<Counters> {
        let text = scrape(self.metrics).await?;
        Ok(Counters::parse(&text))
    }

    fn memory(&self) -> Result<Memory> {
        let path = format!("/proc/{}/status", self.pid);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {path}: has the operator exited?"))?;
        Memory::parse(&text).with_context(|| format!("no VmHWM/VmRSS in {path}"))
    }
}

/// Waits until the operator holds its Lease, so that the first round does
/// not time the leader election.
async fn wait_leading(operator: &OperatorProcess) -> Result<()> {
    wait_until(
        "the operator to answer on /metrics and hold its leader Lease",
        Duration::from_secs(60),
        async || {
            Ok(operator
                .counters()
                .await
                .is_ok_and(|counters| counters.leader))
        },
    )
    .await
}

/// Polls `check` every [`POLL`] until it says yes; fails when `timeout`
/// passes first, or at once when `check` fails.
async fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !check().await? {
        if Instant::now() > deadline {
            bail!("waited {timeout:?} for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

const POLL: Duration = Duration::from_millis(20);

/// `(kind, namespace, name)` of an object.
type Key = (&'static str, String, String);

/// What the watches have seen, each thing with the instant it was first seen.
#[derive(Debug, Default)]
struct Seen {
    /// Every object the operator manages.
    children: HashMap<Key, Instant>,
    /// Deployments and StatefulSets with their replicas ready at their generation.
    workloads_ready: HashMap<Key, Instant>,
    /// Marketplaces (namespace, name) `Ready=True` at their generation.
    ready: HashMap<(String, String), Instant>,
    /// Kinds whose watch has listed what already exists.
    synced: BTreeSet<&'static str>,
}

type Shared = Arc<Mutex<Seen>>;

fn lock(seen: &Shared) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The kinds the operator makes for a Marketplace without ServiceMonitors.
const CHILD_KINDS: usize = 7;

fn start_watches(client: &Client, seen: &Shared) {
    watch_workloads::<Deployment>(client, seen, |deployment| {
        let status = deployment.status.as_ref();
        workload_ready(
            deployment.metadata.generation,
            deployment.spec.as_ref().and_then(|spec| spec.replicas),
            status.and_then(|status| status.observed_generation),
            status.and_then(|status| status.ready_replicas),
        )
    });
    watch_workloads::<StatefulSet>(client, seen, |stateful_set| {
        let status = stateful_set.status.as_ref();
        workload_ready(
            stateful_set.metadata.generation,
            stateful_set.spec.as_ref().and_then(|spec| spec.replicas),
            status.and_then(|status| status.observed_generation),
            status.and_then(|status| status.ready_replicas),
        )
    });
    watch_children::<Service>(client, seen);
    watch_children::<Secret>(client, seen);
    watch_children::<NetworkPolicy>(client, seen);
    watch_children::<PodDisruptionBudget>(client, seen);
    watch_children::<ConfigMap>(client, seen);
    follow(
        "Marketplace",
        kube::runtime::watcher(
            Api::<Marketplace>::all(client.clone()),
            watcher::Config::default(),
        ),
        seen,
        |marketplace: &Marketplace, at, seen| {
            if is_ready(marketplace) {
                let key = (
                    marketplace.namespace().unwrap_or_default(),
                    marketplace.name_any(),
                );
                seen.ready.entry(key).or_insert(at);
            }
        },
    );
}

/// Whether a Marketplace's status says `Ready=True` for its current spec.
fn is_ready(marketplace: &Marketplace) -> bool {
    marketplace.status.as_ref().is_some_and(|status| {
        status.observed_generation == marketplace.metadata.generation
            && status
                .conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
    })
}

fn managed_by_the_operator() -> watcher::Config {
    watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"))
}

fn key(kind: &'static str, meta: &ObjectMeta) -> Key {
    (
        kind,
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A kind of object the operator makes.
trait Child:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + k8s_openapi::Resource
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Child for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// Watches the metadata of the operator's children of kind `K`.
fn watch_children<K: Child>(client: &Client, seen: &Shared) {
    let kind = <K as k8s_openapi::Resource>::KIND;
    follow(
        kind,
        // An Api of PartialObjectMeta makes metadata-only requests.
        kube::runtime::watcher(
            Api::<PartialObjectMeta<K>>::all(client.clone()),
            managed_by_the_operator(),
        ),
        seen,
        move |object: &PartialObjectMeta<K>, at, seen| {
            seen.children
                .entry(key(kind, &object.metadata))
                .or_insert(at);
        },
    );
}

/// Watches the operator's workloads of kind `K`: when each appears and
/// when it first is `ready`.
fn watch_workloads<K: Child>(client: &Client, seen: &Shared, ready: fn(&K) -> bool) {
    let kind = <K as k8s_openapi::Resource>::KIND;
    follow(
        kind,
        kube::runtime::watcher(Api::<K>::all(client.clone()), managed_by_the_operator()),
        seen,
        move |object: &K, at, seen| {
            let key = key(kind, object.meta());
            if ready(object) {
                seen.workloads_ready.entry(key.clone()).or_insert(at);
            }
            seen.children.entry(key).or_insert(at);
        },
    );
}

/// Runs a watch in the background and records each object it sees, with
/// the instant its event arrived.
fn follow<T, S>(
    kind: &'static str,
    stream: S,
    seen: &Shared,
    record: impl Fn(&T, Instant, &mut Seen) + Send + 'static,
) where
    T: Send + 'static,
    S: Stream<Item = Result<Event<T>, watcher::Error>> + Send + 'static,
{
    let seen = Arc::clone(seen);
    tokio::spawn(async move {
        let mut events = pin!(stream.default_backoff());
        while let Some(event) = events.next().await {
            let at = Instant::now();
            match event {
                Ok(Event::Apply(object) | Event::InitApply(object)) => {
                    record(&object, at, &mut lock(&seen));
                }
                Ok(Event::InitDone) => {
                    lock(&seen).synced.insert(kind);
                }
                Ok(Event::Init | Event::Delete(_)) => {}
                Err(error) => eprintln!("bench[operator]: watching {kind}s: {error}; retrying"),
            }
        }
    });
}

async fn wait_synced(seen: &Shared) -> Result<()> {
    wait_until(
        "the watches to list what the cluster holds",
        Duration::from_secs(60),
        // The child kinds and the Marketplaces.
        async || Ok(lock(seen).synced.len() > CHILD_KINDS),
    )
    .await
}

/// The ServiceCIDR the benchmark adds, and its range.
const BENCH_SERVICE_CIDR: (&str, &str) = ("marketplace-bench", "10.96.0.0/16");

/// Gives the rounds' Services enough addresses. kube-apiserver's default
/// Service range, which the kwok cluster keeps, is 10.0.0.0/24: 254
/// addresses, and every Marketplace has five ClusterIP Services (gateway,
/// account, catalog, order, search), so 50 do not fit. A second
/// ServiceCIDR (GA since Kubernetes 1.33) adds addresses to a running API
/// server.
async fn make_room_for_services(client: &Client) -> Result<()> {
    let ranges = Api::<ServiceCIDR>::all(client.clone());
    let (name, cidr) = BENCH_SERVICE_CIDR;
    let existing: Vec<String> = ranges
        .list(&Default::default())
        .await
        .context("listing ServiceCIDRs")?
        .into_iter()
        .filter(|range| range.metadata.name.as_deref() != Some(name))
        .flat_map(|range| range.spec.and_then(|spec| spec.cidrs).unwrap_or_default())
        .collect();
    let range = ServiceCIDR {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceCIDRSpec {
            cidrs: Some(vec![cidr.to_owned()]),
        }),
        status: None,
    };
    ranges
        .patch(
            name,
            &PatchParams::apply("marketplace-bench"),
            &Patch::Apply(&range),
        )
        .await
        .with_context(|| format!("adding the ServiceCIDR {name}"))?;
    wait_until(
        &format!("the ServiceCIDR {name} ({cidr}) to be Ready"),
        Duration::from_secs(30),
        async || {
            let range = ranges.get(name).await?;
            let conditions = range.status.and_then(|status| status.conditions);
            Ok(conditions
                .unwrap_or_default()
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True"))
        },
    )
    .await?;
    println!(
        "bench[operator]: Service addresses from {} and {cidr} (ServiceCIDR {name}, added for room)",
        existing.join(", ")
    );
    Ok(())
}

/// How many pods a Marketplace runs: the replicas of its workloads.
fn pods_of(marketplace: &Marketplace) -> usize {
    let mut replicas = 0;
    for component in Component::ALL {
        replicas += services::deployment(marketplace, component)
            .and_then(|deployment| deployment.spec?.replicas)
            .unwrap_or(0);
        replicas += stores::database_statefulset(marketplace, component)
            .and_then(|stateful_set| stateful_set.spec?.replicas)
            .unwrap_or(0);
    }
    replicas += stores::search_statefulset(marketplace)
        .and_then(|stateful_set| stateful_set.spec?.replicas)
        .unwrap_or(0);
    usize::try_from(replicas).unwrap_or(0)
}

/// The pods a node takes, from its allocatable resources.
fn pod_capacity(node: &Node) -> usize {
    node.status
        .as_ref()
        .and_then(|status| status.allocatable.as_ref())
        .and_then(|allocatable| allocatable.get("pods"))
        .and_then(|pods| pods.0.parse().ok())
        .unwrap_or(0)
}

/// Adds fake nodes like the cluster's first one until the nodes take
/// `pods` more than they run already, with a tenth to spare. The test cluster has two kwok nodes of 110
/// pods each, and 50 Marketplaces run about 400 pods; without room the
/// scheduler leaves the rest Pending ("Too many pods"). kwok plays the
/// kubelet of every node (`--manage-all-nodes`), so a Node object is all a
/// node needs.
async fn make_room_for_pods(client: &Client, pods: usize) -> Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    let existing = nodes
        .list(&Default::default())
        .await
        .context("listing nodes")?
        .items;
    let capacity: usize = existing.iter().map(pod_capacity).sum();
    // A cluster that earlier runs used keeps their pods.
    let running = Api::<PartialObjectMeta<Pod>>::all(client.clone())
        .list_metadata(&Default::default())
        .await
        .context("listing pods")?
        .items
        .len();
    let wanted = running + pods + pods / 10;
    if capacity >= wanted {
        return Ok(());
    }
    let model = existing
        .iter()
        .find(|node| pod_capacity(node) > 0)
        .context("no node of the cluster takes pods")?;
    let per_node = pod_capacity(model);
    let added = (wanted - capacity).div_ceil(per_node);
    let mut names = Vec::new();
    for n in existing.len()..existing.len() + added {
        let name = format!("marketplace-bench-{n}");
        let mut labels = model.metadata.labels.clone().unwrap_or_default();
        labels.insert("kubernetes.io/hostname".to_owned(), name.clone());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels),
                annotations: model.metadata.annotations.clone(),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(NodeStatus {
                allocatable: model.status.as_ref().and_then(|s| s.allocatable.clone()),
                capacity: model.status.as_ref().and_then(|s| s.capacity.clone()),
                ..NodeStatus::default()
            }),
        };
        nodes
            .patch(
                &name,
                &PatchParams::apply("marketplace-bench"),
                &Patch::Apply(&node),
            )
            .await
            .with_context(|| format!("adding node {name}"))?;
        names.push(name);
    }
    for name in &names {
        wait_until(
            &format!("the added node {name} to be Ready and schedulable"),
            Duration::from_secs(60),
            async || {
                let node = nodes.get(name).await?;
                let ready = node
                    .status
                    .and_then(|status| status.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|condition| condition.type_ == "Ready" && condition.status == "True");
                let tainted = node
                    .spec
                    .and_then(|spec| spec.taints)
                    .unwrap_or_default()
                    .iter()
                    .any(|taint| taint.effect == "NoSchedule");
                Ok(ready && !tainted)
            },
        )
        .await?;
    }
    println!(
        "bench[operator]: added {added} kwok node(s) like {}: the cluster's {} node(s) take {capacity} pods, the rounds run {pods}",
        model.name_any(),
        existing.len(),
    );
    Ok(())
}

/// The `(kind, name)` of every child the operator makes for `marketplace`
/// on a cluster without ServiceMonitors, from the operator's own builders.
/// One child the operator's builders make for a Marketplace, typed away.
#[derive(Debug)]
struct ChildObject {
    kind: &'static str,
    resource: ApiResource,
    object: DynamicObject,
}

/// The children the operator's own builders make for `marketplace`
/// (without ServiceMonitors, which the benchmark's cluster does not serve),
/// in the order of its two apply waves: what the pods use, then the
/// workloads. `password` goes into the database Secrets.
fn children_of(marketplace: &Marketplace, password: &str) -> Result<Vec<ChildObject>> {
    fn push<K>(children: &mut Vec<ChildObject>, object: Option<K>) -> Result<()>
    where
        K: k8s_openapi::Resource + Resource<DynamicType = ()> + serde::Serialize,
    {
        let Some(object) = object else {
            return Ok(());
        };
        let kind = <K as k8s_openapi::Resource>::KIND;
        let object = serde_json::from_value(serde_json::to_value(&object)?)
            .with_context(|| format!("a {kind} as a dynamic object"))?;
        children.push(ChildObject {
            kind,
            resource: ApiResource::erase::<K>(&()),
            object,
        });
        Ok(())
    }
    let mut children = Vec::new();
    for component in Component::ALL {
        push(
            &mut children,
            stores::database_secret(marketplace, component, password),
        )?;
        push(&mut children, services::service(marketplace, component))?;
        push(
            &mut children,
            stores::database_service(marketplace, component),
        )?;
        push(
            &mut children,
            services::pod_disruption_budget(marketplace, component),
        )?;
    }
    push(&mut children, stores::search_service(marketplace))?;
    push(&mut children, stores::search_headless_service(marketplace))?;
    for policy in stores::network_policies(marketplace) {
        push(&mut children, Some(policy))?;
    }
    push(
        &mut children,
        monitoring::scrape_config_map(marketplace, false),
    )?;
    for component in Component::ALL {
        push(
            &mut children,
            stores::database_statefulset(marketplace, component),
        )?;
    }
    push(&mut children, stores::search_statefulset(marketplace))?;
    for component in Component::ALL {
        push(&mut children, services::deployment(marketplace, component))?;
    }
    Ok(children)
}

/// The kind and name of each child the operator makes for `marketplace`.
fn expected_children(marketplace: &Marketplace) -> Result<BTreeSet<(&'static str, String)>> {
    // The password does not change the Secret's name.
    Ok(children_of(marketplace, "")?
        .into_iter()
        .map(|child| (child.kind, child.object.name_any()))
        .collect())
}

fn is_workload(kind: &str) -> bool {
    kind == <Deployment as k8s_openapi::Resource>::KIND
        || kind == <StatefulSet as k8s_openapi::Resource>::KIND
}

/// One Marketplace of a round: when its create returned and what it needs.
#[derive(Debug)]
struct Instance {
    namespace: String,
    name: String,
    created: Instant,
    /// How long its create request took.
    create_took: Duration,
    children: BTreeSet<(&'static str, String)>,
}

/// When each milestone of one Marketplace was reached, after its create.
#[derive(Debug, Clone, Copy)]
struct Milestones {
    children: Duration,
    workloads_ready: Duration,
    ready: Duration,
}

impl Instance {
    /// The milestones, once all are reached.
    fn milestones(&self, seen: &Seen) -> Option<Milestones> {
        let mut children = Duration::ZERO;
        let mut workloads_ready = Duration::ZERO;
        for (kind, name) in &self.children {
            let key = (*kind, self.namespace.clone(), name.clone());
            let created = seen.children.get(&key)?;
            children = children.max(created.saturating_duration_since(self.created));
            if is_workload(kind) {
                let ready = seen.workloads_ready.get(&key)?;
                workloads_ready =
                    workloads_ready.max(ready.saturating_duration_since(self.created));
            }
        }
        let ready = seen
            .ready
            .get(&(self.namespace.clone(), self.name.clone()))?
            .saturating_duration_since(self.created);
        Some(Milestones {
            children,
            workloads_ready,
            ready,
        })
    }

    /// Whether every one of its children has been seen.
    fn has_children(&self, seen: &Seen) -> bool {
        self.children.iter().all(|(kind, name)| {
            seen.children
                .contains_key(&(*kind, self.namespace.clone(), name.clone()))
        })
    }

    /// What it still waits for, for the error when a round times out.
    fn missing(&self, seen: &Seen) -> Vec<String> {
        let mut missing = Vec::new();
        for (kind, name) in &self.children {
            let key = (*kind, self.namespace.clone(), name.clone());
            if !seen.children.contains_key(&key) {
                missing.push(format!("{kind} {name}"));
            } else if is_workload(kind) && !seen.workloads_ready.contains_key(&key) {
                missing.push(format!("{kind} {name} ready"));
            }
        }
        if !seen
            .ready
            .contains_key(&(self.namespace.clone(), self.name.clone()))
        {
            missing.push("Ready".to_owned());
        }
        missing
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_round(
    client: &Client,
    args: &OperatorArgs,
    operator: &OperatorProcess,
    template: &Marketplace,
    seen: &Shared,
    index: usize,
    instances: usize,
    pace: Pace,
) -> Result<Round> {
    let namespaces = make_namespaces(client, index, instances.div_ceil(args.per_namespace)).await?;
    println!(
        "bench[operator]: round {}: creating {instances} Marketplace(s) {} in {} namespace(s)",
        index + 1,
        pace.describe(),
        namespaces.len()
    );
    let before = operator.counters().await?;
    let api_before = ApiServerWrites::scrape(client).await?;
    let cpu_before = CpuTicks::now(operator.pid);
    let started = Instant::now();
    let creates = (0..instances).map(|i| {
        let namespace = namespaces[i / args.per_namespace].clone();
        let name = format!("shop-{i}");
        let marketplace = Marketplace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: template.spec.clone(),
            status: None,
        };
        let api = Api::<Marketplace>::namespaced(client.clone(), &namespace);
        async move {
            let sent = Instant::now();
            let created = api
                .create(&PostParams::default(), &marketplace)
                .await
                .with_context(|| format!("creating Marketplace {namespace}/{name}"))?;
            let returned = Instant::now();
            // Built from the object as created, with the API server's defaults.
            anyhow::Ok(Instance {
                children: expected_children(&created)?,
                namespace,
                name,
                created: returned,
                create_took: returned - sent,
            })
        }
    });
    let created: Vec<Instance> = match pace {
        Pace::AtOnce => futures::future::try_join_all(creates).await?,
        Pace::OneByOne => {
            let mut created = Vec::with_capacity(instances);
            for create in creates {
                created.push(create.await?);
            }
            created
        }
    };
    let created_in = started.elapsed();
    let create_took: Vec<Duration> = created
        .iter()
        .map(|instance| instance.create_took)
        .collect();

    let deadline = Instant::now() + args.deadline;
    // What the API server and the operator had written when the last child
    // was seen.
    let mut at_children: Option<(ApiServerWrites, Counters)> = None;
    let milestones = loop {
        let all_children = at_children.is_none() && {
            let seen = lock(seen);
            created.iter().all(|instance| instance.has_children(&seen))
        };
        if all_children {
            at_children = Some((
                ApiServerWrites::scrape(client).await?,
                operator.counters().await?,
            ));
        }
        {
            let seen = lock(seen);
            let reached: Option<Vec<Milestones>> = created
                .iter()
                .map(|instance| instance.milestones(&seen))
                .collect();
            if let Some(reached) = reached {
                break reached;
            }
            if Instant::now() > deadline {
                let waiting: Vec<String> = created
                    .iter()
                    .filter_map(|instance| {
                        let missing = instance.missing(&seen);
                        (!missing.is_empty()).then(|| {
                            format!(
                                "{}/{}: {}",
                                instance.namespace,
                                instance.name,
                                missing.join(", ")
                            )
                        })
                    })
                    .collect();
                bail!(
                    "round {}: {} of {instances} Marketplaces did not converge within {:?}:\n  {}",
                    index + 1,
                    waiting.len(),
                    args.deadline,
                    waiting.join("\n  ")
                );
            }
        }
        operator.memory()?;
        tokio::time::sleep(POLL).await;
    };
    let converged_in = started.elapsed();
    // Ready is written before its event is posted, and a last reconcile
    // may still be running: the quiet window starts once the operator's
    // counters stand still.
    let converged = settle(operator).await?;
    let settled_in = started.elapsed() - converged_in;
    let api_converged = ApiServerWrites::scrape(client).await?;
    let (api_children, operator_children) =
        at_children.context("the milestones were reached before every child was seen")?;
    let cpu_converged = CpuTicks::now(operator.pid);
    // The window is the measurement itself, not a wait for something.
    tokio::time::sleep(args.steady).await;
    let after = operator.counters().await?;
    let cpu_after = CpuTicks::now(operator.pid);
    let memory = operator.memory()?;

    let children_per_instance: BTreeSet<usize> = created
        .iter()
        .map(|instance| instance.children.len())
        .collect();
    Ok(Round {
        instances,
        pace,
        namespaces: namespaces.len(),
        children_per_instance,
        created_in,
        create_took,
        converged_in,
        settled_in,
        milestones,
        api_to_children: api_children.since(&api_before),
        operator_to_children: operator_children.since(&before),
        api_converging: api_converged.since(&api_before),
        converging: converged.since(&before),
        converging_cpu: cpu_converged.since(&cpu_before),
        steady: after.since(&converged),
        steady_cpu: cpu_after.since(&cpu_converged),
        steady_window: args.steady,
        memory,
    })
}

/// How long the operator's counters must stand still to call it settled.
const SETTLED: Duration = Duration::from_secs(1);

/// Waits until the operator's write and reconcile counters are unchanged
/// for [`SETTLED`] and returns them as they were when they last changed.
async fn settle(operator: &OperatorProcess) -> Result<Counters> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = operator.counters().await?;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        let now = operator.counters().await?;
        if now.writes != last.writes || now.reconciles != last.reconciles {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= SETTLED {
            return Ok(last);
        }
        if Instant::now() > deadline {
            bail!(
                "the operator kept writing or reconciling for 60 s after every Marketplace was Ready"
            );
        }
    }
}

/// Creates `count` fresh namespaces and waits until pods can be created in
/// them (their default ServiceAccount exists), so that the round does not
/// time the namespace controller.
async fn make_namespaces(client: &Client, round: usize, count: usize) -> Result<Vec<String>> {
    let namespaces = Api::<Namespace>::all(client.clone());
    let mut names = Vec::new();
    for n in 0..count {
        let name = format!("bench-{}-r{}-{n}", std::process::id(), round + 1);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("marketplace.dev/bench".to_owned(), "operator".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        names.push(name);
    }
    for name in &names {
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), name);
        wait_until(
            &format!("the default ServiceAccount of namespace {name}"),
            Duration::from_secs(60),
            async || Ok(accounts.get_opt("default").await?.is_some()),
        )
        .await?;
    }
    Ok(names)
}

/// The operator's counters from one scrape of `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counters {
    /// API writes by HTTP verb.
    writes: BTreeMap<String, u64>,
    reconciles: u64,
    failed_reconciles: u64,
    /// Seconds spent in reconciles, all together.
    reconcile_seconds: f64,
    leader: bool,
}

impl Counters {
    fn parse(text: &str) -> Self {
        let mut counters = Self::default();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let Some((sample, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(seconds) = value.parse::<f64>() else {
                continue;
            };
            // Counters are whole numbers, printed as floats.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let value = seconds as u64;
            if let Some(verb) = sample
                .strip_prefix("marketplace_operator_api_writes_total{verb=\"")
                .and_then(|rest| rest.strip_suffix("\"}"))
            {
                counters.writes.insert(verb.to_owned(), value);
            } else if sample == "marketplace_operator_reconciliations_total{result=\"success\"}" {
                counters.reconciles += value;
            } else if sample == "marketplace_operator_reconciliations_total{result=\"error\"}" {
                counters.reconciles += value;
                counters.failed_reconciles += value;
            } else if sample == "marketplace_operator_reconcile_duration_seconds_sum" {
                counters.reconcile_seconds = seconds;
            } else if sample == "marketplace_operator_leader" {
                counters.leader = value == 1;
            }
        }
        counters
    }

    /// What was counted between `earlier` and this scrape.
    fn since(&self, earlier: &Self) -> Self {
        let writes = self
            .writes
            .iter()
            .map(|(verb, count)| {
                let before = earlier.writes.get(verb).copied().unwrap_or(0);
                (verb.clone(), count.saturating_sub(before))
            })
            .filter(|(_, count)| *count > 0)
            .collect();
        Self {
            writes,
            reconciles: self.reconciles.saturating_sub(earlier.reconciles),
            failed_reconciles: self
                .failed_reconciles
                .saturating_sub(earlier.failed_reconciles),
            reconcile_seconds: (self.reconcile_seconds - earlier.reconcile_seconds).max(0.0),
            leader: self.leader,
        }
    }

    /// `1311 reconciles (0 failed, 0.120 s each on average)`.
    fn describe_reconciles(&self) -> String {
        #[allow(clippy::cast_precision_loss)]
        let mean = self.reconcile_seconds / self.reconciles.max(1) as f64;
        format!(
            "{} reconciles ({} failed, {mean:.3} s each on average)",
            self.reconciles, self.failed_reconciles
        )
    }

    fn total_writes(&self) -> u64 {
        self.writes.values().sum()
    }

    /// `12 (patch 10, delete 2)`, or `0`.
    fn describe_writes(&self) -> String {
        if self.writes.is_empty() {
            return "0".to_owned();
        }
        let by_verb: Vec<String> = self
            .writes
            .iter()
            .map(|(verb, count)| format!("{verb} {count}"))
            .collect();
        format!("{} ({})", self.total_writes(), by_verb.join(", "))
    }
}

/// The writes the API server has served, by verb, from its
/// `apiserver_request_total` counter: every request but reads and watches.
#[derive(Debug, Clone, Default, PartialEq)]
struct ApiServerWrites(BTreeMap<String, u64>);

impl ApiServerWrites {
    async fn scrape(client: &Client) -> Result<Self> {
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .context("building GET /metrics")?;
        let text = client
            .request_text(request)
            .await
            .context("reading the API server's /metrics")?;
        Ok(Self::parse(&text))
    }

    fn parse(text: &str) -> Self {
        let mut writes = BTreeMap::new();
        for line in text.lines() {
            let Some(labels) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = labels.rsplit_once("} ") else {
                continue;
            };
            let Some(verb) = labels
                .split(',')
                .find_map(|label| label.strip_prefix("verb=\""))
                .and_then(|verb| verb.strip_suffix('"'))
            else {
                continue;
            };
            if matches!(verb, "GET" | "LIST" | "WATCH" | "CONNECT") {
                continue;
            }
            // Counters are whole numbers, printed as floats.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let count = value.parse::<f64>().unwrap_or(0.0) as u64;
            *writes.entry(verb.to_owned()).or_insert(0) += count;
        }
        Self(writes)
    }

    fn since(&self, earlier: &Self) -> Self {
        Self(
            self.0
                .iter()
                .map(|(verb, count)| {
                    let before = earlier.0.get(verb).copied().unwrap_or(0);
                    (verb.clone(), count.saturating_sub(before))
                })
                .filter(|(_, count)| *count > 0)
                .collect(),
        )
    }

    /// `1200 (APPLY 800, POST 400)`.
    fn describe(&self) -> String {
        let total: u64 = self.0.values().sum();
        let by_verb: Vec<String> = self
            .0
            .iter()
            .map(|(verb, count)| format!("{verb} {count}"))
            .collect();
        format!("{total} ({})", by_verb.join(", "))
    }
}

/// `GET /metrics` with HTTP/1.0, so the body is neither chunked nor kept alive.
async fn scrape(address: SocketAddr) -> Result<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        std::io::Result::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("{address}/metrics did not answer within 5 s"))?
        .with_context(|| format!("scraping {address}/metrics"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{address}/metrics sent no HTTP response"))?;
    if head.split(' ').nth(1) != Some("200") {
        bail!("{address}/metrics answered {head}");
    }
    Ok(body.to_owned())
}

/// CPU time used so far, in USER_HZ ticks: by the operator, and by the
/// whole machine (busy and in all, summed over its cores).
#[derive(Debug, Clone, Copy)]
struct CpuTicks {
    operator: i64,
    machine_busy: u64,
    machine_all: u64,
}

impl CpuTicks {
    fn now(operator_pid: u32) -> Self {
        let operator = crate::cpu_ticks(&[("operator".to_owned(), operator_pid)])
            .into_values()
            .sum();
        let (machine_busy, machine_all) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| machine_ticks(&stat))
            .unwrap_or_default();
        Self {
            operator,
            machine_busy,
            machine_all,
        }
    }

    /// The CPU used between `earlier` and this snapshot.
    fn since(&self, earlier: &Self) -> CpuUse {
        #[allow(clippy::cast_precision_loss)]
        let seconds = |ticks: u64| ticks as f64 / crate::CLOCK_TICKS_PER_SECOND;
        let operator = u64::try_from(self.operator - earlier.operator).unwrap_or(0);
        let busy = self.machine_busy.saturating_sub(earlier.machine_busy);
        let all = self.machine_all.saturating_sub(earlier.machine_all);
        CpuUse {
            operator_seconds: seconds(operator),
            machine_busy_seconds: seconds(busy),
            machine_all_seconds: seconds(all),
        }
    }
}

/// Busy and total ticks of all cores, from the `cpu` line of `/proc/stat`:
/// user nice system idle iowait irq softirq steal; idle and iowait are not busy.
fn machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let all: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((all - idle, all))
}

/// CPU used over a stretch of time, in seconds.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    operator_seconds: f64,
    machine_busy_seconds: f64,
    machine_all_seconds: f64,
}

impl CpuUse {
    /// `CPU: the operator 3.2 s, the whole machine 75.0 s (70% busy)`.
    fn describe(&self) -> String {
        format!(
            "CPU: the operator {:.1} s, the whole machine {:.1} s ({:.0}% busy)",
            self.operator_seconds,
            self.machine_busy_seconds,
            100.0 * self.machine_busy_seconds / self.machine_all_seconds.max(f64::EPSILON)
        )
    }
}

/// The operator's resident memory, from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Memory {
    /// The peak since the process started (VmHWM).
    peak_kib: u64,
    /// Now (VmRSS).
    current_kib: u64,
}

impl Memory {
    fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status.lines().find_map(|line| {
                line.strip_prefix(name)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        };
        Some(Self {
            peak_kib: field("VmHWM:")?,
            current_kib: field("VmRSS:")?,
        })
    }
}

fn mib(kib: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let kib = kib as f64;
    kib / 1024.0
}

/// The nearest-rank percentile `p` (0-100] of `values`; `None` when empty.
fn percentile<T: Copy + PartialOrd>(values: &[T], p: f64) -> Option<T> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// p50, p99 and max of `values`, in seconds.
fn spread(values: &[Duration]) -> [f64; 3] {
    [50.0, 99.0, 100.0].map(|p| percentile(values, p).unwrap_or_default().as_secs_f64())
}

/// How a round sends its creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// All at once, concurrently.
    AtOnce,
    /// Each when the previous one returned.
    OneByOne,
}

impl Pace {
    fn describe(self) -> &'static str {
        match self {
            Self::AtOnce => "at once",
            Self::OneByOne => "one after another",
        }
    }
}

/// What one round measured.
#[derive(Debug)]
struct Round {
    instances: usize,
    pace: Pace,
    namespaces: usize,
    /// The distinct child counts of its Marketplaces (one, for copies of one spec).
    children_per_instance: BTreeSet<usize>,
    created_in: Duration,
    /// How long each create request took (the times start at its return).
    create_took: Vec<Duration>,
    converged_in: Duration,
    /// From convergence until the operator's counters stood still.
    settled_in: Duration,
    milestones: Vec<Milestones>,
    /// The API server's writes (everybody's, the driver's creates too)
    /// from just before the creates until the last child was seen.
    api_to_children: ApiServerWrites,
    /// The operator's counters over the same stretch.
    operator_to_children: Counters,
    /// The API server's writes from just before the creates to convergence.
    api_converging: ApiServerWrites,
    /// From just before the creates to convergence.
    converging: Counters,
    converging_cpu: CpuUse,
    /// From convergence to the end of the quiet window.
    steady: Counters,
    steady_cpu: CpuUse,
    steady_window: Duration,
    memory: Memory,
}

impl Round {
    /// `50`, or `50 one by one`.
    fn label(&self) -> String {
        match self.pace {
            Pace::AtOnce => self.instances.to_string(),
            Pace::OneByOne => format!("{} one by one", self.instances),
        }
    }

    fn times(&self, of: impl Fn(&Milestones) -> Duration) -> Vec<Duration> {
        self.milestones.iter().map(of).collect()
    }

    fn children_counts(&self) -> String {
        let counts: Vec<String> = self
            .children_per_instance
            .iter()
            .map(usize::to_string)
            .collect();
        counts.join("/")
    }

    fn print(&self) {
        let line = |label: &str, values: &[Duration]| {
            let [p50, p99, max] = spread(values);
            println!("    {label:<36} p50 {p50:>7.3} s   p99 {p99:>7.3} s   max {max:>7.3} s");
        };
        println!(
            "bench[operator]: {} Marketplace(s) created {} in {} namespace(s), {} children each; creates returned within {:.3} s, all Ready {:.3} s after the first create",
            self.instances,
            self.pace.describe(),
            self.namespaces,
            self.children_counts(),
            self.created_in.as_secs_f64(),
            self.converged_in.as_secs_f64(),
        );
        line("the create request itself", &self.create_took);
        let children = self.times(|m| m.children);
        let ready = self.times(|m| m.ready);
        line("apply -> all children created", &children);
        line(
            "apply -> workloads ready",
            &self.times(|m| m.workloads_ready),
        );
        line("apply -> Ready", &ready);
        // Where the time to Ready goes, per Marketplace.
        line(
            "  children -> workloads ready",
            &self.times(|m| m.workloads_ready.saturating_sub(m.children)),
        );
        line(
            "  workloads ready -> Ready",
            &self.times(|m| m.ready.saturating_sub(m.workloads_ready)),
        );
        // The median over Marketplaces of the control plane's share.
        let shares: Vec<f64> = self
            .milestones
            .iter()
            .map(|m| {
                let control_plane = m.workloads_ready.saturating_sub(m.children);
                control_plane.as_secs_f64() / m.ready.as_secs_f64().max(f64::EPSILON)
            })
            .collect();
        let share_p50 = percentile(&shares, 50.0).unwrap_or_default();
        println!(
            "    median share of apply -> Ready spent by the control plane on the workloads (controllers, scheduler, volume binding, kwok), not the operator: {:.0}%",
            100.0 * share_p50
        );
        println!(
            "    until the last child was seen: the API server took {} writes from everybody, {} of them by the operator",
            self.api_to_children.describe(),
            self.operator_to_children.total_writes(),
        );
        println!(
            "    until convergence: the API server took {} writes from everybody",
            self.api_converging.describe(),
        );
        println!(
            "    converging: {} API writes by the operator, {}; {}",
            self.converging.describe_writes(),
            self.converging.describe_reconciles(),
            self.converging_cpu.describe(),
        );
        println!(
            "    settled: the operator's last write or reconcile came {:.3} s after the last Ready (then {} s without one)",
            self.settled_in.saturating_sub(SETTLED).as_secs_f64(),
            SETTLED.as_secs(),
        );
        println!(
            "    {} s after convergence: {} API writes by the operator, {}; {}",
            self.steady_window.as_secs(),
            self.steady.describe_writes(),
            self.steady.describe_reconciles(),
            self.steady_cpu.describe(),
        );
        println!(
            "    operator memory: peak RSS (VmHWM) {:.1} MiB, RSS now {:.1} MiB",
            mib(self.memory.peak_kib),
            mib(self.memory.current_kib)
        );
    }
}

fn print_summary(rounds: &[Round], ceilings: &[ceiling::Ceiling], steady: Duration) {
    println!();
    println!("==> operator benchmark (times from each create's return)");
    println!(
        "    {:>18}  {:>8}  {:>26}  {:>26}  {:>13}  {:>13}",
        "Marketplaces",
        "children",
        "apply->children p50 / p99",
        "apply->Ready p50 / p99",
        "peak RSS",
        format!("writes in {} s", steady.as_secs()),
    );
    for round in rounds {
        let [children_p50, children_p99, _] = spread(&round.times(|m| m.children));
        let [ready_p50, ready_p99, _] = spread(&round.times(|m| m.ready));
        println!(
            "    {:>18}  {:>8}  {:>26}  {:>26}  {:>13}  {:>13}",
            round.label(),
            round.children_counts(),
            format!("{children_p50:.3} s / {children_p99:.3} s"),
            format!("{ready_p50:.3} s / {ready_p99:.3} s"),
            format!("{:.1} MiB", mib(round.memory.peak_kib)),
            round.steady.total_writes(),
        );
    }
    for ceiling in ceilings {
        let [p50, p99, _] = spread(&ceiling.to_children);
        println!(
            "    {:>18}  {:>8}  {:>26}  (the API server alone: the driver's own applies, {} in flight)",
            format!("{} ceiling", ceiling.instances),
            ceiling.applies / ceiling.instances.max(1),
            format!("{p50:.3} s / {p99:.3} s"),
            ceiling.in_flight,
        );
    }
    println!("    targets:");
    for round in rounds {
        let [children_p50, ..] = spread(&round.times(|m| m.children));
        println!(
            "      p50 apply->children under {} s at {}: {} ({children_p50:.3} s)",
            TARGET_CHILDREN_P50.as_secs(),
            round.label(),
            verdict(children_p50 < TARGET_CHILDREN_P50.as_secs_f64()),
        );
    }
    for ceiling in ceilings {
        println!(
            "      (the API server's own ceiling at {}: p50 {:.3} s, {} the target)",
            ceiling.instances,
            ceiling.p50(),
            if ceiling.p50() < TARGET_CHILDREN_P50.as_secs_f64() {
                "within"
            } else {
                "already over"
            }
        );
    }
    match rounds
        .iter()
        .find(|round| round.instances == TARGET_RSS_INSTANCES && round.pace == Pace::AtOnce)
    {
        Some(round) => {
            let peak = mib(round.memory.peak_kib);
            println!(
                "      peak RSS under {TARGET_PEAK_RSS_MIB} MiB at {TARGET_RSS_INSTANCES}: {} ({peak:.1} MiB)",
                verdict(peak < TARGET_PEAK_RSS_MIB)
            );
        }
        None => println!(
            "      peak RSS under {TARGET_PEAK_RSS_MIB} MiB at {TARGET_RSS_INSTANCES}: not measured (no round of {TARGET_RSS_INSTANCES})"
        ),
    }
    let steady_writes: u64 = rounds.iter().map(|round| round.steady.total_writes()).sum();
    println!(
        "      no API writes in the {} s after convergence: {} ({steady_writes} in all rounds)",
        steady.as_secs(),
        verdict(steady_writes == 0)
    );
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn machine_cpu_counts_idle_and_iowait_as_not_busy() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";

        assert_eq!(machine_ticks(stat), Some((160, 1000)));
        assert_eq!(machine_ticks("intr 1 2 3\n"), None);
    }

    #[test]
    fn the_api_servers_writes_are_its_requests_but_reads_summed_by_verb() {
        let text = r#"# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1"} 40
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 900
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="GET",version="v1"} 5
apiserver_request_total{code="0",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="WATCH",version="v1"} 3
apiserver_request_duration_seconds_count{verb="POST"} 99
"#;
        let writes = ApiServerWrites::parse(text);
        assert_eq!(writes.describe(), "49 (APPLY 7, POST 42)");

        let earlier = ApiServerWrites::parse(&text.replace("} 40", "} 30"));
        assert_eq!(writes.since(&earlier).describe(), "10 (POST 10)");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<Duration> = (1..=50).map(ms).collect();

        assert_eq!(percentile(&values, 50.0), Some(ms(25)));
        assert_eq!(percentile(&values, 99.0), Some(ms(50)));
        assert_eq!(percentile(&values, 100.0), Some(ms(50)));
        assert_eq!(percentile(&[ms(7)], 50.0), Some(ms(7)));
        assert_eq!(percentile::<Duration>(&[], 50.0), None);
    }

    #[test]
    fn the_counters_are_read_from_the_operators_metrics_page() {
        let page = "# HELP marketplace_operator_api_writes_total Write requests\n\
                    # TYPE marketplace_operator_api_writes_total counter\n\
                    marketplace_operator_api_writes_total{verb=\"patch\"} 120\n\
                    marketplace_operator_api_writes_total{verb=\"post\"} 3\n\
                    marketplace_operator_leader 1\n\
                    marketplace_operator_reconcile_duration_seconds_count 9\n\
                    marketplace_operator_reconcile_duration_seconds_sum 1.8\n\
                    marketplace_operator_reconciliations_total{result=\"error\"} 2\n\
                    marketplace_operator_reconciliations_total{result=\"success\"} 7\n";

        let counters = Counters::parse(page);

        assert_eq!(counters.writes["patch"], 120);
        assert_eq!(counters.writes["post"], 3);
        assert_eq!(counters.reconciles, 9);
        assert_eq!(counters.failed_reconciles, 2);
        assert!(counters.describe_reconciles().contains("0.200 s each"));
        assert!(counters.leader);
    }

    #[test]
    fn counters_since_an_earlier_scrape_keep_only_what_changed() {
        let earlier = Counters::parse(
            "marketplace_operator_api_writes_total{verb=\"patch\"} 120\n\
             marketplace_operator_reconciliations_total{result=\"success\"} 7\n",
        );
        let later = Counters::parse(
            "marketplace_operator_api_writes_total{verb=\"patch\"} 120\n\
             marketplace_operator_api_writes_total{verb=\"delete\"} 2\n\
             marketplace_operator_reconciliations_total{result=\"success\"} 10\n",
        );

        let between = later.since(&earlier);

        assert_eq!(between.describe_writes(), "2 (delete 2)");
        assert_eq!(between.reconciles, 3);
        assert_eq!(later.since(&later).describe_writes(), "0");
    }

    #[test]
    fn peak_and_current_memory_are_read_from_proc_status() {
        let status = "Name:\tmarketplace-ope\nVmPeak:\t  900000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";

        let memory = Memory::parse(status).unwrap();

        assert_eq!(memory.peak_kib, 20480);
        assert_eq!(memory.current_kib, 10240);
        assert!((mib(memory.peak_kib) - 20.0).abs() < f64::EPSILON);
        assert_eq!(Memory::parse("Name:\tx\n"), None);
    }

    #[test]
    fn the_ceilings_children_are_typed_like_the_operators_and_put_the_workloads_last() {
        let manifest = include_str!("../../../examples/marketplace.yaml");
        let mut marketplace: Marketplace = serde_yaml::from_str(manifest).unwrap();
        marketplace.metadata.namespace = Some("team-a".to_owned());

        let children = children_of(&marketplace, "secret").unwrap();

        for child in &children {
            let types = child.object.types.as_ref().unwrap();
            assert_eq!(types.kind, child.kind);
            assert_eq!(types.kind, child.resource.kind);
            assert_eq!(types.api_version, child.resource.api_version);
            assert_eq!(child.object.namespace().as_deref(), Some("team-a"));
        }
        let first_workload = children
            .iter()
            .position(|child| is_workload(child.kind))
            .unwrap();
        assert!(
            children[first_workload..]
                .iter()
                .all(|child| is_workload(child.kind)),
            "{:?}",
            children.iter().map(|child| child.kind).collect::<Vec<_>>()
        );
        assert_eq!(
            children.len(),
            expected_children(&marketplace).unwrap().len()
        );
    }

    #[test]
    fn the_expected_children_of_the_example_are_its_workloads_services_secrets_and_policies() {
        let manifest = include_str!("../../../examples/marketplace.yaml");
        let mut marketplace: Marketplace = serde_yaml::from_str(manifest).unwrap();
        marketplace.metadata.namespace = Some("team-a".to_owned());

        let children = expected_children(&marketplace).unwrap();

        for (kind, name) in [
            ("Deployment", "shop-account"),
            ("Deployment", "shop-catalog"),
            ("Deployment", "shop-order"),
            ("StatefulSet", "shop-account-db"),
            ("StatefulSet", "shop-order-db"),
            ("StatefulSet", "shop-search"),
            ("Secret", "shop-account-db"),
            ("Service", "shop-search"),
            ("ConfigMap", "shop-scrape-config"),
        ] {
            assert!(
                children.contains(&(kind, name.to_owned())),
                "{kind} {name} not in {children:?}"
            );
        }
        let kinds: BTreeSet<&str> = children.iter().map(|(kind, _)| *kind).collect();
        assert!(kinds.contains("NetworkPolicy"), "{kinds:?}");
        assert!(kinds.len() <= CHILD_KINDS, "{kinds:?}");
    }
}
