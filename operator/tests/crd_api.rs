//! The generated CRD on the real kube-apiserver: what it accepts, what it
//! fills in, what it refuses and how `kubectl get` shows it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::install_crd;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use marketplace_operator::crd::{Marketplace, MarketplaceSpec};
use marketplace_testkit::kubernetes::{self, TestNamespace};
use serde_json::{Value, json};

/// A namespace of the test's own with the CRD installed; `None` without a
/// cluster.
async fn namespace() -> Option<TestNamespace> {
    let namespace = kubernetes::namespace().await?;
    install_crd(namespace.client()).await;
    Some(namespace)
}

/// Marketplaces as untyped objects, so tests can send what the Rust types
/// cannot express (missing fields, wrong values).
fn marketplaces(namespace: &TestNamespace) -> Api<DynamicObject> {
    Api::namespaced_with(
        namespace.client(),
        namespace.name(),
        &ApiResource::erase::<Marketplace>(&()),
    )
}

async fn create(namespace: &TestNamespace, name: &str, spec: Value) -> Result<Marketplace, String> {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "marketplace.dev/v1alpha1",
        "kind": "Marketplace",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .unwrap();
    match marketplaces(namespace)
        .create(&PostParams::default(), &object)
        .await
    {
        Ok(created) => Ok(serde_json::from_value(serde_json::to_value(created).unwrap()).unwrap()),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "unexpected refusal: {status:?}");
            Err(status.message)
        }
        Err(e) => panic!("creating Marketplace {name}: {e}"),
    }
}

/// Asserts the API server refuses `spec` with a message containing each of
/// `expected` (the field path and what is wrong with it).
async fn assert_refused(spec: Value, expected: &[&str]) {
    let Some(namespace) = namespace().await else {
        return;
    };

    let message = create(&namespace, "refused", spec)
        .await
        .expect_err("the API server accepted an invalid Marketplace");

    for part in expected {
        assert!(
            message.contains(part),
            "the refusal {message:?} does not contain {part:?}"
        );
    }
}

#[tokio::test]
async fn the_example_is_accepted_and_the_omitted_fields_are_defaulted() {
    let Some(namespace) = namespace().await else {
        return;
    };
    let example: Value =
        serde_yaml::from_str(include_str!("../../examples/marketplace.yaml")).unwrap();

    let created = create(&namespace, "shop", example["spec"].clone())
        .await
        .unwrap();

    let spec = created.spec;
    assert_eq!(spec.image.tag, env!("CARGO_PKG_VERSION"));
    assert_eq!(spec.gateway.replicas, 2);
    assert!(spec.gateway.enabled);
    assert!(spec.order.enabled);
    let order_database = spec.order.database.managed.unwrap();
    assert_eq!(order_database.image, "postgres:15");
    assert_eq!(
        spec.catalog.search.managed.unwrap().image,
        "docker.elastic.co/elasticsearch/elasticsearch:7.17.29"
    );
}

#[tokio::test]
async fn an_empty_spec_is_defaulted_by_the_api_server_exactly_as_the_rust_defaults() {
    let Some(namespace) = namespace().await else {
        return;
    };

    let created = create(&namespace, "empty", json!({})).await.unwrap();

    assert_eq!(created.spec, MarketplaceSpec::default());
}

#[tokio::test]
async fn an_external_database_is_accepted_without_a_managed_default() {
    let Some(namespace) = namespace().await else {
        return;
    };

    let created = create(
        &namespace,
        "external",
        json!({
            "account": { "database": { "external": { "secretRef": { "name": "accounts" } } } },
            "catalog": { "search": { "external": { "url": "http://search:9200" } } },
        }),
    )
    .await
    .unwrap();

    assert_eq!(created.spec.account.database.managed, None);
    let external = created.spec.account.database.external.unwrap();
    assert_eq!(external.secret_ref.key, "url");
    assert_eq!(created.spec.catalog.search.managed, None);
}

