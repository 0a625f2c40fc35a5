//! `cargo xtask bench operator`: the release-built operator as a process
//! against the kwok cluster of the test backends, driven by
//! `marketplace-bench operator`, which creates the example Marketplace 1 and
//! then 50 times and prints the time to children and to Ready, the
//! operator's peak memory and its API writes once converged; then, as a
//! ceiling, applies the children of 50 paused Marketplaces itself.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::backends::Backends;
use crate::bench::build_release;
use crate::install::Tools;
use crate::process::{self, Supervised};

/// The example every benchmark Marketplace copies, from the workspace root.
const EXAMPLE: &str = "examples/marketplace.yaml";

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct OperatorBenchArgs {
    /// Marketplaces created at once in each round, round after round
    /// (comma-separated); each round's stay while the next one runs.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 50])]
    instances: Vec<usize>,
    /// Marketplaces created one after another, each create sent when the
    /// previous one returned (as `kubectl apply -f` sends a file of many),
    /// in rounds after those of `--instances` (comma-separated; 0: none).
    #[arg(long, value_delimiter = ',', default_values_t = [50])]
    one_by_one: Vec<usize>,
    /// Ceiling rounds, after all others: this many paused Marketplaces whose
    /// children the driver applies itself, with no operator in between, to
    /// time what the API server alone allows (comma-separated; 0: none).
    #[arg(long, value_delimiter = ',', default_values_t = [50])]
    ceiling: Vec<usize>,
    /// How many applies a ceiling round keeps in flight (the operator keeps
    /// up to 16 per Marketplace, 2 Marketplaces at once).
    #[arg(long, default_value_t = 32)]
    ceiling_in_flight: usize,
    /// Marketplaces per namespace (50 Marketplaces: 10 namespaces).
    #[arg(long, default_value_t = 5)]
    per_namespace: usize,
    /// How long, in seconds, the operator's API writes are counted after
    /// each round has converged.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
}

pub(crate) fn operator(tools: &Tools, args: &OperatorBenchArgs) -> Result<()> {
    let release = build_release(&["marketplace-operator", "marketplace-bench"])?;

    let backends = Backends::start(tools, true)?;
    let result = run(tools, &backends, &release, args);
    let shutdown = backends.shutdown();
    if let (Err(_), Err(e)) = (&result, &shutdown) {
        eprintln!("error while stopping the backends: {e:#}");
    }
    result.and(shutdown)
}

fn run(tools: &Tools, backends: &Backends, release: &Path, args: &OperatorBenchArgs) -> Result<()> {
    let root = crate::workspace_root();
    let work = backends.run_dir().join("bench-operator");
    std::fs::create_dir_all(&work)?;
    let kubeconfig = backends
        .var("MARKETPLACE_TEST_KUBECONFIG")
        .context("the kwok cluster did not start")?;

    println!("==> installing the Marketplace CRD");
    let kubectl = || {
        let mut command = Command::new(tools.kubernetes.join("kubectl"));
        command.arg("--kubeconfig").arg(kubeconfig);
        command
    };
    process::output(
        kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(root.join(marketplace_operator::CRD_PATH)),
    )?;
    process::output(kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/marketplaces.marketplace.dev",
    ]))?;

    let metrics = format!("127.0.0.1:{}", process::free_port()?);
    let log = work.join("operator.log");
    let mut command = Command::new(release.join("marketplace-operator"));
    command
        .args(["--metrics-addr", &metrics, "--lease-namespace", "default"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    backends.apply_env(&mut command);
    println!("==> starting marketplace-operator (metrics on {metrics})");
    let mut operator = Supervised::spawn(
        "marketplace-operator",
        command,
        &log,
        libc::SIGTERM,
        Duration::from_secs(30),
    )?;
    let pid = operator
        .pid()
        .context("the operator exited at once; see its log")?;

    let instances: Vec<String> = args.instances.iter().map(usize::to_string).collect();
    let mut driver = Command::new(release.join("marketplace-bench"));
    driver
        .arg("operator")
        .args(["--metrics-addr", &metrics])
        .arg(format!("--operator-pid={pid}"))
        .arg("--spec")
        .arg(root.join(EXAMPLE))
        .arg(format!("--instances={}", instances.join(",")))
        .arg(format!("--per-namespace={}", args.per_namespace))
        .arg(format!("--steady={}s", args.steady_seconds));
    if let Some(one_by_one) = rounds(&args.one_by_one) {
        driver.arg(format!("--one-by-one={one_by_one}"));
    }
    if let Some(ceiling) = rounds(&args.ceiling) {
        driver
            .arg(format!("--ceiling={ceiling}"))
            .arg(format!("--ceiling-in-flight={}", args.ceiling_in_flight));
    }
    backends.apply_env(&mut driver);
    let status = process::run_foreground(driver, "marketplace-bench operator");

    let exited = operator.exited();
    let stopped = operator.stop();
    if let Some(exit) = exited {
        bail!(
            "the operator exited during the benchmark ({exit}); its last lines:\n{}",
            process::tail(&log, 40)
        );
    }
    let status = status?;
    if !status.success() {
        bail!(
            "the operator benchmark failed ({status}); the operator's last lines:\n{}",
            process::tail(&log, 40)
        );
    }
    stopped
}

/// Round sizes as the driver takes them (`50,50`), leaving out zeros
/// (which mean none); `None` when nothing is left.
fn rounds(sizes: &[usize]) -> Option<String> {
    let sizes: Vec<String> = sizes
        .iter()
        .filter(|&&size| size > 0)
        .map(usize::to_string)
        .collect();
    (!sizes.is_empty()).then(|| sizes.join(","))
}
