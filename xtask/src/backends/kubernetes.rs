//! A real Kubernetes control plane without containers: kwokctl assembles
//! etcd, kube-apiserver, kube-controller-manager and kube-scheduler (all
//! built from source) with the kwok controller, which plays the kubelet for
//! fake nodes. Workload controllers, the scheduler and garbage collection are
//! the real ones; pods become Running and Ready without running anything.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::cache::Cache;
use crate::install::{KUBERNETES_VERSION, Tools};
use crate::process::{self, Supervised};

const CLUSTER_PREFIX: &str = "mkt-test-";
const NODES: u32 = 2;

const CREATE_ATTEMPTS: usize = 3;

/// kwokctl's configuration for one cluster: every component on loopback
/// (kwokctl's default is all interfaces), on ports the kernel handed out.
/// kwokctl would pick free ports itself, but it scans down from 32767, so two
/// runs creating clusters at the same moment would pick the same ones.
fn kwokctl_config(ports: &[u16; 6]) -> String {
    let [
        apiserver,
        etcd,
        etcd_peer,
        controller_manager,
        scheduler,
        kwok,
    ] = ports;
    format!(
        "apiVersion: config.kwok.x-k8s.io/v1alpha1\n\
         kind: KwokctlConfiguration\n\
         options:\n  \
           bindAddress: 127.0.0.1\n  \
           kubeApiserverPort: {apiserver}\n  \
           etcdPort: {etcd}\n  \
           etcdPeerPort: {etcd_peer}\n  \
           kubeControllerManagerPort: {controller_manager}\n  \
           kubeSchedulerPort: {scheduler}\n  \
           kwokControllerPort: {kwok}\n"
    )
}

/// A default StorageClass served by kube-controller-manager's own host-path
/// provisioner (enabled with `--enable-hostpath-provisioner`): claims bind
/// to volumes it creates on demand, and their volumes go with them.
const STORAGE_CLASS: &str = "\
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: \"true\"
provisioner: kubernetes.io/host-path
volumeBindingMode: Immediate
reclaimPolicy: Delete
";

#[derive(Debug, Clone)]
pub(super) struct ToolPaths {
    kubernetes: PathBuf,
    etcd: PathBuf,
    kwok: PathBuf,
    path: OsString,
}

impl From<&Tools> for ToolPaths {
    fn from(tools: &Tools) -> Self {
        Self {
            kubernetes: tools.kubernetes.clone(),
            etcd: tools.etcd.clone(),
            kwok: tools.kwok.clone(),
            path: tools.search_path().unwrap_or_default(),
        }
    }
}

impl ToolPaths {
    fn kwokctl(&self, cache: &Cache) -> Command {
        let mut command = Command::new(self.kwok.join("kwokctl"));
        command
            .env("KWOK_WORKDIR", cache.kwok_workdir())
            .env("KWOK_KUBE_VERSION", KUBERNETES_VERSION)
            .env("PATH", &self.path);
        command
    }

    fn kubectl(&self, kubeconfig: &Path) -> Command {
        let mut command = Command::new(self.kubernetes.join("kubectl"));
        command.arg("--kubeconfig").arg(kubeconfig);
        command
    }
}

#[derive(Debug)]
pub(super) struct KubeCluster {
    name: String,
    cache: Cache,
    kubeconfig: PathBuf,
    tools: ToolPaths,
    server: String,
    deleted: bool,
    watchdog: Option<Supervised>,
}

