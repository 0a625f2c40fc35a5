//! The product store contract: the same checks against Elasticsearch and
//! against an embedded tantivy index.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use futures::future::try_join_all;
use marketplace_catalog::domain::{Product, ResultWindow, SearchText};
use marketplace_catalog::storage::{
    ElasticsearchProducts, ProductStore, StorageError, TantivyProducts,
};
use marketplace_config::SecretUrl;
use marketplace_domain::{Id, Money, Page, Text, TextRule};

fn product(name: &str, description: &str, minor_units: i64) -> Product {
    Product::create(
        Text::parse(name, TextRule::PRODUCT_NAME).unwrap(),
        Text::parse(description, TextRule::PRODUCT_DESCRIPTION).unwrap(),
        Money::from_minor_units(minor_units).unwrap(),
    )
}

/// Creates and stores products one after another, so each is newer than
/// the last.
async fn create_in_order<S: ProductStore>(store: &S, specs: &[(&str, &str, i64)]) -> Vec<Product> {
    let mut products = Vec::new();
    for (name, description, minor_units) in specs {
        let created = product(name, description, *minor_units);
        store.create(&created).await.unwrap();
        products.push(created);
    }
    products
}

fn window(skip: u32, take: u32) -> ResultWindow {
    ResultWindow::new(Page::new(skip, take)).unwrap()
}

fn search_text(text: &str) -> SearchText {
    SearchText::parse(text).unwrap()
}

fn ids(products: &[Product]) -> Vec<Id> {
    products.iter().map(|p| p.id.clone()).collect()
}

fn names(products: &[Product]) -> Vec<&str> {
    products.iter().map(|p| p.name.as_str()).collect()
}

async fn a_created_product_reads_back_with_every_field_equal<S: ProductStore>(store: &S) {
    let products = create_in_order(
        store,
        &[
            ("Pencil", "Graphite, HB", 10),
            ("Zoë's \"lamp\" 🚀", "Line one\nline two\tend", 1999),
            ("Free sample", "Costs nothing", 0),
            ("Yacht", "The dearest thing", 10_000_000_000_000),
        ],
    )
    .await;

    for created in &products {
        let read = store.get(&created.id).await.unwrap();

        assert_eq!(read.as_ref(), Some(created));
    }
}

async fn an_unknown_id_reads_as_none<S: ProductStore>(store: &S) {
    store.create(&product("Pencil", "HB", 10)).await.unwrap();

    let read = store.get(&Id::generate()).await.unwrap();

    assert_eq!(read, None);
}

async fn get_many_answers_each_known_id_once_and_leaves_out_unknown_ones<S: ProductStore>(
    store: &S,
) {
    let products = create_in_order(
        store,
        &[
            ("Pencil", "HB", 10),
            ("Eraser", "White", 20),
            ("Ruler", "30 cm", 70),
        ],
    )
    .await;
    let [a, b, c] = <[Product; 3]>::try_from(products.clone()).unwrap();
    let asked = [
        c.id.clone(),
        a.id.clone(),
        Id::generate(),
        c.id.clone(),
        b.id.clone(),
    ];

    let mut found = store.get_many(&asked).await.unwrap();

    found.sort_by(|x, y| x.id.cmp(&y.id));
    let mut expected = products.to_vec();
    expected.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(found, expected);
    assert!(store.get_many(&[]).await.unwrap().is_empty());
}

async fn get_many_answers_a_hundred_ids_in_one_call<S: ProductStore>(store: &S) {
    let products: Vec<Product> = (0..100)
        .map(|i| product(&format!("Item {i}"), "One of many", i))
        .collect();
    try_join_all(products.iter().map(|p| store.create(p)))
        .await
        .unwrap();

    let found = store.get_many(&ids(&products)).await.unwrap();

    let found: HashSet<Id> = found.into_iter().map(|p| p.id).collect();
    assert_eq!(found, ids(&products).into_iter().collect());
}

async fn list_is_newest_first_and_pages_with_skip_and_take<S: ProductStore>(store: &S) {
    let names_given: Vec<String> = (1..=5).map(|i| format!("Product {i}")).collect();
    let specs: Vec<(&str, &str, i64)> = names_given
        .iter()
        .map(|n| (n.as_str(), "Listed", 1))
        .collect();
    create_in_order(store, &specs).await;

    let all = store.list(ResultWindow::default()).await.unwrap();
    let page = store.list(window(1, 2)).await.unwrap();
    let beyond = store.list(window(5, 10)).await.unwrap();

    assert_eq!(
        names(&all),
        [
            "Product 5",
            "Product 4",
            "Product 3",
            "Product 2",
            "Product 1"
        ]
    );
    assert_eq!(names(&page), ["Product 4", "Product 3"]);
    assert!(beyond.is_empty());
}

