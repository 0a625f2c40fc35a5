//! Proves the kwok cluster that `cargo xtask test` creates is a real
//! Kubernetes control plane: the API server, the workload controllers, the
//! scheduler, volume provisioning and garbage collection all act for real.

// Test code: a failed unwrap is a failed test, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use marketplace_testkit::eventually;
use marketplace_testkit::kubernetes::TestNamespace;
use serde_json::{Value, json};

const CONVERGE: Duration = Duration::from_secs(90);

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "main", "image": "example.invalid/app:1" }] }
            }
        }
    }))
    .unwrap()
}

fn is_running_and_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    running && ready
}

async fn pods_of(ns: &TestNamespace, app: &str) -> Vec<Pod> {
    ns.api::<Pod>()
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

async fn replica_sets_in(ns: &TestNamespace) -> Vec<ReplicaSet> {
    ns.api::<ReplicaSet>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

/// Creates a Deployment and waits until all its pods run and are ready.
async fn deploy_and_wait_until_ready(ns: &TestNamespace, name: &str, replicas: usize) -> Vec<Pod> {
    let replicas_i32 = i32::try_from(replicas).unwrap();
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deployment(name, replicas_i32))
        .await
        .unwrap();
    eventually(
        &format!("{replicas} running and ready pods of {name}"),
        CONVERGE,
        || async {
            let pods = pods_of(ns, name).await;
            (pods.len() == replicas && pods.iter().all(is_running_and_ready)).then_some(pods)
        },
    )
    .await
}

#[tokio::test]
async fn kubectl_reports_a_v1_35_server() {
    let Some(ns) = marketplace_testkit::kubernetes::namespace().await else {
        return;
    };

    let output = ns
        .kubectl()
        .args(["version", "--output=json"])
        .output()
        .unwrap();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let version: Value = serde_json::from_slice(&output.stdout).unwrap();
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    let client = version["clientVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(server.starts_with("v1.35."), "server {server:?}");
    assert!(
        client.starts_with("v1.35."),
        "kubectl on PATH is {client:?}"
    );
}

#[tokio::test]
async fn a_deployment_gets_two_pods_running_and_ready_on_kwok_nodes() {
    let Some(ns) = marketplace_testkit::kubernetes::namespace().await else {
        return;
    };

    let pods = deploy_and_wait_until_ready(&ns, "web", 2).await;

    let nodes: Api<Node> = Api::all(ns.client());
    for pod in &pods {
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .expect("scheduled");
        let node = nodes.get(&node_name).await.unwrap();
        let kubelet = node
            .status
            .and_then(|s| s.node_info)
            .map(|i| i.kubelet_version)
            .unwrap_or_default();
        assert!(
            kubelet.starts_with("kwok-"),
            "pod on node {node_name} with kubelet {kubelet:?}"
        );
    }
    let ready = eventually(
        "the deployment to count 2 ready replicas",
        CONVERGE,
        || async {
            let d = ns.api::<Deployment>().get("web").await.unwrap();
            d.status.and_then(|s| s.ready_replicas).filter(|r| *r == 2)
        },
    )
    .await;
    assert_eq!(ready, 2);
}

#[tokio::test]
async fn a_statefulset_claim_is_bound_to_a_provisioned_volume_and_its_pod_becomes_ready() {
    let Some(ns) = marketplace_testkit::kubernetes::namespace().await else {
        return;
    };
    let statefulset: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": { "name": "db" },
        "spec": {
            "serviceName": "db",
            "replicas": 1,
            "selector": { "matchLabels": { "app": "db" } },
            "template": {
                "metadata": { "labels": { "app": "db" } },
                "spec": { "containers": [{
                    "name": "postgres",
                    "image": "example.invalid/postgres:16",
                    "volumeMounts": [{ "name": "data", "mountPath": "/var/lib/postgresql" }]
                }] }
            },
            "volumeClaimTemplates": [{
                "metadata": { "name": "data" },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": { "requests": { "storage": "1Gi" } }
                }
            }]
        }
    }))
    .unwrap();

    ns.api::<StatefulSet>()
        .create(&PostParams::default(), &statefulset)
        .await
        .unwrap();

    let volume = eventually("claim data-db-0 to be bound", CONVERGE, || async {
        let claim = ns
            .api::<PersistentVolumeClaim>()
            .get_opt("data-db-0")
            .await
            .unwrap()?;
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        bound
            .then(|| claim.spec.and_then(|s| s.volume_name))
            .flatten()
    })
    .await;
    let pod = eventually("pod db-0 to be running and ready", CONVERGE, || async {
        ns.api::<Pod>()
            .get_opt("db-0")
            .await
            .unwrap()
            .filter(is_running_and_ready)
    })
    .await;
    let pv = Api::<PersistentVolume>::all(ns.client())
        .get(&volume)
        .await
        .unwrap();
    let pv_spec = pv.spec.unwrap();
    let claimed_by = pv_spec.claim_ref.and_then(|r| r.namespace.zip(r.name));
    assert_eq!(
        claimed_by,
        Some((ns.name().to_owned(), "data-db-0".to_owned()))
    );
    assert_eq!(pv_spec.storage_class_name.as_deref(), Some("standard"));
    let volumes = pod.spec.unwrap().volumes.unwrap_or_default();
    assert!(volumes.iter().any(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.claim_name == "data-db-0")
    }));
}

