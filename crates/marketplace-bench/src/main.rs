//! `marketplace-bench`: the load driver behind `cargo xtask bench`. It talks
//! to services that are already running (xtask starts them), seeds them with
//! data, then drives one operation at a time at a fixed concurrency for a
//! fixed time and prints throughput and latency percentiles. `gateway`
//! drives a weighted mix of GraphQL requests through the gateway instead
//! (see [`gateway`]); `operator` times a running operator on Marketplaces
//! (see [`operator`]).

mod gateway;
mod operator;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use marketplace_config::parse_duration;
use marketplace_grpc::ChannelSettings;
use marketplace_proto::account::v1::CreateAccountRequest;
use marketplace_proto::account::v1::account_service_client::AccountServiceClient;
use marketplace_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use marketplace_proto::catalog::v1::{CreateProductRequest, SearchProductsRequest};
use marketplace_proto::common::v1::Money;
use marketplace_proto::order::v1::order_service_client::OrderServiceClient;
use marketplace_proto::order::v1::{CreateOrderRequest, OrderLineRequest};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Drives running marketplace services and reports what they sustain.
#[derive(Debug, Parser)]
#[command(name = "marketplace-bench")]
enum Cli {
    /// CreateOrder and product search against the account, catalog and
    /// order services.
    Services(ServicesArgs),
    /// Print a pgbench script that runs CreateOrder's SQL transaction, built
    /// from the very statements the order service sends.
    PgbenchScript {
        /// Lines per order.
        #[arg(long, default_value_t = 3)]
        lines: usize,
    },
    /// A weighted mix of GraphQL requests (browse, search, an account with
    /// its orders, create order) against a running gateway.
    Gateway(gateway::GatewayArgs),
    /// Marketplaces on a running operator: time to their children and to
    /// Ready, the operator's peak memory and its API writes once converged.
    Operator(operator::OperatorArgs),
}

/// How a driver's run is named and what it reports besides its table.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Report {
    /// Names the run in the output (`real`, `embedded`).
    #[arg(long)]
    pub(crate) label: String,
    /// A process to report CPU time per request for, as NAME=PID (its child
    /// processes count too, as PostgreSQL's backends do). Repeatable; the
    /// driver itself is always reported.
    #[arg(long = "watch", value_parser = parse_watch)]
    pub(crate) watch: Vec<(String, u32)>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub(crate) summary: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ServicesArgs {
    #[arg(long)]
    account_url: String,
    #[arg(long)]
    catalog_url: String,
    #[arg(long)]
    order_url: String,
    /// Calls in flight at any time.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long each operation is measured.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// How long each operation runs before measuring starts.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    warmup: Duration,
    /// Accounts created before measuring.
    #[arg(long, default_value_t = 200)]
    accounts: usize,
    /// Products created before measuring.
    #[arg(long, default_value_t = 500)]
    products: usize,
    /// Lines per order (distinct products).
    #[arg(long, default_value_t = 3)]
    lines: usize,
    #[command(flatten)]
    report: Report,
}

fn parse_watch(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=PID"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("{pid:?} is not a process id"))?;
    Ok((name.to_owned(), pid))
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse() {
        Cli::Services(args) => services(args).await,
        Cli::PgbenchScript { lines } => {
            print!("{}", pgbench_script(lines));
            Ok(())
        }
        Cli::Gateway(args) => gateway::run(args).await,
        Cli::Operator(args) => operator::run(args).await,
    }
}

/// CreateOrder's transaction on PostgreSQL as a pgbench script: the order
/// service's own statements, with each bound parameter replaced by a value
/// of the same type (a fresh order id per transaction from pgbench's
/// variables; `lines` products, quantities and prices).
fn pgbench_script(lines: usize) -> String {
    use marketplace_order::storage::postgres_sql as sql;

    let order_id = "('pgbench-' || :client_id || '-' || :n)";
    let quoted = |values: Vec<String>| values.join(", ");
    let products = quoted((0..lines).map(|i| format!("'product-{i}'")).collect());
    let quantities = quoted((0..lines).map(|i| (1 + i % 5).to_string()).collect());
    let prices = quoted((0..lines).map(|i| (199 + 100 * i).to_string()).collect());
    let statements = [
        bind(
            sql::INSERT_ORDER,
            &[order_id, "'pgbench-account'", "12345", "now()"],
        ),
        bind(
            sql::INSERT_ORDER_ITEMS,
            &[
                order_id,
                &format!("ARRAY[{products}]"),
                &format!("ARRAY[{quantities}]"),
                &format!("ARRAY[{prices}]"),
            ],
        ),
        bind(sql::NOTIFY_ORDER_CREATED, &[order_id]),
    ];
    let mut script = String::from("\\set n random(1, 9000000000000000000)\nBEGIN;\n");
    for statement in statements {
        script.push_str(&statement);
        script.push_str(";\n");
    }
    script.push_str("COMMIT;\n");
    script
}

