//! `marketplace`: one binary, many roles (`serve --target ...`).

mod all;

use clap::Parser;
use marketplace_config::{ServeConfig, Target};

/// A Kubernetes-native e-commerce backend.
#[derive(Debug, Parser)]
#[command(name = "marketplace", version, about)]
enum Cli {
    /// Run one part of the marketplace, or all of it, until SIGTERM or
    /// Ctrl-C.
    Serve(ServeConfig),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli::Serve(config) = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let shutdown = marketplace_grpc::shutdown_signal();
    match config.target {
        Target::All => all::run(config, shutdown).await,
        Target::Gateway => {
            let app = marketplace_gateway::Application::build(config.gateway).await?;
            app.run_until_stopped(shutdown).await
        }
        Target::Account => {
            let app = marketplace_account::Application::build(config.account).await?;
            app.run_until_stopped(shutdown).await
        }
        Target::Catalog => {
            let app = marketplace_catalog::Application::build(config.catalog).await?;
            app.run_until_stopped(shutdown).await
        }
        Target::Order => {
            let app = marketplace_order::Application::build(config.order).await?;
            app.run_until_stopped(shutdown).await
        }
    }
}
