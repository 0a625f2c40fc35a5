//! The lifecycle of Marketplaces under the operator binary, against the real
//! kube-apiserver and controllers of the kwok cluster: deletion (workloads
//! garbage-collected, database claims kept unless the spec says otherwise),
//! several Marketplaces side by side, spec changes, an operator killed
//! mid-reconcile, and no writes once converged.
//!
//! The operator watches Marketplaces in every namespace, so two operators
//! running at once would each do the other's work (and hide a restart that
//! does not converge): the tests here take [`ONE_OPERATOR`] and run one at a
//! time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{CONVERGE, Operator, get, install_crd, wait_ready};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use marketplace_operator::crd::{Marketplace, MarketplaceSpec};
use marketplace_testkit::eventually;
use marketplace_testkit::kubernetes::{self, TestNamespace};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Mutex;

/// Held by each test while its operator runs; see the module comment.
static ONE_OPERATOR: Mutex<()> = Mutex::const_new(());

/// The operator binary with a metrics port and a Lease of this test's own,
/// so operators of other tests never contend with it; uncoloured, as
/// [`writes_in`] reads its log.
fn start_operator(namespace: &TestNamespace) -> Operator {
    Operator::start_with_env(namespace, &[("NO_COLOR", "1")])
}

/// The log lines saying `operator` wrote to the API server on behalf of a
/// Marketplace in `namespace`.
fn writes_in(operator: &Operator, namespace: &str) -> Vec<String> {
    operator
        .log()
        .lines()
        .filter(|line| line.contains(namespace))
        .filter(|line| {
            ["applied", "deleted", "status updated"]
                .iter()
                .any(|write| line.contains(write))
        })
        .map(str::to_owned)
        .collect()
}

fn spec(value: serde_json::Value) -> MarketplaceSpec {
    serde_json::from_value(value).unwrap()
}

async fn create(namespace: &TestNamespace, name: &str, spec: MarketplaceSpec) -> Marketplace {
    namespace
        .api::<Marketplace>()
        .create(&PostParams::default(), &Marketplace::new(name, spec))
        .await
        .unwrap()
}

/// The children of Marketplace `name`, found by its instance label.
fn selector(name: &str) -> String {
    format!("app.kubernetes.io/managed-by=marketplace-operator,app.kubernetes.io/instance={name}")
}

/// `Kind/name` -> resourceVersion of every child of Marketplace `name` in
/// `namespace`, and of the Marketplace itself.
async fn versions(namespace: &TestNamespace, name: &str) -> BTreeMap<String, String> {
    async fn of<K>(api: Api<K>, selector: &str, into: &mut BTreeMap<String, String>)
    where
        K: Resource + k8s_openapi::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        for object in api
            .list_metadata(&ListParams::default().labels(selector))
            .await
            .unwrap()
        {
            into.insert(
                format!("{}/{}", K::KIND, object.name_any()),
                object.resource_version().unwrap(),
            );
        }
    }
    let selector = selector(name);
    let mut versions = BTreeMap::new();
    of(namespace.api::<Deployment>(), &selector, &mut versions).await;
    of(namespace.api::<StatefulSet>(), &selector, &mut versions).await;
    of(namespace.api::<Service>(), &selector, &mut versions).await;
    of(namespace.api::<Secret>(), &selector, &mut versions).await;
    of(
        namespace.api::<PodDisruptionBudget>(),
        &selector,
        &mut versions,
    )
    .await;
    of(namespace.api::<NetworkPolicy>(), &selector, &mut versions).await;
    let marketplace = namespace.api::<Marketplace>().get(name).await.unwrap();
    versions.insert(
        format!("Marketplace/{name}"),
        marketplace.resource_version().unwrap(),
    );
    versions
}

/// The names of the database and search claims the StatefulSet controller
/// makes from the `data` template of a Marketplace named `name` with every
/// store managed and one replica each.
fn claim_names(name: &str) -> Vec<String> {
    ["account-db", "order-db", "search"]
        .iter()
        .map(|store| format!("data-{name}-{store}-0"))
        .collect()
}