async fn products_created_at_the_same_instant_list_by_id_highest_first<S: ProductStore>(store: &S) {
    let first = product("Twin", "Same instant", 1);
    let mut products: Vec<Product> = (0..4)
        .map(|_| Product {
            id: Id::generate(),
            ..first.clone()
        })
        .collect();
    for twin in &products {
        store.create(twin).await.unwrap();
    }

    let listed = store.list(ResultWindow::default()).await.unwrap();

    products.sort_by(|a, b| b.id.cmp(&a.id));
    assert_eq!(listed, products);
}

async fn search_ranks_a_name_match_above_a_description_only_match<S: ProductStore>(store: &S) {
    // The description-only match is the newer one, so recency cannot be
    // what puts the name match first.
    create_in_order(
        store,
        &[
            ("Walnut desk", "Sturdy furniture for a study", 25_000),
            ("Office chair", "Pairs well with a walnut desk", 9_900),
            ("Teapot", "Porcelain", 1_500),
        ],
    )
    .await;

    let found = store
        .search(&search_text("walnut"), ResultWindow::default())
        .await
        .unwrap();

    assert_eq!(names(&found), ["Walnut desk", "Office chair"]);
}

async fn search_finds_a_product_by_a_word_of_its_description<S: ProductStore>(store: &S) {
    create_in_order(
        store,
        &[
            ("Teapot", "Glazed porcelain, holds a litre", 1_500),
            ("Kettle", "Brushed steel", 3_000),
        ],
    )
    .await;

    let found = store
        .search(&search_text("PORCELAIN"), ResultWindow::default())
        .await
        .unwrap();

    assert_eq!(names(&found), ["Teapot"]);
}

async fn search_pages_with_skip_and_take<S: ProductStore>(store: &S) {
    create_in_order(
        store,
        &[
            ("Lamp", "A lamp", 1),
            ("Desk lamp", "Bright lamp for a desk", 2),
            ("Floor lamp", "Tall", 3),
            ("Rug", "Wool", 4),
        ],
    )
    .await;
    let text = search_text("lamp");

    let all = store.search(&text, ResultWindow::default()).await.unwrap();
    let first = store.search(&text, window(0, 2)).await.unwrap();
    let rest = store.search(&text, window(2, 2)).await.unwrap();

    assert_eq!(all.len(), 3);
    assert_eq!(first, all[..2]);
    assert_eq!(rest, all[2..]);
}

async fn query_syntax_is_searched_as_plain_words<S: ProductStore>(store: &S) {
    // The widget's description holds words of the first two queries on
    // both backends: Elasticsearch's standard analyser keeps `name:x` and
    // `match_all` whole, tantivy's splits them, but both see `or`, `1` and
    // the `match_all` of the text. The kettle and the towel hold no word of
    // any query, so a query read as syntax (match everything) would show.
    create_in_order(
        store,
        &[
            ("Widget", "The name of match_all or 1 widget", 100),
            ("Copper kettle", "Boils water quickly", 3_000),
            ("Linen towel", "Soft, absorbent cotton blend", 900),
        ],
    )
    .await;

    for text in ["name:x OR 1", r#"{"match_all":{}}"#] {
        let found = store
            .search(&search_text(text), ResultWindow::default())
            .await
            .unwrap_or_else(|e| panic!("searching {text:?}: {e}"));

        assert_eq!(names(&found), ["Widget"], "{text:?}");
    }
    for text in [
        "*",
        "\"unbalanced",
        "(",
        "\\",
        "AND",
        "description:*",
        "[ TO ]",
        "~2 ^3 -",
    ] {
        let found = store
            .search(&search_text(text), ResultWindow::default())
            .await
            .unwrap_or_else(|e| panic!("searching {text:?}: {e}"));

        assert!(found.is_empty(), "{text:?} found {:?}", names(&found));
    }
}

async fn creating_an_existing_id_is_refused_and_keeps_one_product<S: ProductStore>(store: &S) {
    let first = product("Pencil", "Graphite, HB", 10);
    store.create(&first).await.unwrap();
    let impostor = Product {
        name: Text::parse("Pencil case", TextRule::PRODUCT_NAME).unwrap(),
        ..first.clone()
    };

    let again = store.create(&impostor).await;
    let concurrent = futures::future::join_all((0..4).map(|_| store.create(&impostor))).await;

    assert!(
        matches!(again, Err(StorageError::Unexpected(_))),
        "{again:?}"
    );
    for result in concurrent {
        assert!(
            matches!(result, Err(StorageError::Unexpected(_))),
            "{result:?}"
        );
    }
    let one = std::slice::from_ref(&first);
    assert_eq!(store.list(ResultWindow::default()).await.unwrap(), one);
    assert_eq!(store.get(&first.id).await.unwrap().as_ref(), Some(&first));
    assert_eq!(
        store
            .get_many(std::slice::from_ref(&first.id))
            .await
            .unwrap(),
        one
    );
    let found = store
        .search(&search_text("pencil"), ResultWindow::default())
        .await
        .unwrap();
    assert_eq!(found, [first]);
}

