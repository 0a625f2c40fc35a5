//! Faults on the real processes, under load: a service goes away and
//! comes back, PostgreSQL restarts, the marketplace is told to stop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Graphql;
use common::cluster::{self, Stores, http_get, sample};
use serde_json::{Value, json};

const CREATE_ORDER: &str = "mutation($o: OrderInput!) { createOrder(order: $o) { id } }";

/// How one request under load ended.
#[derive(Debug, Clone)]
struct Outcome {
    started: Instant,
    took: Duration,
    /// `Ok(order id or "")`, or `Err(code: message)`; a transport failure
    /// is `Err("TRANSPORT: ...")`.
    result: Result<String, String>,
}

impl Outcome {
    fn code(&self) -> &str {
        match &self.result {
            Ok(_) => "OK",
            Err(text) => text.split(':').next().unwrap_or_default(),
        }
    }
}

/// Sends `body` to `/graphql` and classifies the answer; `field` names
/// the root field whose `id` an acknowledged answer carries.
fn send(agent: &ureq::Agent, base: &str, body: &Value, field: &str) -> Result<String, String> {
    let mut response = agent
        .post(format!("{base}/graphql"))
        .send_json(body)
        .map_err(|error| format!("TRANSPORT: {error}"))?;
    let status = response.status().as_u16();
    let answer: Value = response
        .body_mut()
        .read_json()
        .map_err(|error| format!("TRANSPORT: HTTP {status}, unreadable body: {error}"))?;
    if let Some(error) = answer["errors"].get(0) {
        return Err(format!(
            "{}: {}",
            error["extensions"]["code"].as_str().unwrap_or("NO_CODE"),
            error["message"].as_str().unwrap_or_default()
        ));
    }
    if status != 200 {
        return Err(format!("HTTP_{status}: {answer}"));
    }
    Ok(answer["data"][field]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// `threads` clients sending `body` back to back until `stop` is set,
/// each on its own keep-alive connection.
struct Load {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(graphql: &Graphql, threads: usize, body: Value, field: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, outcomes, body) = (stop.clone(), outcomes.clone(), body.clone());
                let base = graphql.base.clone();
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(30)))
                        .build()
                        .into();
                    while !stop.load(Ordering::SeqCst) {
                        let started = Instant::now();
                        let result = send(&agent, &base, &body, field);
                        let outcome = Outcome {
                            started,
                            took: started.elapsed(),
                            result,
                        };
                        let transport = outcome.code() == "TRANSPORT";
                        outcomes.lock().unwrap().push(outcome);
                        if transport {
                            // The server is gone; do not spin.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            outcomes,
            threads,
        }
    }

    fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().unwrap();
        }
        self.outcomes.lock().unwrap().clone()
    }
}

