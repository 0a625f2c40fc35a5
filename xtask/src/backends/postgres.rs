//! A throwaway PostgreSQL cluster: `initdb` into the run directory, one
//! server on a free loopback port, durability switched off for speed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{as_user, give_to};
use crate::install::Tools;
use crate::process::{self, Supervised};
use crate::progress::Progress;
use crate::signals;

const START_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(super) struct Postgres {
    server: Supervised,
    port: u16,
}

impl Postgres {
    pub(super) fn start(tools: &Tools, run_dir: &Path) -> Result<Self> {
        let dir = run_dir.join("postgres");
        give_to(&dir, tools.user.as_ref())?;
        let data = dir.join("data");
        let mut initdb = Command::new(tools.postgres.join("initdb"));
        initdb.arg("--pgdata").arg(&data).args([
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        as_user(&mut initdb, tools.user.as_ref(), &dir);
        process::run_logged(initdb, "postgresql: initdb", &dir.join("initdb.log"))?;

        let mut progress = Progress::start("postgresql: starting");
        for _ in 0..START_ATTEMPTS {
            let port = process::free_port()?;
            let mut command = Command::new(tools.postgres.join("postgres"));
            command
                .arg("-D")
                .arg(&data)
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
                .arg(&dir)
                // A test database is thrown away after the run: durability
                // buys nothing and costs seconds.
                .args([
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ])
                .args(["-c", "max_connections=300", "-c", "shared_buffers=128MB"]);
            as_user(&mut command, tools.user.as_ref(), &dir);
            let log = dir.join("postgresql.log");
            // SIGINT is PostgreSQL's "fast" shutdown: roll back and exit.
            let mut server = Supervised::spawn(
                "postgresql",
                command,
                &log,
                libc::SIGINT,
                Duration::from_secs(30),
            )?;
            match wait_ready(&mut server, &tools.postgres, port, &log, &mut progress)? {
                Started::Ready => {
                    progress.finish();
                    return Ok(Self { server, port });
                }
                Started::PortTaken => continue,
            }
        }
        bail!("PostgreSQL found no free port in {START_ATTEMPTS} attempts")
    }

    pub(super) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    pub(super) fn stop(&mut self) -> Result<()> {
        self.server.stop()
    }
}

enum Started {
    Ready,
    PortTaken,
}

fn wait_ready(
    server: &mut Supervised,
    bindir: &Path,
    port: u16,
    log: &PathBuf,
    progress: &mut Progress,
) -> Result<Started> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        signals::check()?;
        if let Some(status) = server.exited() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("could not bind") || text.contains("Address already in use") {
                return Ok(Started::PortTaken);
            }
            bail!("PostgreSQL exited ({status}):\n{}", process::tail(log, 30));
        }
        let ready = Command::new(bindir.join("pg_isready"))
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-t",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(Started::Ready);
        }
        progress.tick("");
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "PostgreSQL was not ready within {READY_TIMEOUT:?}:\n{}",
        process::tail(log, 30)
    )
}
