//! The configuration of the marketplace's services, in one place.
//!
//! [`env`] names every environment variable a service reads; the clap
//! argument structs below read exactly those names (each also a flag), and
//! the operator wires deployments from the same constants, so it can never
//! set a variable that no service reads.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// The environment variables the services read. Each is also a flag: the
/// variable's name without the `MARKETPLACE_` prefix, in kebab case
/// (`MARKETPLACE_ACCOUNT_DATABASE_URL` is `--account-database-url`).
pub mod env {
    pub const TARGET: &str = "MARKETPLACE_TARGET";

    pub const ACCOUNT_LISTEN_ADDR: &str = "MARKETPLACE_ACCOUNT_LISTEN_ADDR";
    pub const ACCOUNT_DATABASE_URL: &str = "MARKETPLACE_ACCOUNT_DATABASE_URL";
    pub const ACCOUNT_DATABASE_POOL_SIZE: &str = "MARKETPLACE_ACCOUNT_DATABASE_POOL_SIZE";

    pub const CATALOG_LISTEN_ADDR: &str = "MARKETPLACE_CATALOG_LISTEN_ADDR";
    pub const CATALOG_SEARCH_URL: &str = "MARKETPLACE_CATALOG_SEARCH_URL";
    pub const CATALOG_INDEX_NAME: &str = "MARKETPLACE_CATALOG_INDEX_NAME";

    pub const ORDER_LISTEN_ADDR: &str = "MARKETPLACE_ORDER_LISTEN_ADDR";
    pub const ORDER_DATABASE_URL: &str = "MARKETPLACE_ORDER_DATABASE_URL";
    pub const ORDER_DATABASE_POOL_SIZE: &str = "MARKETPLACE_ORDER_DATABASE_POOL_SIZE";
    pub const ORDER_ACCOUNT_URL: &str = "MARKETPLACE_ORDER_ACCOUNT_URL";
    pub const ORDER_CATALOG_URL: &str = "MARKETPLACE_ORDER_CATALOG_URL";
    pub const ORDER_DOWNSTREAM_TIMEOUT: &str = "MARKETPLACE_ORDER_DOWNSTREAM_TIMEOUT";

    pub const GATEWAY_LISTEN_ADDR: &str = "MARKETPLACE_GATEWAY_LISTEN_ADDR";
    pub const GATEWAY_ACCOUNT_URL: &str = "MARKETPLACE_GATEWAY_ACCOUNT_URL";
    pub const GATEWAY_CATALOG_URL: &str = "MARKETPLACE_GATEWAY_CATALOG_URL";
    pub const GATEWAY_ORDER_URL: &str = "MARKETPLACE_GATEWAY_ORDER_URL";
    pub const GATEWAY_CORS_ORIGINS: &str = "MARKETPLACE_GATEWAY_CORS_ORIGINS";
    pub const GATEWAY_DOWNSTREAM_TIMEOUT: &str = "MARKETPLACE_GATEWAY_DOWNSTREAM_TIMEOUT";
    pub const GATEWAY_MAX_QUERY_DEPTH: &str = "MARKETPLACE_GATEWAY_MAX_QUERY_DEPTH";
    pub const GATEWAY_MAX_QUERY_COMPLEXITY: &str = "MARKETPLACE_GATEWAY_MAX_QUERY_COMPLEXITY";
    pub const GATEWAY_MAX_BODY_BYTES: &str = "MARKETPLACE_GATEWAY_MAX_BODY_BYTES";

    pub const GATEWAY_CACHE_TTL: &str = "MARKETPLACE_GATEWAY_CACHE_TTL";
    pub const GATEWAY_CACHE_CAPACITY: &str = "MARKETPLACE_GATEWAY_CACHE_CAPACITY";
    pub const GATEWAY_DRAIN_PERIOD: &str = "MARKETPLACE_GATEWAY_DRAIN_PERIOD";

