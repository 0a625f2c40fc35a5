//! `cargo xtask e2e`: the user journey of the Helm chart, end to end.
//!
//! - `kind`: on a user's machine with Docker and kind: create the kind
//!   cluster of `kind-config.yaml`, build both images and load them into
//!   it, `helm install` the chart, apply the example Marketplace, wait for
//!   it to be Ready, run the GraphQL walk-through through a port-forward to
//!   its gateway, and delete the cluster.
//! - `kwok`: the same on a fresh kwok cluster, where pods become Ready
//!   without running, so without images and without the walk-through; in
//!   exchange it proves the chart's RBAC: the operator runs as a process
//!   with a token of the chart's ServiceAccount, not as the administrator,
//!   and must reconcile the example to Ready. `helm upgrade` and `helm
//!   uninstall` follow. CI runs it.
//! - `walkthrough`: the walk-through alone, against any gateway.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::backends::Backends;
use crate::install::Tools;
use crate::process::{self, Supervised};

/// The chart, from the workspace root.
const CHART: &str = "deploy/helm/marketplace-operator";
/// The example Marketplace (`shop`), from the workspace root.
const EXAMPLE: &str = "examples/marketplace.yaml";
const RELEASE: &str = "marketplace-operator";
/// Where the chart is installed; the operator's Lease is here too.
const OPERATOR_NAMESPACE: &str = "marketplace-system";
/// Where the example Marketplace goes.
const SHOP_NAMESPACE: &str = "shop";
/// The chart's ServiceAccount for [`RELEASE`] (its full name).
const SERVICE_ACCOUNT: &str = "marketplace-operator";
/// The kind cluster `kind-config.yaml` names.
const KIND_CLUSTER: &str = "marketplace";
/// The tag the images are built with for the kind cluster.
const E2E_TAG: &str = "e2e";
const MARKETPLACE_IMAGE: &str = "ghcr.io/marketplace/marketplace";
const OPERATOR_IMAGE: &str = "ghcr.io/marketplace/marketplace-operator";

#[derive(Debug, clap::Subcommand)]
pub(crate) enum E2e {
    /// On kind with Docker (a user's machine): images, chart, example,
    /// walk-through through a port-forward; deletes the cluster after.
    Kind {
        /// Keep the kind cluster (and everything in it) at the end.
        #[arg(long)]
        keep: bool,
    },
    /// On a fresh kwok cluster (no containers, no images): chart install,
    /// the operator as a process with the chart's ServiceAccount token
    /// reconciling the example to Ready, upgrade, uninstall.
    Kwok,
    /// The GraphQL walk-through against a running gateway.
    Walkthrough {
        /// The gateway's base URL.
        #[arg(long, default_value = "http://localhost:8080")]
        url: String,
    },
}

pub(crate) fn run(command: &E2e) -> Result<()> {
    match command {
        E2e::Kind { keep } => kind(*keep),
        E2e::Kwok => {
            let tools = crate::install()?;
            kwok(&tools)
        }
        E2e::Walkthrough { url } => walkthrough(url),
    }
}

// ---------------------------------------------------------------------------
// kwok

pub(crate) fn kwok(tools: &Tools) -> Result<()> {
    let started = Instant::now();
    println!("==> building the operator");
    let status = process::run_foreground(
        crate::cargo(&["build", "-p", "marketplace-operator"]),
        "cargo build -p marketplace-operator",
    )?;
    ensure!(status.success(), "building the operator failed ({status})");
    let operator = crate::bench::target_dir()?.join("debug/marketplace-operator");

    let backends = Backends::kubernetes_only(tools)?;
    let result = kwok_journey(&backends, &operator);
    let shutdown = backends.shutdown();
    if let (Err(_), Err(e)) = (&result, &shutdown) {
        eprintln!("error while stopping the cluster: {e:#}");
    }
    result.and(shutdown)?;
    println!(
        "==> e2e kwok passed in {:.0?}: install, RBAC, Ready as the chart's ServiceAccount, upgrade, uninstall",
        started.elapsed()
    );
    Ok(())
}

/// Runs `kubectl`, `helm` and the operator against the cluster of
/// `backends`, from the workspace root.
struct Cluster<'a> {
    backends: &'a Backends,
    root: PathBuf,
    work: PathBuf,
}

