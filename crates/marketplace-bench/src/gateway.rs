//! `marketplace-bench gateway`: a weighted mix of GraphQL requests against
//! a running gateway, as a shop's clients send them. It seeds accounts,
//! products and orders through the gateway's own mutations, then runs
//! `--concurrency` workers in a closed loop, each picking an operation by
//! weight for every request (browse products 10, search 5, an account with
//! its orders 3, create order 1), and prints requests/s and p50/p99 per
//! operation.
//!
//! Each worker is a thread with one keep-alive HTTP/1.1 connection of its
//! own (ureq, blocking): on a machine the driver shares with the services,
//! a thread per connection costs less CPU than an async client would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use marketplace_config::parse_duration;
use serde_json::{Value, json};

use crate::{
    Failure, Rng, SeedProduct, Stats, WORDS, Window, check_failure_rate, cpu_during, in_parallel,
    print_table_header, worker_panicked, write_summary,
};

#[derive(Debug, clap::Args)]
pub(crate) struct GatewayArgs {
    /// The gateway's base URL (`http://127.0.0.1:8080`).
    #[arg(long)]
    url: String,
    /// Requests in flight at any time, one connection each.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long the mix is measured.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// How long the mix runs before measuring starts.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    warmup: Duration,
    /// Accounts created before measuring.
    #[arg(long, default_value_t = 200)]
    accounts: usize,
    /// Products created before measuring.
    #[arg(long, default_value_t = 1000)]
    products: usize,
    /// Orders placed for each account before measuring.
    #[arg(long, default_value_t = 3)]
    orders_per_account: usize,
    #[command(flatten)]
    report: crate::Report,
}

/// Products on a page of the browse and search operations.
const PAGE: usize = 20;

/// Requests in flight while seeding: the catalog makes each create wait
/// until it is searchable, so products go many at once.
const SEED_IN_FLIGHT: usize = 64;

/// How often a seeding request is sent before an overloaded answer fails
/// the run.
const SEED_ATTEMPTS: u32 = 5;

/// Longer than any answer of a healthy gateway (its own downstream
/// deadline is 5 s), short enough that a stuck run ends.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const CREATE_ACCOUNT: &str =
    "mutation($account: AccountInput!) { createAccount(account: $account) { id } }";
const CREATE_PRODUCT: &str =
    "mutation($product: ProductInput!) { createProduct(product: $product) { id } }";

/// What a client of the shop does, each with its share of the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    BrowseProducts,
    Search,
    AccountWithOrders,
    CreateOrder,
}

impl Operation {
    const ALL: [Self; 4] = [
        Self::BrowseProducts,
        Self::Search,
        Self::AccountWithOrders,
        Self::CreateOrder,
    ];

    fn weight(self) -> usize {
        match self {
            Self::BrowseProducts => 10,
            Self::Search => 5,
            Self::AccountWithOrders => 3,
            Self::CreateOrder => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::BrowseProducts => "browse products",
            Self::Search => "search",
            Self::AccountWithOrders => "account + orders",
            Self::CreateOrder => "create order",
        }
    }

    fn query(self) -> &'static str {
        match self {
            Self::BrowseProducts => {
                "query($skip: Int) { products(pagination: {skip: $skip, take: 20}) { id name description price } }"
            }
            Self::Search => {
                "query($q: String) { products(query: $q, pagination: {take: 20}) { id name price } }"
            }
            Self::AccountWithOrders => {
                "query($id: String) { accounts(id: $id) { id name orders(take: 10) { id createdAt totalPrice products { id name price quantity } } } }"
            }
            Self::CreateOrder => {
                "mutation($o: OrderInput!) { createOrder(order: $o) { id totalPrice } }"
            }
        }
    }

    /// An operation chosen by weight.
    fn pick(rng: &mut Rng) -> Self {
        let total: usize = Self::ALL.iter().map(|op| op.weight()).sum();
        let mut ticket = rng.below(total);
        for operation in Self::ALL {
            if ticket < operation.weight() {
                return operation;
            }
            ticket -= operation.weight();
        }
        Self::BrowseProducts
    }

    /// Random variables for one request, over what was seeded.
    fn variables(self, rng: &mut Rng, seeded: &Seeded) -> Value {
        match self {
            Self::BrowseProducts => {
                json!({ "skip": rng.below(seeded.product_ids.len().saturating_sub(PAGE) + 1) })
            }
            Self::Search => json!({ "q": WORDS[rng.below(WORDS.len())] }),
            Self::AccountWithOrders => json!({ "id": seeded.random_account(rng) }),
            Self::CreateOrder => {
                let account = seeded.random_account(rng).to_owned();
                json!({ "o": seeded.order(rng, &account) })
            }
        }
    }

    /// The list an answer must not leave empty when the data is seeded: a
    /// benchmark of empty answers would measure nothing.
    fn seeded_list(self, data: &Value) -> &Value {
        match self {
            Self::BrowseProducts | Self::Search => &data["products"],
            Self::AccountWithOrders => &data["accounts"][0]["orders"],
            Self::CreateOrder => &data["createOrder"]["id"],
        }
    }
}

