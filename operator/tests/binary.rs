//! The operator binary as a replica set would run it: two processes
//! against the kwok cluster's API server, one leader by the Lease, `/metrics`
//! and `/healthz` on each, and a takeover when the leader goes away.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use marketplace_operator::crd::{Marketplace, MarketplaceSpec};
use marketplace_operator::leader::LEASE_NAME;
use marketplace_testkit::eventually;
use marketplace_testkit::kubernetes::{self, TestNamespace};
use serde_json::json;

/// How long a follower may take to lead after the leader was killed: the
/// Lease's 15 s plus a few retries.
const TAKEOVER: Duration = Duration::from_secs(30);

/// Applies the CRD as generated and waits until the API server serves it.
async fn install_crd(client: Client) {
    let crds = Api::<CustomResourceDefinition>::all(client);
    let crd = Marketplace::crd();
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply("marketplace-operator-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    eventually(
        "the Marketplace CRD to be Established",
        Duration::from_secs(30),
        || {
            let (crds, name) = (crds.clone(), name.clone());
            async move {
                let crd = crds.get(&name).await.ok()?;
                let established = crd.status?.conditions?.into_iter().any(|condition| {
                    condition.type_ == "Established" && condition.status == "True"
                });
                established.then_some(())
            }
        },
    )
    .await;
}

/// A free local port: bound, read and released.
fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One operator process with its Lease in the test's namespace; killed when
/// dropped, and its log printed if the test failed.
struct Operator {
    process: Child,
    metrics: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Operator {
    fn start(namespace: &TestNamespace) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let metrics = free_address();
        let process = Command::new(env!("CARGO_BIN_EXE_marketplace-operator"))
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .arg("--lease-namespace")
            .arg(namespace.name())
            .env("KUBECONFIG", namespace.kubeconfig())
            .env("RUST_LOG", "info,marketplace_operator=debug")
            .stdin(Stdio::null())
            .stdout(File::try_clone(log.as_file()).unwrap())
            .stderr(File::try_clone(log.as_file()).unwrap())
            .spawn()
            .unwrap();
        Self {
            process,
            metrics,
            log,
        }
    }

    /// `GET path` on the metrics port: the status code and the body, or
    /// `None` while nothing answers.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(self.metrics).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    }

    /// The value of one sample of `/metrics`, e.g.
    /// `marketplace_operator_leader`; `None` while nothing answers.
    fn metric(&self, sample: &str) -> Option<f64> {
        let (status, body) = self.get("/metrics")?;
        assert_eq!(status, 200, "{body}");
        let line = body
            .lines()
            .find(|line| {
                line.strip_prefix(sample)
                    .is_some_and(|rest| rest.starts_with(' '))
            })
            .unwrap_or_else(|| panic!("no {sample} in\n{body}"));
        line.rsplit(' ').next()?.parse().ok()
    }

    fn leading(&self) -> Option<bool> {
        self.metric("marketplace_operator_leader")
            .map(|value| value == 1.0)
    }

    fn successes(&self) -> f64 {
        self.metric("marketplace_operator_reconciliations_total{result=\"success\"}")
            .unwrap()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.process.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.process.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the operator did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
            eprintln!(
                "--- operator log ({}) ---\n{log}--- end of operator log ---",
                self.metrics
            );
        }
    }
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
    let first = Operator::start(namespace);
    let second = Operator::start(namespace);
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

    leader.process.kill().unwrap();
    leader.process.wait().unwrap();
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
