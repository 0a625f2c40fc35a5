//! A user's session with `kubectl` against the kwok cluster and the
//! operator binary: the README's example applied as it is, waited for with
//! `kubectl wait`, looked at with `kubectl get`, changed with `kubectl
//! patch`; and a Marketplace whose external database Secret is missing,
//! reported as `Degraded` until the Secret is created.
//!
//! The operator watches every namespace, so the tests here run one at a
//! time (see operator/tests/lifecycle.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{CONVERGE, Operator, install_crd, workspace_root};
use marketplace_testkit::eventually;
use marketplace_testkit::kubernetes::{self, TestNamespace};
use serde_json::Value;
use tokio::sync::Mutex;

static ONE_OPERATOR: Mutex<()> = Mutex::const_new(());

/// Runs `kubectl` in the test's namespace and returns its standard output;
/// fails the test, with what kubectl said, when it fails.
fn kubectl(namespace: &TestNamespace, args: &[&str]) -> String {
    let output = run(namespace.kubectl().args(args));
    assert!(
        output.status.success(),
        "kubectl {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn run(command: &mut Command) -> std::process::Output {
    command.output().unwrap()
}

fn kubectl_json(namespace: &TestNamespace, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(namespace, &args)).unwrap()
}

/// `kubectl wait` for `condition` of `marketplace/<name>`, as long as the
/// other tests wait for convergence.
fn wait_for(namespace: &TestNamespace, name: &str, condition: &str) {
    let timeout = format!("--timeout={}s", CONVERGE.as_secs());
    kubectl(
        namespace,
        &[
            "wait",
            &format!("--for=condition={condition}"),
            &format!("marketplace/{name}"),
            &timeout,
        ],
    );
}

