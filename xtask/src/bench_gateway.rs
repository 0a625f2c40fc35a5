//! `cargo xtask bench gateway`: the GraphQL gateway driven by
//! `marketplace-bench gateway` with a weighted mix of a shop's requests,
//! first on the embedded setup (one `marketplace serve --target all`
//! process on SQLite and tantivy), then on the separate processes (account,
//! catalog, order and gateway) on real PostgreSQL and Elasticsearch.
//!
//! Every process listens on 127.0.0.1 port 0 and is wired to the others by
//! the address it logs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use marketplace_config::{env, parse_duration};

use crate::backends::Backends;
use crate::bench::{
    build_release, database_url, drive_then_stop, operation_entry, psql, read_summary, serve,
    summary_line,
};
use crate::install::Tools;
use crate::process::{self, Supervised};
use crate::signals;

/// The operations of the driver's mix, as its summary names them.
const OPERATIONS: [&str; 4] = [
    "browse products",
    "search",
    "account + orders",
    "create order",
];

/// Log filter of the benchmarked processes without telemetry: the lines
/// that report their addresses, and problems.
const QUIET_RUST_LOG: &str = "warn,marketplace_grpc=info,marketplace_grpc::observe=warn,\
                              marketplace_gateway::startup=info,marketplace_telemetry::admin=info";

/// How long a process may take from start to logging its address
/// (Elasticsearch index creation and migrations included).
const START_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct GatewayBenchArgs {
    /// Requests in flight at any time.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long each setup is measured (`30s`, `5s`, `2m`).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// How long each setup runs before measuring starts.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    warmup: Duration,
}

/// What one setup's run left: the driver's summary, and whether the driver
/// succeeded (it fails when more than 1% of the requests failed).
struct Run {
    label: &'static str,
    summary: serde_json::Value,
    passed: bool,
}

pub(crate) fn gateway(tools: &Tools, args: &GatewayBenchArgs) -> Result<()> {
    measure(tools, args, run)
}

/// `cargo xtask bench telemetry`: the same workload on the separate
/// processes on PostgreSQL and Elasticsearch, first with telemetry quiet
/// (warnings only, no trace export), then full (JSON info lines for every
/// request and RPC, every span exported over OTLP to a real OpenTelemetry
/// Collector on the same machine, whose CPU is counted too).
pub(crate) fn telemetry(tools: &Tools, args: &GatewayBenchArgs) -> Result<()> {
    measure(tools, args, run_telemetry)
}

type Runner = fn(&Tools, &Backends, &Path, &GatewayBenchArgs) -> Result<Vec<Run>>;

fn measure(tools: &Tools, args: &GatewayBenchArgs, runner: Runner) -> Result<()> {
    let release = build_release(&["marketplace", "marketplace-bench"])?;

    let backends = Backends::start(tools, false)?;
    let result = runner(tools, &backends, &release, args);
    let shutdown = backends.shutdown();
    if let (Err(_), Err(e)) = (&result, &shutdown) {
        eprintln!("error while stopping the backends: {e:#}");
    }
    let runs = result?;
    shutdown?;
    print_summary(&runs, args);
    let failed: Vec<&str> = runs
        .iter()
        .filter(|run| !run.passed)
        .map(|run| run.label)
        .collect();
    if !failed.is_empty() {
        bail!(
            "more than 1% of the requests failed on: {}",
            failed.join(", ")
        );
    }
    Ok(())
}

fn run(
    tools: &Tools,
    backends: &Backends,
    release: &Path,
    args: &GatewayBenchArgs,
) -> Result<Vec<Run>> {
    let bench = Bench {
        marketplace: release.join("marketplace"),
        driver: release.join("marketplace-bench"),
        work: backends.run_dir().join("bench-gateway"),
        args,
        telemetry: Telemetry::Quiet,
    };
    std::fs::create_dir_all(&bench.work)?;
    let embedded = bench.embedded()?;
    signals::check()?;

    let pg_url = backends
        .var("MARKETPLACE_TEST_POSTGRES_URL")
        .context("PostgreSQL did not start")?;
    let es_url = backends
        .var("MARKETPLACE_TEST_ELASTICSEARCH_URL")
        .context("Elasticsearch did not start")?;
    for database in ["bench_gateway_account", "bench_gateway_order"] {
        psql(tools, pg_url, &format!("CREATE DATABASE {database}"))?;
    }
    let real = bench.real(
        &database_url(pg_url, "bench_gateway_account")?,
        es_url,
        &database_url(pg_url, "bench_gateway_order")?,
        &backends.pids(),
    )?;
    Ok(vec![embedded, real])
}