#[tokio::test]
async fn a_name_longer_than_its_children_allow_is_refused_and_the_longest_allowed_is_accepted() {
    let Some(namespace) = namespace().await else {
        return;
    };
    let longest = "m".repeat(marketplace_operator::crd::MAX_NAME_LENGTH);

    let message = create(&namespace, &format!("{longest}x"), json!({}))
        .await
        .expect_err("the API server accepted a name too long for the children");
    assert!(
        message.contains("metadata.name may have at most 41 characters"),
        "{message}"
    );
    create(&namespace, &longest, json!({}))
        .await
        .expect("the longest name allowed is refused");
}

#[tokio::test]
async fn negative_replicas_are_refused() {
    assert_refused(
        json!({ "gateway": { "replicas": -1 } }),
        &["spec.gateway.replicas", "greater than or equal to 0"],
    )
    .await;
}

#[tokio::test]
async fn more_than_a_hundred_replicas_are_refused() {
    assert_refused(
        json!({ "order": { "replicas": 101 } }),
        &["spec.order.replicas", "less than or equal to 100"],
    )
    .await;
}

#[tokio::test]
async fn a_database_both_managed_and_external_is_refused() {
    assert_refused(
        json!({ "account": { "database": {
            "managed": {},
            "external": { "secretRef": { "name": "accounts" } },
        } } }),
        &[
            "spec.account.database",
            "exactly one of managed or external must be set",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_database_neither_managed_nor_external_is_refused() {
    assert_refused(
        json!({ "order": { "database": {} } }),
        &[
            "spec.order.database",
            "exactly one of managed or external must be set",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_search_store_both_managed_and_external_is_refused() {
    assert_refused(
        json!({ "catalog": { "search": {
            "managed": {},
            "external": { "url": "http://search:9200" },
        } } }),
        &[
            "spec.catalog.search",
            "exactly one of managed or external must be set",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_storage_size_that_is_not_a_quantity_is_refused() {
    assert_refused(
        json!({ "account": { "database": { "managed": { "storage": "lots" } } } }),
        &[
            "spec.account.database.managed.storage",
            "must be a Kubernetes quantity greater than zero",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_zero_storage_size_is_refused() {
    assert_refused(
        json!({ "catalog": { "search": { "managed": { "storage": "0Gi" } } } }),
        &[
            "spec.catalog.search.managed.storage",
            "must be a Kubernetes quantity greater than zero",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_heap_without_a_unit_is_refused() {
    assert_refused(
        json!({ "catalog": { "search": { "managed": { "heap": "512" } } } }),
        &["spec.catalog.search.managed.heap", "should match"],
    )
    .await;
}

#[tokio::test]
async fn a_scrape_interval_that_is_not_a_duration_is_refused() {
    assert_refused(
        json!({ "monitoring": { "interval": "often" } }),
        &["spec.monitoring.interval", "should match"],
    )
    .await;
}

#[tokio::test]
async fn a_gateway_port_out_of_range_is_refused() {
    assert_refused(
        json!({ "gateway": { "service": { "port": 70000 } } }),
        &["spec.gateway.service.port", "less than or equal to 65535"],
    )
    .await;
}

#[tokio::test]
async fn an_unknown_service_type_is_refused() {
    assert_refused(
        json!({ "gateway": { "service": { "type": "External" } } }),
        &["spec.gateway.service.type", "Unsupported value"],
    )
    .await;
}

#[tokio::test]
async fn kubectl_get_mp_shows_ready_gateway_and_age() {
    let Some(namespace) = namespace().await else {
        return;
    };
    create(&namespace, "shop", json!({})).await.unwrap();
    let status = json!({ "status": {
        "observedGeneration": 1,
        "conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "AllComponentsReady",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }],
        "gatewayEndpoint": "shop-gateway.example:8080",
    } });
    marketplaces(&namespace)
        .patch_status("shop", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();

    let output = namespace.kubectl().args(["get", "mp"]).output().unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kubectl get mp failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "GATEWAY", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..3], ["shop", "True", "shop-gateway.example:8080"]);
}