#[tokio::test]
async fn deleting_a_deployment_garbage_collects_its_replicaset_and_pods() {
    let Some(ns) = marketplace_testkit::kubernetes::namespace().await else {
        return;
    };
    deploy_and_wait_until_ready(&ns, "doomed", 2).await;
    assert_eq!(replica_sets_in(&ns).await.len(), 1);

    // Background propagation: the API server deletes the Deployment at once
    // and leaves its dependents to the garbage collector.
    ns.api::<Deployment>()
        .delete("doomed", &DeleteParams::background())
        .await
        .unwrap();

    eventually(
        "the ReplicaSet and pods to be collected",
        CONVERGE,
        || async {
            let replica_sets = replica_sets_in(&ns).await;
            let pods = pods_of(&ns, "doomed").await;
            (replica_sets.is_empty() && pods.is_empty()).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn helm_installs_and_uninstalls_a_chart() {
    let Some(ns) = marketplace_testkit::kubernetes::namespace().await else {
        return;
    };
    let work = std::env::temp_dir().join(marketplace_testkit::unique_name("helm-"));
    std::fs::create_dir_all(&work).unwrap();
    let helm = |args: &[&str]| {
        let output = std::process::Command::new("helm")
            .args(args)
            .arg("--kubeconfig")
            .arg(ns.kubeconfig())
            .current_dir(&work)
            .env("HELM_CACHE_HOME", work.join("cache"))
            .env("HELM_CONFIG_HOME", work.join("config"))
            .env("HELM_DATA_HOME", work.join("data"))
            .output()
            .expect("helm is on PATH");
        assert!(
            output.status.success(),
            "helm {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    helm(&["create", "demo"]);
    helm(&[
        "install",
        "demo",
        "./demo",
        "--namespace",
        ns.name(),
        "--wait",
        "--timeout",
        "120s",
    ]);
    let ready = ns
        .api::<Deployment>()
        .get("demo")
        .await
        .unwrap()
        .status
        .and_then(|s| s.ready_replicas);
    helm(&["uninstall", "demo", "--namespace", ns.name(), "--wait"]);
    let after = ns.api::<Deployment>().get_opt("demo").await.unwrap();

    assert_eq!(ready, Some(1));
    assert!(after.is_none(), "uninstall left the deployment");
    std::fs::remove_dir_all(&work).unwrap();
}

#[tokio::test]
async fn test_namespaces_are_deleted_with_their_fixture() {
    let Some(ns) = marketplace_testkit::kubernetes::namespace().await else {
        return;
    };
    let (name, client) = (ns.name().to_owned(), ns.client());
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deployment("left", 1))
        .await
        .unwrap();

    drop(ns);

    let namespaces: Api<Namespace> = Api::all(client);
    eventually("the namespace to be gone", CONVERGE, || async {
        namespaces
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}