impl Cluster<'_> {
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        self.backends.apply_env(&mut command);
        command.current_dir(&self.root);
        command
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        process::output(self.command("kubectl").args(args))
    }

    fn helm(&self, args: &[&str]) -> Result<String> {
        let output = process::output(self.command("helm").args(args))?;
        Ok(output)
    }

    /// `kubectl auth can-i` as the chart's ServiceAccount.
    fn service_account_can(&self, verb: &str, resource: &str, namespace: &str) -> Result<bool> {
        let subject = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{SERVICE_ACCOUNT}");
        let output = self
            .command("kubectl")
            .args(["auth", "can-i", verb])
            // `resource/name` names one object; a subresource is a flag.
            .args(resource.split_whitespace())
            .args(["--as", &subject])
            .args(["--namespace", namespace])
            .output()
            .context("running kubectl auth can-i")?;
        match String::from_utf8_lossy(&output.stdout).trim() {
            "yes" => Ok(true),
            "no" => Ok(false),
            other => bail!(
                "kubectl auth can-i {verb} {resource}: {other} {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }
}

fn kwok_journey(backends: &Backends, operator: &Path) -> Result<()> {
    let work = backends.run_dir().join("e2e");
    std::fs::create_dir_all(&work)?;
    let cluster = Cluster {
        backends,
        root: crate::workspace_root(),
        work,
    };

    println!("==> helm lint --strict {CHART}");
    cluster.helm(&["lint", "--strict", CHART])?;

    println!("==> helm install {RELEASE} {CHART} --namespace {OPERATOR_NAMESPACE}");
    cluster.helm(&[
        "install",
        RELEASE,
        CHART,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "3m",
    ])?;
    let ready = cluster.kubectl(&[
        "get",
        "deployment",
        SERVICE_ACCOUNT,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--output=jsonpath={.status.readyReplicas}",
    ])?;
    ensure!(
        ready.trim() == "1",
        "the operator Deployment has {ready:?} ready replicas, not 1"
    );
    cluster.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/marketplaces.marketplace.dev",
        "--timeout=60s",
    ])?;

    check_rbac(&cluster)?;

    let kubeconfig = service_account_kubeconfig(&cluster)?;
    let metrics = format!("127.0.0.1:{}", process::free_port()?);
    let log = cluster.work.join("operator.log");
    let mut command = Command::new(operator);
    command
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", OPERATOR_NAMESPACE)
        .env("RUST_LOG", "info")
        .args(["--metrics-addr", &metrics, "--log-format", "json"]);
    println!(
        "==> the operator, as the chart's ServiceAccount (log: {})",
        log.display()
    );
    let mut operator_process = Supervised::spawn(
        "operator",
        command,
        &log,
        libc::SIGTERM,
        Duration::from_secs(30),
    )?;

    let result = with_operator(&cluster, &log);
    let stopped = operator_process.stop();
    let forbidden = forbidden_lines(&log);
    result?;
    stopped?;
    ensure!(
        forbidden.is_empty(),
        "the operator was refused by the API server:\n{}",
        forbidden.join("\n")
    );

    println!("==> helm uninstall {RELEASE}");
    cluster.helm(&[
        "uninstall",
        RELEASE,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--wait",
    ])?;
    for (kind, namespace) in [
        (
            format!("deployment/{SERVICE_ACCOUNT}"),
            Some(OPERATOR_NAMESPACE),
        ),
        (
            format!("serviceaccount/{SERVICE_ACCOUNT}"),
            Some(OPERATOR_NAMESPACE),
        ),
        (
            format!("role/{SERVICE_ACCOUNT}-leader-election"),
            Some(OPERATOR_NAMESPACE),
        ),
        ("marketplace/market".to_owned(), Some(OPERATOR_NAMESPACE)),
        (format!("clusterrole/{SERVICE_ACCOUNT}"), None),
        (format!("clusterrolebinding/{SERVICE_ACCOUNT}"), None),
    ] {
        let mut args = vec!["get", kind.as_str(), "--ignore-not-found", "-o", "name"];
        if let Some(namespace) = namespace {
            args.extend(["--namespace", namespace]);
        }
        let left = cluster.kubectl(&args)?;
        ensure!(
            left.trim().is_empty(),
            "{kind} is left after helm uninstall"
        );
    }
    cluster.kubectl(&["get", "crd", "marketplaces.marketplace.dev"])?;
    cluster.kubectl(&["get", "marketplace", "shop", "--namespace", SHOP_NAMESPACE])?;
    println!("    everything the release made is gone; the CRD and the user's Marketplace stay");
    Ok(())
}

