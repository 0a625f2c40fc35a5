//! The whole marketplace through its GraphQL API, as users run it: one
//! process on embedded storage, and the four roles as separate processes
//! on PostgreSQL and Elasticsearch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::walkthrough::{bad_inputs, totals_are_exact, walkthrough};
use common::{Graphql, Served, marketplace, serve};
use marketplace_config::env;

/// The one-process marketplace in a fresh data directory.
fn embedded(data_dir: &std::path::Path) -> Served {
    common::embedded(data_dir, &[])
}

#[test]
fn the_walkthrough_works_in_one_process_on_embedded_storage() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let served = embedded(&data_dir);
    let graphql = Graphql::new(&served.address);

    walkthrough(&graphql);
    totals_are_exact(&graphql);

    for stored in ["account.db", "order.db", "catalog"] {
        assert!(
            data_dir.join(stored).exists(),
            "{stored} in the data directory"
        );
    }
}

#[test]
fn bad_input_gets_its_code_in_one_process_on_embedded_storage() {
    let dir = tempfile::tempdir().unwrap();
    let served = embedded(&dir.path().join("data"));

    bad_inputs(&Graphql::new(&served.address));
}

#[test]
fn the_embedded_marketplace_keeps_its_data_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let served = embedded(&data_dir);
    let graphql = Graphql::new(&served.address);
    let created = graphql.data(
        "mutation { createAccount(account: {name: \"Grace\"}) { id name } }",
        serde_json::json!({}),
    );
    drop(served);

    let served = embedded(&data_dir);
    let read = Graphql::new(&served.address).data(
        "query($id: String) { accounts(id: $id) { id name } }",
        serde_json::json!({ "id": created["createAccount"]["id"] }),
    );

    assert_eq!(read["accounts"][0], created["createAccount"]);
}

#[test]
fn the_one_process_marketplace_prints_where_its_playground_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = marketplace();
    command
        .args(["serve", "--target", "all", "--data-dir"])
        .arg(dir.path())
        .args(["--gateway-listen-addr", "127.0.0.1:0"])
        .args(["--account-listen-addr", "127.0.0.1:0"])
        .args(["--catalog-listen-addr", "127.0.0.1:0"])
        .args(["--order-listen-addr", "127.0.0.1:0"]);
    let served = serve(&mut command, true);
    let graphql = Graphql::new(&served.address);

    let (status, page) = graphql.get("/playground");

    assert_eq!(status, 200);
    assert!(page.contains("Marketplace GraphQL playground"), "{page}");
    let (status, _) = graphql.get("/readyz");
    assert_eq!(status, 200);
}

/// The four roles as separate processes over real PostgreSQL and
/// Elasticsearch, wired by the addresses they report.
struct Distributed {
    gateway: Served,
    _services: Vec<Served>,
    _account_db: marketplace_testkit::postgres::TestDatabase,
    _order_db: marketplace_testkit::postgres::TestDatabase,
    _index: marketplace_testkit::elasticsearch::TestIndex,
}