    pub const DATA_DIR: &str = "MARKETPLACE_DATA_DIR";

    pub const ADMIN_LISTEN_ADDR: &str = "MARKETPLACE_ADMIN_LISTEN_ADDR";
    pub const LOG_FORMAT: &str = "MARKETPLACE_LOG_FORMAT";
    pub const OTLP_ENDPOINT: &str = "MARKETPLACE_OTLP_ENDPOINT";

    pub const RETRY_MAX_ATTEMPTS: &str = "MARKETPLACE_RETRY_MAX_ATTEMPTS";
    pub const RETRY_INITIAL_BACKOFF: &str = "MARKETPLACE_RETRY_INITIAL_BACKOFF";
    pub const RETRY_MAX_BACKOFF: &str = "MARKETPLACE_RETRY_MAX_BACKOFF";
    pub const BREAKER_FAILURE_THRESHOLD: &str = "MARKETPLACE_BREAKER_FAILURE_THRESHOLD";
    pub const BREAKER_OPEN_DURATION: &str = "MARKETPLACE_BREAKER_OPEN_DURATION";

    /// Every variable above, for tests and for the operator's checks.
    pub const ALL: &[&str] = &[
        TARGET,
        ACCOUNT_LISTEN_ADDR,
        ACCOUNT_DATABASE_URL,
        ACCOUNT_DATABASE_POOL_SIZE,
        CATALOG_LISTEN_ADDR,
        CATALOG_SEARCH_URL,
        CATALOG_INDEX_NAME,
        ORDER_LISTEN_ADDR,
        ORDER_DATABASE_URL,
        ORDER_DATABASE_POOL_SIZE,
        ORDER_ACCOUNT_URL,
        ORDER_CATALOG_URL,
        ORDER_DOWNSTREAM_TIMEOUT,
        GATEWAY_LISTEN_ADDR,
        GATEWAY_ACCOUNT_URL,
        GATEWAY_CATALOG_URL,
        GATEWAY_ORDER_URL,
        GATEWAY_CORS_ORIGINS,
        GATEWAY_DOWNSTREAM_TIMEOUT,
        GATEWAY_MAX_QUERY_DEPTH,
        GATEWAY_MAX_QUERY_COMPLEXITY,
        GATEWAY_MAX_BODY_BYTES,
        GATEWAY_CACHE_TTL,
        GATEWAY_CACHE_CAPACITY,
        GATEWAY_DRAIN_PERIOD,
        DATA_DIR,
        ADMIN_LISTEN_ADDR,
        LOG_FORMAT,
        OTLP_ENDPOINT,
        RETRY_MAX_ATTEMPTS,
        RETRY_INITIAL_BACKOFF,
        RETRY_MAX_BACKOFF,
        BREAKER_FAILURE_THRESHOLD,
        BREAKER_OPEN_DURATION,
    ];
}

/// The ports of the services, as in the Go original: the gateway's HTTP
/// port and the gRPC ports of the others.
pub mod ports {
    pub const GATEWAY: u16 = 8080;
    pub const ACCOUNT: u16 = 8081;
    pub const CATALOG: u16 = 8082;
    pub const ORDER: u16 = 8083;
    /// The admin port of a gRPC service process: `/metrics`, `/healthz`,
    /// `/readyz`.
    pub const ADMIN: u16 = 9090;
}

/// A URL that may carry a password: never printed in full.
#[derive(Clone)]
pub struct SecretUrl(SecretString);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(SecretString::from(url.into()))
    }

    /// The URL itself, for connecting.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The scheme (`postgres`, `sqlite`, `http`, ...), for choosing a backend
    /// and for messages.
    pub fn scheme(&self) -> &str {
        self.expose()
            .split_once(':')
            .map_or("", |(scheme, _)| scheme)
    }
}

impl FromStr for SecretUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            Err("the URL is empty".to_owned())
        } else {
            Ok(Self::new(s))
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({}:[redacted])", self.scheme())
    }
}