/// With the operator running as the ServiceAccount: the example to Ready,
/// then an upgrade that changes the operator's flags and adds the chart's
/// own Marketplace, which must become Ready too.
fn with_operator(cluster: &Cluster<'_>, log: &Path) -> Result<()> {
    println!("==> kubectl apply -f {EXAMPLE} --namespace {SHOP_NAMESPACE}");
    cluster.kubectl(&["create", "namespace", SHOP_NAMESPACE])?;
    cluster.kubectl(&["apply", "-f", EXAMPLE, "--namespace", SHOP_NAMESPACE])?;
    wait_ready(cluster, "shop", SHOP_NAMESPACE, log)?;

    let holder = cluster.kubectl(&[
        "get",
        "lease",
        "marketplace-operator",
        "--namespace",
        OPERATOR_NAMESPACE,
        "--output=jsonpath={.spec.holderIdentity}",
    ])?;
    ensure!(
        !holder.trim().is_empty(),
        "the operator holds no Lease in {OPERATOR_NAMESPACE}"
    );

    println!("==> helm upgrade: --concurrency 4, and a Marketplace `market` from the chart");
    cluster.helm(&[
        "upgrade",
        RELEASE,
        CHART,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--set",
        "operator.concurrency=4",
        "--set",
        "marketplace.create=true",
        "--set",
        "marketplace.name=market",
        "--wait",
        "--timeout",
        "3m",
    ])?;
    let args = cluster.kubectl(&[
        "get",
        "deployment",
        SERVICE_ACCOUNT,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--output=jsonpath={.spec.template.spec.containers[0].args}",
    ])?;
    ensure!(
        args.contains(r#""--concurrency","4""#),
        "the upgraded Deployment runs the operator with {args}"
    );
    let revision = cluster.helm(&[
        "status",
        RELEASE,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--output",
        "json",
    ])?;
    let revision: Value = serde_json::from_str(&revision)?;
    ensure!(
        revision["version"] == 2,
        "helm status reports revision {} after one upgrade",
        revision["version"]
    );
    wait_ready(cluster, "market", OPERATOR_NAMESPACE, log)
}

fn wait_ready(cluster: &Cluster<'_>, name: &str, namespace: &str, log: &Path) -> Result<()> {
    let started = Instant::now();
    let waited = cluster.kubectl(&[
        "wait",
        "--for=condition=Ready",
        &format!("marketplace/{name}"),
        "--namespace",
        namespace,
        "--timeout=180s",
    ]);
    if let Err(e) = waited {
        let status = cluster
            .kubectl(&["get", "marketplace", name, "-n", namespace, "-o", "yaml"])
            .unwrap_or_default();
        bail!("{e:#}\n{status}\noperator log:\n{}", process::tail(log, 40));
    }
    println!(
        "    Marketplace {namespace}/{name} is Ready after {:.1?}",
        started.elapsed()
    );
    Ok(())
}

/// Lines of the operator's log that report a request the API server
/// refused for lack of permission.
fn forbidden_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("forbidden") || line.contains("Forbidden"))
        .map(str::to_owned)
        .collect()
}

