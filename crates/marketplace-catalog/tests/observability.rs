//! What the store tells about itself: every call timed and counted by
//! operation, whether the store is up, and why it is not ready yet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use marketplace_catalog::domain::{Product, ResultWindow, SearchText};
use marketplace_catalog::storage::{GuardedProducts, ProductStore, Products, StorageError};
use marketplace_config::SecretUrl;
use marketplace_domain::{Id, Money, Page, Text, TextRule};
use marketplace_grpc::Shared;

/// A guarded store on `url`, and the process's metrics.
async fn guarded(url: &str, index: &str) -> (GuardedProducts, Shared) {
    let shared = Shared::default();
    let products = Products::open(&SecretUrl::new(url), index).await.unwrap();
    (GuardedProducts::new(products, &shared), shared)
}

async fn ready(store: &GuardedProducts) {
    let readiness = store.readiness();
    marketplace_testkit::eventually(
        "the product store is ready",
        Duration::from_secs(60),
        || {
            let ready = readiness.is_ready();
            async move { ready.then_some(()) }
        },
    )
    .await;
}

/// The value of the series `series` (name and labels, exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

fn product(name: &str) -> Product {
    Product::create(
        Text::parse(name, TextRule::PRODUCT_NAME).unwrap(),
        Text::parse("A lamp of brass", TextRule::PRODUCT_DESCRIPTION).unwrap(),
        Money::from_minor_units(1250).unwrap(),
    )
}

async fn each_call_is_timed_and_counted_by_operation(store: GuardedProducts, shared: Shared) {
    ready(&store).await;
    let lamp = product("Lamp");
    let window = ResultWindow::new(Page::default()).unwrap();

    store.create(&lamp).await.unwrap();
    store.get(&lamp.id).await.unwrap();
    store
        .get_many(&[lamp.id.clone(), Id::generate()])
        .await
        .unwrap();
    store.list(window).await.unwrap();
    store
        .search(&SearchText::parse("lamp").unwrap(), window)
        .await
        .unwrap();

    let text = shared.metrics.render();
    let label = store_label(&text);
    for operation in ["create", "get", "get_many", "list", "search"] {
        let series = format!(
            r#"marketplace_store_operation_seconds_count{{component="catalog",operation="{operation}",store="{label}"}}"#
        );
        assert_eq!(sample(&text, &series), Some(1.0), "{series} in {text}");
    }
    // Nothing failed: every error series is there, at 0.
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("marketplace_store_errors_total{"))
        .collect();
    assert_eq!(errors.len(), 10, "two kinds for each operation: {text}");
    assert!(
        errors.iter().all(|line| line.ends_with(" 0")),
        "nothing failed: {text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"marketplace_store_up{{component="catalog",store="{label}"}}"#)
        ),
        Some(1.0),
        "{text}"
    );
}

/// The one `store` label of the catalog's store metrics in `text`.
fn store_label(text: &str) -> &str {
    let start = text
        .find(r#"marketplace_store_up{component="catalog",store=""#)
        .unwrap();
    let rest = &text[start..];
    let rest = &rest[rest.find("store=\"").unwrap() + 7..];
    &rest[..rest.find('"').unwrap()]
}

#[tokio::test]
async fn each_elasticsearch_call_is_timed_and_counted_by_operation() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    let (store, shared) = guarded(index.url(), index.name()).await;
    each_call_is_timed_and_counted_by_operation(store, shared).await;
}

#[tokio::test]
async fn each_tantivy_call_is_timed_and_counted_by_operation() {
    let directory = tempfile::TempDir::new().unwrap();
    let url = format!("tantivy://{}", directory.path().join("index").display());
    let (store, shared) = guarded(&url, "unused").await;
    assert!(
        store.readiness().is_ready(),
        "an embedded index is ready at once"
    );
    each_call_is_timed_and_counted_by_operation(store, shared).await;
}

#[tokio::test]
async fn an_index_with_the_seed_mapping_is_never_ready_and_calls_say_why() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    index
        .create(serde_json::json!({
            "mappings": {
                "properties": {
                    "id": { "type": "keyword" },
                    "name": { "type": "text" },
                    "description": { "type": "text" },
                    "price": { "type": "float" },
                    "created_at": { "type": "date" }
                }
            }
        }))
        .await;
    let (store, shared) = guarded(index.url(), index.name()).await;

    let reason = marketplace_testkit::eventually(
        "a call fails naming why the store is not ready",
        Duration::from_secs(30),
        || async {
            match store.get(&Id::generate()).await {
                Err(StorageError::NotReady(Some(reason))) => Some(reason.to_string()),
                Err(StorageError::NotReady(None)) => None,
                other => panic!("{other:?}"),
            }
        },
    )
    .await;

    for needle in [
        index.name(),
        "price_minor_units",
        "MARKETPLACE_CATALOG_INDEX_NAME",
    ] {
        assert!(reason.contains(needle), "{needle:?} not in {reason}");
    }
    assert!(!store.readiness().is_ready());
    let text = shared.metrics.render();
    assert_eq!(
        sample(
            &text,
            r#"marketplace_store_up{component="catalog",store="elasticsearch"}"#
        ),
        Some(0.0),
        "{text}"
    );
}