/// Parses durations such as `500ms`, `5s` or `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (ms, s or m)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("{text:?} has an unknown unit (use ms, s or m)")),
    }
}

/// Which part of the marketplace a `marketplace serve` process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Everything in one process: the gateway and the three services. Each
    /// service without a storage URL stores its data in the data directory
    /// (SQLite files and a tantivy index).
    All,
    /// The GraphQL gateway (HTTP); calls account, catalog and order.
    Gateway,
    /// The account service (gRPC).
    Account,
    /// The catalog service (gRPC).
    Catalog,
    /// The order service (gRPC); calls account and catalog.
    Order,
}

/// Everything `marketplace serve` reads.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// The part of the marketplace this process runs.
    #[arg(id = "target", long = "target", env = env::TARGET, value_enum)]
    pub target: Target,
    #[command(flatten)]
    pub account: AccountConfig,
    #[command(flatten)]
    pub catalog: CatalogConfig,
    #[command(flatten)]
    pub order: OrderConfig,
    #[command(flatten)]
    pub gateway: GatewayConfig,
    /// With `--target all`: the directory for the embedded storage of the
    /// services given no storage URL (`account.db`, `order.db` and the
    /// `catalog` index), created when absent.
    #[arg(id = "data-dir", long = "data-dir", env = env::DATA_DIR, default_value = "marketplace-data")]
    pub data_dir: std::path::PathBuf,
    /// Address of the admin HTTP server of a process running gRPC services
    /// (every target but `gateway`, whose own port serves the same paths):
    /// `/metrics`, `/healthz` (live) and `/readyz` (its stores are
    /// reachable).
    #[arg(id = "admin-listen-addr", long = "admin-listen-addr", env = env::ADMIN_LISTEN_ADDR, default_value = "0.0.0.0:9090")]
    pub admin_listen_addr: SocketAddr,
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    #[command(flatten)]
    pub resilience: ResilienceConfig,
}

/// How a process logs and exports traces.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryConfig {
    /// Log line format: `json` (one object per line, for collectors),
    /// `pretty` (for people), or `auto`: pretty on a terminal, JSON
    /// otherwise. `RUST_LOG` filters what is logged (default `info`).
    #[arg(id = "log-format", long = "log-format", env = env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// OpenTelemetry collector to export traces to over OTLP/gRPC
    /// (`http://otel-collector:4317`); none, and so no export, when unset.
    #[arg(id = "otlp-endpoint", long = "otlp-endpoint", env = env::OTLP_ENDPOINT)]
    pub otlp_endpoint: Option<String>,
}

/// See [`TelemetryConfig::log_format`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

/// How calls to other services and to stores are retried and cut off.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ResilienceConfig {
    /// Most attempts of a call that is safe to repeat (reads, never order
    /// or account creation) when the first fails for want of the
    /// downstream; 1 turns retries off.
    #[arg(id = "retry-max-attempts", long = "retry-max-attempts", env = env::RETRY_MAX_ATTEMPTS, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub retry_max_attempts: u32,
    /// Longest wait before the first retry; each later one may wait twice
    /// as long, up to the maximum, and the actual wait is random below
    /// that (full jitter).
    #[arg(id = "retry-initial-backoff", long = "retry-initial-backoff", env = env::RETRY_INITIAL_BACKOFF, default_value = "25ms", value_parser = parse_duration)]
    pub retry_initial_backoff: Duration,
    /// Longest wait between two attempts.
    #[arg(id = "retry-max-backoff", long = "retry-max-backoff", env = env::RETRY_MAX_BACKOFF, default_value = "500ms", value_parser = parse_duration)]
    pub retry_max_backoff: Duration,
    /// Consecutive failures of a downstream (a service or a store) after
    /// which its circuit breaker opens: calls then fail at once instead of
    /// waiting for their deadline.
    #[arg(id = "breaker-failure-threshold", long = "breaker-failure-threshold", env = env::BREAKER_FAILURE_THRESHOLD, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_failure_threshold: u32,
    /// How long an open breaker fails calls before it lets one probe call
    /// through; the probe's success closes it, its failure reopens it.
    #[arg(id = "breaker-open-duration", long = "breaker-open-duration", env = env::BREAKER_OPEN_DURATION, default_value = "2s", value_parser = parse_duration)]
    pub breaker_open_duration: Duration,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            retry_max_attempts: 3,
            retry_initial_backoff: Duration::from_millis(25),
            retry_max_backoff: Duration::from_millis(500),
            breaker_failure_threshold: 5,
            breaker_open_duration: Duration::from_secs(2),
        }
    }
}