/// What the chart's ServiceAccount may and may not do, asked of the API
/// server's authorizer: the rules the README lists, and a sample of what
/// they must not grant.
fn check_rbac(cluster: &Cluster<'_>) -> Result<()> {
    println!("==> the chart's RBAC, asked of the API server");
    let allowed: &[(&str, &str, &str)] = &[
        ("watch", "marketplaces.marketplace.dev", SHOP_NAMESPACE),
        (
            "patch",
            "marketplaces.marketplace.dev --subresource=status",
            SHOP_NAMESPACE,
        ),
        ("patch", "deployments.apps", SHOP_NAMESPACE),
        ("delete", "statefulsets.apps", SHOP_NAMESPACE),
        ("create", "secrets", SHOP_NAMESPACE),
        ("patch", "persistentvolumeclaims", SHOP_NAMESPACE),
        (
            "delete",
            "networkpolicies.networking.k8s.io",
            SHOP_NAMESPACE,
        ),
        ("create", "events.events.k8s.io", SHOP_NAMESPACE),
        ("create", "leases.coordination.k8s.io", OPERATOR_NAMESPACE),
        (
            "update",
            "leases.coordination.k8s.io/marketplace-operator",
            OPERATOR_NAMESPACE,
        ),
    ];
    let refused: &[(&str, &str, &str)] = &[
        ("delete", "secrets", SHOP_NAMESPACE),
        ("delete", "persistentvolumeclaims", SHOP_NAMESPACE),
        ("update", "deployments.apps", SHOP_NAMESPACE),
        ("get", "pods", SHOP_NAMESPACE),
        ("create", "pods", SHOP_NAMESPACE),
        ("delete", "marketplaces.marketplace.dev", SHOP_NAMESPACE),
        ("patch", "marketplaces.marketplace.dev", SHOP_NAMESPACE),
        ("create", "leases.coordination.k8s.io", SHOP_NAMESPACE),
        (
            "update",
            "leases.coordination.k8s.io/another-lease",
            OPERATOR_NAMESPACE,
        ),
        (
            "create",
            "clusterrolebindings.rbac.authorization.k8s.io",
            SHOP_NAMESPACE,
        ),
        ("list", "nodes", SHOP_NAMESPACE),
    ];
    for &(verb, resource, namespace) in allowed {
        ensure!(
            cluster.service_account_can(verb, resource, namespace)?,
            "the chart's ServiceAccount may not {verb} {resource} in {namespace}, which the operator needs"
        );
    }
    for &(verb, resource, namespace) in refused {
        ensure!(
            !cluster.service_account_can(verb, resource, namespace)?,
            "the chart's ServiceAccount may {verb} {resource} in {namespace}, which the operator never does"
        );
    }
    println!(
        "    {} needed permissions granted, {} others refused",
        allowed.len(),
        refused.len()
    );
    Ok(())
}

/// A kubeconfig for the cluster that authenticates with a token of the
/// chart's ServiceAccount (from the TokenRequest API, valid one hour)
/// instead of the administrator's client certificate.
fn service_account_kubeconfig(cluster: &Cluster<'_>) -> Result<PathBuf> {
    let token = cluster.kubectl(&[
        "create",
        "token",
        SERVICE_ACCOUNT,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--duration=1h",
    ])?;
    let field = |path: &str| {
        cluster
            .kubectl(&[
                "config",
                "view",
                "--raw",
                "--minify",
                &format!("--output=jsonpath={{.clusters[0].cluster.{path}}}"),
            ])
            .map(|value| value.trim().to_owned())
    };
    let server = field("server")?;
    let authority = match field("certificate-authority-data")? {
        data if !data.is_empty() => format!("certificate-authority-data: {data}"),
        _ => format!("certificate-authority: {}", field("certificate-authority")?),
    };
    let kubeconfig = cluster.work.join("service-account.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: e2e\n  cluster:\n    server: {server}\n    {authority}\n\
             users:\n- name: {SERVICE_ACCOUNT}\n  user:\n    token: {}\n\
             contexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: {SERVICE_ACCOUNT}\n\
             current-context: e2e\n",
            token.trim()
        ),
    )?;
    Ok(kubeconfig)
}

// ---------------------------------------------------------------------------
// kind

