//! The operator's configuration: flags, each with its environment
//! variable; `--help` is the documentation.

use std::net::SocketAddr;

use clap::Parser;

/// Runs Marketplaces: one Marketplace resource becomes a running marketplace.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Config {
    /// Where `/metrics` and `/healthz` are served.
    #[arg(
        long,
        env = "MARKETPLACE_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,
    /// The namespace of the leader-election Lease; defaults to the
    /// operator's own namespace (`POD_NAMESPACE`), else `default`.
    #[arg(long, env = "MARKETPLACE_OPERATOR_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How log lines are written: `text` for people, `json` (one object per
    /// line) for log collectors.
    #[arg(
        long,
        env = "MARKETPLACE_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// How many Marketplaces are reconciled at once (each with up to 16 API
    /// requests in flight); the others wait their turn. 0: no limit.
    #[arg(
        long,
        env = "MARKETPLACE_OPERATOR_CONCURRENCY",
        default_value_t = DEFAULT_CONCURRENCY
    )]
    pub concurrency: u16,
}

/// Two: a slow reconcile does not hold up all the others, and a burst of
/// new Marketplaces is worked through nearly in order instead of all of
/// them sharing the API server and finishing together (`cargo xtask bench
/// operator`, 50 at once: p50 to all children 6.7 s unbounded, 4.4 s at 4
/// and 8, 3.8 to 4.2 s at 2, 3.4 s at 1).
pub const DEFAULT_CONCURRENCY: u16 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// The namespace of the leader-election Lease: `--lease-namespace`, else
    /// the operator's own (`POD_NAMESPACE`, from the downward API), else
    /// `default`.
    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .filter(|namespace| !namespace.is_empty())
            .unwrap_or_else(|| "default".to_owned())
    }

    /// Installs the process's logging through the shared telemetry crate:
    /// `RUST_LOG` (default `info`) in the chosen format, every line naming
    /// the `operator` service.
    pub fn init_logging(&self) -> anyhow::Result<marketplace_telemetry::Guard> {
        let log_format = match self.log_format {
            LogFormat::Text => marketplace_config::LogFormat::Pretty,
            LogFormat::Json => marketplace_config::LogFormat::Json,
        };
        marketplace_telemetry::init(
            "operator",
            &marketplace_config::TelemetryConfig {
                log_format,
                otlp_endpoint: None,
            },
        )
    }
}
