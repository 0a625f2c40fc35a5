//! The four roles as separate `marketplace serve` processes, wired by the
//! addresses they report, with what a test needs to watch and disturb
//! them: each service's admin port, its logs, signals.

use std::process::Command;

use marketplace_config::env;

use super::{Served, marketplace, serve};

/// Where the services keep their data.
#[derive(Debug, Clone)]
pub struct Stores {
    pub account_database: String,
    pub order_database: String,
    pub search_url: String,
    pub index_name: String,
}

impl Stores {
    /// Embedded stores in `dir`: SQLite files and a tantivy index.
    pub fn embedded(dir: &std::path::Path) -> Self {
        Self {
            account_database: format!("sqlite://{}", dir.join("account.db").display()),
            order_database: format!("sqlite://{}", dir.join("order.db").display()),
            search_url: format!("tantivy://{}", dir.join("catalog").display()),
            index_name: "products".to_owned(),
        }
    }
}

/// The four processes.
#[derive(Debug)]
pub struct Cluster {
    pub gateway: Served,
    pub order: Served,
    pub account: Served,
    pub catalog: Served,
}

/// The environment every process of a test gets on top of its role's.
pub type Env<'a> = &'a [(&'a str, String)];

fn with_env<'c>(command: &'c mut Command, extra: Env<'_>) -> &'c mut Command {
    for (name, value) in extra {
        command.env(name, value);
    }
    command
}

/// The account service on `stores`.
pub fn account(stores: &Stores, extra: Env<'_>) -> Served {
    serve(
        with_env(
            marketplace()
                .args(["serve", "--target", "account"])
                .env(env::ACCOUNT_LISTEN_ADDR, "127.0.0.1:0")
                .env(env::ACCOUNT_DATABASE_URL, &stores.account_database),
            extra,
        ),
        false,
    )
}

/// The catalog service on `stores`, listening on `listen` (`127.0.0.1:0`
/// for any free port).
pub fn catalog(stores: &Stores, listen: &str, extra: Env<'_>) -> Served {
    serve(
        with_env(
            marketplace()
                .args(["serve", "--target", "catalog"])
                .env(env::CATALOG_LISTEN_ADDR, listen)
                .env(env::CATALOG_SEARCH_URL, &stores.search_url)
                .env(env::CATALOG_INDEX_NAME, &stores.index_name),
            extra,
        ),
        false,
    )
}

/// The order service on `stores`, calling `account` and `catalog`.
pub fn order(stores: &Stores, account: &str, catalog: &str, extra: Env<'_>) -> Served {
    serve(
        with_env(
            marketplace()
                .args(["serve", "--target", "order"])
                .env(env::ORDER_LISTEN_ADDR, "127.0.0.1:0")
                .env(env::ORDER_DATABASE_URL, &stores.order_database)
                .env(env::ORDER_ACCOUNT_URL, format!("http://{account}"))
                .env(env::ORDER_CATALOG_URL, format!("http://{catalog}")),
            extra,
        ),
        false,
    )
}

/// The gateway in front of the three services.
pub fn gateway(account: &str, catalog: &str, order: &str, extra: Env<'_>) -> Served {
    serve(
        with_env(
            marketplace()
                .args(["serve", "--target", "gateway"])
                .env(env::GATEWAY_LISTEN_ADDR, "127.0.0.1:0")
                .env(env::GATEWAY_ACCOUNT_URL, format!("http://{account}"))
                .env(env::GATEWAY_CATALOG_URL, format!("http://{catalog}"))
                .env(env::GATEWAY_ORDER_URL, format!("http://{order}")),
            extra,
        ),
        true,
    )
}

/// All four on `stores`, every process with `extra` in its environment.
pub fn start(stores: &Stores, extra: Env<'_>) -> Cluster {
    let account = account(stores, extra);
    let catalog = catalog(stores, "127.0.0.1:0", extra);
    let order = order(stores, &account.address, &catalog.address, extra);
    let gateway = gateway(&account.address, &catalog.address, &order.address, extra);
    wait_until_ready(&gateway.address);
    Cluster {
        gateway,
        order,
        account,
        catalog,
    }
}

/// Fresh PostgreSQL databases and an Elasticsearch index of the run's
/// backends, removed when dropped; `None` without backends.
#[derive(Debug)]
pub struct RealStores {
    pub stores: Stores,
    _account: marketplace_testkit::postgres::TestDatabase,
    _order: marketplace_testkit::postgres::TestDatabase,
    _index: marketplace_testkit::elasticsearch::TestIndex,
}

pub async fn real_stores() -> Option<RealStores> {
    let account = marketplace_testkit::postgres::database().await?;
    let order = marketplace_testkit::postgres::database().await?;
    let index = marketplace_testkit::elasticsearch::index().await?;
    Some(RealStores {
        stores: Stores {
            account_database: account.url().to_owned(),
            order_database: order.url().to_owned(),
            search_url: index.url().to_owned(),
            index_name: index.name().to_owned(),
        },
        _account: account,
        _order: order,
        _index: index,
    })
}

/// Waits until the gateway at `address` says every service is ready: the
/// services start their stores in the background.
pub fn wait_until_ready(address: &str) {
    super::wait_for(
        "the gateway's /readyz to answer 200",
        std::time::Duration::from_secs(60),
        || (http_get(address, "/readyz").0 == 200).then_some(()),
    );
}

/// Sends SIGTERM to `served`.
pub fn terminate(served: &Served) {
    let status = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {}", served.child.id());
}

/// The value of the sample of `name` whose labels include every one of
/// `labels`, in Prometheus text `metrics`.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(key, wanted)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{key}=\"{wanted}\""))
            })
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// The text of `GET http://{address}{path}`.
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(format!("http://{address}{path}"))
        .call()
        .unwrap_or_else(|error| panic!("GET http://{address}{path}: {error}"));
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}
