//! `marketplace-bench`: the load driver behind `cargo xtask bench`. It talks
//! to services that are already running (xtask starts them), seeds them with
//! data, then drives one operation at a time at a fixed concurrency for a
//! fixed time and prints throughput and latency percentiles. `operator`
//! times a running operator on Marketplaces instead (see [`operator`]).

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
    /// Marketplaces on a running operator: time to their children and to
    /// Ready, the operator's peak memory and its API writes once converged.
    Operator(operator::OperatorArgs),
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
    /// Names the run in the output (`real`, `embedded`).
    #[arg(long)]
    label: String,
    /// A process to report CPU time per request for, as NAME=PID (its child
    /// processes count too, as PostgreSQL's backends do). Repeatable.
    #[arg(long = "watch", value_parser = parse_watch)]
    watch: Vec<(String, u32)>,
    /// Also write the results as JSON here.
    #[arg(long)]
    summary: Option<PathBuf>,
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
        args.label,
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
        args.label, args.concurrency, args.duration, args.warmup
    );
    println!(
        "{:<10} {:<16} {:>9} {:>7} {:>10} {:>9} {:>9}",
        "backends", "operation", "requests", "errors", "req/s", "p50 ms", "p99 ms"
    );
    let results = [("CreateOrder", &create_order), ("SearchProducts", &search)];
    for (operation, stats) in results {
        println!(
            "{:<10} {:<16} {:>9} {:>7} {:>10.1} {:>9.2} {:>9.2}",
            args.label,
            operation,
            stats.ok,
            stats.error_count(),
            stats.throughput(),
            stats.percentile_ms(50.0),
            stats.percentile_ms(99.0),
        );
        if !stats.errors.is_empty() {
            println!("           {operation} errors by code: {:?}", stats.errors);
        }
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
    if let Some(path) = &args.summary {
        let json = serde_json::json!({
            "label": args.label,
            "concurrency": args.concurrency,
            "duration_seconds": args.duration.as_secs_f64(),
            "lines_per_order": args.lines,
            "operations": results.iter().map(|(operation, stats)| serde_json::json!({
                "operation": operation,
                "requests": stats.ok,
                "errors": stats.error_count(),
                "throughput": stats.throughput(),
                "p50_ms": stats.percentile_ms(50.0),
                "p99_ms": stats.percentile_ms(99.0),
                "cpu_ms_per_request": stats.cpu_seconds.iter()
                    .map(|(name, seconds)| (name.clone(), serde_json::json!(stats.per_request_ms(*seconds))))
                    .collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failed: u64 = results.iter().map(|(_, s)| s.error_count()).sum();
    let succeeded: u64 = results.iter().map(|(_, s)| s.ok).sum();
    if failed * 100 > succeeded {
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
        let mut rng = Rng::new(i as u64 + 1);
        let mut pick = |n: usize| {
            (0..n)
                .map(|_| WORDS[rng.below(WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ")
        };
        let name = format!("{} {i}", pick(2));
        let description = pick(12);
        let price = Money {
            minor_units: 50 + (i as i64 * 37) % 20_000,
        };
        async move {
            let response = client
                .create_product(CreateProductRequest {
                    name,
                    description,
                    price: Some(price),
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

/// What one operation achieved during the measured window.
#[derive(Debug)]
struct Stats {
    ok: u64,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    /// CPU seconds each watched process used during the measured window.
    cpu_seconds: BTreeMap<String, f64>,
}

impl Stats {
    fn error_count(&self) -> u64 {
        self.errors.values().sum()
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
}

/// Runs `call` from `args.concurrency` workers in a closed loop: warm-up
/// first, then the measured window.
async fn drive<F, Fut>(args: &ServicesArgs, call: F) -> Result<Stats>
where
    F: Fn(&mut Rng) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let template = new_histogram()?;
    let start = Instant::now() + args.warmup;
    let end = start + args.duration;
    let cpu = {
        let watch = args.watch.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let before = cpu_ticks(&watch);
            tokio::time::sleep_until(end.into()).await;
            let after = cpu_ticks(&watch);
            watch
                .iter()
                .map(|(name, _)| {
                    let used = after.get(name).copied().unwrap_or(0)
                        - before.get(name).copied().unwrap_or(0);
                    #[allow(clippy::cast_precision_loss)]
                    let seconds = used as f64 / CLOCK_TICKS_PER_SECOND;
                    (name.clone(), seconds)
                })
                .collect::<BTreeMap<_, _>>()
        })
    };
    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            let call = call.clone();
            let mut latency = template.clone();
            tokio::spawn(async move {
                let mut rng = Rng::new(0x9e37_79b9 ^ (worker as u64 + 1));
                let mut ok = 0;
                let mut errors = BTreeMap::<String, u64>::new();
                loop {
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    let result = call(&mut rng).await;
                    if began < start {
                        continue;
                    }
                    match result {
                        Ok(()) => {
                            ok += 1;
                            let micros =
                                u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                            latency.saturating_record(micros.max(1));
                        }
                        Err(status) => {
                            *errors.entry(format!("{:?}", status.code())).or_default() += 1;
                        }
                    }
                }
                (ok, errors, latency)
            })
        })
        .collect();
    let mut stats = Stats {
        ok: 0,
        errors: BTreeMap::new(),
        elapsed: args.duration,
        latency_us: template,
        cpu_seconds: BTreeMap::new(),
    };
    for worker in workers {
        match worker.await {
            Ok((ok, errors, latency)) => {
                stats.ok += ok;
                for (code, count) in errors {
                    *stats.errors.entry(code).or_default() += count;
                }
                let _ = stats.latency_us.add(&latency);
            }
            Err(_) => *stats.errors.entry("worker panicked".into()).or_default() += 1,
        }
    }
    stats.cpu_seconds = cpu.await.unwrap_or_default();
    Ok(stats)
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

fn new_histogram() -> Result<Histogram<u64>> {
    // One microsecond to one minute, three significant digits.
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
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
