//! `marketplace`: one binary, many roles (`serve --target ...`).

mod all;
mod serve;

use clap::Parser;
use marketplace_config::ServeConfig;

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
    let _telemetry =
        marketplace_telemetry::init(serve::service_name(config.target), &config.telemetry)?;
    serve::run(config, marketplace_grpc::shutdown_signal()).await
}