/// Replaces `$1`, `$2`, ... with `values`, highest number first so that
/// `$1` never matches the start of `$10`.
fn bind(statement: &str, values: &[&str]) -> String {
    let mut text = statement.to_owned();
    for (index, value) in values.iter().enumerate().rev() {
        text = text.replace(&format!("${}", index + 1), value);
    }
    // pgbench reads one statement per line.
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

const WORDS: &[&str] = &[
    "wireless",
    "keyboard",
    "mouse",
    "monitor",
    "cable",
    "laptop",
    "stand",
    "desk",
    "lamp",
    "chair",
    "headphones",
    "speaker",
    "charger",
    "battery",
    "camera",
    "tripod",
    "microphone",
    "webcam",
    "router",
    "switch",
    "adapter",
    "case",
    "sleeve",
    "backpack",
    "bottle",
    "mug",
    "notebook",
    "pen",
    "pencil",
    "marker",
    "ergonomic",
    "compact",
    "portable",
    "silent",
    "mechanical",
    "optical",
    "bluetooth",
    "usb",
    "steel",
    "wooden",
    "leather",
    "cotton",
    "red",
    "blue",
    "black",
    "white",
    "green",
    "large",
    "small",
    "premium",
];

async fn services(args: ServicesArgs) -> Result<()> {
    let settings = ChannelSettings {
        connect_timeout: Duration::from_secs(2),
        call_timeout: Duration::from_secs(30),
    };
    let account_channel = marketplace_grpc::channel(&args.account_url, settings)?;
    let catalog_channel = marketplace_grpc::channel(&args.catalog_url, settings)?;
    let order_channel = marketplace_grpc::channel(&args.order_url, settings)?;
    for (name, channel) in [
        ("account", &account_channel),
        ("catalog", &catalog_channel),
        ("order", &order_channel),
    ] {
        wait_serving(name, channel.clone()).await?;
    }
    let accounts = AccountServiceClient::new(account_channel);
    let catalog = CatalogServiceClient::new(catalog_channel);
    let orders = OrderServiceClient::new(order_channel);

    let seed_started = Instant::now();
    let account_ids = seed_accounts(&accounts, args.accounts).await?;
    let product_ids = seed_products(&catalog, args.products).await?;
    if product_ids.len() < args.lines {
        bail!(
            "{} lines per order need at least as many products",
            args.lines
        );
    }
    println!(
        "bench[{}]: seeded {} accounts and {} products in {:.1?}",
        args.report.label,
        account_ids.len(),
        product_ids.len(),
        seed_started.elapsed()
    );

    let create_order = {
        let (account_ids, product_ids, lines) =
            (account_ids.clone(), product_ids.clone(), args.lines);
        drive(&args, move |rng: &mut Rng| {
            let mut client = orders.clone();
            let account_id = account_ids[rng.below(account_ids.len())].clone();
            let lines = rng
                .distinct(product_ids.len(), lines)
                .into_iter()
                .map(|i| OrderLineRequest {
                    product_id: product_ids[i].clone(),
                    quantity: 1 + u32::try_from(rng.below(5)).unwrap_or(0),
                })
                .collect();
            async move {
                client
                    .create_order(CreateOrderRequest { account_id, lines })
                    .await
                    .map(drop)
            }
        })
        .await?
    };
    let search = drive(&args, move |rng: &mut Rng| {
        let mut client = catalog.clone();
        let words = 1 + rng.below(2);
        let query = (0..words)
            .map(|_| WORDS[rng.below(WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ");
        async move {
            client
                .search_products(SearchProductsRequest {
                    query,
                    skip: 0,
                    take: 20,
                })
                .await
                .map(drop)
        }
    })
    .await?;

    println!(
        "bench[{}]: concurrency {}, {:?} per operation after {:?} warm-up",
        args.report.label, args.concurrency, args.duration, args.warmup
    );
    print_table_header("backends");
    let results = [("CreateOrder", &create_order), ("SearchProducts", &search)];
    for (operation, stats) in results {
        stats.print_row(&args.report.label, operation);
    }
    for (operation, stats) in results {
        if stats.cpu_seconds.is_empty() {
            continue;
        }
        let per_request: Vec<String> = stats
            .cpu_seconds
            .iter()
            .map(|(name, seconds)| format!("{name} {:.3}", stats.per_request_ms(*seconds)))
            .collect();
        println!(
            "           CPU ms per {operation}: {} (total {:.3})",
            per_request.join(", "),
            stats.per_request_ms(stats.cpu_seconds.values().sum())
        );
    }
    if let Some(path) = &args.report.summary {
        let json = serde_json::json!({
            "label": args.report.label,
            "concurrency": args.concurrency,
            "duration_seconds": args.duration.as_secs_f64(),
            "lines_per_order": args.lines,
            "operations": results
                .iter()
                .map(|(operation, stats)| stats.summary(operation))
                .collect::<Vec<_>>(),
        });
        write_summary(path, &json)?;
    }
    check_failure_rate(results.map(|(_, stats)| stats))
}

/// Writes a run's results as JSON for `cargo xtask bench` to read back.
fn write_summary(path: &std::path::Path, json: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(json)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Fails when more than 1% of all the calls counted in `results` failed.
fn check_failure_rate<'a>(results: impl IntoIterator<Item = &'a Stats>) -> Result<()> {
    let (failed, succeeded) = results.into_iter().fold((0, 0), |(failed, ok), stats| {
        (failed + stats.error_count(), ok + stats.ok)
    });
    if failed * 100 > failed + succeeded {
        bail!(
            "more than 1% of the calls failed ({failed} of {})",
            failed + succeeded
        );
    }
    Ok(())
}

async fn wait_serving(name: &str, channel: Channel) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut client = HealthClient::new(channel);
    loop {
        let answer = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        match answer {
            Ok(response) if response.get_ref().status() == ServingStatus::Serving => return Ok(()),
            _ if Instant::now() > deadline => bail!("the {name} service did not become ready"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn seed_accounts(
    client: &AccountServiceClient<Channel>,
    count: usize,
) -> Result<Vec<String>> {
    let calls = (0..count).map(|i| {
        let mut client = client.clone();
        async move {
            let response = client
                .create_account(CreateAccountRequest {
                    name: format!("Bench customer {i}"),
                })
                .await?;
            response
                .into_inner()
                .account
                .map(|a| a.id)
                .context("CreateAccount answered without an account")
        }
    });
    in_parallel(calls, 32).await
}

async fn seed_products(
    client: &CatalogServiceClient<Channel>,
    count: usize,
) -> Result<Vec<String>> {
    let calls = (0..count).map(|i| {
        let mut client = client.clone();
        let SeedProduct {
            name,
            description,
            price_minor_units,
        } = SeedProduct::new(i);
        async move {
            let response = client
                .create_product(CreateProductRequest {
                    name,
                    description,
                    price: Some(Money {
                        minor_units: price_minor_units,
                    }),
                })
                .await?;
            response
                .into_inner()
                .product
                .map(|p| p.id)
                .context("CreateProduct answered without a product")
        }
    });
    // Elasticsearch makes each create wait for a refresh: many at once.
    in_parallel(calls, 128).await
}

/// The `i`th seeded product: words of [`WORDS`] in its name and
/// description, so that searches for them find something, and a price
/// that varies.
#[derive(Debug)]
struct SeedProduct {
    name: String,
    description: String,
    price_minor_units: i64,
}

impl SeedProduct {
    fn new(i: usize) -> Self {
        let mut rng = Rng::new(i as u64 + 1);
        let mut pick = |n: usize| {
            (0..n)
                .map(|_| WORDS[rng.below(WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ")
        };
        let name = format!("{} {i}", pick(2));
        let description = pick(12);
        Self {
            name,
            description,
            price_minor_units: 50 + (i as i64 * 37) % 20_000,
        }
    }
}

async fn in_parallel<T>(
    calls: impl Iterator<Item = impl Future<Output = Result<T>> + Send + 'static>,
    limit: usize,
) -> Result<Vec<T>>
where
    T: Send + 'static,
{
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(limit));
    let mut tasks = Vec::new();
    for call in calls {
        let permit = semaphore.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let result = call.await;
            drop(permit);
            result
        }));
    }
    let mut values = Vec::with_capacity(tasks.len());
    for task in tasks {
        values.push(task.await??);
    }
    Ok(values)
}

/// The warm-up and the measured part of a closed-loop run, shared by all
/// its workers: calls go on until `end`, and those that began at or after
/// `start` count.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    /// A warm-up from now, then `duration` measured.
    fn after_warmup(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now() + warmup;
        Self {
            start,
            end: start + duration,
        }
    }

    /// The moment a call begins, or `None` once the run is over.
    fn begin(&self) -> Option<Instant> {
        let now = Instant::now();
        (now < self.end).then_some(now)
    }
}

/// Why a call failed: a kind to count failures by (a gRPC code, an HTTP
/// status, a GraphQL error code) and what the answer said.
#[derive(Debug)]
struct Failure {
    kind: String,
    message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Failure {}

/// The failed calls of one kind, and the message of the first of them.
#[derive(Debug, Clone)]
struct Failures {
    count: u64,
    first: String,
}

/// What one operation achieved during the measured window.
#[derive(Debug, Clone)]
struct Stats {
    ok: u64,
    errors: BTreeMap<String, Failures>,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    /// CPU seconds each watched process used during the measured window.
    cpu_seconds: BTreeMap<String, f64>,
}

impl Stats {
    /// Nothing yet, for a window that measures `elapsed`.
    fn new(elapsed: Duration) -> Result<Self> {
        Ok(Self {
            ok: 0,
            errors: BTreeMap::new(),
            elapsed,
            // One microsecond to one minute, three significant digits.
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            cpu_seconds: BTreeMap::new(),
        })
    }

    /// Counts a call that began at `began` and has just ended, unless it
    /// began during the warm-up.
    fn record(&mut self, window: &Window, began: Instant, result: Result<(), Failure>) {
        if began < window.start {
            return;
        }
        match result {
            Ok(()) => {
                self.ok += 1;
                let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.latency_us.saturating_record(micros.max(1));
            }
            Err(failure) => self.fail(failure, 1),
        }
    }

    fn fail(&mut self, failure: Failure, count: u64) {
        self.errors
            .entry(failure.kind)
            .or_insert_with(|| Failures {
                count: 0,
                first: failure.message,
            })
            .count += count;
    }

    /// Adds what another worker (or operation) counted in the same window.
    fn merge(&mut self, other: &Self) {
        self.ok += other.ok;
        for (kind, failures) in &other.errors {
            let failure = Failure {
                kind: kind.clone(),
                message: failures.first.clone(),
            };
            self.fail(failure, failures.count);
        }
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
    }

    fn error_count(&self) -> u64 {
        self.errors.values().map(|failures| failures.count).sum()
    }

    #[allow(clippy::cast_precision_loss)]
    fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    #[allow(clippy::cast_precision_loss)]
    fn per_request_ms(&self, cpu_seconds: f64) -> f64 {
        cpu_seconds * 1000.0 / self.ok.max(1) as f64
    }

    #[allow(clippy::cast_precision_loss)]
    fn percentile_ms(&self, percentile: f64) -> f64 {
        self.latency_us.value_at_percentile(percentile) as f64 / 1000.0
    }

    /// One line of the table [`print_table_header`] starts, and one more per
    /// kind of failure with its first message.
    fn print_row(&self, label: &str, operation: &str) {
        println!(
            "{label:<10} {operation:<18} {:>9} {:>7} {:>10.1} {:>9.2} {:>9.2}",
            self.ok,
            self.error_count(),
            self.throughput(),
            self.percentile_ms(50.0),
            self.percentile_ms(99.0),
        );
        for (kind, failures) in &self.errors {
            println!(
                "           {operation} failed {} times with {kind}, first: {}",
                failures.count, failures.first
            );
        }
    }

    /// The numbers of [`Stats::print_row`] as JSON, for the summary file.
    fn summary(&self, operation: &str) -> serde_json::Value {
        serde_json::json!({
            "operation": operation,
            "requests": self.ok,
            "errors": self.error_count(),
            "throughput": self.throughput(),
            "p50_ms": self.percentile_ms(50.0),
            "p99_ms": self.percentile_ms(99.0),
            "first_errors": self.errors.iter()
                .map(|(kind, failures)| (kind.clone(), serde_json::json!(failures.first)))
                .collect::<serde_json::Map<_, _>>(),
            "cpu_ms_per_request": self.cpu_seconds.iter()
                .map(|(name, seconds)| (name.clone(), serde_json::json!(self.per_request_ms(*seconds))))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// The header of the table [`Stats::print_row`] prints lines of.
fn print_table_header(label: &str) {
    println!(
        "{label:<10} {:<18} {:>9} {:>7} {:>10} {:>9} {:>9}",
        "operation", "requests", "errors", "req/s", "p50 ms", "p99 ms"
    );
}

/// Runs `call` from `args.concurrency` workers in a closed loop: warm-up
/// first, then the measured window.
async fn drive<F, Fut>(args: &ServicesArgs, call: F) -> Result<Stats>
where
    F: Fn(&mut Rng) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let window = Window::after_warmup(args.warmup, args.duration);
    let template = Stats::new(args.duration)?;
    let cpu = cpu_during(args.report.watch.clone(), window);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            let call = call.clone();
            let mut stats = template.clone();
            tokio::spawn(async move {
                let mut rng = Rng::for_worker(worker);
                while let Some(began) = window.begin() {
                    let result = call(&mut rng).await.map_err(|status| Failure {
                        kind: format!("{:?}", status.code()),
                        message: status.message().to_owned(),
                    });
                    stats.record(&window, began, result);
                }
                stats
            })
        })
        .collect();
    let mut total = template;
    for worker in workers {
        match worker.await {
            Ok(stats) => total.merge(&stats),
            Err(e) => total.fail(worker_panicked(&e), 1),
        }
    }
    total.cpu_seconds = cpu.await.unwrap_or_default();
    Ok(total)
}

fn worker_panicked(error: &tokio::task::JoinError) -> Failure {
    Failure {
        kind: "worker panicked".to_owned(),
        message: error.to_string(),
    }
}

/// The CPU seconds each watched process (with its descendants) uses during
/// the measured part of `window`.
fn cpu_during(
    watch: Vec<(String, u32)>,
    window: Window,
) -> tokio::task::JoinHandle<BTreeMap<String, f64>> {
    tokio::spawn(async move {
        tokio::time::sleep_until(window.start.into()).await;
        let before = cpu_ticks(&watch);
        tokio::time::sleep_until(window.end.into()).await;
        let after = cpu_ticks(&watch);
        watch
            .iter()
            .map(|(name, _)| {
                let used =
                    after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
                #[allow(clippy::cast_precision_loss)]
                let seconds = used as f64 / CLOCK_TICKS_PER_SECOND;
                (name.clone(), seconds)
            })
            .collect()
    })
}

/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, 100 per second on
/// every Linux architecture this runs on.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// CPU ticks (user + system) used so far by each watched process together
/// with its descendants.
fn cpu_ticks(watch: &[(String, u32)]) -> BTreeMap<String, i64> {
    // (pid, parent pid, ticks) of every process.
    let mut processes = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Fields after the command name, which may itself contain spaces.
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let number = |i: usize| fields.get(i).and_then(|f| f.parse::<i64>().ok());
            if let (Some(parent), Some(user), Some(system)) = (number(1), number(11), number(12)) {
                processes.push((pid, u32::try_from(parent).unwrap_or(0), user + system));
            }
        }
    }
    watch
        .iter()
        .map(|(name, root)| {
            let mut members = vec![*root];
            let mut grew = true;
            while grew {
                grew = false;
                for (pid, parent, _) in &processes {
                    if members.contains(parent) && !members.contains(pid) {
                        members.push(*pid);
                        grew = true;
                    }
                }
            }
            let ticks = processes
                .iter()
                .filter(|(pid, _, _)| members.contains(pid))
                .map(|(_, _, ticks)| ticks)
                .sum();
            (name.clone(), ticks)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pgbench_script_is_the_services_transaction_with_values_bound() {
        let script = pgbench_script(3);
        let lines: Vec<&str> = script.lines().collect();

        assert_eq!(lines.len(), 6, "{script}");
        assert_eq!(lines[1], "BEGIN;");
        assert!(lines[2].starts_with("INSERT INTO orders"), "{}", lines[2]);
        assert!(
            lines[3].contains("ARRAY['product-0', 'product-1', 'product-2']::varchar[]"),
            "{}",
            lines[3]
        );
        assert!(lines[4].starts_with("SELECT pg_notify"), "{}", lines[4]);
        assert_eq!(lines[5], "COMMIT;");
        assert!(!script.contains('$'), "unbound parameter in {script}");
    }
}

/// A small xorshift generator: load patterns need to vary, not to be secure.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// A generator of its own for each worker of a run, the same in
    /// every run.
    fn for_worker(worker: usize) -> Self {
        Self::new(0x9e37_79b9 ^ (worker as u64 + 1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `count` distinct numbers below `n`.
    fn distinct(&mut self, n: usize, count: usize) -> Vec<usize> {
        let mut picked = Vec::with_capacity(count);
        while picked.len() < count.min(n) {
            let i = self.below(n);
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        picked
    }
}