async fn concurrent_creates_of_one_new_id_store_it_once<S: ProductStore>(store: &S) {
    let created = product("Pencil", "Graphite, HB", 10);

    let results = futures::future::join_all((0..8).map(|_| store.create(&created))).await;

    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        store.list(ResultWindow::default()).await.unwrap(),
        [created]
    );
}

async fn syntax_characters_around_a_word_still_find_the_word<S: ProductStore>(store: &S) {
    create_in_order(
        store,
        &[
            ("Copper kettle", "Boils water quickly", 3_000),
            ("Linen towel", "Soft cotton", 900),
        ],
    )
    .await;

    for text in ["kettle*", "\"kettle", "(kettle)", "+kettle -towel"] {
        let found = store
            .search(&search_text(text), ResultWindow::default())
            .await
            .unwrap();

        // `-towel` is a word to find, not an exclusion.
        let expected: &[&str] = if text.contains("towel") {
            &["Copper kettle", "Linen towel"]
        } else {
            &["Copper kettle"]
        };
        let mut found = names(&found);
        found.sort_unstable();
        assert_eq!(found, expected, "{text:?}");
    }
}

async fn a_blank_search_lists_newest_first<S: ProductStore>(store: &S) {
    create_in_order(
        store,
        &[
            ("Older", "First", 1),
            ("Newer", "Second", 2),
            ("Newest", "Third", 3),
        ],
    )
    .await;

    for text in ["", "   ", "\t\n"] {
        let found = store
            .search(&search_text(text), window(0, 2))
            .await
            .unwrap();

        assert_eq!(names(&found), ["Newest", "Newer"], "{text:?}");
    }
}

/// One test per check and backend: `elasticsearch::<check>` and
/// `tantivy::<check>`.
macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod elasticsearch {
            $(
                #[tokio::test]
                async fn $check() {
                    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
                        return;
                    };
                    let store = super::ElasticsearchProducts::connect(
                        &super::SecretUrl::new(index.url()),
                        index.name(),
                    )
                    .await
                    .unwrap();
                    super::$check(&store).await;
                }
            )*
        }

        mod tantivy {
            $(
                #[tokio::test]
                async fn $check() {
                    let directory = tempfile::TempDir::new().unwrap();
                    let store = super::TantivyProducts::open(directory.path()).await.unwrap();
                    super::$check(&store).await;
                }
            )*
        }
    };
}

contract!(
    a_created_product_reads_back_with_every_field_equal,
    an_unknown_id_reads_as_none,
    get_many_answers_each_known_id_once_and_leaves_out_unknown_ones,
    get_many_answers_a_hundred_ids_in_one_call,
    list_is_newest_first_and_pages_with_skip_and_take,
    products_created_at_the_same_instant_list_by_id_highest_first,
    search_ranks_a_name_match_above_a_description_only_match,
    search_finds_a_product_by_a_word_of_its_description,
    search_pages_with_skip_and_take,
    query_syntax_is_searched_as_plain_words,
    syntax_characters_around_a_word_still_find_the_word,
    a_blank_search_lists_newest_first,
    creating_an_existing_id_is_refused_and_keeps_one_product,
    concurrent_creates_of_one_new_id_store_it_once,
);

#[tokio::test]
async fn a_tantivy_index_persists_across_reopening() {
    let directory = tempfile::TempDir::new().unwrap();
    let path = directory.path().join("nested").join("products");
    let created = product("Pencil", "Graphite, HB", 10);
    {
        let store = TantivyProducts::open(&path).await.unwrap();
        store.create(&created).await.unwrap();
    }

    let store = TantivyProducts::open(&path).await.unwrap();

    assert_eq!(store.get(&created.id).await.unwrap(), Some(created.clone()));
    let found = store
        .search(&search_text("graphite"), ResultWindow::default())
        .await
        .unwrap();
    assert_eq!(found, [created]);
}