impl KubeCluster {
    pub(super) fn create(tools: &ToolPaths, cache: &Cache, run_dir: &Path) -> Result<Self> {
        let name = format!("{CLUSTER_PREFIX}{}", std::process::id());
        // From here on the value exists, so a later failure still deletes
        // whatever kwokctl managed to start.
        let mut cluster = Self {
            name,
            cache: cache.clone(),
            kubeconfig: run_dir.join("kubeconfig"),
            tools: tools.clone(),
            server: String::new(),
            deleted: false,
            watchdog: None,
        };
        let log = run_dir.join("kwokctl-create.log");
        for attempt in 1..=CREATE_ATTEMPTS {
            let config = run_dir.join("kwokctl.yaml");
            std::fs::write(&config, kwokctl_config(&process::free_ports()?))?;
            match process::run_logged(
                cluster.create_command(&config),
                "kubernetes: kwokctl create cluster",
                &log,
            ) {
                Ok(()) => break,
                Err(e) if attempt < CREATE_ATTEMPTS && cluster.lost_a_port_race(&log) => {
                    eprintln!(
                        "    another process took one of the cluster's ports; retrying: {e:#}"
                    );
                    let _ = delete_cluster(tools, cache, &cluster.name, &cluster.kubeconfig);
                }
                Err(e) => return Err(e),
            }
        }
        cluster.watchdog = Some(cluster.spawn_watchdog(run_dir)?);

        let mut scale = tools.kwokctl(cache);
        scale.args([
            "scale",
            "node",
            "--replicas",
            &NODES.to_string(),
            "--name",
            &cluster.name,
        ]);
        process::run_logged(
            scale,
            &format!("kubernetes: adding {NODES} kwok nodes"),
            &run_dir.join("kwokctl-scale.log"),
        )?;

        let storage = run_dir.join("storage-class.yaml");
        std::fs::write(&storage, STORAGE_CLASS)?;
        process::output(cluster.kubectl().arg("apply").arg("-f").arg(&storage))?;
        process::output(cluster.kubectl().args([
            "wait",
            "--for=condition=Ready",
            "node",
            "--all",
            "--timeout=120s",
        ]))?;
        cluster.server = process::output(cluster.kubectl().args([
            "config",
            "view",
            "--minify",
            "--output=jsonpath={.clusters[0].cluster.server}",
        ]))?
        .trim()
        .to_owned();
        Ok(cluster)
    }

    fn kubectl(&self) -> Command {
        self.tools.kubectl(&self.kubeconfig)
    }

    fn create_command(&self, config: &Path) -> Command {
        let tools = &self.tools;
        let mut create = tools.kwokctl(&self.cache);
        create
            .arg("--config")
            .arg(config)
            .args([
                "create",
                "cluster",
                "--name",
                &self.name,
                "--runtime",
                "binary",
                "--kubeconfig",
            ])
            .arg(&self.kubeconfig)
            .arg("--kube-apiserver-binary")
            .arg(tools.kubernetes.join("kube-apiserver"))
            .arg("--kube-controller-manager-binary")
            .arg(tools.kubernetes.join("kube-controller-manager"))
            .arg("--kube-scheduler-binary")
            .arg(tools.kubernetes.join("kube-scheduler"))
            .arg("--etcd-binary")
            .arg(tools.etcd.join("etcd"))
            .arg("--kwok-controller-binary")
            .arg(tools.kwok.join("kwok"))
            .args([
                "--extra-args",
                "kube-controller-manager=enable-hostpath-provisioner=true",
            ])
            .args(["--wait", "3m"]);
        create
    }

    /// Whether creation failed because a port was taken between choosing it
    /// and the component binding it.
    fn lost_a_port_race(&self, create_log: &Path) -> bool {
        let mut logs = vec![create_log.to_path_buf()];
        if let Ok(entries) = std::fs::read_dir(self.workdir().join("logs")) {
            logs.extend(entries.flatten().map(|e| e.path()));
        }
        logs.iter().any(|log| {
            std::fs::read_to_string(log).is_ok_and(|text| text.contains("address already in use"))
        })
    }

