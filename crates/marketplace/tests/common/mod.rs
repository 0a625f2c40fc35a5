//! Running `marketplace serve` processes and talking GraphQL to them over
//! HTTP, as a user does.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use marketplace_config::env;
use serde_json::{Value, json};

pub mod cluster;
pub mod walkthrough;

/// A `marketplace` command with only what the test sets in its
/// environment.
pub fn marketplace() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_marketplace"));
    for name in env::ALL {
        command.env_remove(name);
    }
    command
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        // Tests that need the cache turn it on; the others see every write
        // at once.
        .env(env::GATEWAY_CACHE_TTL, "0s")
        // Every process with gRPC services also serves an admin port.
        .env(env::ADMIN_LISTEN_ADDR, "127.0.0.1:0");
    command
}

/// A running `marketplace serve`, killed when dropped.
#[derive(Debug)]
pub struct Served {
    pub child: Child,
    /// The address of the GraphQL server, or of the gRPC server for a
    /// service target.
    pub address: String,
    /// Every line the process has written to standard output so far.
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// The `address` of the first log line whose message contains
    /// `marker`, waiting up to a minute for it.
    pub fn logged_address(&self, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .find_map(|line| logged_address(line, marker));
            if let Some(address) = found {
                return address;
            }
            assert!(
                Instant::now() < deadline,
                "the process logs `{marker}` with its address"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The admin server's address (`/metrics`, `/healthz`, `/readyz`) of a
    /// process running gRPC services.
    pub fn admin_address(&self) -> String {
        self.logged_address("serving /metrics")
    }

    /// The log lines written so far that are JSON objects.
    pub fn json_logs(&self) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// Polls `check` until it gives a value, for at most `timeout`: for
/// tests on blocking threads, where `marketplace_testkit::eventually`
/// (async) cannot run.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The address a log line announces, if its message contains `marker`:
/// the `address` field of a JSON line, or `address=...` of a pretty one.
pub fn logged_address(line: &str, marker: &str) -> Option<String> {
    if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) {
        let message = fields.get("message").and_then(Value::as_str)?;
        if !message.contains(marker) {
            return None;
        }
        return fields
            .get("address")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    if !line.contains(marker) {
        return None;
    }
    let rest = line.split("address=").nth(1)?;
    rest.split_whitespace().next().map(str::to_owned)
}

/// Starts `command` and waits for the line that says it serves: `serving
/// GraphQL` when `graphql`, else `serving gRPC`.
pub fn serve(command: &mut Command, graphql: bool) -> Served {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the marketplace binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let marker = if graphql {
        "serving GraphQL"
    } else {
        "serving gRPC"
    };
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (sender, receiver) = mpsc::channel();
    let lines = logs.clone();
    std::thread::spawn(move || {
        // Reads to the end, so the process never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(address) = logged_address(&line, marker) {
                let _ = sender.send(address);
            }
            lines.lock().unwrap().push(line);
        }
    });
    let address = receiver
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the process logs `{marker}` with its address"));
    Served {
        child,
        address,
        logs,
    }
}

/// `serve --target all` with no storage URL, in `data_dir`, every part
/// on a free loopback port, with `args` added.
pub fn embedded(data_dir: &std::path::Path, args: &[&str]) -> Served {
    serve(
        marketplace()
            .args(["serve", "--target", "all"])
            .args(args)
            .env(env::DATA_DIR, data_dir)
            .env(env::GATEWAY_LISTEN_ADDR, "127.0.0.1:0")
            .env(env::ACCOUNT_LISTEN_ADDR, "127.0.0.1:0")
            .env(env::CATALOG_LISTEN_ADDR, "127.0.0.1:0")
            .env(env::ORDER_LISTEN_ADDR, "127.0.0.1:0"),
        true,
    )
}

/// A GraphQL client of one gateway.
#[derive(Debug, Clone)]
pub struct Graphql {
    pub base: String,
    agent: ureq::Agent,
}

impl Graphql {
    pub fn new(address: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            base: format!("http://{address}"),
            agent,
        }
    }

    /// Sends `query` with `variables`; the HTTP status and the JSON answer.
    pub fn post(&self, query: &str, variables: Value) -> (u16, Value) {
        self.post_json(json!({ "query": query, "variables": variables }))
    }

    /// Sends `body` as JSON to `/graphql`; the HTTP status and the JSON
    /// answer.
    pub fn post_json(&self, body: Value) -> (u16, Value) {
        let mut response = self
            .agent
            .post(format!("{}/graphql", self.base))
            .send_json(body)
            .expect("the gateway answers");
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_json::<Value>()
            .expect("the answer is JSON");
        (status, body)
    }

    /// The `data` of an answer that must have no errors.
    pub fn data(&self, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(query, variables);
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// The one error of an answer that must fail: its code and message.
    pub fn error(&self, query: &str, variables: Value) -> (String, String) {
        let (_, body) = self.post(query, variables);
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("expected an error, got {body}"));
        assert_eq!(errors.len(), 1, "{body}");
        let code = errors[0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no extensions.code in {body}"));
        let message = errors[0]["message"].as_str().unwrap_or_default();
        (code.to_owned(), message.to_owned())
    }

    /// The sum of the gateway's `grpc_client_handled_total` over every
    /// code of `method`: how many calls it made.
    pub fn calls(&self, method: &str) -> u64 {
        let (_, metrics) = self.get("/metrics");
        let label = format!("grpc_method=\"{method}\"");
        metrics
            .lines()
            .filter(|line| line.starts_with("grpc_client_handled_total{") && line.contains(&label))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// The value of a metric without labels.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, metrics) = self.get("/metrics");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// A plain GET of `path`: the status and the body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut response = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .expect("the gateway answers");
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        (status, body)
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most
/// `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let end = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < end,
            "{what}: not within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One account, two products, one order, one order refused, two
/// identical listings and a search, an account read with its orders:
/// the ids of the account and the products.
pub fn known_workload(graphql: &Graphql) -> (String, [String; 2]) {
    let account = graphql.data(
        "mutation { createAccount(account: { name: \"Grace Hopper\" }) { id } }",
        json!({}),
    )["createAccount"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let product = |name: &str, price: f64| {
        graphql.data(
            "mutation($p: ProductInput!) { createProduct(product: $p) { id } }",
            json!({ "p": { "name": name, "description": "a compiler", "price": price } }),
        )["createProduct"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let products = [product("A-0", 12.5), product("FLOW-MATIC", 99.0)];
    graphql.data(
        "mutation($o: OrderInput!) { createOrder(order: $o) { id } }",
        json!({ "o": { "accountId": account, "products": [
            { "id": products[0], "quantity": 2 }, { "id": products[1], "quantity": 1 }
        ] } }),
    );
    let (code, _) = graphql.error(
        "mutation($o: OrderInput!) { createOrder(order: $o) { id } }",
        json!({ "o": { "accountId": account, "products": [
            { "id": "2bqbnUzFgS5L3r1XGxJtdyk9QXr", "quantity": 1 }
        ] } }),
    );
    assert_eq!(code, "NOT_FOUND");
    for _ in 0..2 {
        graphql.data("{ products(pagination: { take: 10 }) { id } }", json!({}));
    }
    graphql.data("{ products(query: \"compiler\") { id } }", json!({}));
    graphql.data(
        "query($id: String) { accounts(id: $id) { orders { products { name } } } }",
        json!({ "id": account }),
    );
    (account, products)
}
