//! Helpers the operator's integration tests share: installing CRDs, running
//! the operator binary, reading objects and waiting for a Marketplace.
//!
//! Cargo compiles this module into each test binary, and no binary uses all
//! of it.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, CustomResourceExt, Resource};
use marketplace_operator::crd::Marketplace;
use marketplace_testkit::eventually;
use marketplace_testkit::kubernetes::TestNamespace;
use serde::de::DeserializeOwned;

/// How long a Marketplace may take to converge on the kwok cluster.
pub(crate) const CONVERGE: Duration = Duration::from_secs(120);

/// The workspace root, one level above the operator. cargo sets
/// `CARGO_MANIFEST_DIR` when it runs a test, which stays right when the
/// checkout moved after the build (cargo does not rebuild a relocated
/// workspace, so the compiled-in value can name a directory that is gone).
pub(crate) fn workspace_root() -> PathBuf {
    let operator = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    operator.join("..")
}

/// Applies the Marketplace CRD as generated (the same content from every
/// test, so parallel tests agree) and waits until the API server serves it.
pub(crate) async fn install_crd(client: Client) {
    apply_crd(
        client,
        Marketplace::crd(),
        "the Marketplace CRD to be Established",
    )
    .await;
}

/// Applies a CRD and waits until the API server serves it.
pub(crate) async fn install(client: Client, crd: CustomResourceDefinition) {
    let what = format!(
        "the CRD {} to be Established",
        crd.metadata.name.as_deref().unwrap()
    );
    apply_crd(client, crd, &what).await;
}

async fn apply_crd(client: Client, crd: CustomResourceDefinition, what: &str) {
    let crds = Api::<CustomResourceDefinition>::all(client);
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply("marketplace-operator-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    eventually(what, Duration::from_secs(30), || {
        let (crds, name) = (crds.clone(), name.clone());
        async move {
            let crd = crds.get(&name).await.ok()?;
            let established =
                crd.status?.conditions?.into_iter().any(|condition| {
                    condition.type_ == "Established" && condition.status == "True"
                });
            established.then_some(())
        }
    })
    .await;
}

/// The object `name`, or `None` if there is none.
pub(crate) async fn get<K>(api: &Api<K>, name: &str) -> Option<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.unwrap()
}

/// Waits until Marketplace `name` has a status describing its current
/// generation with `Ready=True`, and returns it.
pub(crate) async fn wait_ready(namespace: &TestNamespace, name: &str) -> Marketplace {
    wait_ready_as(
        &namespace.api::<Marketplace>(),
        name,
        &format!("Marketplace {}/{name} to be Ready", namespace.name()),
    )
    .await
}

/// [`wait_ready`], with `what` describing the wait when it times out.
pub(crate) async fn wait_ready_as(
    marketplaces: &Api<Marketplace>,
    name: &str,
    what: &str,
) -> Marketplace {
    eventually(what, CONVERGE, || async {
        let marketplace = marketplaces.get(name).await.ok()?;
        let status = marketplace.status.as_ref()?;
        let ready = status
            .conditions
            .iter()
            .any(|condition| condition.type_ == "Ready" && condition.status == "True");
        (ready && status.observed_generation == marketplace.metadata.generation)
            .then_some(marketplace)
    })
    .await
}

/// The operator binary running against the test cluster; killed when
/// dropped, and its log printed if the test failed.
pub(crate) struct Operator {
    process: Child,
    log: tempfile::NamedTempFile,
    /// Set when the test chose the metrics address.
    metrics: Option<SocketAddr>,
}

impl Operator {
    /// Starts the operator with a metrics port and a Lease of the test's
    /// own (tests run side by side), given by environment.
    pub(crate) fn start(namespace: &TestNamespace) -> Self {
        Self::start_with_env(namespace, &[])
    }

    /// [`Operator::start`], with more environment variables.
    pub(crate) fn start_with_env(namespace: &TestNamespace, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_marketplace-operator"));
        command
            .env("MARKETPLACE_OPERATOR_METRICS_ADDR", "127.0.0.1:0")
            .env("MARKETPLACE_OPERATOR_LEASE_NAMESPACE", namespace.name())
            .envs(env.iter().copied());
        Self::spawn(namespace, command, None)
    }

    /// Starts the operator serving `/metrics` and `/healthz` on `metrics`,
    /// with its Lease in the test's namespace, given by command-line flags.
    pub(crate) fn start_with_metrics_on(namespace: &TestNamespace, metrics: SocketAddr) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_marketplace-operator"));
        command
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .arg("--lease-namespace")
            .arg(namespace.name());
        Self::spawn(namespace, command, Some(metrics))
    }

    fn spawn(namespace: &TestNamespace, mut command: Command, metrics: Option<SocketAddr>) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let process = command
            .env("KUBECONFIG", namespace.kubeconfig())
            .env("RUST_LOG", "info,marketplace_operator=debug")
            .stdin(Stdio::null())
            .stdout(File::try_clone(log.as_file()).unwrap())
            .stderr(File::try_clone(log.as_file()).unwrap())
            .spawn()
            .unwrap();
        Self {
            process,
            log,
            metrics,
        }
    }

    /// SIGKILL: no graceful shutdown, whatever the reconciler was doing.
    /// The log stays readable, and is still printed if the test fails.
    pub(crate) fn kill(&mut self) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
    }

    /// SIGTERM, and the exit status once the operator has shut down.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.process.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.process.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the operator did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, once the operator has exited by itself within
    /// `timeout`; `None` if it is still running then.
    pub(crate) fn exited_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the operator has written so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The address the test chose for `/metrics`.
    fn metrics(&self) -> SocketAddr {
        self.metrics
            .expect("the operator was started without a chosen metrics address")
    }

    /// `GET path` on the metrics port: the status code and the body, or
    /// `None` while nothing answers.
    pub(crate) fn get(&self, path: &str) -> Option<(u16, String)> {
        let metrics = self.metrics();
        let mut stream = TcpStream::connect(metrics).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n",
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
    pub(crate) fn metric(&self, sample: &str) -> Option<f64> {
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

    /// Whether this replica holds the Lease, by its metric; `None` while
    /// nothing answers.
    pub(crate) fn leading(&self) -> Option<bool> {
        self.metric("marketplace_operator_leader")
            .map(|value| value == 1.0)
    }

    /// How many reconciles this replica counts as successful.
    pub(crate) fn successes(&self) -> f64 {
        self.metric("marketplace_operator_reconciliations_total{result=\"success\"}")
            .unwrap()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        if std::thread::panicking() {
            let log = self.log();
            match self.metrics {
                Some(metrics) => {
                    eprintln!("--- operator log ({metrics}) ---\n{log}--- end of operator log ---")
                }
                None => eprintln!("--- operator log ---\n{log}--- end of operator log ---"),
            }
        }
    }
}