/// The account service.
#[derive(Debug, Clone, clap::Args)]
pub struct AccountConfig {
    /// Address the account service's gRPC server listens on.
    #[arg(id = "account-listen-addr", long = "account-listen-addr", env = env::ACCOUNT_LISTEN_ADDR, default_value = "0.0.0.0:8081")]
    pub listen_addr: SocketAddr,
    /// Where accounts are stored: a `postgres://` URL, or `sqlite://PATH`
    /// for embedded storage in a file.
    #[arg(id = "account-database-url", long = "account-database-url", env = env::ACCOUNT_DATABASE_URL, hide_env_values = true)]
    pub database_url: Option<SecretUrl>,
    /// Most connections the account service opens to its database.
    #[arg(id = "account-database-pool-size", long = "account-database-pool-size", env = env::ACCOUNT_DATABASE_POOL_SIZE, default_value_t = 16)]
    pub database_pool_size: u32,
}

/// The catalog service.
#[derive(Debug, Clone, clap::Args)]
pub struct CatalogConfig {
    /// Address the catalog service's gRPC server listens on.
    #[arg(id = "catalog-listen-addr", long = "catalog-listen-addr", env = env::CATALOG_LISTEN_ADDR, default_value = "0.0.0.0:8082")]
    pub listen_addr: SocketAddr,
    /// Where products are stored and searched: an Elasticsearch 7 URL
    /// (`http://...`), or `tantivy://PATH` for an embedded index in a
    /// directory.
    #[arg(id = "catalog-search-url", long = "catalog-search-url", env = env::CATALOG_SEARCH_URL, hide_env_values = true)]
    pub search_url: Option<SecretUrl>,
    /// The Elasticsearch index holding the products; created with the
    /// product mapping at start-up when absent.
    #[arg(id = "catalog-index-name", long = "catalog-index-name", env = env::CATALOG_INDEX_NAME, default_value = "products")]
    pub index_name: String,
}

/// The order service.
#[derive(Debug, Clone, clap::Args)]
pub struct OrderConfig {
    /// Address the order service's gRPC server listens on.
    #[arg(id = "order-listen-addr", long = "order-listen-addr", env = env::ORDER_LISTEN_ADDR, default_value = "0.0.0.0:8083")]
    pub listen_addr: SocketAddr,
    /// Where orders are stored: a `postgres://` URL, or `sqlite://PATH` for
    /// embedded storage in a file.
    #[arg(id = "order-database-url", long = "order-database-url", env = env::ORDER_DATABASE_URL, hide_env_values = true)]
    pub database_url: Option<SecretUrl>,
    /// Most connections the order service opens to its database.
    #[arg(id = "order-database-pool-size", long = "order-database-pool-size", env = env::ORDER_DATABASE_POOL_SIZE, default_value_t = 16)]
    pub database_pool_size: u32,
    /// The account service's gRPC URL.
    #[arg(id = "order-account-url", long = "order-account-url", env = env::ORDER_ACCOUNT_URL, default_value = "http://127.0.0.1:8081")]
    pub account_url: String,
    /// The catalog service's gRPC URL.
    #[arg(id = "order-catalog-url", long = "order-catalog-url", env = env::ORDER_CATALOG_URL, default_value = "http://127.0.0.1:8082")]
    pub catalog_url: String,
    /// Deadline of each call to the account and catalog services
    /// (`500ms`, `5s`, ...).
    #[arg(id = "order-downstream-timeout", long = "order-downstream-timeout", env = env::ORDER_DOWNSTREAM_TIMEOUT, default_value = "5s", value_parser = parse_duration)]
    pub downstream_timeout: Duration,
}

