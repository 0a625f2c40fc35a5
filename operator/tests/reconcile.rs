//! The operator binary against the real kube-apiserver of the kwok cluster:
//! a Marketplace becomes its children, becomes Ready when kwok makes the
//! pods ready, and its children follow changes of the spec and of the
//! cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{CONVERGE, Operator, get, install_crd};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use marketplace_operator::crd::{Marketplace, MarketplaceSpec};
use marketplace_operator::reconcile::APPLIED_HASH;
use marketplace_testkit::eventually;
use marketplace_testkit::kubernetes;
use serde_json::json;

/// Asserts a child carries the marketplace's labels, its controller owner
/// reference and the applied hash.
fn assert_child<K: Resource>(object: &K, owner: &Marketplace, component: &str) {
    assert_child_owned_by(object, Some(owner), component);
}

/// [`assert_child`], for a child the Marketplace owns (`Some`) or one that
/// nothing owns (`None`).
fn assert_child_owned_by<K: Resource>(object: &K, owner: Option<&Marketplace>, component: &str) {
    let meta = object.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    let labels = meta.labels.clone().unwrap_or_default();
    assert_eq!(labels["app.kubernetes.io/name"], "marketplace", "{name}");
    assert_eq!(labels["app.kubernetes.io/instance"], "shop", "{name}");
    assert_eq!(labels["app.kubernetes.io/component"], component, "{name}");
    assert_eq!(
        labels["app.kubernetes.io/managed-by"], "marketplace-operator",
        "{name}"
    );
    let owners = meta.owner_references.clone().unwrap_or_default();
    match owner {
        Some(owner) => assert!(
            owners
                .iter()
                .any(|reference| reference.kind == "Marketplace"
                    && Some(&reference.uid) == owner.metadata.uid.as_ref()
                    && reference.controller == Some(true)),
            "{name} is not controlled by the Marketplace: {owners:?}"
        ),
        None => assert_eq!(owners, [], "{name} has owners"),
    }
    assert!(
        meta.annotations
            .as_ref()
            .is_some_and(|annotations| annotations.contains_key(APPLIED_HASH)),
        "{name} has no {APPLIED_HASH} annotation"
    );
}

/// Waits until Marketplace `shop` is Ready at its current generation, and
/// returns it.
async fn wait_ready(marketplaces: &Api<Marketplace>) -> Marketplace {
    common::wait_ready_as(marketplaces, "shop", "the Marketplace to be Ready").await
}

#[tokio::test]
async fn a_marketplace_becomes_its_children_follows_its_spec_and_heals() {
    let Some(namespace) = kubernetes::namespace().await else {
        return;
    };
    install_crd(namespace.client()).await;
    let _operator = Operator::start(&namespace);
    let secrets = namespace.api::<Secret>();
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("orders-db".to_owned()),
                    ..ObjectMeta::default()
                },
                data: Some(
                    [(
                        "url".to_owned(),
                        ByteString(b"postgres://orders@db.example:5432/orders".to_vec()),
                    )]
                    .into(),
                ),
                ..Secret::default()
            },
        )
        .await
        .unwrap();
    let spec: MarketplaceSpec = serde_json::from_value(json!({
        "account": { "database": { "managed": {} } },
        "order": { "database": { "external": { "secretRef": { "name": "orders-db" } } } },
        "catalog": { "search": { "managed": {} } },
    }))
    .unwrap();
    let marketplaces = namespace.api::<Marketplace>();
    let created = marketplaces
        .create(&PostParams::default(), &Marketplace::new("shop", spec))
        .await
        .unwrap();
    let deployments = namespace.api::<Deployment>();
    let services = namespace.api::<Service>();
    let stateful_sets = namespace.api::<StatefulSet>();

    // Every child, labelled and owned.
    for component in ["gateway", "account", "catalog", "order"] {
        let name = format!("shop-{component}");
        let deployment = eventually(&format!("Deployment {name}"), CONVERGE, || {
            get(&deployments, &name)
        })
        .await;
        assert_child(&deployment, &created, component);
        let service = eventually(&format!("Service {name}"), CONVERGE, || {
            get(&services, &name)
        })
        .await;
        assert_child(&service, &created, component);
    }
    let secret = eventually("Secret shop-account-db", CONVERGE, || {
        get(&secrets, "shop-account-db")
    })
    .await;
    // The password outlives the Marketplace with the volume it initialised
    // (volumes are kept by default).
    assert_child_owned_by(&secret, None, "account-db");
    let password = secret.data.as_ref().unwrap()["password"].clone();
    assert!(!password.0.is_empty());
    for (name, component) in [("shop-account-db", "account-db"), ("shop-search", "search")] {
        let service = eventually(&format!("Service {name}"), CONVERGE, || {
            get(&services, name)
        })
        .await;
        assert_child(&service, &created, component);
        let stateful_set = eventually(&format!("StatefulSet {name}"), CONVERGE, || {
            get(&stateful_sets, name)
        })
        .await;
        assert_child(&stateful_set, &created, component);
    }

    // kwok makes the pods ready: the Marketplace becomes Ready.
    let ready = wait_ready(&marketplaces).await;
    let conditions: Vec<(&str, &str)> = ready
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .map(|condition| (condition.type_.as_str(), condition.status.as_str()))
        .collect();
    for expected in [
        ("Ready", "True"),
        ("Progressing", "False"),
        ("Degraded", "False"),
        ("AccountReady", "True"),
        ("CatalogReady", "True"),
        ("OrderReady", "True"),
        ("AccountDatabaseReady", "True"),
        ("SearchReady", "True"),
    ] {
        assert!(
            conditions.contains(&expected),
            "{expected:?} not in {conditions:?}"
        );
    }
    // The external order database gets no store of the operator's.
    assert!(get(&stateful_sets, "shop-order-db").await.is_none());
    assert!(get(&secrets, "shop-order-db").await.is_none());
    assert!(get(&services, "shop-order-db").await.is_none());

    // Disabling the catalog removes its children and those of its search store.
    let patched = marketplaces
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "catalog": { "enabled": false } } })),
        )
        .await
        .unwrap();
    assert!(patched.metadata.generation > created.metadata.generation);
    eventually("the catalog's children to be deleted", CONVERGE, || async {
        let gone = get(&deployments, "shop-catalog").await.is_none()
            && get(&services, "shop-catalog").await.is_none()
            && get(&services, "shop-search").await.is_none()
            && get(&stateful_sets, "shop-search").await.is_none();
        gone.then_some(())
    })
    .await;
    let ready = wait_ready(&marketplaces).await;
    assert_eq!(
        ready.status.unwrap().observed_generation,
        patched.metadata.generation
    );
    // The account database kept its password.
    let secret = get(&secrets, "shop-account-db").await.unwrap();
    assert_eq!(secret.data.unwrap()["password"], password);

    // A child deleted by hand comes back.
    let deleted = get(&deployments, "shop-account").await.unwrap();
    deployments
        .delete("shop-account", &DeleteParams::default())
        .await
        .unwrap();
    let recreated = eventually(
        "Deployment shop-account to be recreated",
        CONVERGE,
        || async {
            get(&deployments, "shop-account")
                .await
                .filter(|deployment| deployment.uid() != deleted.uid())
        },
    )
    .await;
    assert_child(&recreated, &created, "account");
}