/// An account and two products; the body of a `createOrder` of both.
fn order_body(graphql: &Graphql) -> Value {
    let account = graphql.data(
        "mutation { createAccount(account: { name: \"Load\" }) { id } }",
        json!({}),
    )["createAccount"]["id"]
        .clone();
    let product = |name: &str| {
        graphql.data(
            "mutation($p: ProductInput!) { createProduct(product: $p) { id } }",
            json!({ "p": { "name": name, "description": "load", "price": 1.25 } }),
        )["createProduct"]["id"]
            .clone()
    };
    let products = [product("bolt"), product("nut")];
    json!({
        "query": CREATE_ORDER,
        "variables": { "o": { "accountId": account, "products": [
            { "id": products[0], "quantity": 2 }, { "id": products[1], "quantity": 1 }
        ] } },
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn exit_within(served: &mut common::Served, timeout: Duration) -> std::process::ExitStatus {
    common::wait_for("the process exits", timeout, || {
        served.child.try_wait().unwrap()
    })
}

#[test]
fn while_the_catalog_is_down_orders_fail_fast_with_unavailable_and_succeed_again_within_seconds_of_its_return()
 {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::embedded(dir.path());
    let catalog_address = format!("127.0.0.1:{}", free_port());
    let account = cluster::account(&stores, &[]);
    let mut catalog = cluster::catalog(&stores, &catalog_address, &[]);
    let order = cluster::order(&stores, &account.address, &catalog_address, &[]);
    let gateway = cluster::gateway(&account.address, &catalog_address, &order.address, &[]);
    let graphql = Graphql::new(&gateway.address);
    let body = order_body(&graphql);

    let load = Load::start(&graphql, 4, body, "createOrder");
    std::thread::sleep(Duration::from_secs(1));
    let stopping = Instant::now();
    cluster::terminate(&catalog);
    exit_within(&mut catalog, Duration::from_secs(20));
    let down = Instant::now();
    // While the catalog is down, the order service's breaker for it opens.
    let order_admin = order.admin_address();
    common::wait_for(
        "the order service's catalog breaker opens",
        Duration::from_secs(10),
        || {
            let (_, metrics) = http_get(&order_admin, "/metrics");
            let labels = [("component", "order"), ("dependency", "catalog")];
            (sample(&metrics, "marketplace_circuit_breaker_state", &labels) == Some(1.0))
                .then_some(())
        },
    );
    let opened = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let (_, metrics) = http_get(&order_admin, "/metrics");
    let rejected = sample(
        &metrics,
        "marketplace_circuit_breaker_rejected_total",
        &[("component", "order"), ("dependency", "catalog")],
    )
    .unwrap();
    let back = Instant::now();
    let _catalog = cluster::catalog(&stores, &catalog_address, &[]);
    let recovered = common::wait_for(
        "an order succeeds after the catalog is back",
        Duration::from_secs(15),
        || {
            load.outcomes()
                .into_iter()
                .find(|o| o.started > back && o.result.is_ok())
                .map(|o| o.started + o.took)
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let outcomes = load.finish();

    let before: Vec<_> = outcomes
        .iter()
        .filter(|o| o.started + o.took < stopping)
        .collect();
    assert!(!before.is_empty());
    assert!(before.iter().all(|o| o.result.is_ok()), "{before:?}");
    let during: Vec<_> = outcomes
        .iter()
        .filter(|o| o.started > down && o.started + o.took < back)
        .collect();
    assert!(!during.is_empty());
    for outcome in &during {
        assert_eq!(outcome.code(), "UNAVAILABLE", "{outcome:?}");
    }
    // While open, the breaker answers without waiting for the catalog.
    let while_open: Vec<_> = during.iter().filter(|o| o.started > opened).collect();
    assert!(
        while_open.len() > 10,
        "{} requests while open",
        while_open.len()
    );
    let slowest = while_open.iter().map(|o| o.took).max().unwrap();
    assert!(
        slowest < Duration::from_millis(500),
        "slowest failure while open took {slowest:?}"
    );
    assert!(rejected > 0.0, "the breaker rejected no call");
    // Back within seconds: the breaker probes after its open duration (2 s).
    let recovery = recovered.duration_since(back);
    assert!(
        recovery < Duration::from_secs(5),
        "recovered {recovery:?} after the catalog's return"
    );
    let after: Vec<_> = outcomes.iter().filter(|o| o.started > recovered).collect();
    assert!(!after.is_empty());
    assert!(after.iter().all(|o| o.result.is_ok()), "{after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_postgresql_under_load_loses_no_acknowledged_order_and_the_service_recovers_by_itself()
 {
    let Some(mut postgres) = marketplace_testkit::postgres::server().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores {
        order_database: postgres.url(),
        ..Stores::embedded(dir.path())
    };
    let (cluster, load) = tokio::task::spawn_blocking(move || {
        let cluster = cluster::start(&stores, &[]);
        let graphql = Graphql::new(&cluster.gateway.address);
        let body = order_body(&graphql);
        let load = Load::start(&graphql, 4, body, "createOrder");
        std::thread::sleep(Duration::from_millis(1500));
        (cluster, load)
    })
    .await
    .unwrap();

    postgres.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Instant::now();
    postgres.start().await;

    let outcomes = tokio::task::spawn_blocking(move || {
        common::wait_for(
            "orders succeed again after PostgreSQL's restart",
            Duration::from_secs(20),
            || {
                let recent = load
                    .outcomes()
                    .into_iter()
                    .filter(|o| o.started > restarted && o.result.is_ok())
                    .count();
                (recent >= 20).then_some(())
            },
        );
        let outcomes = load.finish();
        let graphql = Graphql::new(&cluster.gateway.address);
        // Every acknowledged order is there, after the restart.
        let acknowledged: Vec<&String> = outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok())
            .collect();
        for id in &acknowledged {
            let order = graphql.data(
                "query($id: String!) { order(id: $id) { id totalPrice } }",
                json!({ "id": id }),
            );
            assert_eq!(order["order"]["id"], id.as_str());
            assert_eq!(order["order"]["totalPrice"], 3.75);
        }
        // The order service recovered without a restart of its own.
        assert!(cluster.order.logged_address("serving gRPC") == cluster.order.address);
        assert_eq!(
            cluster
                .order
                .logs
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("serving gRPC"))
                .count(),
            1
        );
        outcomes
    })
    .await
    .unwrap();

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(!failed.is_empty(), "the restart was not noticed at all");
    for outcome in &failed {
        // A clean error: the code for "try again", and no backend text.
        assert_eq!(outcome.code(), "UNAVAILABLE", "{outcome:?}");
        let text = outcome.result.as_ref().unwrap_err().to_lowercase();
        for backend in [
            "sqlx",
            "postgres://",
            "connection refused",
            "pool",
            "sqlstate",
        ] {
            assert!(!text.contains(backend), "{outcome:?} shows backend text");
        }
    }
    let ok = outcomes.iter().filter(|o| o.result.is_ok()).count();
    assert!(ok > 40, "only {ok} orders succeeded");
}

#[test]
fn sigterm_during_load_lets_every_request_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = common::embedded(dir.path(), &[]);
    let graphql = Graphql::new(&served.address);
    let body = order_body(&graphql);
    // Reads heavy enough to be in flight when the signal comes.
    for _ in 0..30 {
        let _ = send(graphql.agent(), &graphql.base, &body, "createOrder").unwrap();
    }
    let heavy = json!({ "query": "{ accounts { id orders { id products { id name price quantity } } } products(pagination: { take: 100 }) { id name } }" });

    let load = Load::start(&graphql, 6, heavy, "accounts");
    std::thread::sleep(Duration::from_millis(1500));
    let signalled = Instant::now();
    cluster::terminate(&served);
    let exit = exit_within(&mut served, Duration::from_secs(20));
    let outcomes = load.finish();

    assert!(exit.success(), "{exit}");
    // Sent before the signal (with a little slack for the request to reach
    // the server): answered in full.
    let sent_before: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.started + Duration::from_millis(5) < signalled)
        .collect();
    assert!(sent_before.len() > 20);
    for outcome in &sent_before {
        assert!(outcome.result.is_ok(), "dropped: {outcome:?}");
    }
    let in_flight = sent_before
        .iter()
        .filter(|o| o.started + o.took > signalled)
        .count();
    assert!(
        in_flight > 0,
        "no request was in flight when the signal came"
    );
    // Sent after it: refused cleanly, or answered in full.
    for outcome in outcomes.iter().filter(|o| o.started > signalled) {
        assert!(
            outcome.result.is_ok() || outcome.code() == "TRANSPORT",
            "{outcome:?}"
        );
    }
}
