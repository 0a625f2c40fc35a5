//! `cargo xtask`: the project's automation, in Rust rather than shell.
//!
//! `cargo xtask test` is the one test command: it installs or builds every
//! real backend the tests use, starts them on free loopback ports, runs the
//! whole workspace's tests against them and stops everything it started.
//! `cargo xtask codegen` rewrites the committed generated files.

mod backends;
mod bench;
mod bench_gateway;
mod bench_operator;
mod cache;
mod codegen;
mod e2e;
mod images;
mod install;
mod process;
mod progress;
mod signals;
mod testuser;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::backends::Backends;
use crate::cache::Cache;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Marketplace project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what is missing, start PostgreSQL, Elasticsearch and a kwok
    /// Kubernetes cluster, run every test in the workspace, stop everything;
    /// then, when all passed, `e2e kwok` (the chart's journey).
    ///
    /// Arguments after `--` go to `cargo test` (for example a test name
    /// filter); `e2e kwok` is then left out.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Install or build every test backend into the cache, start nothing.
    Install,
    /// Start the test backends, print the environment the tests read, and
    /// keep them running until Ctrl-C (for running single tests by hand).
    Backends,
    /// Run a benchmark on the test backends and print its numbers.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
    /// The chart's user journey end to end: `kind` (Docker and kind, a
    /// user's machine), `kwok` (no containers; CI), or the GraphQL
    /// `walkthrough` alone against a running gateway.
    E2e {
        #[command(subcommand)]
        e2e: e2e::E2e,
    },
    /// Regenerate the committed artefacts made from Rust types (the
    /// Marketplace CRD under `deploy/crds/`).
    Codegen,
    /// Build the static `marketplace` and `marketplace-operator` binaries,
    /// build both images' runtime stage from them with podman (installed
    /// when missing; nothing is pulled), and check each image's user,
    /// entrypoint, ports, size and files.
    Images,
    /// Internal: deletes a run's kwok cluster once that run's xtask is gone.
    #[command(hide = true)]
    ReapCluster {
        #[arg(long)]
        kwokctl: std::path::PathBuf,
        #[arg(long)]
        workdir: std::path::PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        kubeconfig: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// CreateOrder and product search against the account, catalog and
    /// order services, and pgbench's ceiling for CreateOrder's transaction.
    Services(bench::BenchArgs),
    /// A weighted mix of GraphQL requests through the gateway (browse
    /// products, search, an account with its orders, create order), on the
    /// embedded setup and on the separate services on the real backends.
    Gateway(bench_gateway::GatewayBenchArgs),
    /// The gateway mix on the separate services with telemetry quiet
    /// (warnings only, no trace export) and full (JSON request logs, every
    /// span exported over OTLP to a collector): the cost of telemetry.
    Telemetry(bench_gateway::GatewayBenchArgs),
    /// 1 and 50 Marketplaces on the operator and the kwok cluster: time to
    /// children and to Ready, peak memory, API writes once converged.
    Operator(bench_operator::OperatorBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = signals::install_handlers() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Test { cargo_args } => test(&cargo_args),
        Command::Install => install().map(|_| ExitCode::SUCCESS),
        Command::E2e { e2e } => e2e::run(&e2e).map(|()| ExitCode::SUCCESS),
        Command::Codegen => codegen::run().map(|()| ExitCode::SUCCESS),
        Command::Images => Cache::locate()
            .and_then(|cache| images::run(&cache))
            .map(|()| ExitCode::SUCCESS),
        Command::Backends => backends_until_interrupted().map(|()| ExitCode::SUCCESS),
        Command::Bench {
            bench: Bench::Services(args),
        } => install()
            .and_then(|tools| bench::services(&tools, &args))
            .map(|()| ExitCode::SUCCESS),
        Command::Bench {
            bench: Bench::Gateway(args),
        } => install()
            .and_then(|tools| bench_gateway::gateway(&tools, &args))
            .map(|()| ExitCode::SUCCESS),
        Command::Bench {
            bench: Bench::Telemetry(args),
        } => install()
            .and_then(|tools| bench_gateway::telemetry(&tools, &args))
            .map(|()| ExitCode::SUCCESS),
        Command::Bench {
            bench: Bench::Operator(args),
        } => install()
            .and_then(|tools| bench_operator::operator(&tools, &args))
            .map(|()| ExitCode::SUCCESS),
        Command::ReapCluster {
            kwokctl,
            workdir,
            name,
            kubeconfig,
        } => backends::reap_cluster(&kwokctl, &workdir, &name, &kubeconfig)
            .map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) if signals::interrupted() => {
            eprintln!("xtask: interrupted ({e:#}); everything it started has been stopped");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn install() -> Result<install::Tools> {
    let cache = Cache::locate()?;
    println!("==> cache: {}", cache.root().display());
    install::ensure_all(&cache)
}

fn test(cargo_args: &[String]) -> Result<ExitCode> {
    let started = Instant::now();
    let tools = install()?;
    let installed = started.elapsed();

    // Compile first: backends then do not sit idle through a build, and a
    // build error is reported without starting anything.
    println!("==> building the tests");
    let status =
        process::run_foreground(cargo_test(cargo_args, &["--no-run"]), "cargo test --no-run")?;
    if !status.success() {
        println!("==> the build failed ({status})");
        return Ok(ExitCode::FAILURE);
    }
    let built = started.elapsed();

    let backends = Backends::start(&tools, true)?;
    let ready = started.elapsed();

    let mut command = cargo_test(cargo_args, &[]);
    backends.apply_env(&mut command);
    println!("==> cargo test --workspace {}", cargo_args.join(" "));
    let status = process::run_foreground(command, "cargo test");
    let tested = started.elapsed();

    let shutdown = backends.shutdown();
    println!(
        "==> timings: install {:.1?}, build {:.1?}, backends {:.1?}, tests {:.1?}, stop {:.1?}, total {:.1?}",
        installed,
        built - installed,
        ready - built,
        tested - ready,
        started.elapsed() - tested,
        started.elapsed()
    );
    shutdown?;
    let status = status?;
    if status.success() && cargo_args.is_empty() {
        // The chart's journey needs a cluster of its own: the operator it
        // runs as the chart's ServiceAccount must be the only one there.
        e2e::kwok(&tools)?;
    }
    if status.success() {
        println!("==> all tests passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("==> tests failed ({status})");
        Ok(ExitCode::FAILURE)
    }
}

fn cargo_test(cargo_args: &[String], extra: &[&str]) -> std::process::Command {
    let mut command = cargo(&["test", "--workspace"]);
    command.args(extra).args(cargo_args);
    command
}

/// `cargo` with `args`, without the variables `cargo run` set for xtask.
fn cargo(args: &[&str]) -> std::process::Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = std::process::Command::new(cargo);
    command.args(args);
    // `cargo run` gave xtask the package variables of xtask itself; build
    // scripts that watch them (ring's does) would rebuild on every run.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_by_cargo_run = key.starts_with("CARGO_PKG_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_RUSTC_CURRENT_DIR"
            );
        if set_by_cargo_run {
            command.env_remove(key);
        }
    }
    command
}

fn backends_until_interrupted() -> Result<()> {
    let tools = install()?;
    let backends = Backends::start(&tools, true)?;
    println!("==> backends are up; paste these lines into a shell, then run `cargo test`:");
    for (key, value) in backends.env() {
        println!("export {key}={}", shell_quote(&value));
    }
    println!("==> press Ctrl-C to stop them");
    while !signals::interrupted() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    backends.shutdown()
}

fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The workspace root, one level above xtask. `cargo xtask` (an alias of
/// `cargo run`) sets `CARGO_MANIFEST_DIR` for the run, which stays right
/// when the checkout moved after xtask was built: cargo does not rebuild a
/// relocated workspace, so the value compiled in can name a directory that
/// is gone. The compiled-in value is the fallback for a binary run by hand.
pub(crate) fn workspace_root() -> PathBuf {
    let xtask = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    xtask
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}
