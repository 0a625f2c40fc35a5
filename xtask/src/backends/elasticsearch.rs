//! One Elasticsearch node per run, bound to loopback on ports the node picks
//! itself (`http.port: 0`) and reports in its ports file, so there is no
//! window in which another process can take them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{as_user, give_to};
use crate::install::Tools;
use crate::process::{self, Supervised};
use crate::progress::Progress;
use crate::signals;
use crate::testuser;

const READY_TIMEOUT: Duration = Duration::from_secs(240);
const HEAP: &str = "512m";

#[derive(Debug)]
pub(super) struct Elasticsearch {
    node: Supervised,
    dir: PathBuf,
    dedicated_user: bool,
}

impl Elasticsearch {
    /// Prepares the node's directories and starts it; `wait_ready` waits.
    pub(super) fn spawn(tools: &Tools, run_dir: &Path) -> Result<Self> {
        let user = tools.user.as_ref();
        let dir = run_dir.join("elasticsearch");
        give_to(&dir, user)?;
        // The distribution in the cache is shared by every run and may sit
        // in a home directory the backend user cannot enter: link its files
        // into the run directory instead of running it in place.
        let home = dir.join("home");
        link_tree(&tools.elasticsearch, &home, &["config", ".fingerprint"])?;
        let config = dir.join("config");
        copy_dir(&tools.elasticsearch.join("config"), &config)?;
        std::fs::write(config.join("elasticsearch.yml"), node_config(&dir))?;
        std::fs::write(
            config
                .join("jvm.options.d")
                .join("marketplace-test.options"),
            format!("-Xms{HEAP}\n-Xmx{HEAP}\n"),
        )?;
        // The launcher runs from the distribution's directory, and the stock
        // JVM options write the GC log and heap dumps relative to it.
        for sub in [
            "config",
            "config/jvm.options.d",
            "data",
            "logs",
            "tmp",
            "home/logs",
            "home/data",
        ] {
            give_to(&dir.join(sub), user)?;
        }
        for entry in std::fs::read_dir(&config)? {
            let path = entry?.path();
            if path.is_file()
                && let Some(user) = user
            {
                std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid))?;
            }
        }

        let mut command = Command::new(home.join("bin").join("elasticsearch"));
        command
            .env("ES_JAVA_HOME", &tools.java_home)
            .env_remove("JAVA_HOME")
            .env("ES_PATH_CONF", &config)
            .env("ES_TMPDIR", dir.join("tmp"));
        as_user(&mut command, user, &dir);
        let node = Supervised::spawn(
            "elasticsearch",
            command,
            &dir.join("console.log"),
            libc::SIGTERM,
            Duration::from_secs(60),
        )?;
        Ok(Self {
            node,
            dir,
            dedicated_user: user.is_some(),
        })
    }

    /// Waits until the node answers and the cluster is at least yellow;
    /// returns its base URL.
    pub(super) fn wait_ready(&mut self) -> Result<String> {
        let mut progress = Progress::start("elasticsearch: starting");
        let ports_file = self.dir.join("logs").join("http.ports");
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            signals::check()?;
            if let Some(status) = self.node.exited() {
                bail!(
                    "Elasticsearch exited ({status}):\n{}",
                    process::tail(&self.dir.join("console.log"), 40)
                );
            }
            if let Some(address) = read_ports_file(&ports_file) {
                let url = format!("http://{address}");
                let health = format!("{url}/_cluster/health?wait_for_status=yellow&timeout=1s");
                if ureq::get(&health).call().is_ok() {
                    progress.finish();
                    return Ok(url);
                }
            }
            progress.tick("");
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!(
            "Elasticsearch was not ready within {READY_TIMEOUT:?}:\n{}",
            process::tail(&self.dir.join("console.log"), 40)
        )
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.node.pid()
    }

    pub(super) fn stop(&mut self) -> Result<()> {
        self.node.stop()?;
        // The launcher's short-lived JVMs leave an empty hsperfdata directory
        // for the backend user in /tmp (ES drops JAVA_TOOL_OPTIONS, so
        // -XX:-UsePerfData cannot reach them). Only the dedicated user's is
        // removed, and only when empty.
        if self.dedicated_user {
            let _ = std::fs::remove_dir(
                Path::new("/tmp").join(format!("hsperfdata_{}", testuser::NAME)),
            );
        }
        Ok(())
    }
}

fn node_config(dir: &Path) -> String {
    format!(
        "# Written by `cargo xtask` for one test run.\n\
         cluster.name: marketplace-test\n\
         node.name: test-node\n\
         discovery.type: single-node\n\
         network.host: 127.0.0.1\n\
         http.port: 0\n\
         transport.port: 0\n\
         node.portsfile: true\n\
         path.data: {data}\n\
         path.logs: {logs}\n\
         xpack.security.enabled: false\n\
         cluster.routing.allocation.disk.threshold_enabled: false\n\
         action.destructive_requires_name: false\n",
        data = dir.join("data").display(),
        logs = dir.join("logs").display(),
    )
}

/// The first address in the node's `http.ports` file, once it exists.
fn read_ports_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

/// Mirrors `src` into `dst` with hard links (copies across file systems),
/// leaving out the named top-level entries.
fn link_tree(src: &Path, dst: &Path, skip: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755))?;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| skip.contains(&n)) {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            link_tree(&from, &to, &[])?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ports_file_gives_the_first_address() {
        let dir = std::env::temp_dir().join(format!("xtask-ports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("http.ports");
        assert_eq!(read_ports_file(&file), None);
        std::fs::write(&file, "127.0.0.1:40123\n127.0.0.1:40124\n").unwrap();
        assert_eq!(read_ports_file(&file).as_deref(), Some("127.0.0.1:40123"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_node_binds_loopback_on_ports_it_picks() {
        let config = node_config(Path::new("/run/x"));
        assert!(config.contains("network.host: 127.0.0.1\n"));
        assert!(config.contains("http.port: 0\n"));
        assert!(config.contains("node.portsfile: true\n"));
        assert!(config.contains("path.data: /run/x/data\n"));
    }
}
