//! `cargo xtask bench services`: the account, catalog and order services as
//! separate release-built processes, driven by `marketplace-bench` at a fixed
//! concurrency, first on real PostgreSQL and Elasticsearch, then on the
//! embedded backends (SQLite and tantivy). Then pgbench replays CreateOrder's
//! SQL transaction straight against PostgreSQL at the same concurrency: the
//! most the database could give, which the service is measured against.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use marketplace_config::env;

use crate::backends::Backends;
use crate::install::Tools;
use crate::process::{self, Supervised};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// Calls in flight at any time.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long each operation is measured, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Lines per order (the pgbench replay writes as many).
    #[arg(long, default_value_t = 3)]
    lines: usize,
}

pub(crate) fn services(tools: &Tools, args: &BenchArgs) -> Result<()> {
    let release = build_release(&["marketplace", "marketplace-bench"])?;
    let marketplace = release.join("marketplace");
    let driver = release.join("marketplace-bench");

    let backends = Backends::start(tools, false)?;
    let work = backends.run_dir().join("bench");
    std::fs::create_dir_all(&work)?;
    let pg_url = backends
        .var("MARKETPLACE_TEST_POSTGRES_URL")
        .context("PostgreSQL did not start")?
        .to_owned();
    let es_url = backends
        .var("MARKETPLACE_TEST_ELASTICSEARCH_URL")
        .context("Elasticsearch did not start")?
        .to_owned();

    for database in ["bench_account", "bench_order"] {
        psql(tools, &pg_url, &format!("CREATE DATABASE {database}"))?;
    }
    let real = Stores {
        account: database_url(&pg_url, "bench_account")?,
        catalog: es_url,
        order: database_url(&pg_url, "bench_order")?,
    };
    let embedded_dir = work.join("embedded");
    std::fs::create_dir_all(&embedded_dir)?;
    let embedded = Stores {
        account: format!("sqlite://{}", embedded_dir.join("account.db").display()),
        catalog: format!("tantivy://{}", embedded_dir.join("catalog").display()),
        order: format!("sqlite://{}", embedded_dir.join("order.db").display()),
    };

    let backend_pids = backends.pids();
    let real_summary = run_services(
        &marketplace,
        &driver,
        "real",
        &real,
        &work,
        args,
        &backend_pids,
    )?;
    let embedded_summary = run_services(
        &marketplace,
        &driver,
        "embedded",
        &embedded,
        &work,
        args,
        &[],
    )?;

    // The driver builds the script from the order service's own statements.
    let script = work.join("create-order.sql");
    let text = process::output(
        Command::new(&driver).args(["pgbench-script", &format!("--lines={}", args.lines)]),
    )?;
    std::fs::write(&script, text)?;
    println!(
        "==> pgbench: CreateOrder's transaction straight against PostgreSQL, concurrency {}, {} s",
        args.concurrency, args.seconds
    );
    let mut pgbench = Command::new(tools.postgres.join("pgbench"));
    pgbench
        .args(["--no-vacuum", "--protocol=prepared"])
        .arg(format!("--client={}", args.concurrency))
        .arg("--jobs=2")
        .arg(format!("--time={}", args.seconds))
        .arg("--file")
        .arg(&script)
        .arg(&real.order);
    let output = process::output(&mut pgbench).context("running pgbench")?;
    let ceiling =
        pgbench_tps(&output).with_context(|| format!("no tps in pgbench's output:\n{output}"))?;

    let ours = throughput(&real_summary, "CreateOrder")?;
    println!();
    println!(
        "==> summary (concurrency {}, {} lines per order)",
        args.concurrency, args.lines
    );
    for (label, summary) in [("real", &real_summary), ("embedded", &embedded_summary)] {
        for operation in ["CreateOrder", "SearchProducts"] {
            println!(
                "    {}",
                summary_line(label, operation, operation_entry(summary, operation)?)
            );
        }
    }
    println!("    pgbench   CreateOrder SQL {ceiling:>9.1} tx/s");
    println!(
        "    CreateOrder on real backends reaches {:.2} of the pgbench ceiling (target: at least 0.5)",
        ours / ceiling
    );
    backends.shutdown()
}