fn kind(keep: bool) -> Result<()> {
    let root = crate::workspace_root();
    for tool in ["docker", "kind", "kubectl", "helm"] {
        ensure!(
            process::which(tool).is_some(),
            "`cargo xtask e2e kind` needs {tool} on PATH (Docker, kind, kubectl and helm); \
             `cargo xtask e2e kwok` runs the same journey without containers"
        );
    }
    let run = |program: &str, args: &[&str]| -> Result<String> {
        let mut command = Command::new(program);
        command.args(args).current_dir(&root);
        process::output(&mut command)
    };
    let context = format!("kind-{KIND_CLUSTER}");
    let clusters = run("kind", &["get", "clusters"])?;
    let created = !clusters.lines().any(|line| line.trim() == KIND_CLUSTER);
    if created {
        println!("==> kind create cluster --config kind-config.yaml");
        run(
            "kind",
            &["create", "cluster", "--config", "kind-config.yaml"],
        )?;
    } else {
        println!("==> using the existing kind cluster {KIND_CLUSTER}");
    }
    let result = kind_journey(&root, &context);
    if created && !keep {
        println!("==> kind delete cluster --name {KIND_CLUSTER}");
        run("kind", &["delete", "cluster", "--name", KIND_CLUSTER])?;
    }
    result
}