fn run_telemetry(
    tools: &Tools,
    backends: &Backends,
    release: &Path,
    args: &GatewayBenchArgs,
) -> Result<Vec<Run>> {
    let mut bench = Bench {
        marketplace: release.join("marketplace"),
        driver: release.join("marketplace-bench"),
        work: backends.run_dir().join("bench-telemetry"),
        args,
        telemetry: Telemetry::Quiet,
    };
    std::fs::create_dir_all(&bench.work)?;
    let pg_url = backends
        .var("MARKETPLACE_TEST_POSTGRES_URL")
        .context("PostgreSQL did not start")?;
    let es_url = backends
        .var("MARKETPLACE_TEST_ELASTICSEARCH_URL")
        .context("Elasticsearch did not start")?;
    let mut runs = Vec::new();
    // An unmeasured warm-up run first (Elasticsearch's JIT and caches make
    // the first run markedly slower), then off, on, on, off: the machine
    // still drifts, which a single off-then-on pair would charge to one
    // side; the ABBA order cancels linear drift.
    for (label, slug) in [
        ("warm-up", "warmup"),
        ("telemetry off", "off1"),
        ("telemetry on", "on1"),
        ("telemetry on, again", "on2"),
        ("telemetry off, again", "off2"),
    ] {
        let databases = [
            format!("bench_telemetry_{slug}_account"),
            format!("bench_telemetry_{slug}_order"),
        ];
        for database in &databases {
            psql(tools, pg_url, &format!("CREATE DATABASE {database}"))?;
        }
        let mut pids = backends.pids();
        let mut collector = None;
        bench.telemetry = Telemetry::Quiet;
        if slug.starts_with("on") {
            let (process, endpoint) = start_collector(backends, &bench.work)?;
            pids.extend(process.pid().map(|pid| ("otelcol", pid)));
            collector = Some(process);
            bench.telemetry = Telemetry::Full {
                otlp_endpoint: endpoint,
            };
        }
        let run = bench.separate(
            label,
            &database_url(pg_url, &databases[0])?,
            es_url,
            &database_url(pg_url, &databases[1])?,
            &pids,
        );
        if let Some(mut collector) = collector {
            collector.stop()?;
        }
        runs.push(run?);
        signals::check()?;
    }
    Ok(runs)
}

/// A collector receiving OTLP/gRPC on a free loopback port and writing the
/// spans to a file in `work`; the endpoint to give the services.
fn start_collector(backends: &Backends, work: &Path) -> Result<(Supervised, String)> {
    let binary = backends
        .var("MARKETPLACE_TEST_OTELCOL")
        .context("the OpenTelemetry Collector is not installed")?;
    let port = process::free_port()?;
    let config = work.join("otelcol.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{port}\n\
             exporters:\n  file:\n    path: {}\n\
             service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n",
            work.join("spans.jsonl").display()
        ),
    )?;
    let mut command = Command::new(binary);
    command.arg(format!("--config=file:{}", config.display()));
    let log = work.join("otelcol.log");
    let collector = Supervised::spawn(
        "otelcol",
        command,
        &log,
        libc::SIGTERM,
        Duration::from_secs(10),
    )?;
    let deadline = Instant::now() + START_TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!(
                "the collector did not listen within {START_TIMEOUT:?}:\n{}",
                process::tail(&log, 20)
            );
        }
        signals::check()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((collector, format!("http://127.0.0.1:{port}")))
}

struct Bench<'a> {
    marketplace: PathBuf,
    driver: PathBuf,
    work: PathBuf,
    args: &'a GatewayBenchArgs,
    /// What the processes log and where they send traces.
    telemetry: Telemetry,
}