/// The ids the seeding created, which the operations pick from.
#[derive(Debug)]
struct Seeded {
    account_ids: Vec<String>,
    product_ids: Vec<String>,
}

impl Seeded {
    fn random_account(&self, rng: &mut Rng) -> &str {
        &self.account_ids[rng.below(self.account_ids.len())]
    }

    /// An `OrderInput` for `account`: 1 to 5 distinct products, 1 to 3 of
    /// each.
    fn order(&self, rng: &mut Rng, account: &str) -> Value {
        let lines = 1 + rng.below(5);
        let products: Vec<Value> = rng
            .distinct(self.product_ids.len(), lines)
            .into_iter()
            .map(|i| json!({ "id": self.product_ids[i], "quantity": 1 + rng.below(3) }))
            .collect();
        json!({ "accountId": account, "products": products })
    }
}

impl Failure {
    /// Whether the server said to try again later (or the connection
    /// broke), rather than refusing the request.
    fn is_transient(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "transport" | "GraphQL UNAVAILABLE" | "HTTP 503"
        )
    }
}

/// A GraphQL client over keep-alive HTTP/1.1 connections.
#[derive(Debug, Clone)]
struct Client {
    agent: ureq::Agent,
    base_url: String,
}

impl Client {
    /// A client that keeps up to `connections` connections open.
    fn new(base_url: &str, connections: usize) -> Self {
        let agent = ureq::Agent::config_builder()
            // Only loopback is benchmarked: no proxy from the environment.
            .proxy(None)
            .http_status_as_error(false)
            .max_idle_connections(connections)
            .max_idle_connections_per_host(connections)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        Self {
            agent,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// Whether the gateway and every service behind it are ready.
    fn ready(&self) -> bool {
        self.agent
            .get(format!("{}/readyz", self.base_url))
            .call()
            .is_ok_and(|response| response.status() == 200)
    }

    /// Sends one request and returns its `data`. A status other than 200
    /// and an answer with `errors` are failures.
    fn execute(&self, query: &str, variables: Value) -> Result<Value, Failure> {
        let failure = |kind: &str, message: String| Failure {
            kind: kind.to_owned(),
            message,
        };
        let body = json!({ "query": query, "variables": variables }).to_string();
        let mut response = self
            .agent
            .post(format!("{}/graphql", self.base_url))
            .content_type("application/json")
            .send(body.as_bytes())
            .map_err(|e| failure("transport", e.to_string()))?;
        let status = response.status();
        // Reading the whole body hands the connection back for reuse.
        let bytes = response
            .body_mut()
            .read_to_vec()
            .map_err(|e| failure("transport", e.to_string()))?;
        if status != 200 {
            let text = String::from_utf8_lossy(&bytes);
            return Err(failure(
                &format!("HTTP {}", status.as_u16()),
                text.chars().take(300).collect(),
            ));
        }
        let mut answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
            failure(
                "not JSON",
                format!("{e}: {}", String::from_utf8_lossy(&bytes)),
            )
        })?;
        if let Some(error) = answer["errors"]
            .as_array()
            .and_then(|errors| errors.first())
        {
            let code = error["extensions"]["code"].as_str().unwrap_or("no code");
            return Err(failure(
                &format!("GraphQL {code}"),
                error["message"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        Ok(answer["data"].take())
    }

    /// [`Client::execute`] on a blocking thread, for the seeding, which
    /// must not fail on a passing overload: an answer that says to try
    /// again later is retried a few times. (A retried create may have been
    /// done already; a duplicate product or order does not matter here.)
    async fn execute_async(&self, query: &'static str, variables: Value) -> Result<Value> {
        let mut attempt = 1;
        loop {
            let client = self.clone();
            let sent = variables.clone();
            let result = tokio::task::spawn_blocking(move || client.execute(query, sent)).await?;
            match result {
                Err(failure) if attempt < SEED_ATTEMPTS && failure.is_transient() => {
                    tokio::time::sleep(Duration::from_millis(500) * attempt).await;
                    attempt += 1;
                }
                result => return Ok(result?),
            }
        }
    }
}

pub(crate) async fn run(args: GatewayArgs) -> Result<()> {
    let client = Client::new(&args.url, SEED_IN_FLIGHT);
    wait_ready(&client).await?;

    let seed_started = Instant::now();
    let seeded = Arc::new(seed(&client, &args).await?);
    println!(
        "bench[{}]: seeded {} accounts, {} products and {} orders in {:.1?}",
        args.report.label,
        seeded.account_ids.len(),
        seeded.product_ids.len(),
        seeded.account_ids.len() * args.orders_per_account,
        seed_started.elapsed()
    );
    check_seeded_answers(&client, &seeded).await?;

    let mut watch = args.report.watch.clone();
    watch.push(("driver".to_owned(), std::process::id()));
    let window = Window::after_warmup(args.warmup, args.duration);
    let template = Stats::new(args.duration)?;
    let cpu = cpu_during(watch, window);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            let client = Client::new(&args.url, 1);
            let seeded = Arc::clone(&seeded);
            let stats = Operation::ALL.map(|_| template.clone());
            tokio::task::spawn_blocking(move || work(&client, &seeded, window, worker, stats))
        })
        .collect();
    let mut by_operation = Operation::ALL.map(|_| template.clone());
    let mut total = template;
    for worker in workers {
        match worker.await {
            Ok(stats) => {
                for (sum, stats) in by_operation.iter_mut().zip(&stats) {
                    sum.merge(stats);
                    total.merge(stats);
                }
            }
            Err(e) => total.fail(worker_panicked(&e), 1),
        }
    }
    total.cpu_seconds = cpu.await.unwrap_or_default();

    print_results(&args, &by_operation, &total);
    if let Some(path) = &args.report.summary {
        let json = json!({
            "label": args.report.label,
            "concurrency": args.concurrency,
            "duration_seconds": args.duration.as_secs_f64(),
            "warmup_seconds": args.warmup.as_secs_f64(),
            "operations": Operation::ALL
                .iter()
                .zip(&by_operation)
                .map(|(operation, stats)| stats.summary(operation.name()))
                .collect::<Vec<_>>(),
            "total": total.summary("total"),
            "cpu_seconds": total.cpu_seconds,
        });
        write_summary(path, &json)?;
    }
    check_failure_rate([&total])
}

/// One worker: picks an operation by weight, sends it, waits for the answer
/// and starts over, until the window ends.
fn work(
    client: &Client,
    seeded: &Seeded,
    window: Window,
    worker: usize,
    mut stats: [Stats; 4],
) -> [Stats; 4] {
    let mut rng = Rng::for_worker(worker);
    loop {
        let operation = Operation::pick(&mut rng);
        let variables = operation.variables(&mut rng, seeded);
        let Some(began) = window.begin() else {
            return stats;
        };
        let result = client.execute(operation.query(), variables).map(drop);
        stats[operation as usize].record(&window, began, result);
    }
}

async fn wait_ready(client: &Client) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let probe = client.clone();
        if tokio::task::spawn_blocking(move || probe.ready()).await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the gateway at {} did not become ready (its /readyz)",
                client.base_url
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates the accounts and products, then the orders, through the
/// gateway's mutations.
async fn seed(client: &Client, args: &GatewayArgs) -> Result<Seeded> {
    let accounts = (0..args.accounts).map(|i| {
        let client = client.clone();
        async move {
            let account = json!({ "account": { "name": format!("Bench customer {i}") } });
            let data = client.execute_async(CREATE_ACCOUNT, account).await?;
            created_id(&data["createAccount"])
        }
    });
    let products = (0..args.products).map(|i| {
        let client = client.clone();
        let product = SeedProduct::new(i);
        #[allow(clippy::cast_precision_loss)]
        let price = product.price_minor_units as f64 / 100.0;
        async move {
            let product = json!({ "product": {
                "name": product.name,
                "description": product.description,
                "price": price,
            } });
            let data = client.execute_async(CREATE_PRODUCT, product).await?;
            created_id(&data["createProduct"])
        }
    });
    let seeded = Seeded {
        account_ids: in_parallel(accounts, SEED_IN_FLIGHT).await?,
        product_ids: in_parallel(products, SEED_IN_FLIGHT).await?,
    };
    if seeded.account_ids.is_empty() || seeded.product_ids.is_empty() {
        bail!("the mix needs at least one account and one product");
    }
    let orders = (0..seeded.account_ids.len() * args.orders_per_account).map(|i| {
        let client = client.clone();
        let mut rng = Rng::new(i as u64 + 1);
        let order = seeded.order(&mut rng, &seeded.account_ids[i % seeded.account_ids.len()]);
        async move {
            let data = client
                .execute_async(Operation::CreateOrder.query(), json!({ "o": order }))
                .await?;
            created_id(&data["createOrder"])
        }
    });
    in_parallel(orders, SEED_IN_FLIGHT).await?;
    Ok(seeded)
}

fn created_id(object: &Value) -> Result<String> {
    object["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the gateway answered without an id: {object}"))
}

/// Sends each operation once and checks that it finds what was seeded.
async fn check_seeded_answers(client: &Client, seeded: &Seeded) -> Result<()> {
    let mut rng = Rng::new(1);
    for operation in Operation::ALL {
        let variables = operation.variables(&mut rng, seeded);
        let data = client
            .execute_async(operation.query(), variables)
            .await
            .with_context(|| format!("{} failed before measuring", operation.name()))?;
        let list = operation.seeded_list(&data);
        if list.is_null() || list.as_array().is_some_and(Vec::is_empty) {
            bail!(
                "{} found nothing of the seeded data: {data}",
                operation.name()
            );
        }
    }
    Ok(())
}

fn print_results(args: &GatewayArgs, by_operation: &[Stats], total: &Stats) {
    let weights: Vec<String> = Operation::ALL
        .iter()
        .map(|op| format!("{} {}", op.name(), op.weight()))
        .collect();
    println!(
        "bench[{}]: concurrency {}, {:?} measured after {:?} warm-up; weights: {}",
        args.report.label,
        args.concurrency,
        args.duration,
        args.warmup,
        weights.join(", ")
    );
    print_table_header("setup");
    for (operation, stats) in Operation::ALL.iter().zip(by_operation) {
        stats.print_row(&args.report.label, operation.name());
    }
    total.print_row(&args.report.label, "total");
    if total.cpu_seconds.is_empty() {
        return;
    }
    let used: Vec<String> = total
        .cpu_seconds
        .iter()
        .map(|(name, seconds)| format!("{name} {seconds:.1}"))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    #[allow(clippy::cast_precision_loss)]
    let available = args.duration.as_secs_f64() * cores as f64;
    println!(
        "           CPU s while measured: {} (total {:.1} of {available:.1} on {cores} cores)",
        used.join(", "),
        total.cpu_seconds.values().sum::<f64>(),
    );
    let per_request: Vec<String> = total
        .cpu_seconds
        .iter()
        .map(|(name, seconds)| format!("{name} {:.3}", total.per_request_ms(*seconds)))
        .collect();
    println!(
        "           CPU ms per request: {} (total {:.3})",
        per_request.join(", "),
        total.per_request_ms(total.cpu_seconds.values().sum())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_picked_in_proportion_to_their_weights() {
        let mut rng = Rng::new(7);
        let mut counts = [0_usize; 4];
        for _ in 0..19_000 {
            counts[Operation::pick(&mut rng) as usize] += 1;
        }

        for (operation, count) in Operation::ALL.iter().zip(counts) {
            let expected = operation.weight() * 1000;
            assert!(
                count.abs_diff(expected) < expected / 10 + 100,
                "{}: {count}, expected about {expected}",
                operation.name()
            );
        }
    }

    #[test]
    fn an_order_has_one_to_five_distinct_products_of_one_to_three_each() {
        let seeded = Seeded {
            account_ids: vec!["a".to_owned()],
            product_ids: (0..10).map(|i| format!("p{i}")).collect(),
        };
        let mut rng = Rng::new(3);

        for _ in 0..100 {
            let order = seeded.order(&mut rng, "a");
            let products = order["products"].as_array().unwrap();
            assert!((1..=5).contains(&products.len()), "{order}");
            let mut ids: Vec<&str> = products.iter().map(|p| p["id"].as_str().unwrap()).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), products.len(), "{order}");
            assert!(
                products
                    .iter()
                    .all(|p| (1..=3).contains(&p["quantity"].as_u64().unwrap())),
                "{order}"
            );
        }
    }
}
