//! Proves the Elasticsearch that `cargo xtask test` starts is a real 7.17
//! node that analyses and ranks text, and that test indices are removed.

// Test code: a failed unwrap is a failed test, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use elasticsearch::indices::IndicesExistsParts;
use elasticsearch::params::Refresh;
use elasticsearch::{IndexParts, SearchParts};
use serde_json::{Value, json};

/// The seed architecture's product mapping.
fn product_mapping() -> Value {
    json!({
        "mappings": {
            "properties": {
                "id": { "type": "keyword" },
                "name": { "type": "text" },
                "description": { "type": "text" },
                "price": { "type": "float" },
                "created_at": { "type": "date" }
            }
        }
    })
}

async fn search_ids(
    index: &marketplace_testkit::elasticsearch::TestIndex,
    text: &str,
) -> Vec<String> {
    let response = index
        .client()
        .search(SearchParts::Index(&[index.name()]))
        .body(json!({
            "query": {
                "multi_match": { "query": text, "fields": ["name^2", "description"] }
            }
        }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status_code().is_success(),
        "search: {}",
        response.status_code()
    );
    let body: Value = response.json().await.unwrap();
    body["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| hit["_source"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_node_is_a_real_elasticsearch_7_17() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };

    let response = index.client().info().send().await.unwrap();
    let body: Value = response.json().await.unwrap();

    let number = body["version"]["number"].as_str().unwrap_or_default();
    assert!(number.starts_with("7.17."), "version {number:?} in {body}");
    assert_eq!(body["tagline"], "You Know, for Search");
}

#[tokio::test]
async fn multi_match_over_name_and_description_finds_and_ranks_products() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    index.create(product_mapping()).await;
    let products = [
        (
            "kb",
            "Wireless Keyboard",
            "A compact keyboard with a long battery life",
            49.90,
        ),
        (
            "hub",
            "USB Hub",
            "Four ports; pairs well with a wireless keyboard",
            19.99,
        ),
        ("lamp", "Desk Lamp", "Warm light for late nights", 24.50),
        (
            "mouse",
            "Wireless Mouse",
            "Ergonomic, with a matching keyboard sold apart",
            29.00,
        ),
    ];
    for (id, name, description, price) in products {
        let response = index
            .client()
            .index(IndexParts::IndexId(index.name(), id))
            .body(json!({
                "id": id, "name": name, "description": description,
                "price": price, "created_at": "2026-11-24T12:00:00Z"
            }))
            .refresh(Refresh::WaitFor)
            .send()
            .await
            .unwrap();
        assert!(
            response.status_code().is_success(),
            "indexing {id}: {}",
            response.status_code()
        );
    }

    let keyboard = search_ids(&index, "wireless keyboard").await;
    let lamp = search_ids(&index, "LAMP").await;
    let nothing = search_ids(&index, "espresso").await;

    // Both words in the (boosted) name beat matches spread over fields.
    assert_eq!(
        keyboard.first().map(String::as_str),
        Some("kb"),
        "{keyboard:?}"
    );
    let mut found = keyboard.clone();
    found.sort();
    assert_eq!(found, ["hub", "kb", "mouse"], "{keyboard:?}");
    assert_eq!(lamp, ["lamp"]);
    assert!(nothing.is_empty(), "{nothing:?}");
}

#[tokio::test]
async fn the_mapping_is_stored_as_given() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    index.create(product_mapping()).await;

    let response = index
        .client()
        .indices()
        .get_mapping(elasticsearch::indices::IndicesGetMappingParts::Index(&[
            index.name(),
        ]))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();

    assert_eq!(body[index.name()], product_mapping());
}

#[tokio::test]
async fn test_indices_are_deleted_with_their_fixture() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    index.create(json!({})).await;
    let (name, client) = (index.name().to_owned(), index.client().clone());
    let exists = |client: elasticsearch::Elasticsearch, name: String| async move {
        client
            .indices()
            .exists(IndicesExistsParts::Index(&[&name]))
            .send()
            .await
            .unwrap()
            .status_code()
    };
    let before = exists(client.clone(), name.clone()).await;

    drop(index);
    let after = exists(client, name).await;

    assert_eq!(before.as_u16(), 200);
    assert_eq!(after.as_u16(), 404);
}