/// The workloads and Services of Marketplace `name` still there.
async fn children_left(namespace: &TestNamespace, name: &str) -> Vec<String> {
    let selector = selector(name);
    let params = ListParams::default().labels(&selector);
    let mut left = Vec::new();
    for object in namespace
        .api::<Deployment>()
        .list_metadata(&params)
        .await
        .unwrap()
    {
        left.push(format!("Deployment/{}", object.name_any()));
    }
    for object in namespace
        .api::<StatefulSet>()
        .list_metadata(&params)
        .await
        .unwrap()
    {
        left.push(format!("StatefulSet/{}", object.name_any()));
    }
    for object in namespace
        .api::<Service>()
        .list_metadata(&params)
        .await
        .unwrap()
    {
        left.push(format!("Service/{}", object.name_any()));
    }
    left
}

/// The database Secrets of Marketplace `name`, by name.
async fn database_secrets(namespace: &TestNamespace, name: &str) -> Vec<Secret> {
    let params = ListParams::default().labels(&selector(name));
    let mut secrets = namespace.api::<Secret>().list(&params).await.unwrap().items;
    secrets.sort_by_key(ResourceExt::name_any);
    secrets
}

/// Creates Marketplace `shop` with every store managed and waits until its
/// claims are bound and it is Ready; returns the claims.
async fn create_with_claims(
    namespace: &TestNamespace,
    spec: MarketplaceSpec,
) -> Vec<PersistentVolumeClaim> {
    create(namespace, "shop", spec).await;
    let claims = namespace.api::<PersistentVolumeClaim>();
    // The StatefulSet controller makes the claims before the pods; the
    // host-path provisioner of kube-controller-manager binds them.
    for claim in claim_names("shop") {
        eventually(&format!("claim {claim} to be Bound"), CONVERGE, || async {
            get(&claims, &claim)
                .await
                .filter(|claim| {
                    claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
                })
                .map(drop)
        })
        .await;
    }
    wait_ready(namespace, "shop").await;
    // Read after Ready: the StatefulSet controller sets the claims' owners
    // when it reconciles the set, not necessarily when it creates them.
    let mut bound = Vec::new();
    for claim in claim_names("shop") {
        bound.push(get(&claims, &claim).await.unwrap());
    }
    bound
}

