//! The real backends a test run talks to, each started on free loopback
//! ports in a directory of its own and stopped at the end of the run.
//!
//! Tests find them through these environment variables:
//!
//! | variable | value |
//! | --- | --- |
//! | `MARKETPLACE_TEST_BACKENDS` | `required`: a test whose backend is missing fails instead of skipping |
//! | `MARKETPLACE_TEST_POSTGRES_URL` | superuser URL of the run's PostgreSQL (`postgres` database) |
//! | `MARKETPLACE_TEST_ELASTICSEARCH_URL` | base URL of the run's Elasticsearch node |
//! | `MARKETPLACE_TEST_KUBECONFIG` | kubeconfig of the run's kwok cluster (also `KUBECONFIG`) |
//! | `MARKETPLACE_TEST_CHROMIUM` | the Chromium binary that browser tests run headless |
//! | `MARKETPLACE_TEST_CHROMEDRIVER` | the chromedriver of that Chromium; each browser test starts its own |
//! | `MARKETPLACE_TEST_OTELCOL` | an OpenTelemetry Collector binary (OTLP receiver, file exporter); each trace test starts its own |
//! | `MARKETPLACE_TEST_POSTGRES_BIN` | PostgreSQL's bin directory, for tests that run (and restart) a server of their own |
//! | `MARKETPLACE_TEST_SYSTEM_USER` | set only when tests run as root: the user that runs the servers which refuse root (PostgreSQL) |
//! | `PATH` | starts with the built `kubectl`, `helm`, `kwokctl`, `promtool`, `tilt` |
//!
//! marketplace-testkit's `Backend` reads the same names; a mismatch makes every backend
//! test fail under `cargo xtask test`, so the two cannot drift silently.

mod elasticsearch;
mod kubernetes;
mod postgres;

pub(crate) use self::kubernetes::reap_cluster;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use self::elasticsearch::Elasticsearch;
use self::kubernetes::KubeCluster;
use self::postgres::Postgres;
use crate::cache::Cache;
use crate::install::Tools;
use crate::process;
use crate::testuser::User;

const RUN_DIR_PREFIX: &str = "marketplace-test-";

#[derive(Debug)]
pub(crate) struct Backends {
    run_dir: PathBuf,
    postgres: Option<Postgres>,
    elasticsearch: Option<Elasticsearch>,
    kubernetes: Option<KubeCluster>,
    env: Vec<(String, String)>,
}

impl Backends {
    /// Starts PostgreSQL and Elasticsearch, and the kwok cluster when
    /// `with_kubernetes` (benchmarks do not need one).
    pub(crate) fn start(tools: &Tools, with_kubernetes: bool) -> Result<Self> {
        let (cache, mut backends) = Self::new_run(tools)?;
        let run_dir = backends.run_dir.clone();

        // Elasticsearch takes longest to boot: start it first, create the
        // cluster on another thread, and bring PostgreSQL up meanwhile.
        backends.elasticsearch = Some(Elasticsearch::spawn(tools, &run_dir)?);
        let kube_thread = with_kubernetes.then(|| {
            let run_dir = run_dir.clone();
            let cache = cache.clone();
            let tools_paths = kubernetes::ToolPaths::from(tools);
            std::thread::spawn(move || KubeCluster::create(&tools_paths, &cache, &run_dir))
        });
        let postgres = Postgres::start(tools, &run_dir);
        let kubernetes = kube_thread.map(|thread| {
            thread
                .join()
                .unwrap_or_else(|_| bail!("the kwok thread panicked"))
        });
        // Keep whatever did start before reporting what did not, so that
        // dropping `backends` stops it.
        let kube_error = match kubernetes {
            Some(Ok(cluster)) => {
                backends.kubernetes = Some(cluster);
                None
            }
            Some(Err(e)) => Some(e),
            None => None,
        };
        backends.postgres = Some(postgres?);
        if let Some(e) = kube_error {
            return Err(e);
        }
        let es_url = match backends.elasticsearch.as_mut() {
            Some(es) => es.wait_ready()?,
            None => bail!("Elasticsearch was not started"),
        };
        let pg_url = backends
            .postgres
            .as_ref()
            .map(Postgres::url)
            .unwrap_or_default();
        let path = tools.search_path()?;
        backends.env = vec![
            ("MARKETPLACE_TEST_BACKENDS".into(), "required".into()),
            ("MARKETPLACE_TEST_POSTGRES_URL".into(), pg_url.clone()),
            ("MARKETPLACE_TEST_ELASTICSEARCH_URL".into(), es_url.clone()),
            (
                "MARKETPLACE_TEST_CHROMIUM".into(),
                tools.browser.chromium.to_string_lossy().into_owned(),
            ),
            (
                "MARKETPLACE_TEST_CHROMEDRIVER".into(),
                tools.browser.chromedriver.to_string_lossy().into_owned(),
            ),
            (
                "MARKETPLACE_TEST_OTELCOL".into(),
                tools.otelcol.join("otelcol").to_string_lossy().into_owned(),
            ),
            (
                "MARKETPLACE_TEST_POSTGRES_BIN".into(),
                tools.postgres.to_string_lossy().into_owned(),
            ),
            ("PATH".into(), path.to_string_lossy().into_owned()),
        ];
        if tools.user.is_some() {
            backends.env.push((
                "MARKETPLACE_TEST_SYSTEM_USER".into(),
                crate::testuser::NAME.into(),
            ));
        }
        match backends.kubernetes.as_ref() {
            Some(cluster) => {
                let kubeconfig = cluster.kubeconfig().to_string_lossy().into_owned();
                println!(
                    "==> backends ready: PostgreSQL {pg_url}, Elasticsearch {es_url}, kube-apiserver {}",
                    cluster.server()
                );
                backends.env.extend([
                    ("MARKETPLACE_TEST_KUBECONFIG".into(), kubeconfig.clone()),
                    // Anything that reaches for the default kubeconfig talks to the
                    // throwaway cluster, never to a real one on the developer's machine.
                    ("KUBECONFIG".into(), kubeconfig),
                ]);
            }
            None if with_kubernetes => bail!("the kwok cluster was not created"),
            None => println!("==> backends ready: PostgreSQL {pg_url}, Elasticsearch {es_url}"),
        }
        Ok(backends)
    }

