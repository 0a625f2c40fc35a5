//! A fresh PostgreSQL database per test on the run's server, dropped when
//! the fixture is; or a server of the test's own, which it can restart.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::Backend;
use crate::process::SystemUser;

/// A database of its own on the run's PostgreSQL server.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

/// Creates an empty database; `None` when PostgreSQL is not configured
/// (see the crate docs).
///
/// # Panics
///
/// When the server is configured but the database cannot be created.
pub async fn database() -> Option<TestDatabase> {
    let admin_url = Backend::Postgres.locate()?;
    let name = crate::unique_name("test_");
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {admin_url}: {e}"));
    // The name is generated above from hex digits, never from input.
    sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    let _ = admin.close().await;
    let mut url = url::Url::parse(&admin_url).expect("MARKETPLACE_TEST_POSTGRES_URL is a URL");
    url.set_path(&format!("/{name}"));
    Some(TestDatabase {
        name,
        url: url.into(),
        admin_url,
    })
}

impl TestDatabase {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection URL for this database, as a service would be given.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.url).expect("the test database URL parses")
    }

    /// A small pool on this database.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(5)
            .connect_with(self.connect_options())
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (name, admin_url) = (self.name.clone(), self.admin_url.clone());
        crate::block_on_cleanup(format!("database {name}"), async move {
            let mut admin = PgConnection::connect(&admin_url)
                .await
                .map_err(|e| e.to_string())?;
            // FORCE ends the test's own connections that are still open.
            sqlx::raw_sql(AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
            )))
            .execute(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
            let _ = admin.close().await;
            Ok(())
        });
    }
}

/// How long PostgreSQL may take to accept connections, or to shut down.
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times a new port is tried when one was taken meanwhile.
const SERVER_START_ATTEMPTS: usize = 5;

/// A PostgreSQL server of the test's own, which the test may stop and start
/// again (the run's shared server cannot be restarted without disturbing
/// every other test): a fresh cluster in a temporary directory, listening
/// on one loopback port for its whole life, trusting loopback connections.
/// Dropping it stops the server and removes the directory.
///
/// ```no_run
/// # async fn example() {
/// let Some(mut server) = marketplace_testkit::postgres::server().await else { return };
/// // Give the code under test `server.url()`, then, under load:
/// server.stop().await;
/// server.start().await;
/// # }
/// ```
#[derive(Debug)]
pub struct TestServer {
    bin: PathBuf,
    dir: PathBuf,
    user: Option<SystemUser>,
    port: u16,
    child: Option<Child>,
}

