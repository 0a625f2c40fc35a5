//! `serve --target all`: the gateway and the three services in one
//! process, each on its own port as in a cluster, calling each other over
//! loopback. A service given no storage URL keeps its data in the data
//! directory.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use futures::FutureExt as _;
use marketplace_config::{SecretUrl, ServeConfig};
use marketplace_grpc::Shared;
use tokio::sync::oneshot;

pub(crate) async fn run(
    mut config: ServeConfig,
    shared: &Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    embed_missing_stores(&mut config)?;
    for component in ["gateway", "account", "catalog", "order"] {
        shared.metrics.build_info(component);
    }

    let account = marketplace_account::Application::build(config.account, shared).await?;
    let catalog = marketplace_catalog::Application::build(config.catalog, shared).await?;
    // The order service and the gateway call the services where they
    // really listen, which differs from the URL defaults when a listen
    // address says port 0.
    config.order.account_url = url(account.local_addr());
    config.order.catalog_url = url(catalog.local_addr());
    let order = marketplace_order::Application::build(config.order, shared).await?;
    config.gateway.account_url = url(account.local_addr());
    config.gateway.catalog_url = url(catalog.local_addr());
    config.gateway.order_url = url(order.local_addr());
    let gateway = marketplace_gateway::Application::build(config.gateway, shared).await?;

    let playground = format!(
        "http://{}/playground",
        marketplace_gateway::startup::browsable(gateway.local_addr())
    );
    println!("The marketplace is running. GraphQL playground: {playground}");

    let readiness = [account.readiness(), catalog.readiness(), order.readiness()].concat();
    crate::serve::with_admin(
        config.admin_listen_addr,
        shared,
        readiness,
        shutdown,
        |signal| async move {
            // Stopping goes from the outside in: the gateway finishes its
            // requests first, and they still need the services; then the
            // order service, which calls account and catalog; then those.
            let (gateway_stopped, after_gateway) = oneshot::channel::<()>();
            let (order_stopped, after_order) = oneshot::channel::<()>();
            let after_order = after_order.map(|_| ()).shared();
            tokio::try_join!(
                async {
                    let result = gateway.run_until_stopped(signal).await;
                    let _ = gateway_stopped.send(());
                    result
                },
                async {
                    let result = order.run_until_stopped(after_gateway.map(|_| ())).await;
                    let _ = order_stopped.send(());
                    result
                },
                account.run_until_stopped(after_order.clone()),
                catalog.run_until_stopped(after_order),
            )?;
            Ok(())
        },
    )
    .await
}

/// Points every service without a storage URL at embedded storage in the
/// data directory, which is created if needed.
fn embed_missing_stores(config: &mut ServeConfig) -> anyhow::Result<()> {
    let needed = config.account.database_url.is_none()
        || config.catalog.search_url.is_none()
        || config.order.database_url.is_none();
    if !needed {
        return Ok(());
    }
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("reading the data directory {}", dir.display()))?;
    tracing::info!(data_dir = %dir.display(), "embedded storage");
    let embedded =
        |scheme: &str, name: &str| SecretUrl::new(format!("{scheme}://{}", in_dir(&dir, name)));
    config
        .account
        .database_url
        .get_or_insert_with(|| embedded("sqlite", "account.db"));
    config
        .catalog
        .search_url
        .get_or_insert_with(|| embedded("tantivy", "catalog"));
    config
        .order
        .database_url
        .get_or_insert_with(|| embedded("sqlite", "order.db"));
    Ok(())
}

fn in_dir(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// The gRPC URL of a service listening on `address`, reached over
/// loopback when it listens on every interface.
fn url(address: SocketAddr) -> String {
    let host = if address.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else if address.is_ipv6() {
        format!("[{}]", address.ip())
    } else {
        address.ip().to_string()
    };
    format!("http://{host}:{}", address.port())
}