    /// Only a kwok cluster, in a run directory of its own, for `cargo xtask
    /// e2e kwok`: `KUBECONFIG`, `MARKETPLACE_TEST_KUBECONFIG` and `PATH` are
    /// set in [`Backends::env`].
    pub(crate) fn kubernetes_only(tools: &Tools) -> Result<Self> {
        let (cache, mut backends) = Self::new_run(tools)?;
        let cluster = KubeCluster::create(
            &kubernetes::ToolPaths::from(tools),
            &cache,
            &backends.run_dir,
        )?;
        let kubeconfig = cluster.kubeconfig().to_string_lossy().into_owned();
        println!(
            "==> kwok cluster ready: kube-apiserver {}",
            cluster.server()
        );
        backends.kubernetes = Some(cluster);
        backends.env = vec![
            ("MARKETPLACE_TEST_KUBECONFIG".into(), kubeconfig.clone()),
            ("KUBECONFIG".into(), kubeconfig),
            (
                "PATH".into(),
                tools.search_path()?.to_string_lossy().into_owned(),
            ),
        ];
        Ok(backends)
    }

    /// A fresh, empty run directory named after this process, once what
    /// earlier runs left behind is removed; nothing started yet.
    fn new_run(tools: &Tools) -> Result<(Cache, Self)> {
        let cache = Cache::locate()?;
        remove_stale_runs(&cache, tools);
        let run_dir = std::env::temp_dir().join(format!("{RUN_DIR_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)?;
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755))?;
        let backends = Self {
            run_dir,
            postgres: None,
            elasticsearch: None,
            kubernetes: None,
            env: Vec::new(),
        };
        Ok((cache, backends))
    }

    /// The value of one of the variables in [`Backends::env`].
    pub(crate) fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The process ids of PostgreSQL's postmaster and of Elasticsearch, for
    /// measuring what they use (with their child processes).
    pub(crate) fn pids(&self) -> Vec<(&'static str, u32)> {
        let postgres = self.postgres.as_ref().and_then(Postgres::pid);
        let elasticsearch = self.elasticsearch.as_ref().and_then(Elasticsearch::pid);
        [("postgres", postgres), ("elasticsearch", elasticsearch)]
            .into_iter()
            .filter_map(|(name, pid)| Some((name, pid?)))
            .collect()
    }

    /// The directory this run's backends keep their files in.
    pub(crate) fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub(crate) fn env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }

    pub(crate) fn apply_env(&self, command: &mut Command) {
        for (key, value) in &self.env {
            command.env(key, value);
        }
    }

    /// Stops every backend and checks that none of their processes is left.
    pub(crate) fn shutdown(mut self) -> Result<()> {
        println!("==> stopping the backends");
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        if let Some(mut pg) = self.postgres.take()
            && let Err(e) = pg.stop()
        {
            errors.push(format!("PostgreSQL: {e:#}"));
        }
        if let Some(mut es) = self.elasticsearch.take()
            && let Err(e) = es.stop()
        {
            errors.push(format!("Elasticsearch: {e:#}"));
        }
        let mut needles = vec![self.run_dir.clone()];
        if let Some(mut kube) = self.kubernetes.take() {
            needles.push(kube.workdir());
            if let Err(e) = kube.delete() {
                errors.push(format!("kwok cluster: {e:#}"));
            }
        }
        for needle in &needles {
            let left = process::processes_mentioning(needle);
            if !left.is_empty() {
                process::kill_all(&left);
                let list: Vec<String> = left
                    .iter()
                    .map(|(pid, cmd)| format!("{pid} {cmd}"))
                    .collect();
                errors.push(format!(
                    "processes left behind (now killed):\n  {}",
                    list.join("\n  ")
                ));
            }
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("{}", errors.join("\n"))
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        if let Err(e) = self.stop_all() {
            eprintln!("error while stopping the backends: {e:#}");
        }
    }
}

/// A run that was killed outright (SIGKILL, a lost machine) cannot clean up
/// after itself: its PostgreSQL and Elasticsearch die with it, but the
/// cluster kwokctl started and its directory stay. Remove them here.
fn remove_stale_runs(cache: &Cache, tools: &Tools) {
    kubernetes::remove_stale_clusters(&kubernetes::ToolPaths::from(tools), cache);
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(RUN_DIR_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok_and(|pid| !run_is_alive(pid)) {
            let dir = entry.path();
            process::kill_all(&process::processes_mentioning(&dir));
            println!("==> removing {} left by an earlier run", dir.display());
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Whether the xtask run with this process id is still going.
pub(crate) fn run_is_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "xtask")
}

/// Runs the command as the backend user, when there is one.
fn as_user(command: &mut Command, user: Option<&User>, home: &Path) {
    command.env("HOME", home).current_dir(home);
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
}

/// Gives a directory to the backend user, when there is one.
fn give_to(dir: &Path, user: Option<&User>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    if let Some(user) = user {
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
            .with_context(|| format!("chown {}", dir.display()))?;
    }
    Ok(())
}