/// The telemetry of the benchmarked processes.
#[derive(Debug, Clone)]
enum Telemetry {
    /// Problems only, no trace export: what the processes cannot do
    /// without (metrics are always kept).
    Quiet,
    /// What a cluster runs with: an info line per request and per RPC as
    /// JSON, every span exported over OTLP to a collector.
    Full { otlp_endpoint: String },
}

impl Telemetry {
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Quiet => vec![("RUST_LOG", QUIET_RUST_LOG.to_owned())],
            Self::Full { otlp_endpoint } => vec![
                ("RUST_LOG", "info".to_owned()),
                (env::LOG_FORMAT, "json".to_owned()),
                (env::OTLP_ENDPOINT, otlp_endpoint.clone()),
            ],
        }
    }
}

impl Bench<'_> {
    /// Everything in one process on embedded storage in a fresh directory.
    fn embedded(&self) -> Result<Run> {
        const LABEL: &str = "embedded";
        println!("==> {LABEL}: starting marketplace serve --target all");
        let data_dir = self.work.join("embedded-data");
        let all = self.serve(
            LABEL,
            "all",
            &[
                (env::DATA_DIR, data_dir.display().to_string()),
                (env::ACCOUNT_LISTEN_ADDR, loopback_port_0()),
                (env::CATALOG_LISTEN_ADDR, loopback_port_0()),
                (env::ORDER_LISTEN_ADDR, loopback_port_0()),
                (env::GATEWAY_LISTEN_ADDR, loopback_port_0()),
            ],
        )?;
        let mut services = vec![all];
        let gateway = self.logged_address(&mut services[0], LABEL, "all", "serving GraphQL")?;
        let watch = self.watch(&services, &["marketplace"], &[]);
        self.drive(LABEL, &gateway, &watch, &mut services)
    }

    /// The gateway and the three services as separate processes on
    /// PostgreSQL and Elasticsearch.
    fn real(
        &self,
        account_db: &str,
        search_url: &str,
        order_db: &str,
        backend_pids: &[(&str, u32)],
    ) -> Result<Run> {
        self.separate("real", account_db, search_url, order_db, backend_pids)
    }

    fn separate(
        &self,
        label: &'static str,
        account_db: &str,
        search_url: &str,
        order_db: &str,
        backend_pids: &[(&str, u32)],
    ) -> Result<Run> {
        println!("==> {label}: starting account, catalog, order and gateway");
        let mut services = Vec::new();
        services.push(self.serve(
            label,
            "account",
            &[
                (env::ACCOUNT_LISTEN_ADDR, loopback_port_0()),
                (env::ACCOUNT_DATABASE_URL, account_db.to_owned()),
            ],
        )?);
        services.push(self.serve(
            label,
            "catalog",
            &[
                (env::CATALOG_LISTEN_ADDR, loopback_port_0()),
                (env::CATALOG_SEARCH_URL, search_url.to_owned()),
                (
                    env::CATALOG_INDEX_NAME,
                    format!(
                        "bench-gateway-{}-products",
                        label.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
                    ),
                ),
            ],
        )?);
        let account = self.grpc_url(&mut services[0], label, "account")?;
        let catalog = self.grpc_url(&mut services[1], label, "catalog")?;
        services.push(self.serve(
            label,
            "order",
            &[
                (env::ORDER_LISTEN_ADDR, loopback_port_0()),
                (env::ORDER_DATABASE_URL, order_db.to_owned()),
                (env::ORDER_ACCOUNT_URL, account.clone()),
                (env::ORDER_CATALOG_URL, catalog.clone()),
            ],
        )?);
        let order = self.grpc_url(&mut services[2], label, "order")?;
        services.push(self.serve(
            label,
            "gateway",
            &[
                (env::GATEWAY_LISTEN_ADDR, loopback_port_0()),
                (env::GATEWAY_ACCOUNT_URL, account),
                (env::GATEWAY_CATALOG_URL, catalog),
                (env::GATEWAY_ORDER_URL, order),
            ],
        )?);
        let gateway = self.logged_address(&mut services[3], label, "gateway", "serving GraphQL")?;
        let watch = self.watch(
            &services,
            &["account", "catalog", "order", "gateway"],
            backend_pids,
        );
        self.drive(label, &gateway, &watch, &mut services)
    }

    fn serve(&self, label: &str, target: &str, env: &[(&str, String)]) -> Result<Supervised> {
        let mut env = env.to_vec();
        env.extend([
            ("NO_COLOR", "1".to_owned()),
            (env::ADMIN_LISTEN_ADDR, loopback_port_0()),
        ]);
        env.extend(self.telemetry.env());
        serve(&self.marketplace, target, &env, &self.log(label, target))
    }

    fn log(&self, label: &str, target: &str) -> PathBuf {
        self.work.join(format!("{label}-{target}.log"))
    }

    fn grpc_url(&self, service: &mut Supervised, label: &str, target: &str) -> Result<String> {
        let address = self.logged_address(service, label, target, "serving gRPC")?;
        Ok(format!("http://{address}"))
    }

    /// Waits until `service` logs a line with `marker` and returns the
    /// address that line names.
    fn logged_address(
        &self,
        service: &mut Supervised,
        label: &str,
        target: &str,
        marker: &str,
    ) -> Result<String> {
        let log = self.log(label, target);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(address) = address_in(&text, marker) {
                return Ok(address);
            }
            if let Some(exit) = service.exited() {
                bail!(
                    "marketplace {target} ({label}) exited ({exit}) before serving; its last lines:\n{}",
                    process::tail(&log, 40)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "marketplace {target} ({label}) logged no {marker:?} within {START_TIMEOUT:?}; its last lines:\n{}",
                    process::tail(&log, 40)
                );
            }
            signals::check()?;
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `--watch` arguments for the driver: each service by its name, and
    /// the backends.
    fn watch(
        &self,
        services: &[Supervised],
        names: &[&str],
        backend_pids: &[(&str, u32)],
    ) -> Vec<String> {
        let service_pids = names
            .iter()
            .zip(services)
            .filter_map(|(name, service)| Some((*name, service.pid()?)));
        service_pids
            .chain(backend_pids.iter().copied())
            .map(|(name, pid)| format!("--watch={name}={pid}"))
            .collect()
    }

    /// Runs the driver against the gateway at `gateway`, then stops
    /// `services`.
    fn drive(
        &self,
        label: &'static str,
        gateway: &str,
        watch: &[String],
        services: &mut [Supervised],
    ) -> Result<Run> {
        let summary_path = self.work.join(format!("{label}.json"));
        let mut command = Command::new(&self.driver);
        command
            .arg("gateway")
            .args(["--url", &format!("http://{gateway}")])
            .args(["--label", label])
            .arg(format!("--concurrency={}", self.args.concurrency))
            .arg(format!("--duration={}ms", self.args.duration.as_millis()))
            .arg(format!("--warmup={}ms", self.args.warmup.as_millis()))
            .args(watch)
            .arg("--summary")
            .arg(&summary_path);
        let status = drive_then_stop(command, label, services, &self.work)?;
        // A run with too many failed requests still wrote its numbers.
        match read_summary(&summary_path) {
            Ok(summary) => Ok(Run {
                label,
                summary,
                passed: status.success(),
            }),
            Err(_) if !status.success() => bail!(
                "the {label} benchmark failed ({status}); the logs are in {}",
                self.work.display()
            ),
            Err(e) => Err(e),
        }
    }
}