/// The GraphQL gateway.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    /// Address the gateway's HTTP server (GraphQL, health, metrics) listens
    /// on.
    #[arg(id = "gateway-listen-addr", long = "gateway-listen-addr", env = env::GATEWAY_LISTEN_ADDR, default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,
    /// The account service's gRPC URL.
    #[arg(id = "gateway-account-url", long = "gateway-account-url", env = env::GATEWAY_ACCOUNT_URL, default_value = "http://127.0.0.1:8081")]
    pub account_url: String,
    /// The catalog service's gRPC URL.
    #[arg(id = "gateway-catalog-url", long = "gateway-catalog-url", env = env::GATEWAY_CATALOG_URL, default_value = "http://127.0.0.1:8082")]
    pub catalog_url: String,
    /// The order service's gRPC URL.
    #[arg(id = "gateway-order-url", long = "gateway-order-url", env = env::GATEWAY_ORDER_URL, default_value = "http://127.0.0.1:8083")]
    pub order_url: String,
    /// Origins browsers may call the gateway from, separated by commas
    /// (`https://shop.example.com,https://admin.example.com`); none, and so
    /// no CORS headers, when empty.
    #[arg(id = "gateway-cors-origins", long = "gateway-cors-origins", env = env::GATEWAY_CORS_ORIGINS, value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Deadline of each call to the account, catalog and order services
    /// (`500ms`, `5s`, ...).
    #[arg(id = "gateway-downstream-timeout", long = "gateway-downstream-timeout", env = env::GATEWAY_DOWNSTREAM_TIMEOUT, default_value = "5s", value_parser = parse_duration)]
    pub downstream_timeout: Duration,
    /// Most levels of nested selections a GraphQL query may have.
    #[arg(id = "gateway-max-query-depth", long = "gateway-max-query-depth", env = env::GATEWAY_MAX_QUERY_DEPTH, default_value_t = 15)]
    pub max_query_depth: usize,
    /// Highest estimated cost of a GraphQL query: each field costs 1, and a
    /// list multiplies the cost of its items by its page size.
    #[arg(id = "gateway-max-query-complexity", long = "gateway-max-query-complexity", env = env::GATEWAY_MAX_QUERY_COMPLEXITY, default_value_t = 1_000_000)]
    pub max_query_complexity: usize,
    /// Largest GraphQL request body, in bytes.
    #[arg(id = "gateway-max-body-bytes", long = "gateway-max-body-bytes", env = env::GATEWAY_MAX_BODY_BYTES, default_value_t = 65_536)]
    pub max_body_bytes: usize,
    /// How long the gateway keeps products it read (by id, and pages of
    /// listings and searches) before asking the catalog again; `0s` turns
    /// the cache off.
    #[arg(id = "gateway-cache-ttl", long = "gateway-cache-ttl", env = env::GATEWAY_CACHE_TTL, default_value = "2s", value_parser = parse_duration)]
    pub cache_ttl: Duration,
    /// Most entries (products and pages) the gateway's cache holds.
    #[arg(id = "gateway-cache-capacity", long = "gateway-cache-capacity", env = env::GATEWAY_CACHE_CAPACITY, default_value_t = 10_000)]
    pub cache_capacity: u64,
    /// On SIGTERM, how long the gateway keeps serving before it stops
    /// accepting connections: `/readyz` answers 503 so load balancers stop
    /// sending new requests, and every answer closes its connection so
    /// clients reconnect elsewhere instead of reusing one that is about to
    /// close. Requests in flight then finish (up to 10 s more).
    #[arg(id = "gateway-drain-period", long = "gateway-drain-period", env = env::GATEWAY_DRAIN_PERIOD, default_value = "1s", value_parser = parse_duration)]
    pub drain_period: Duration,
}