struct Stores {
    account: String,
    catalog: String,
    order: String,
}

fn run_services(
    marketplace: &Path,
    driver: &Path,
    label: &str,
    stores: &Stores,
    work: &Path,
    args: &BenchArgs,
    backend_pids: &[(&str, u32)],
) -> Result<serde_json::Value> {
    println!("==> {label} backends: starting account, catalog and order");
    let [account_port, catalog_port, order_port] = process::free_ports::<3>()?;
    let listen = |port: u16| format!("127.0.0.1:{port}");
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let spawn = |target: &str, env: &[(&str, String)]| -> Result<Supervised> {
        let log = work.join(format!("{label}-{target}.log"));
        serve(marketplace, target, env, &log)
    };
    let mut services = vec![
        spawn(
            "account",
            &[
                (env::ACCOUNT_LISTEN_ADDR, listen(account_port)),
                (env::ACCOUNT_DATABASE_URL, stores.account.clone()),
            ],
        )?,
        spawn(
            "catalog",
            &[
                (env::CATALOG_LISTEN_ADDR, listen(catalog_port)),
                (env::CATALOG_SEARCH_URL, stores.catalog.clone()),
                (env::CATALOG_INDEX_NAME, "bench-products".to_owned()),
            ],
        )?,
        spawn(
            "order",
            &[
                (env::ORDER_LISTEN_ADDR, listen(order_port)),
                (env::ORDER_DATABASE_URL, stores.order.clone()),
                (env::ORDER_ACCOUNT_URL, url(account_port)),
                (env::ORDER_CATALOG_URL, url(catalog_port)),
            ],
        )?,
    ];
    let summary_path = work.join(format!("{label}.json"));
    let mut command = Command::new(driver);
    command
        .arg("services")
        .args(["--account-url", &url(account_port)])
        .args(["--catalog-url", &url(catalog_port)])
        .args(["--order-url", &url(order_port)])
        .args(["--label", label])
        .arg(format!("--concurrency={}", args.concurrency))
        .arg(format!("--duration={}s", args.seconds))
        .arg(format!("--lines={}", args.lines))
        .arg("--summary")
        .arg(&summary_path);
    // The driver reports the CPU time each process spends per request.
    let service_pids = ["account", "catalog", "order"]
        .into_iter()
        .zip(&services)
        .filter_map(|(name, service)| Some((name, service.pid()?)));
    for (name, pid) in service_pids.chain(backend_pids.iter().copied()) {
        command.arg(format!("--watch={name}={pid}"));
    }
    let status = drive_then_stop(command, label, &mut services, work)?;
    if !status.success() {
        bail!(
            "the {label} benchmark failed ({status}); service logs are in {}",
            work.display()
        );
    }
    read_summary(&summary_path)
}

/// Starts `marketplace serve --target <target>` with only `env` of the
/// variables it reads (none inherited from the caller's shell), logging
/// to `log`; stopped with SIGTERM, like a pod.
pub(crate) fn serve(
    marketplace: &Path,
    target: &str,
    env: &[(&str, String)],
    log: &Path,
) -> Result<Supervised> {
    let mut command = Command::new(marketplace);
    for name in env::ALL {
        command.env_remove(name);
    }
    command
        .args(["serve", "--target", target])
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    Supervised::spawn(
        &format!("marketplace {target}"),
        command,
        log,
        libc::SIGTERM,
        Duration::from_secs(10),
    )
}

