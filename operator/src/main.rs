//! `marketplace-operator`: runs a marketplace from each `Marketplace`
//! resource in the cluster (see [`marketplace_operator::startup`]).

use clap::Parser;
use marketplace_operator::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = config.init_logging()?;
    marketplace_operator::startup::run(config).await
}