fn loopback_port_0() -> String {
    "127.0.0.1:0".to_owned()
}

/// The address of the first log line that contains `marker`: its
/// `"address"` field when the line is JSON, else its `address=`.
fn address_in(log: &str, marker: &str) -> Option<String> {
    log.lines()
        .filter(|line| line.contains(marker))
        .find_map(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(fields) => fields["address"].as_str().map(str::to_owned),
                Err(_) => line
                    .split("address=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_owned),
            },
        )
}

fn print_summary(runs: &[Run], args: &GatewayBenchArgs) {
    println!();
    println!(
        "==> summary (concurrency {}, {:?} measured after {:?} warm-up)",
        args.concurrency, args.duration, args.warmup
    );
    let mut machine = serde_json::Map::new();
    for run in runs {
        let mut numbers = serde_json::Map::new();
        let operations = OPERATIONS
            .iter()
            .filter_map(|&operation| {
                Some((operation, operation_entry(&run.summary, operation).ok()?))
            })
            .chain([("total", &run.summary["total"])]);
        for (operation, entry) in operations {
            println!("    {}", summary_line(run.label, operation, entry));
            let fields = ["throughput", "p50_ms", "p99_ms", "errors"];
            let brief = fields.map(|field| (field.to_owned(), entry[field].clone()));
            numbers.insert(
                operation.to_owned(),
                serde_json::Value::Object(brief.into_iter().collect()),
            );
        }
        let cpu = &run.summary["cpu_seconds"];
        if let Some(seconds) = cpu.as_object() {
            let used: Vec<String> = seconds
                .iter()
                .map(|(name, s)| format!("{name} {:.1}", s.as_f64().unwrap_or_default()))
                .collect();
            println!(
                "    {:<9} CPU s while measured: {}",
                run.label,
                used.join(", ")
            );
        }
        numbers.insert("cpu_seconds".to_owned(), cpu.clone());
        machine.insert(run.label.to_owned(), serde_json::Value::Object(numbers));
    }
    // Per telemetry mode, the mean over its runs of the total throughput,
    // and of the CPU the marketplace's own processes (and the collector)
    // spent per request: the second does not move with Elasticsearch's
    // warm-up, which dominates run-to-run changes of the first.
    let mode = |mode: &str| {
        let own = ["account", "catalog", "order", "gateway", "otelcol"];
        let measured: Vec<(f64, f64)> = runs
            .iter()
            .filter(|run| run.label == mode || run.label.starts_with(&format!("{mode},")))
            .filter_map(|run| {
                let throughput = run.summary["total"]["throughput"].as_f64()?;
                let cpu: f64 = own
                    .iter()
                    .filter_map(|name| run.summary["cpu_seconds"][name].as_f64())
                    .sum();
                let requests = throughput * args.duration.as_secs_f64();
                Some((throughput, cpu * 1000.0 / requests))
            })
            .collect();
        let n = measured.len() as f64;
        (!measured.is_empty()).then(|| {
            (
                measured.iter().map(|m| m.0).sum::<f64>() / n,
                measured.iter().map(|m| m.1).sum::<f64>() / n,
            )
        })
    };
    if let (Some((off, off_cpu)), Some((on, on_cpu))) =
        (mode("telemetry off"), mode("telemetry on"))
    {
        let cost = (1.0 - on / off) * 100.0;
        println!(
            "    telemetry costs {cost:.1}% of the throughput (mean of the runs: {off:.0} req/s off, {on:.0} req/s on; target at most 10%)"
        );
        println!(
            "    CPU per request in the marketplace's processes and the collector: {off_cpu:.3} ms off, {on_cpu:.3} ms on ({:+.3} ms)",
            on_cpu - off_cpu
        );
        machine.insert("telemetry_cost_percent".to_owned(), cost.into());
        machine.insert("own_cpu_ms_per_request_off".to_owned(), off_cpu.into());
        machine.insert("own_cpu_ms_per_request_on".to_owned(), on_cpu.into());
    }
    println!(
        "bench-gateway-summary {}",
        serde_json::Value::Object(machine)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_the_line_that_reports_it() {
        let log = "2026-01-01T00:00:00Z  INFO marketplace_grpc: serving gRPC address=127.0.0.1:40001 service=marketplace.account.v1.AccountService\n\
                   2026-01-01T00:00:00Z  INFO marketplace_gateway::startup: serving GraphQL address=127.0.0.1:40004 playground=http://127.0.0.1:40004/playground\n";

        assert_eq!(
            address_in(log, "serving GraphQL").as_deref(),
            Some("127.0.0.1:40004")
        );
        assert_eq!(
            address_in(log, "serving gRPC").as_deref(),
            Some("127.0.0.1:40001")
        );
        assert_eq!(address_in("starting\n", "serving gRPC"), None);
    }
}