/// The condition `type_` of Marketplace `name`.
fn condition(namespace: &TestNamespace, name: &str, type_: &str) -> Value {
    let marketplace = kubectl_json(namespace, &["get", "marketplace", name]);
    marketplace["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|condition| condition["type"] == type_)
        .cloned()
        .unwrap_or_else(|| panic!("no {type_} condition: {marketplace}"))
}

/// The reasons of the events about Marketplace `name`, with their types.
fn events(namespace: &TestNamespace, name: &str) -> Vec<(String, String)> {
    let selector = format!("involvedObject.kind=Marketplace,involvedObject.name={name}");
    let events = kubectl_json(namespace, &["get", "events", "--field-selector", &selector]);
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            (
                event["type"].as_str().unwrap_or_default().to_owned(),
                event["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn has_event(namespace: &TestNamespace, name: &str, type_: &str, reason: &str) -> bool {
    events(namespace, name)
        .iter()
        .any(|(t, r)| t == type_ && r == reason)
}

#[tokio::test]
async fn the_example_applied_with_kubectl_becomes_ready_shows_its_gateway_and_follows_a_patch() {
    let Some(namespace) = kubernetes::namespace().await else {
        return;
    };
    let _one = ONE_OPERATOR.lock().await;
    install_crd(namespace.client()).await;
    let _operator = Operator::start(&namespace);
    let example = workspace_root().join("examples/marketplace.yaml");
    let example = example.to_str().expect("a UTF-8 path");

    kubectl(&namespace, &["apply", "-f", example]);
    wait_for(&namespace, "shop", "Ready");

    // `kubectl get mp` shows it ready, with the gateway's URL.
    let endpoint = format!("http://shop-gateway.{}.svc:8080/graphql", namespace.name());
    let listed = kubectl(&namespace, &["get", "mp", "shop"]);
    let row = listed.lines().nth(1).unwrap();
    assert!(row.contains("True"), "{listed}");
    assert!(row.contains(&endpoint), "{listed}");

    // Every workload, labelled, owned and probed.
    let deployments = kubectl_json(
        &namespace,
        &[
            "get",
            "deployments",
            "-l",
            "app.kubernetes.io/instance=shop",
        ],
    );
    let mut names = Vec::new();
    for deployment in deployments["items"].as_array().unwrap() {
        let name = deployment["metadata"]["name"].as_str().unwrap().to_owned();
        assert_eq!(
            deployment["metadata"]["ownerReferences"][0]["kind"], "Marketplace",
            "{name}"
        );
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        for probe_name in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let probe = &container[probe_name];
            if name == "shop-gateway" {
                assert_eq!(probe["httpGet"]["port"], "http", "{name}: {probe}");
            } else if probe_name == "readinessProbe" {
                assert!(probe["grpc"]["port"].is_number(), "{name}: {probe}");
            } else {
                assert_eq!(probe["httpGet"]["port"], "metrics", "{name}: {probe}");
            }
        }
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        ["shop-account", "shop-catalog", "shop-gateway", "shop-order"]
    );
    // The example runs two gateways: they get a disruption budget.
    kubectl(&namespace, &["get", "poddisruptionbudget", "shop-gateway"]);
    // Becoming ready was announced once.
    assert!(
        has_event(&namespace, "shop", "Normal", "Ready"),
        "{:?}",
        events(&namespace, "shop")
    );

    // A patch is followed: three gateways, and Ready at the new generation.
    kubectl(
        &namespace,
        &[
            "patch",
            "marketplace",
            "shop",
            "--type=merge",
            "-p",
            r#"{"spec":{"gateway":{"replicas":3}}}"#,
        ],
    );
    wait_for(&namespace, "shop", "Ready");
    let gateway = kubectl_json(&namespace, &["get", "deployment", "shop-gateway"]);
    assert_eq!(gateway["spec"]["replicas"], 3);
    let marketplace = kubectl_json(&namespace, &["get", "marketplace", "shop"]);
    assert_eq!(
        marketplace["status"]["observedGeneration"],
        marketplace["metadata"]["generation"]
    );
}

#[tokio::test]
async fn a_missing_external_database_secret_degrades_the_marketplace_until_it_is_created() {
    let Some(namespace) = kubernetes::namespace().await else {
        return;
    };
    let _one = ONE_OPERATOR.lock().await;
    install_crd(namespace.client()).await;
    let _operator = Operator::start(&namespace);
    let manifest = namespace.name().to_owned() + "-shop.yaml";
    let path = std::env::temp_dir().join(manifest);
    std::fs::write(
        &path,
        r"
apiVersion: marketplace.dev/v1alpha1
kind: Marketplace
metadata:
  name: shop
spec:
  order:
    database:
      external:
        secretRef:
          name: orders-db
",
    )
    .unwrap();

    kubectl(&namespace, &["apply", "-f", path.to_str().unwrap()]);
    wait_for(&namespace, "shop", "Degraded");

    let degraded = condition(&namespace, "shop", "Degraded");
    assert_eq!(degraded["reason"], "ExternalSecretNotFound");
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("spec.order.database.external.secretRef.name is orders-db"),
        "{message}"
    );
    assert!(
        has_event(&namespace, "shop", "Warning", "ExternalSecretNotFound"),
        "{:?}",
        events(&namespace, "shop")
    );
    // Everything else is made meanwhile: the order pods wait for the Secret.
    kubectl(&namespace, &["get", "deployment", "shop-order"]);

    // A Secret without the key is a different problem, named as such.
    kubectl(
        &namespace,
        &[
            "create",
            "secret",
            "generic",
            "orders-db",
            "--from-literal=URL=postgres://orders@db.example:5432/orders",
        ],
    );
    eventually(
        "the Degraded reason to name the missing key",
        CONVERGE,
        || async {
            let degraded = condition(&namespace, "shop", "Degraded");
            (degraded["reason"] == "ExternalSecretKeyMissing").then_some(())
        },
    )
    .await;

    // With the key in place the Marketplace recovers and becomes Ready.
    kubectl(&namespace, &["delete", "secret", "orders-db"]);
    kubectl(
        &namespace,
        &[
            "create",
            "secret",
            "generic",
            "orders-db",
            "--from-literal=url=postgres://orders@db.example:5432/orders",
        ],
    );
    wait_for(&namespace, "shop", "Degraded=false");
    wait_for(&namespace, "shop", "Ready");
    assert!(
        has_event(&namespace, "shop", "Normal", "Recovered"),
        "{:?}",
        events(&namespace, "shop")
    );
    let _ = std::fs::remove_file(path);
}