    /// kwokctl detaches the cluster's processes, so unlike PostgreSQL and
    /// Elasticsearch they would outlive an xtask killed with SIGKILL. A
    /// watchdog (`xtask reap-cluster`) deletes the cluster if that happens.
    fn spawn_watchdog(&self, run_dir: &Path) -> Result<Supervised> {
        // Not `current_exe()`: `cargo test` may relink the xtask binary while
        // this run is going (its features unify with the test crates'), and
        // the kernel still runs the image this process was started from.
        let mut command = Command::new("/proc/self/exe");
        command
            .arg("reap-cluster")
            .arg("--kwokctl")
            .arg(self.tools.kwok.join("kwokctl"))
            .arg("--workdir")
            .arg(self.cache.kwok_workdir())
            .args(["--name", &self.name, "--kubeconfig"])
            .arg(&self.kubeconfig);
        Supervised::spawn_watchdog("cluster watchdog", command, &run_dir.join("watchdog.log"))
    }

    pub(super) fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub(super) fn server(&self) -> &str {
        &self.server
    }

    /// The directory kwokctl keeps this cluster's state, binaries and pids in.
    pub(super) fn workdir(&self) -> PathBuf {
        self.cache.kwok_workdir().join("clusters").join(&self.name)
    }

    pub(super) fn delete(&mut self) -> Result<()> {
        if self.deleted {
            return Ok(());
        }
        self.deleted = true;
        let deleted = delete_cluster(&self.tools, &self.cache, &self.name, &self.kubeconfig);
        if let Some(mut watchdog) = self.watchdog.take() {
            watchdog.stop()?;
        }
        deleted
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        if let Err(e) = self.delete() {
            eprintln!("deleting the kwok cluster {}: {e:#}", self.name);
        }
    }
}

fn delete_cluster(tools: &ToolPaths, cache: &Cache, name: &str, kubeconfig: &Path) -> Result<()> {
    let mut delete = tools.kwokctl(cache);
    delete
        .args(["delete", "cluster", "--name", name, "--kubeconfig"])
        .arg(kubeconfig);
    process::output(&mut delete)
        .with_context(|| format!("kwokctl delete cluster --name {name}"))?;
    Ok(())
}

/// What `xtask reap-cluster` runs: waits until the xtask that started it is
/// gone (it is re-parented) or it is told to stop (SIGTERM, SIGINT), then
/// deletes the cluster. The xtask that started it kills it with SIGKILL
/// after deleting the cluster itself.
pub(crate) fn reap_cluster(
    kwokctl: &Path,
    workdir: &Path,
    name: &str,
    kubeconfig: &Path,
) -> Result<()> {
    let parent = std::os::unix::process::parent_id();
    while std::os::unix::process::parent_id() == parent && !crate::signals::interrupted() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    eprintln!("xtask {parent} is gone; deleting its kwok cluster {name}");
    let mut delete = Command::new(kwokctl);
    delete
        .env("KWOK_WORKDIR", workdir)
        .args(["delete", "cluster", "--name", name, "--kubeconfig"])
        .arg(kubeconfig);
    process::output(&mut delete)?;
    Ok(())
}

/// Deletes the clusters of earlier runs whose xtask is gone.
pub(super) fn remove_stale_clusters(tools: &ToolPaths, cache: &Cache) {
    let Ok(entries) = std::fs::read_dir(cache.kwok_workdir().join("clusters")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(CLUSTER_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if super::run_is_alive(pid) {
            continue;
        }
        println!("==> deleting the kwok cluster {name} left by an earlier run");
        let kubeconfig = entry.path().join("kubeconfig.yaml");
        if let Err(e) = delete_cluster(tools, cache, &name, &kubeconfig) {
            eprintln!("    {e:#}");
        }
        process::kill_all(&process::processes_mentioning(&entry.path()));
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_config_binds_loopback_on_the_given_ports() {
        let config = kwokctl_config(&[1001, 1002, 1003, 1004, 1005, 1006]);
        assert!(config.contains("\n  bindAddress: 127.0.0.1\n"), "{config}");
        assert!(config.contains("\n  kubeApiserverPort: 1001\n"), "{config}");
        assert!(config.contains("\n  etcdPeerPort: 1003\n"), "{config}");
        assert!(
            config.contains("\n  kwokControllerPort: 1006\n"),
            "{config}"
        );
    }
}