/// Deletes Marketplace `shop` with kubectl, as a user would, and waits for
/// its workloads and Services to be garbage-collected.
async fn delete_and_collect(namespace: &TestNamespace) {
    let output = namespace
        .kubectl()
        .args(["delete", "marketplace", "shop", "--wait=true"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl delete: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eventually(
        "the Marketplace's children to be garbage-collected",
        CONVERGE,
        || async {
            children_left(namespace, "shop")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
}

/// The kinds and names of the owners of `claim`.
fn owners(claim: &PersistentVolumeClaim) -> Vec<(String, String)> {
    claim
        .owner_references()
        .iter()
        .map(|owner| (owner.kind.clone(), owner.name.clone()))
        .collect()
}

#[tokio::test]
async fn deleting_a_marketplace_collects_its_workloads_and_keeps_its_database_claims() {
    let Some(namespace) = kubernetes::namespace().await else {
        return;
    };
    let _one = ONE_OPERATOR.lock().await;
    install_crd(namespace.client()).await;
    let _operator = start_operator(&namespace);
    for claim in create_with_claims(&namespace, MarketplaceSpec::default()).await {
        // whenDeleted=Retain: nothing owns the claims, nothing collects them.
        assert_eq!(owners(&claim), [], "{}", claim.name_any());
    }
    let secrets = database_secrets(&namespace, "shop").await;
    assert_eq!(secrets.len(), 2, "the two database Secrets");

    delete_and_collect(&namespace).await;

    // The workloads are gone, so their pods too: nothing the claims wait for.
    let claims = namespace.api::<PersistentVolumeClaim>();
    eventually("the StatefulSets' pods to go", CONVERGE, || async {
        let pods = namespace
            .api::<k8s_openapi::api::core::v1::Pod>()
            .list_metadata(&ListParams::default().labels("app.kubernetes.io/instance=shop"))
            .await
            .unwrap();
        pods.items.is_empty().then_some(())
    })
    .await;
    for claim in claim_names("shop") {
        let kept = get(&claims, &claim).await;
        let kept = kept.unwrap_or_else(|| panic!("claim {claim} was deleted"));
        assert_eq!(owners(&kept), [], "{claim}");
        assert!(
            kept.metadata.deletion_timestamp.is_none(),
            "claim {claim} is being deleted"
        );
    }
    // The passwords the kept volumes were initialised with stay too, and a
    // Marketplace created again under the same name uses them.
    let kept = database_secrets(&namespace, "shop").await;
    assert_eq!(
        uids(&kept),
        uids(&secrets),
        "the database Secrets were deleted"
    );
    create_with_claims(&namespace, MarketplaceSpec::default()).await;
    let reused = database_secrets(&namespace, "shop").await;
    assert_eq!(uids(&reused), uids(&secrets));
    for (before, after) in secrets.iter().zip(&reused) {
        assert_eq!(
            before.data.as_ref().unwrap()["password"],
            after.data.as_ref().unwrap()["password"],
            "{}",
            before.name_any()
        );
    }
}

fn uids(objects: &[Secret]) -> Vec<String> {
    objects.iter().filter_map(ResourceExt::uid).collect()
}

#[tokio::test]
async fn deleting_a_marketplace_that_asks_for_it_deletes_its_claims_even_of_a_database_gone_external()
 {
    let Some(namespace) = kubernetes::namespace().await else {
        return;
    };
    let _one = ONE_OPERATOR.lock().await;
    install_crd(namespace.client()).await;
    let _operator = start_operator(&namespace);
    create_with_claims(
        &namespace,
        spec(json!({ "volumes": { "deleteWithMarketplace": true } })),
    )
    .await;
    // The Marketplace owns the claims (the StatefulSets do not: deleting
    // one must not delete its data).
    let claims = namespace.api::<PersistentVolumeClaim>();
    for claim in claim_names("shop") {
        eventually(
            &format!("claim {claim} to be owned by the Marketplace alone"),
            CONVERGE,
            || async {
                let claim = get(&claims, &claim).await?;
                (owners(&claim) == [("Marketplace".to_owned(), "shop".to_owned())]).then_some(())
            },
        )
        .await;
    }

    // The order database goes external: its StatefulSet goes, its claim stays.
    namespace
        .api::<Marketplace>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "order": { "database": {
                "managed": null,
                "external": { "secretRef": { "name": "orders-db" } },
            } } } })),
        )
        .await
        .unwrap();
    let sets = namespace.api::<StatefulSet>();
    eventually(
        "the order database's StatefulSet to go",
        CONVERGE,
        || async { get(&sets, "shop-order-db").await.is_none().then_some(()) },
    )
    .await;
    // Give the garbage collector time to act on the claim if anything
    // (wrongly) made the StatefulSet its owner.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = get(&claims, "data-shop-order-db-0")
        .await
        .expect("the claim of the database gone external was deleted with its StatefulSet");
    assert!(kept.metadata.deletion_timestamp.is_none());

    // Deleting the Marketplace deletes every claim, that one too, and the
    // database Secrets.
    delete_and_collect(&namespace).await;
    eventually("the database Secrets to be deleted", CONVERGE, || async {
        database_secrets(&namespace, "shop")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    eventually("the claims to be deleted", CONVERGE, || async {
        for claim in claim_names("shop") {
            if get(&claims, &claim).await.is_some() {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test]
async fn marketplaces_side_by_side_get_only_their_own_children_and_changes_stay_their_own() {
    let Some(first) = kubernetes::namespace().await else {
        return;
    };
    let Some(second) = kubernetes::namespace().await else {
        return;
    };
    let _one = ONE_OPERATOR.lock().await;
    install_crd(first.client()).await;
    let _operator = start_operator(&first);
    // Two in one namespace, and one with the same name as the first in another.
    let instances = [(&first, "alpha"), (&first, "beta"), (&second, "alpha")];
    let mut created = Vec::new();
    for (namespace, name) in instances {
        created.push(create(namespace, name, MarketplaceSpec::default()).await);
    }
    for (namespace, name) in instances {
        wait_ready(namespace, name).await;
    }

    // Each Deployment belongs to the Marketplace of its name and namespace.
    for ((namespace, name), marketplace) in instances.iter().zip(&created) {
        let deployments = namespace
            .api::<Deployment>()
            .list(&ListParams::default().labels(&selector(name)))
            .await
            .unwrap();
        let mut names: Vec<String> = deployments.iter().map(ResourceExt::name_any).collect();
        names.sort();
        assert_eq!(
            names,
            ["account", "catalog", "gateway", "order"]
                .map(|component| format!("{name}-{component}")),
            "in {}",
            namespace.name()
        );
        for deployment in &deployments {
            let owners = deployment.owner_references();
            assert_eq!(owners.len(), 1, "{}: {owners:?}", deployment.name_any());
            assert_eq!(Some(&owners[0].uid), marketplace.metadata.uid.as_ref());
            assert_eq!(owners[0].name, *name);
        }
    }
    // Every child in the shared namespace is one Marketplace's, by label and owner.
    for (name, marketplace) in [("alpha", &created[0]), ("beta", &created[1])] {
        for object in first
            .api::<Service>()
            .list_metadata(&ListParams::default().labels(&selector(name)))
            .await
            .unwrap()
        {
            assert!(
                object.name_any().starts_with(&format!("{name}-")),
                "{}",
                object.name_any()
            );
            let owners = object.owner_references();
            assert_eq!(owners.len(), 1, "{}: {owners:?}", object.name_any());
            assert_eq!(Some(&owners[0].uid), marketplace.metadata.uid.as_ref());
        }
    }

    let others_before = [
        versions(&first, "beta").await,
        versions(&second, "alpha").await,
    ];
    let patched = first
        .api::<Marketplace>()
        .patch(
            "alpha",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "account": { "replicas": 2 } } })),
        )
        .await
        .unwrap();
    let deployments = first.api::<Deployment>();
    eventually("alpha-account to have 2 replicas", CONVERGE, || async {
        get(&deployments, "alpha-account")
            .await
            .filter(|deployment| deployment.spec.as_ref().and_then(|spec| spec.replicas) == Some(2))
    })
    .await;
    let ready = wait_ready(&first, "alpha").await;
    assert_eq!(
        ready.status.unwrap().observed_generation,
        patched.metadata.generation
    );
    assert_eq!(
        get(&deployments, "beta-account")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(1)
    );
    let others_after = [
        versions(&first, "beta").await,
        versions(&second, "alpha").await,
    ];
    assert_eq!(others_after, others_before);
}

#[tokio::test]
async fn the_deployments_follow_the_replicas_and_the_image_tag_and_the_generation_is_observed() {
    let Some(namespace) = kubernetes::namespace().await else {
        return;
    };
    let _one = ONE_OPERATOR.lock().await;
    install_crd(namespace.client()).await;
    let _operator = start_operator(&namespace);
    create(&namespace, "shop", MarketplaceSpec::default()).await;
    let before = wait_ready(&namespace, "shop").await;

    let patched = namespace
        .api::<Marketplace>()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": {
                "account": { "replicas": 3 },
                "image": { "tag": "9.9.9-lifecycle" },
            } })),
        )
        .await
        .unwrap();
    assert!(patched.metadata.generation > before.metadata.generation);

    let deployments = namespace.api::<Deployment>();
    let image = format!("{}:9.9.9-lifecycle", patched.spec.image.repository);
    for (component, replicas) in [("account", 3), ("catalog", 1), ("order", 1)] {
        let name = format!("shop-{component}");
        eventually(
            &format!("Deployment {name} to run {image} with {replicas} replicas"),
            CONVERGE,
            || async {
                let deployment = get(&deployments, &name).await?;
                let spec = deployment.spec.as_ref()?;
                let images: Vec<&str> = spec
                    .template
                    .spec
                    .as_ref()?
                    .containers
                    .iter()
                    .filter_map(|container| container.image.as_deref())
                    .collect();
                (spec.replicas == Some(replicas) && images == [image.as_str()]).then_some(())
            },
        )
        .await;
    }
    // kwok makes the new pods ready: the new generation is observed and Ready.
    let after = wait_ready(&namespace, "shop").await;
    let observed = after.status.unwrap().observed_generation;
    assert_eq!(observed, patched.metadata.generation);
    assert!(observed > before.status.unwrap().observed_generation);
}

