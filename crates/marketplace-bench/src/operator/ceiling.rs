//! The API server's ceiling for the operator's apply-to-children time: the
//! driver itself applies the children of N Marketplaces, with no reconciler
//! in between, and times each Marketplace to its last child.
//!
//! The Marketplaces are created paused, so the running operator applies
//! nothing for them (it still reports their status, as it would for any
//! Marketplace). Then the clock starts and the driver sends the server-side
//! applies the operator's own builders make for every Marketplace, under
//! the operator's field manager, Marketplace after Marketplace in creation
//! order (the order that gives the lowest median), with a fixed number in
//! flight. The control plane reacts to the workloads as it would to the
//! operator's (ReplicaSets, pods, volume claims), so what is left is the
//! time the API server needs for the writes alone: no operator can make a
//! Marketplace's children exist sooner on the same cluster and machine.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use kube::api::{DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use marketplace_operator::builders::MANAGER;
use marketplace_operator::crd::Marketplace;

use super::{ApiServerWrites, ChildObject, CpuTicks, CpuUse, children_of, spread};

/// What one ceiling round measured.
#[derive(Debug)]
pub(super) struct Ceiling {
    pub(super) instances: usize,
    pub(super) in_flight: usize,
    pub(super) applies: usize,
    /// From the start of the applies to the return of each Marketplace's last.
    pub(super) to_children: Vec<Duration>,
    /// From the start to the return of the last apply of all.
    pub(super) total: Duration,
    /// The API server's writes from everybody meanwhile.
    pub(super) api: ApiServerWrites,
    /// The CPU the operator and the whole machine used meanwhile.
    pub(super) cpu: CpuUse,
}

/// Creates `instances` paused copies of `template` over `namespaces`,
/// `per_namespace` in each, then applies all their children with
/// `in_flight` requests at once.
pub(super) async fn run(
    client: &Client,
    template: &Marketplace,
    namespaces: &[String],
    instances: usize,
    per_namespace: usize,
    in_flight: usize,
    operator_pid: u32,
) -> Result<Ceiling> {
    let mut created = Vec::with_capacity(instances);
    for i in 0..instances {
        let namespace = &namespaces[i / per_namespace];
        let mut spec = template.spec.clone();
        spec.paused = true;
        let marketplace = Marketplace {
            metadata: ObjectMeta {
                name: Some(format!("ceiling-{i}")),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        };
        let api = Api::<Marketplace>::namespaced(client.clone(), namespace);
        let marketplace = api
            .create(&PostParams::default(), &marketplace)
            .await
            .with_context(|| format!("creating the paused Marketplace {namespace}/ceiling-{i}"))?;
        created.push(marketplace);
    }
    let mut applies: Vec<(usize, ChildObject)> = Vec::new();
    for (index, marketplace) in created.iter().enumerate() {
        // Not unpaused: the builders ignore `paused`.
        applies.extend(
            children_of(marketplace, "ceiling")?
                .into_iter()
                .map(|child| (index, child)),
        );
    }
    let count = applies.len();
    // Let the control plane finish with the creates first.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let api_before = ApiServerWrites::scrape(client).await?;
    let cpu_before = CpuTicks::now(operator_pid);
    let started = Instant::now();
    let done: Vec<(usize, Duration)> = futures::stream::iter(applies)
        .map(|(index, child)| {
            let client = client.clone();
            async move {
                apply(&client, &child).await?;
                anyhow::Ok((index, started.elapsed()))
            }
        })
        .buffer_unordered(in_flight.max(1))
        .try_collect()
        .await?;
    let total = started.elapsed();
    let cpu = CpuTicks::now(operator_pid).since(&cpu_before);
    let api = ApiServerWrites::scrape(client).await?.since(&api_before);
    let mut to_children = vec![Duration::ZERO; instances];
    for (index, at) in done {
        to_children[index] = to_children[index].max(at);
    }
    Ok(Ceiling {
        instances,
        in_flight,
        applies: count,
        to_children,
        total,
        api,
        cpu,
    })
}

async fn apply(client: &Client, child: &ChildObject) -> Result<()> {
    let namespace = child.object.namespace().unwrap_or_default();
    let name = child.object.name_any();
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &child.resource);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&child.object),
    )
    .await
    .with_context(|| format!("applying {} {namespace}/{name}", child.kind))?;
    Ok(())
}

impl Ceiling {
    pub(super) fn print(&self) {
        let [p50, p99, max] = spread(&self.to_children);
        let seconds = self.total.as_secs_f64().max(f64::EPSILON);
        #[allow(clippy::cast_precision_loss)]
        let rate = self.applies as f64 / seconds;
        println!(
            "bench[operator]: the API server's ceiling: the driver applied the {} children of {} paused Marketplace(s) itself, Marketplace after Marketplace, {} in flight: all in {:.3} s ({rate:.0} applies/s)",
            self.applies,
            self.instances,
            self.in_flight,
            self.total.as_secs_f64(),
        );
        println!(
            "    {:<36} p50 {p50:>7.3} s   p99 {p99:>7.3} s   max {max:>7.3} s",
            "start -> all children applied"
        );
        #[allow(clippy::cast_precision_loss)]
        let writes = self.api.0.values().sum::<u64>() as f64 / seconds;
        println!(
            "    meanwhile the API server took {} writes from everybody ({writes:.0}/s); {}",
            self.api.describe(),
            self.cpu.describe(),
        );
    }

    /// The median time to children.
    pub(super) fn p50(&self) -> f64 {
        spread(&self.to_children)[0]
    }
}