/// Runs the load driver to its end, then stops `services` whatever its
/// outcome. Fails when the driver could not run, or when a service exited
/// before it was stopped (its log is in `work`) or did not stop.
pub(crate) fn drive_then_stop(
    driver: Command,
    label: &str,
    services: &mut [Supervised],
    work: &Path,
) -> Result<ExitStatus> {
    let status = process::run_foreground(driver, &format!("marketplace-bench ({label})"));
    let mut stop_errors = Vec::new();
    for service in services {
        if let Some(exit) = service.exited() {
            stop_errors.push(format!(
                "a service exited early ({exit}); see {}",
                work.display()
            ));
        }
        if let Err(e) = service.stop() {
            stop_errors.push(format!("{e:#}"));
        }
    }
    let status = status?;
    if !stop_errors.is_empty() {
        bail!(
            "the {label} benchmark ({status}): {}",
            stop_errors.join("\n")
        );
    }
    Ok(status)
}

/// The JSON the driver wrote with `--summary`.
pub(crate) fn read_summary(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

pub(crate) fn psql(tools: &Tools, url: &str, sql: &str) -> Result<()> {
    let mut command = Command::new(tools.postgres.join("psql"));
    command.args([
        "--no-psqlrc",
        "--quiet",
        "-v",
        "ON_ERROR_STOP=1",
        "--dbname",
        url,
        "-c",
        sql,
    ]);
    process::output(&mut command).with_context(|| format!("psql: {sql}"))?;
    Ok(())
}

pub(crate) fn database_url(server_url: &str, database: &str) -> Result<String> {
    let (server, _) = server_url
        .rsplit_once('/')
        .with_context(|| format!("{server_url} has no database path"))?;
    Ok(format!("{server}/{database}"))
}

/// Builds `packages` in release mode and returns the directory of their
/// binaries.
pub(crate) fn build_release(packages: &[&str]) -> Result<PathBuf> {
    println!("==> building {} (release)", packages.join(" and "));
    let mut args = vec!["build", "--release"];
    for package in packages {
        args.extend(["-p", package]);
    }
    let status = process::run_foreground(crate::cargo(&args), "cargo build --release")?;
    if !status.success() {
        bail!("the release build failed ({status})");
    }
    Ok(target_dir()?.join("release"))
}

pub(crate) fn target_dir() -> Result<PathBuf> {
    let mut command = crate::cargo(&["metadata", "--no-deps", "--format-version", "1"]);
    let text = process::output(&mut command)?;
    let metadata: serde_json::Value = serde_json::from_str(&text)?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata names no target directory")
}

fn pgbench_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}

pub(crate) fn operation_entry<'a>(
    summary: &'a serde_json::Value,
    operation: &str,
) -> Result<&'a serde_json::Value> {
    summary["operations"]
        .as_array()
        .and_then(|ops| ops.iter().find(|o| o["operation"] == operation))
        .with_context(|| format!("no {operation} in the benchmark summary"))
}

/// One operation's numbers from a driver's summary, on one line.
pub(crate) fn summary_line(label: &str, operation: &str, entry: &serde_json::Value) -> String {
    format!(
        "{label:<9} {operation:<16} {:>9.1} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
        entry["throughput"].as_f64().unwrap_or_default(),
        entry["p50_ms"].as_f64().unwrap_or_default(),
        entry["p99_ms"].as_f64().unwrap_or_default(),
    )
}

fn throughput(summary: &serde_json::Value, operation: &str) -> Result<f64> {
    operation_entry(summary, operation)?["throughput"]
        .as_f64()
        .context("throughput is not a number")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_throughput_is_read_from_its_report() {
        let report = "number of failed transactions: 0 (0.000%)\n\
                      latency average = 4.2 ms\n\
                      initial connection time = 10.1 ms\n\
                      tps = 7612.345678 (without initial connection time)\n";
        assert_eq!(pgbench_tps(report), Some(7612.345678));
        assert_eq!(pgbench_tps("no numbers here"), None);
    }

    #[test]
    fn database_urls_keep_the_server_and_change_the_database() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5000/postgres", "bench").unwrap(),
            "postgres://postgres@127.0.0.1:5000/bench"
        );
    }
}