fn kind_journey(root: &Path, context: &str) -> Result<()> {
    let kubectl = |args: &[&str]| -> Result<String> {
        let mut command = Command::new("kubectl");
        command
            .args(["--context", context])
            .args(args)
            .current_dir(root);
        process::output(&mut command)
    };
    for (image, dockerfile) in [
        (MARKETPLACE_IMAGE, "deploy/images/marketplace.Dockerfile"),
        (OPERATOR_IMAGE, "deploy/images/operator.Dockerfile"),
    ] {
        let tagged = format!("{image}:{E2E_TAG}");
        println!("==> docker build -f {dockerfile} -t {tagged} .");
        let mut build = Command::new("docker");
        build
            .args(["build", "-f", dockerfile, "-t", &tagged, "."])
            .env("DOCKER_BUILDKIT", "1")
            .current_dir(root);
        let status = process::run_foreground(build, "docker build")?;
        ensure!(
            status.success(),
            "docker build of {tagged} failed ({status})"
        );
        println!("==> kind load docker-image {tagged}");
        let mut load = Command::new("kind");
        load.args(["load", "docker-image", &tagged, "--name", KIND_CLUSTER]);
        process::output(&mut load)?;
    }

    println!("==> helm install {RELEASE} {CHART}");
    let mut helm = Command::new("helm");
    helm.args(["--kube-context", context])
        .args(["upgrade", "--install", RELEASE, CHART])
        .args(["--namespace", OPERATOR_NAMESPACE, "--create-namespace"])
        .args(["--set", &format!("image.tag={E2E_TAG}")])
        .args(["--set", "image.pullPolicy=Never"])
        .args(["--wait", "--timeout", "5m"])
        .current_dir(root);
    process::output(&mut helm)?;

    println!("==> kubectl apply -f {EXAMPLE} (image tag {E2E_TAG})");
    let example = std::fs::read_to_string(root.join(EXAMPLE))?;
    let pinned = example.replacen(
        "    pullPolicy: IfNotPresent\n",
        &format!("    tag: {E2E_TAG}\n    pullPolicy: Never\n"),
        1,
    );
    ensure!(
        pinned != example,
        "{EXAMPLE} no longer has the `pullPolicy: IfNotPresent` line the e2e test pins the image tag next to"
    );
    let manifest =
        std::env::temp_dir().join(format!("marketplace-e2e-{}.yaml", std::process::id()));
    std::fs::write(&manifest, pinned)?;
    let _ = kubectl(&["create", "namespace", SHOP_NAMESPACE]);
    let applied = kubectl(&[
        "apply",
        "--namespace",
        SHOP_NAMESPACE,
        "-f",
        &manifest.to_string_lossy(),
    ]);
    let _ = std::fs::remove_file(&manifest);
    applied?;
    println!("==> waiting for the Marketplace to be Ready (images start, databases initialise)");
    kubectl(&[
        "wait",
        "--for=condition=Ready",
        "marketplace/shop",
        "--namespace",
        SHOP_NAMESPACE,
        "--timeout=10m",
    ])?;

    let port = process::free_port()?;
    let log = std::env::temp_dir().join(format!(
        "marketplace-e2e-port-forward-{}.log",
        std::process::id()
    ));
    let mut forward = Command::new("kubectl");
    forward.args([
        "--context",
        context,
        "port-forward",
        "--namespace",
        SHOP_NAMESPACE,
        "svc/shop-gateway",
        &format!("{port}:8080"),
    ]);
    println!("==> kubectl port-forward svc/shop-gateway {port}:8080");
    let mut forwarding = Supervised::spawn(
        "port-forward",
        forward,
        &log,
        libc::SIGTERM,
        Duration::from_secs(5),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "the port-forward did not listen within 30 s: {}",
            process::tail(&log, 20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let result = walkthrough(&format!("http://127.0.0.1:{port}"));
    forwarding.stop()?;
    result
}

// ---------------------------------------------------------------------------
// The walk-through

/// The README's walk-through, step by step, checking each answer: an
/// account, two products, a search, an order with its exact total, the
/// account's orders.
fn walkthrough(url: &str) -> Result<()> {
    let endpoint = format!("{}/graphql", url.trim_end_matches('/'));
    println!("==> the GraphQL walk-through against {endpoint}");
    let account = graphql(
        &endpoint,
        r#"mutation { createAccount(account: {name: "Ada Lovelace"}) { id name } }"#,
    )?;
    let account_id = string(&account, "/createAccount/id")?;
    println!("    1. account {account_id}");

    let products = graphql(
        &endpoint,
        r#"mutation {
          engine: createProduct(product: {name: "Analytical engine", description: "A general-purpose mechanical computer", price: 1843.99}) { id }
          cards: createProduct(product: {name: "Punched cards", description: "Programs and data for the engine, a box of 100", price: 0.10}) { id }
        }"#,
    )?;
    let engine = string(&products, "/engine/id")?;
    let cards = string(&products, "/cards/id")?;
    println!("    2. products {engine} and {cards}");

    // A new product is searchable once the search index has refreshed
    // (about a second on Elasticsearch).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = graphql(
            &endpoint,
            r#"{ products(query: "analytical engine", pagination: {take: 100}) { id name } }"#,
        )?;
        let hit = found["products"]
            .as_array()
            .is_some_and(|list| list.iter().any(|product| product["id"] == engine.as_str()));
        if hit {
            println!("    3. the search for \"analytical engine\" finds {engine}");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the search did not find the new product within 15 s: {found}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let order = graphql(
        &endpoint,
        &format!(
            r#"mutation {{ createOrder(order: {{accountId: "{account_id}", products: [{{id: "{engine}", quantity: 2}}, {{id: "{cards}", quantity: 3}}]}}) {{ id totalPrice }} }}"#
        ),
    )?;
    let order_id = string(&order, "/createOrder/id")?;
    let total = order
        .pointer("/createOrder/totalPrice")
        .and_then(Value::as_f64)
        .context("the order has no totalPrice")?;
    ensure!(
        (total - 3688.28).abs() < 1e-9,
        "the order's total is {total}, not 2 × 1843.99 + 3 × 0.10 = 3688.28"
    );
    println!("    4. order {order_id}, total {total}");

    let orders = graphql(
        &endpoint,
        &format!(r#"{{ accounts(id: "{account_id}") {{ id orders {{ id totalPrice }} }} }}"#),
    )?;
    let listed = orders
        .pointer("/accounts/0/orders")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|o| o["id"] == order_id.as_str()));
    ensure!(
        listed,
        "the account's orders do not list {order_id}: {orders}"
    );
    println!("    5. the account's orders list {order_id}");
    Ok(())
}

/// Posts one GraphQL operation and returns its `data`, failing on errors.
fn graphql(endpoint: &str, query: &str) -> Result<Value> {
    let text = ureq::post(endpoint)
        .header("content-type", "application/json")
        .send(json!({ "query": query }).to_string())
        .with_context(|| format!("POST {endpoint}"))?
        .into_body()
        .read_to_string()
        .context("reading the GraphQL response")?;
    let body: Value = serde_json::from_str(&text)
        .with_context(|| format!("a GraphQL response that is not JSON: {text}"))?;
    if let Some(errors) = body.get("errors") {
        bail!("GraphQL errors: {errors}");
    }
    body.get("data")
        .cloned()
        .with_context(|| format!("a GraphQL response without data: {body}"))
}

fn string(data: &Value, pointer: &str) -> Result<String> {
    data.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("no {pointer} in {data}"))
}