/// Creates a cluster with `initdb`, starts it on a free loopback port and
/// waits until it accepts connections; `None` when PostgreSQL's programs
/// are not configured (see the crate docs). When the test runs as root the
/// server runs as the user `cargo xtask test` names (PostgreSQL refuses
/// root).
///
/// # Panics
///
/// When PostgreSQL is configured but the cluster cannot be created or
/// started.
pub async fn server() -> Option<TestServer> {
    let bin = PathBuf::from(Backend::PostgresBin.locate()?);
    let user = crate::process::system_user();
    let dir = std::env::temp_dir().join(crate::unique_name("marketplace-postgres-"));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    // Owns the directory from here on, so that a panic below removes it.
    let mut server = TestServer {
        bin,
        dir,
        user,
        port: 0,
        child: None,
    };
    std::fs::set_permissions(&server.dir, std::fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", server.dir.display()));
    if let Some(user) = user {
        std::os::unix::fs::chown(&server.dir, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", server.dir.display()));
    }
    let mut initdb = server.command("initdb");
    initdb.arg("--pgdata").arg(server.data()).args([
        "--username=postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    let output = initdb
        .output()
        .await
        .unwrap_or_else(|e| panic!("running initdb: {e}"));
    assert!(
        output.status.success(),
        "initdb failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for _ in 0..SERVER_START_ATTEMPTS {
        server.port = crate::process::free_ports::<1>()[0];
        if server.spawn_and_wait().await == Started::Ready {
            return Some(server);
        }
    }
    panic!(
        "PostgreSQL found no free port in {SERVER_START_ATTEMPTS} attempts:\n{}",
        crate::process::tail(&server.log(), 20)
    )
}

#[derive(Debug, PartialEq, Eq)]
enum Started {
    Ready,
    PortTaken,
}

impl TestServer {
    /// The superuser's URL for the `postgres` database, the same before
    /// and after a restart.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.url()).expect("the server's URL parses")
    }

    /// The loopback port the server listens on, the same for its whole life.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Shuts the server down fast (open transactions are rolled back,
    /// connections closed) and waits until it has exited. Does nothing when
    /// it is stopped already.
    ///
    /// # Panics
    ///
    /// When the server does not stop within a minute.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let stopped = self.pg_ctl_stop("fast").await;
        let waited = tokio::task::spawn_blocking(move || {
            if !stopped {
                let _ = child.kill();
            }
            child.wait()
        })
        .await;
        assert!(
            stopped,
            "pg_ctl stop -m fast failed (the server was killed):\n{}",
            crate::process::tail(&self.log(), 20)
        );
        if !matches!(waited, Ok(Ok(_))) {
            panic!("waiting for PostgreSQL to exit: {waited:?}");
        }
    }

    /// Starts the stopped server again on the same port and data directory
    /// and waits until it accepts connections. Does nothing when it runs.
    ///
    /// # Panics
    ///
    /// When the server does not start, or something else took its port
    /// while it was stopped.
    pub async fn start(&mut self) {
        if self.child.is_some() {
            return;
        }
        if self.spawn_and_wait().await == Started::PortTaken {
            panic!(
                "port {} was taken while PostgreSQL was stopped:\n{}",
                self.port,
                crate::process::tail(&self.log(), 20)
            );
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgresql.log")
    }

    /// One of PostgreSQL's programs, run as the server's user.
    fn command(&self, program: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(self.bin.join(program));
        command
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        if let Some(user) = self.user {
            command.uid(user.uid).gid(user.gid);
        }
        command
    }

    /// `pg_ctl stop` in `mode`, waiting for the server to exit: whether it
    /// succeeded.
    async fn pg_ctl_stop(&self, mode: &str) -> bool {
        let timeout = SERVER_TIMEOUT.as_secs().to_string();
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl.arg("stop").arg("--pgdata").arg(self.data()).args([
            "--mode",
            mode,
            "--wait",
            "--timeout",
            &timeout,
            "--silent",
        ]);
        pg_ctl
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success())
    }

    /// Starts the postmaster on `self.port` and waits until it accepts
    /// connections, or exits because the port was taken.
    async fn spawn_and_wait(&mut self) -> Started {
        let log = self.log();
        // Appended to, so that the log covers every restart.
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let errors = output
            .try_clone()
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let mut command = std::process::Command::new(self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.data())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            // Durability against a crash of the machine buys nothing in a
            // throwaway cluster. Commits still wait for their WAL write, so
            // a committed row survives the server's restart, fast or not.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors);
        if let Some(user) = self.user {
            command.uid(user.uid).gid(user.gid);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.join("postgres").display()));
        self.child = Some(child);
        let deadline = Instant::now() + SERVER_TIMEOUT;
        let options = self.connect_options();
        loop {
            let child = self.child.as_mut().expect("the server was started");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                // Only this start's lines: the log is appended to.
                let text = text
                    .rsplit("starting PostgreSQL")
                    .next()
                    .unwrap_or_default();
                if text.contains("could not bind") || text.contains("Address already in use") {
                    return Started::PortTaken;
                }
                panic!(
                    "PostgreSQL exited ({status}):\n{}",
                    crate::process::tail(&log, 20)
                );
            }
            let attempt =
                tokio::time::timeout(Duration::from_secs(2), PgConnection::connect_with(&options));
            if let Ok(Ok(mut connection)) = attempt.await {
                // Another server that took the port meanwhile would answer
                // too, until this one fails to bind it.
                let serving: Result<String, _> = sqlx::query_scalar("SHOW data_directory")
                    .fetch_one(&mut connection)
                    .await;
                let _ = connection.close().await;
                if serving.is_ok_and(|dir| Path::new(&dir) == self.data()) {
                    return Started::Ready;
                }
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not accept connections within {SERVER_TIMEOUT:?}:\n{}",
                crate::process::tail(&log, 20)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fast shutdown, so that no backend outlives the directory; a
            // server that does not stop that way is killed.
            let mut pg_ctl = std::process::Command::new(self.bin.join("pg_ctl"));
            pg_ctl
                .arg("stop")
                .arg("--pgdata")
                .arg(self.data())
                .args(["--mode", "fast", "--wait", "--timeout", "30", "--silent"])
                .env("HOME", &self.dir)
                .current_dir(&self.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(user) = self.user {
                pg_ctl.uid(user.uid).gid(user.gid);
            }
            if !pg_ctl.status().is_ok_and(|s| s.success()) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "testkit: the PostgreSQL server's log:\n{}",
                crate::process::tail(&self.log(), 20)
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