async fn distributed() -> Option<Distributed> {
    let account_db = marketplace_testkit::postgres::database().await?;
    let order_db = marketplace_testkit::postgres::database().await?;
    let index = marketplace_testkit::elasticsearch::index().await?;
    let account = serve(
        marketplace()
            .args(["serve", "--target", "account"])
            .env(env::ACCOUNT_LISTEN_ADDR, "127.0.0.1:0")
            .env(env::ACCOUNT_DATABASE_URL, account_db.url()),
        false,
    );
    let catalog = serve(
        marketplace()
            .args(["serve", "--target", "catalog"])
            .env(env::CATALOG_LISTEN_ADDR, "127.0.0.1:0")
            .env(env::CATALOG_SEARCH_URL, index.url())
            .env(env::CATALOG_INDEX_NAME, index.name()),
        false,
    );
    let order = serve(
        marketplace()
            .args(["serve", "--target", "order"])
            .env(env::ORDER_LISTEN_ADDR, "127.0.0.1:0")
            .env(env::ORDER_DATABASE_URL, order_db.url())
            .env(
                env::ORDER_ACCOUNT_URL,
                format!("http://{}", account.address),
            )
            .env(
                env::ORDER_CATALOG_URL,
                format!("http://{}", catalog.address),
            ),
        false,
    );
    let gateway = serve(
        marketplace()
            .args(["serve", "--target", "gateway"])
            .env(env::GATEWAY_LISTEN_ADDR, "127.0.0.1:0")
            .env(
                env::GATEWAY_ACCOUNT_URL,
                format!("http://{}", account.address),
            )
            .env(
                env::GATEWAY_CATALOG_URL,
                format!("http://{}", catalog.address),
            )
            .env(env::GATEWAY_ORDER_URL, format!("http://{}", order.address)),
        true,
    );
    common::cluster::wait_until_ready(&gateway.address);
    Some(Distributed {
        gateway,
        _services: vec![order, catalog, account],
        _account_db: account_db,
        _order_db: order_db,
        _index: index,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_walkthrough_works_across_four_processes_on_postgresql_and_elasticsearch() {
    let Some(marketplace) = distributed().await else {
        return;
    };
    let graphql = Graphql::new(&marketplace.gateway.address);

    tokio::task::spawn_blocking(move || {
        walkthrough(&graphql);
        totals_are_exact(&graphql);
        let (status, body) = graphql.get("/readyz");
        assert_eq!(status, 200, "{body}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_its_code_across_four_processes_on_postgresql_and_elasticsearch() {
    let Some(marketplace) = distributed().await else {
        return;
    };
    let graphql = Graphql::new(&marketplace.gateway.address);

    tokio::task::spawn_blocking(move || bad_inputs(&graphql))
        .await
        .unwrap();
}

/// The GraphQL blocks of the README's walk-through, in order.
fn readme_walkthrough() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme
        .split("### A walk-through in the playground")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    section
        .split("```graphql\n")
        .skip(1)
        .map(|block| {
            let block = &block[..block.find("```").unwrap()];
            block.lines().map(str::trim).collect::<Vec<_>>().join("\n")
        })
        .collect()
}

#[test]
fn the_readmes_walkthrough_works_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let served = embedded(&dir.path().join("data"));
    let graphql = Graphql::new(&served.address);
    let steps = readme_walkthrough();
    assert_eq!(steps.len(), 5, "{steps:#?}");
    let no_variables = serde_json::json!({});

    let account = graphql.data(&steps[0], no_variables.clone());
    let products = graphql.data(&steps[1], no_variables.clone());
    let found = graphql.data(&steps[2], no_variables.clone());
    let with_ids = |step: &str| {
        step.replace(
            "ACCOUNT_ID",
            account["createAccount"]["id"].as_str().unwrap(),
        )
        .replace("ENGINE_ID", products["engine"]["id"].as_str().unwrap())
        .replace("CARDS_ID", products["cards"]["id"].as_str().unwrap())
    };
    let order = graphql.data(&with_ids(&steps[3]), no_variables.clone());
    let orders = graphql.data(&with_ids(&steps[4]), no_variables);

    assert_eq!(found["products"].as_array().unwrap().len(), 2, "{found}");
    assert_eq!(order["createOrder"]["totalPrice"], 3688.28);
    assert_eq!(
        orders["accounts"][0]["orders"][0]["totalPrice"],
        order["createOrder"]["totalPrice"]
    );
}

#[test]
fn the_one_process_marketplace_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = embedded(&dir.path().join("data"));
    let graphql = Graphql::new(&served.address);
    graphql.data("{ products { id } }", serde_json::json!({}));

    let status = std::process::Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = common::eventually(
        "the process exits",
        std::time::Duration::from_secs(20),
        || served.child.try_wait().unwrap(),
    );

    assert!(exit.success(), "{exit}");
}