impl GatewayConfig {
    /// The CORS origins without the empty entries that an empty variable
    /// or a stray comma leaves in [`GatewayConfig::cors_origins`] (clap
    /// splits `""` into one empty value).
    pub fn allowed_origins(&self) -> impl Iterator<Item = &str> {
        self.cors_origins
            .iter()
            .map(|origin| origin.trim())
            .filter(|origin| !origin.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct All {
        #[command(flatten)]
        serve: ServeConfig,
    }

    #[test]
    fn every_argument_reads_a_named_variable_and_every_name_is_read() {
        let command = All::command();
        let mut read: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        read.sort();
        let mut named: Vec<String> = env::ALL.iter().map(|&s| s.to_owned()).collect();
        named.sort();
        assert_eq!(read, named);
    }

    #[test]
    fn flags_are_the_variable_names_in_kebab_case() {
        for argument in All::command().get_arguments() {
            let variable = argument.get_env().unwrap().to_string_lossy().into_owned();
            let expected = variable
                .trim_start_matches("MARKETPLACE_")
                .to_lowercase()
                .replace('_', "-");
            assert_eq!(argument.get_long(), Some(expected.as_str()));
        }
    }

    #[test]
    fn defaults_are_the_originals_ports() {
        let all = All::try_parse_from(["test", "--target", "order"])
            .unwrap()
            .serve;
        assert_eq!(all.target, Target::Order);
        assert_eq!(all.account.listen_addr.port(), ports::ACCOUNT);
        assert_eq!(all.catalog.listen_addr.port(), ports::CATALOG);
        assert_eq!(all.order.listen_addr.port(), ports::ORDER);
        assert_eq!(all.order.downstream_timeout, Duration::from_secs(5));
        assert_eq!(all.gateway.listen_addr.port(), ports::GATEWAY);
        assert_eq!(all.gateway.account_url, "http://127.0.0.1:8081");
        assert_eq!(all.gateway.catalog_url, "http://127.0.0.1:8082");
        assert_eq!(all.gateway.order_url, "http://127.0.0.1:8083");
        assert!(all.gateway.cors_origins.is_empty());
    }

    #[test]
    fn cors_origins_are_separated_by_commas() {
        let all = All::try_parse_from([
            "test",
            "--target",
            "order",
            "--gateway-cors-origins",
            "https://shop.example.com,http://localhost:3000",
        ])
        .unwrap()
        .serve;

        assert_eq!(
            all.gateway.cors_origins,
            ["https://shop.example.com", "http://localhost:3000"]
        );
    }

    #[test]
    fn empty_cors_origin_entries_allow_no_origin() {
        let cases: [(&str, &[&str]); 3] = [
            ("", &[]),
            (",", &[]),
            (
                " , https://shop.example.com,",
                &["https://shop.example.com"],
            ),
        ];

        for (given, expected) in cases {
            let all =
                All::try_parse_from(["test", "--target", "order", "--gateway-cors-origins", given])
                    .unwrap()
                    .serve;

            let allowed: Vec<&str> = all.gateway.allowed_origins().collect();
            assert_eq!(allowed, expected, "from {given:?}");
        }
    }

    #[test]
    fn urls_are_redacted_when_printed() {
        let url: SecretUrl = "postgres://app:hunter2@db/app".parse().unwrap();
        assert_eq!(format!("{url:?}"), "SecretUrl(postgres:[redacted])");
        assert_eq!(url.scheme(), "postgres");
        assert!("  ".parse::<SecretUrl>().is_err());
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
