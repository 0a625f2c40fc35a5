//! Running one target: the gateway, or one gRPC service next to its admin
//! server.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use futures::FutureExt as _;
use marketplace_config::{ServeConfig, Target};
use marketplace_grpc::Shared;
use marketplace_telemetry::Readiness;
use marketplace_telemetry::admin::AdminServer;

/// The service name on the process's log lines and spans.
pub(crate) fn service_name(target: Target) -> &'static str {
    match target {
        Target::All => "marketplace",
        Target::Gateway => "gateway",
        Target::Account => "account",
        Target::Catalog => "catalog",
        Target::Order => "order",
    }
}

pub(crate) async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shared = Shared {
        metrics: marketplace_telemetry::Metrics::new(),
        resilience: config.resilience,
    };
    let target = config.target;
    if target != Target::All {
        shared.metrics.build_info(service_name(target));
    }
    match target {
        Target::All => crate::all::run(config, &shared, shutdown).await,
        Target::Gateway => {
            let app = marketplace_gateway::Application::build(config.gateway, &shared).await?;
            app.run_until_stopped(shutdown).await
        }
        Target::Account => {
            let app = marketplace_account::Application::build(config.account, &shared).await?;
            let admin = config.admin_listen_addr;
            with_admin(admin, &shared, app.readiness(), shutdown, |stop| {
                app.run_until_stopped(stop)
            })
            .await
        }
        Target::Catalog => {
            let app = marketplace_catalog::Application::build(config.catalog, &shared).await?;
            let admin = config.admin_listen_addr;
            with_admin(admin, &shared, app.readiness(), shutdown, |stop| {
                app.run_until_stopped(stop)
            })
            .await
        }
        Target::Order => {
            let app = marketplace_order::Application::build(config.order, &shared).await?;
            let admin = config.admin_listen_addr;
            with_admin(admin, &shared, app.readiness(), shutdown, |stop| {
                app.run_until_stopped(stop)
            })
            .await
        }
    }
}

/// Runs `serve` (given the shutdown signal) next to the admin server,
/// which reports ready while every flag of `readiness` is up and the
/// process is not shutting down, and keeps answering until `serve` has
/// finished its calls in flight.
pub(crate) async fn with_admin<F>(
    admin_addr: SocketAddr,
    shared: &Shared,
    mut readiness: Vec<Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    serve: impl FnOnce(futures::future::BoxFuture<'static, ()>) -> F,
) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let admin = AdminServer::bind(admin_addr)
        .await
        .with_context(|| format!("cannot listen on {admin_addr}"))?;
    let running = Readiness::new("the process (shutting down)");
    running.set(true);
    readiness.push(running.clone());
    let (stopped, admin_stop) = tokio::sync::oneshot::channel::<()>();
    let admin = tokio::spawn(admin.serve(shared.metrics.clone(), readiness, async {
        let _ = admin_stop.await;
    }));
    let signal = async move {
        shutdown.await;
        running.set(false);
    }
    .boxed();
    let result = serve(signal).await;
    let _ = stopped.send(());
    match admin.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "the admin server failed"),
        Err(error) => tracing::warn!(%error, "the admin server panicked"),
    }
    result
}
