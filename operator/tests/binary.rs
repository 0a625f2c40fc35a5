//! The operator binary as a replica set would run it: two processes
//! against the kwok cluster's API server, one leader by the Lease, `/metrics`
//! and `/healthz` on each, and a takeover when the leader goes away.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::{Operator, install_crd};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::PostParams;
use marketplace_operator::crd::{Marketplace, MarketplaceSpec};
use marketplace_operator::leader::LEASE_NAME;
use marketplace_testkit::eventually;
use marketplace_testkit::kubernetes::{self, TestNamespace};
use serde_json::json;

/// How long a follower may take to lead after the leader was killed: the
/// Lease's 15 s plus a few retries.
const TAKEOVER: Duration = Duration::from_secs(30);

/// A free local port: bound, read and released.
fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE_NAME)
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|holder| !holder.is_empty())
}

/// Starts two replicas and waits until one of them leads; returns them
/// leader first, and the leader's identity.
async fn two_replicas(namespace: &TestNamespace) -> (Operator, Operator, String) {
    let first = Operator::start_with_metrics_on(namespace, free_address());
    let second = Operator::start_with_metrics_on(namespace, free_address());
    let leases = namespace.api::<Lease>();
    eventually("one replica to lead", TAKEOVER, || async {
        let holder = holder(&leases).await?;
        match (first.leading()?, second.leading()?) {
            (true, false) | (false, true) => Some(holder),
            _ => None,
        }
    })
    .await;
    let holder = holder(&leases).await.unwrap();
    if first.leading() == Some(true) {
        (first, second, holder)
    } else {
        (second, first, holder)
    }
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_follower_takes_over_when_it_dies() {
    let Some(namespace) = kubernetes::namespace().await else {
        return;
    };
    install_crd(namespace.client()).await;
    let (mut leader, follower, first_holder) = two_replicas(&namespace).await;

    for operator in [&leader, &follower] {
        assert_eq!(operator.get("/healthz").unwrap().0, 200);
    }
    assert_eq!(leader.leading(), Some(true));
    assert_eq!(follower.leading(), Some(false));

    let spec: MarketplaceSpec = serde_json::from_value(json!({
        "account": { "database": { "managed": {} } },
        "order": { "database": { "managed": {} } },
        "catalog": { "search": { "managed": {} } },
    }))
    .unwrap();
    let marketplaces = namespace.api::<Marketplace>();
    marketplaces
        .create(&PostParams::default(), &Marketplace::new("shop", spec))
        .await
        .unwrap();
    eventually(
        "the Marketplace to be reconciled",
        Duration::from_secs(60),
        || async {
            let marketplace = marketplaces.get("shop").await.ok()?;
            let observed = marketplace.status?.observed_generation?;
            (Some(observed) == marketplace.metadata.generation).then_some(())
        },
    )
    .await;
    eventually(
        "the leader to count a successful reconcile",
        Duration::from_secs(30),
        || async { (leader.successes() > 0.0).then_some(()) },
    )
    .await;
    assert_eq!(follower.successes(), 0.0);
    assert!(
        leader
            .metric("marketplace_operator_reconcile_duration_seconds_count")
            .unwrap()
            > 0.0
    );

    leader.kill();
    let leases = namespace.api::<Lease>();
    eventually("the follower to take over", TAKEOVER, || async {
        let holder = holder(&leases).await?;
        (holder != first_holder && follower.leading()? && follower.successes() > 0.0).then_some(())
    })
    .await;
    assert_eq!(follower.get("/healthz").unwrap().0, 200);
}

#[tokio::test]
async fn a_leader_stopped_gracefully_releases_the_lease_at_once() {
    let Some(namespace) = kubernetes::namespace().await else {
        return;
    };
    install_crd(namespace.client()).await;
    let (mut leader, follower, first_holder) = two_replicas(&namespace).await;

    let status = leader.terminate();

    assert!(status.success(), "the operator exited with {status}");
    let leases = namespace.api::<Lease>();
    // Well under the Lease's 15 s: the follower did not wait for expiry.
    eventually("the follower to lead", Duration::from_secs(8), || async {
        let holder = holder(&leases).await?;
        (holder != first_holder && follower.leading()?).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_over_stops_and_exits_with_an_error() {
    let Some(namespace) = kubernetes::namespace().await else {
        return;
    };
    install_crd(namespace.client()).await;
    let mut leader = Operator::start_with_metrics_on(&namespace, free_address());
    let leases = namespace.api::<Lease>();
    eventually("the replica to lead", TAKEOVER, || async {
        leader.leading()?.then_some(())
    })
    .await;

    // Another replica takes the Lease over, as one would after this
    // replica failed to renew it in time.
    let mut lease = leases.get(LEASE_NAME).await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("another-replica".to_owned());
    spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    spec.lease_duration_seconds = Some(3600);
    leases
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
        .unwrap();

    // Its next renewal (within 5 s) finds the Lease gone; it stops its
    // controller and exits with an error, to be restarted clean.
    let status = leader
        .exited_within(Duration::from_secs(30))
        .expect("the replica kept running after losing its Lease");
    assert!(!status.success(), "it exited with {status}");
    let log = leader.log();
    assert!(log.contains("lost the leader Lease"), "{log}");
    assert!(
        log.contains("stopping the controller: the leader Lease is lost"),
        "{log}"
    );
}