#[tokio::test]
async fn concurrent_connects_to_a_fresh_elasticsearch_index_all_succeed() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    let url = SecretUrl::new(index.url());

    let stores = try_join_all((0..8).map(|_| ElasticsearchProducts::connect(&url, index.name())))
        .await
        .unwrap();

    let created = product("Pencil", "HB", 10);
    stores[0].create(&created).await.unwrap();
    for store in &stores {
        assert_eq!(store.get(&created.id).await.unwrap(), Some(created.clone()));
    }
}

#[tokio::test]
async fn reconnecting_to_an_existing_elasticsearch_index_keeps_its_products() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    let url = SecretUrl::new(index.url());
    let created = product("Pencil", "HB", 10);
    {
        let store = ElasticsearchProducts::connect(&url, index.name())
            .await
            .unwrap();
        store.create(&created).await.unwrap();
    }

    let store = ElasticsearchProducts::connect(&url, index.name())
        .await
        .unwrap();

    assert_eq!(store.get(&created.id).await.unwrap(), Some(created));
}

#[tokio::test]
async fn the_elasticsearch_mapping_keeps_the_exact_price_and_the_seed_fields() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    ElasticsearchProducts::connect(&SecretUrl::new(index.url()), index.name())
        .await
        .unwrap();

    let response = index
        .client()
        .indices()
        .get_mapping(::elasticsearch::indices::IndicesGetMappingParts::Index(&[
            index.name(),
        ]))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();

    let properties = &body[index.name()]["mappings"]["properties"];
    assert_eq!(properties["price"]["type"], "double", "{body}");
    assert_eq!(properties["price_minor_units"]["type"], "long", "{body}");
    assert_eq!(properties["id"]["type"], "keyword", "{body}");
    assert_eq!(properties["created_at"]["type"], "date_nanos", "{body}");
}

#[tokio::test]
async fn an_existing_index_with_the_seed_mapping_is_refused_naming_the_fix() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    // The Go original's seed mapping: no exact price, millisecond dates.
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

    let error = ElasticsearchProducts::connect(&SecretUrl::new(index.url()), index.name())
        .await
        .unwrap_err();

    assert!(
        matches!(error, StorageError::IncompatibleIndex(_)),
        "{error:?}"
    );
    let message = error.to_string();
    for needle in [
        index.name(),
        "price_minor_units (long) is missing",
        "created_at is a date, not a date_nanos",
        "MARKETPLACE_CATALOG_INDEX_NAME",
        "reindex",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    assert!(!message.contains("\"id"), "{message}");
}

#[tokio::test]
async fn an_existing_index_with_the_catalog_mapping_is_accepted() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    index.create(ElasticsearchProducts::mapping()).await;

    let store = ElasticsearchProducts::connect(&SecretUrl::new(index.url()), index.name())
        .await
        .unwrap();

    let created = product("Pencil", "HB", 10);
    store.create(&created).await.unwrap();
    assert_eq!(store.get(&created.id).await.unwrap(), Some(created));
}

#[tokio::test]
async fn the_elasticsearch_price_field_filters_exactly_to_the_cent() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    let store = ElasticsearchProducts::connect(&SecretUrl::new(index.url()), index.name())
        .await
        .unwrap();
    create_in_order(
        &store,
        &[
            ("Dime", "Ten cents", 10),
            ("Two dimes", "Twenty cents", 20),
            ("Three dimes", "Thirty cents", 30),
        ],
    )
    .await;

    let response = index
        .client()
        .search(::elasticsearch::SearchParts::Index(&[index.name()]))
        .body(serde_json::json!({
            "query": { "range": { "price": { "gte": 0.3, "lte": 0.3 } } }
        }))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();

    let hits = body["hits"]["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{body}");
    assert_eq!(hits[0]["_source"]["price_minor_units"], 30);
    assert_eq!(hits[0]["_source"]["price"], 0.3);
}

#[tokio::test]
async fn an_unreachable_elasticsearch_is_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = SecretUrl::new(format!("http://{}", closed.local_addr().unwrap()));
    drop(closed);

    let error = ElasticsearchProducts::connect(&url, "products")
        .await
        .unwrap_err();

    assert!(matches!(error, StorageError::Unavailable(_)), "{error:?}");
}

#[tokio::test]
async fn an_unsupported_search_url_names_the_variable() {
    for url in ["postgres://db/app", "tantivy://", "file:///tmp/x"] {
        let error = marketplace_catalog::storage::Products::connect(&SecretUrl::new(url), "p")
            .await
            .unwrap_err();

        assert!(
            matches!(error, StorageError::InvalidUrl(_)),
            "{url}: {error:?}"
        );
        assert!(
            error.to_string().contains("MARKETPLACE_CATALOG_SEARCH_URL"),
            "{url}: {error}"
        );
    }
}