#[tokio::test]
async fn an_operator_killed_mid_reconcile_converges_when_started_again() {
    let Some(namespace) = kubernetes::namespace().await else {
        return;
    };
    let _one = ONE_OPERATOR.lock().await;
    install_crd(namespace.client()).await;
    let mut operator = start_operator(&namespace);
    create(&namespace, "shop", MarketplaceSpec::default()).await;
    // Kill it as soon as it has made its first child: the database Secrets
    // come first, the workloads later.
    let secrets = namespace.api::<Secret>();
    let secret = eventually("Secret shop-account-db", CONVERGE, || {
        get(&secrets, "shop-account-db")
    })
    .await;
    operator.kill();
    let log = operator.log();
    // A later failure prints the log of the restarted operator only.
    drop(operator);
    let deployments = namespace.api::<Deployment>();
    let made_before_kill = deployments
        .list_metadata(&ListParams::default().labels(&selector("shop")))
        .await
        .unwrap()
        .items
        .len();
    eprintln!(
        "killed with {made_before_kill} of 4 Deployments made; log:\n{}",
        log.lines()
            .filter(|line| line.contains("applied"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let _operator = start_operator(&namespace);
    wait_ready(&namespace, "shop").await;
    for component in ["gateway", "account", "catalog", "order"] {
        assert!(
            get(&deployments, &format!("shop-{component}"))
                .await
                .is_some(),
            "no Deployment shop-{component}"
        );
    }
    // The restarted operator read the password back rather than making a new one.
    let after = get(&secrets, "shop-account-db").await.unwrap();
    assert_eq!(after.uid(), secret.uid());
    assert_eq!(
        after.data.unwrap()["password"],
        secret.data.unwrap()["password"]
    );
}

#[tokio::test]
async fn a_converged_marketplace_gets_no_writes() {
    let Some(namespace) = kubernetes::namespace().await else {
        return;
    };
    let _one = ONE_OPERATOR.lock().await;
    install_crd(namespace.client()).await;
    let operator = start_operator(&namespace);
    create(&namespace, "shop", MarketplaceSpec::default()).await;
    wait_ready(&namespace, "shop").await;
    let versions_before = versions(&namespace, "shop").await;
    let writes_before = writes_in(&operator, namespace.name());
    assert!(
        !writes_before.is_empty(),
        "the operator logs no line per write any more; this test counts them"
    );

    // The acceptance criterion: a whole minute without a write. (Every
    // event the operator publishes follows a status update, so the log
    // lines cover events too.)
    tokio::time::sleep(Duration::from_secs(60)).await;

    assert_eq!(versions(&namespace, "shop").await, versions_before);
    assert_eq!(writes_in(&operator, namespace.name()), writes_before);
}
