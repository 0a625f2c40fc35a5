//! The catalog service over gRPC, started as the `Application` on a free
//! port, against Elasticsearch and against an embedded tantivy index.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use marketplace_catalog::Application;
use marketplace_config::{CatalogConfig, SecretUrl};
use marketplace_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use marketplace_proto::catalog::v1::{
    CreateProductRequest, GetProductRequest, GetProductsRequest, ListProductsRequest, Product,
    SearchProductsRequest,
};
use marketplace_proto::common::v1::Money;
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SERVICE: &str = "marketplace.catalog.v1.CatalogService";

/// A running catalog service, stopped when dropped.
struct Running {
    client: CatalogServiceClient<Channel>,
    address: SocketAddr,
    _stop: oneshot::Sender<()>,
    _directory: Option<TempDir>,
}

fn config(url: &str, index_name: &str) -> CatalogConfig {
    CatalogConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        search_url: Some(SecretUrl::new(url)),
        index_name: index_name.to_owned(),
    }
}

/// The service, once it reports SERVING.
async fn start(config: CatalogConfig, directory: Option<TempDir>) -> Running {
    let running = starting(config, directory).await;
    wait_until(running.address, ServingStatus::Serving).await;
    running
}

/// The service, serving and perhaps not ready yet.
async fn starting(config: CatalogConfig, directory: Option<TempDir>) -> Running {
    let application = Application::build(config, &marketplace_grpc::Shared::default())
        .await
        .unwrap();
    let address = application.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(application.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let client = CatalogServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    Running {
        client,
        address,
        _stop: stop,
        _directory: directory,
    }
}

/// The service over a fresh tantivy index.
async fn tantivy() -> Running {
    let directory = TempDir::new().unwrap();
    let url = format!("tantivy://{}", directory.path().join("index").display());
    start(config(&url, "unused"), Some(directory)).await
}

/// What the health service says of the catalog service.
async fn health(address: SocketAddr) -> ServingStatus {
    HealthClient::new(channel(address).await)
        .check(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .map_or(ServingStatus::Unknown, |response| {
            response.into_inner().status()
        })
}

/// Returns once the health service says `status`.
async fn wait_until(address: SocketAddr, status: ServingStatus) {
    marketplace_testkit::eventually(
        &format!("the catalog service reports {status:?}"),
        Duration::from_secs(60),
        || async move { (health(address).await == status).then_some(()) },
    )
    .await;
}

async fn channel(address: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn create_request(name: &str, description: &str, minor_units: i64) -> CreateProductRequest {
    CreateProductRequest {
        name: name.to_owned(),
        description: description.to_owned(),
        price: Some(Money { minor_units }),
    }
}

async fn create(running: &mut Running, name: &str, description: &str, minor: i64) -> Product {
    running
        .client
        .create_product(create_request(name, description, minor))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap()
}

fn names(products: &[Product]) -> Vec<&str> {
    products.iter().map(|p| p.name.as_str()).collect()
}

/// Asserts `INVALID_ARGUMENT` with a message naming `needle`.
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, needle: &str) {
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(needle),
        "{:?} does not mention {needle:?}",
        status.message()
    );
}

async fn a_product_is_created_and_read_back_exactly(running: &mut Running) {
    let created = create(running, "Zoë's lamp", "Brass\nwith a linen shade", 1999).await;

    let read = running
        .client
        .get_product(GetProductRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();

    assert_eq!(read, created);
    assert_eq!(read.price, Some(Money { minor_units: 1999 }));
    assert_eq!(read.id.len(), 27);
    assert_eq!(read.created_at.unwrap().nanos % 1_000, 0);
}

async fn a_created_product_is_found_by_search_at_once(running: &mut Running) {
    let created = create(running, "Walnut desk", "Sturdy", 25_000).await;

    let found = running
        .client
        .search_products(SearchProductsRequest {
            query: "walnut".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .products;

    assert_eq!(found, [created]);
}

#[tokio::test]
async fn elasticsearch_creates_reads_and_searches_products() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    let mut running = start(config(index.url(), index.name()), None).await;

    a_product_is_created_and_read_back_exactly(&mut running).await;
    a_created_product_is_found_by_search_at_once(&mut running).await;
}

#[tokio::test]
async fn tantivy_creates_reads_and_searches_products() {
    let mut running = tantivy().await;

    a_product_is_created_and_read_back_exactly(&mut running).await;
    a_created_product_is_found_by_search_at_once(&mut running).await;
}

#[tokio::test]
async fn an_unknown_product_is_not_found() {
    let mut running = tantivy().await;
    let id = "0ujtsYcgvSTl8PAuAdqWYSMnLOv";

    let status = running
        .client
        .get_product(GetProductRequest { id: id.into() })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains(id), "{}", status.message());
}

#[tokio::test]
async fn get_products_answers_known_ids_once_in_one_call() {
    let mut running = tantivy().await;
    let pencil = create(&mut running, "Pencil", "HB", 10).await;
    let ruler = create(&mut running, "Ruler", "30 cm", 70).await;

    let mut found = running
        .client
        .get_products(GetProductsRequest {
            ids: vec![
                ruler.id.clone(),
                "0ujtsYcgvSTl8PAuAdqWYSMnLOv".into(),
                pencil.id.clone(),
                ruler.id.clone(),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .products;

    found.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(found, [pencil, ruler]);
}

#[tokio::test]
async fn list_products_is_newest_first_with_skip_and_take() {
    let mut running = tantivy().await;
    for name in ["First", "Second", "Third"] {
        create(&mut running, name, "Listed", 100).await;
    }

    let all = running
        .client
        .list_products(ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .products;
    let page = running
        .client
        .list_products(ListProductsRequest { skip: 1, take: 1 })
        .await
        .unwrap()
        .into_inner()
        .products;

    assert_eq!(names(&all), ["Third", "Second", "First"]);
    assert_eq!(names(&page), ["Second"]);
}

#[tokio::test]
async fn search_products_ranks_the_best_match_first_and_pages() {
    let mut running = tantivy().await;
    create(&mut running, "Walnut desk", "Sturdy", 25_000).await;
    create(
        &mut running,
        "Office chair",
        "Goes with a walnut desk",
        9_900,
    )
    .await;
    create(&mut running, "Teapot", "Porcelain", 1_500).await;

    let all = running
        .client
        .search_products(SearchProductsRequest {
            query: "walnut".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .products;
    let second = running
        .client
        .search_products(SearchProductsRequest {
            query: "walnut".into(),
            skip: 1,
            take: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .products;

    assert_eq!(names(&all), ["Walnut desk", "Office chair"]);
    assert_eq!(names(&second), ["Office chair"]);
}

#[tokio::test]
async fn a_blank_search_lists_newest_first() {
    let mut running = tantivy().await;
    create(&mut running, "Older", "One", 1).await;
    create(&mut running, "Newer", "Two", 2).await;

    let found = running
        .client
        .search_products(SearchProductsRequest {
            query: "  \t ".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .products;

    assert_eq!(names(&found), ["Newer", "Older"]);
}

async fn query_syntax_is_searched_as_words(running: &mut Running) {
    // The widget holds words of both queries on both backends (`or`, `1`,
    // `match_all`); the kettle holds none, so it shows if a query matched
    // everything.
    create(running, "Widget", "The name of match_all or 1 widget", 100).await;
    create(running, "Copper kettle", "Boils water", 3_000).await;

    for (query, expected) in [
        ("name:x OR 1", &["Widget"][..]),
        (r#"{"match_all":{}}"#, &["Widget"][..]),
        ("*", &[][..]),
        ("\"unbalanced", &[][..]),
        ("(", &[][..]),
    ] {
        let found = running
            .client
            .search_products(SearchProductsRequest {
                query: query.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .products;

        assert_eq!(names(&found), expected, "{query:?}");
    }
}

#[tokio::test]
async fn elasticsearch_searches_query_syntax_as_words() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    let mut running = start(config(index.url(), index.name()), None).await;

    query_syntax_is_searched_as_words(&mut running).await;
}

#[tokio::test]
async fn tantivy_searches_query_syntax_as_words() {
    let mut running = tantivy().await;

    query_syntax_is_searched_as_words(&mut running).await;
}

// One test per bad input.

#[tokio::test]
async fn a_blank_name_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .create_product(create_request("", "Fine", 1))
        .await;
    assert_invalid(result, "name must not be empty");
}

#[tokio::test]
async fn a_whitespace_only_name_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .create_product(create_request(" \u{3000} ", "Fine", 1))
        .await;
    assert_invalid(result, "name must not be empty");
}

#[tokio::test]
async fn a_name_over_200_characters_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .create_product(create_request(&"n".repeat(201), "Fine", 1))
        .await;
    assert_invalid(result, "name is longer than 200 characters");
}

#[tokio::test]
async fn a_name_with_a_control_character_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .create_product(create_request("Two\nlines", "Fine", 1))
        .await;
    assert_invalid(result, "name contains a control character");
}

#[tokio::test]
async fn a_blank_description_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .create_product(create_request("Lamp", " ", 1))
        .await;
    assert_invalid(result, "description must not be empty");
}

#[tokio::test]
async fn a_description_over_5000_characters_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .create_product(create_request("Lamp", &"d".repeat(5001), 1))
        .await;
    assert_invalid(result, "description is longer than 5000 characters");
}

#[tokio::test]
async fn a_description_with_a_control_character_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .create_product(create_request("Lamp", "Bell\u{7}", 1))
        .await;
    assert_invalid(result, "description contains a control character");
}

#[tokio::test]
async fn a_missing_price_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .create_product(CreateProductRequest {
            name: "Lamp".into(),
            description: "Brass".into(),
            price: None,
        })
        .await;
    assert_invalid(result, "price is required");
}

#[tokio::test]
async fn a_negative_price_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .create_product(create_request("Lamp", "Brass", -1))
        .await;
    assert_invalid(result, "price: amount must not be negative");
}

#[tokio::test]
async fn a_price_over_the_maximum_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .create_product(create_request("Lamp", "Brass", 10_000_000_000_001))
        .await;
    assert_invalid(result, "price: amount is larger than the maximum");
}

#[tokio::test]
async fn a_malformed_id_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .get_product(GetProductRequest {
            id: "not-an-id".into(),
        })
        .await;
    assert_invalid(result, "\"not-an-id\" is not a valid id");
}

#[tokio::test]
async fn a_malformed_id_among_many_is_invalid_and_named() {
    let mut running = tantivy().await;
    let result = running
        .client
        .get_products(GetProductsRequest {
            ids: vec!["0ujtsYcgvSTl8PAuAdqWYSMnLOv".into(), "bad'id".into()],
        })
        .await;
    assert_invalid(result, "ids[1]: \"bad'id\" is not a valid id");
}

#[tokio::test]
async fn more_than_1000_ids_are_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .get_products(GetProductsRequest {
            ids: vec!["0ujtsYcgvSTl8PAuAdqWYSMnLOv".into(); 1001],
        })
        .await;
    assert_invalid(result, "too many ids: 1001 (at most 1000 per call)");
}

#[tokio::test]
async fn listing_beyond_the_first_10000_products_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .list_products(ListProductsRequest {
            skip: 9_950,
            take: 100,
        })
        .await;
    assert_invalid(result, "skip + take must not exceed 10000");
}

#[tokio::test]
async fn searching_beyond_the_first_10000_results_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .search_products(SearchProductsRequest {
            query: "lamp".into(),
            skip: 10_000,
            take: 1,
        })
        .await;
    assert_invalid(result, "skip + take must not exceed 10000");
}

#[tokio::test]
async fn a_search_over_500_characters_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .search_products(SearchProductsRequest {
            query: "q".repeat(501),
            ..Default::default()
        })
        .await;
    assert_invalid(result, "query is longer than 500 characters");
}

#[tokio::test]
async fn a_search_with_a_control_character_is_invalid() {
    let mut running = tantivy().await;
    let result = running
        .client
        .search_products(SearchProductsRequest {
            query: "lamp\u{0}".into(),
            ..Default::default()
        })
        .await;
    assert_invalid(result, "query contains a control character");
}

/// A TCP proxy to `target` that can be closed, connections and all.
async fn proxy(target: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        // Dropped with this task, which aborts every forwarded connection.
        let mut connections = JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            connections.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (address, task)
}

#[tokio::test]
async fn elasticsearch_going_down_is_unavailable_without_backend_text() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    let target = index
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let (through, proxy) = proxy(target).await;
    let mut running = start(config(&format!("http://{through}"), index.name()), None).await;
    create(&mut running, "Lamp", "Brass", 100).await;

    proxy.abort();
    let _ = proxy.await;
    let calls = [
        running
            .client
            .search_products(SearchProductsRequest {
                query: "lamp".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        running
            .client
            .list_products(ListProductsRequest::default())
            .await
            .map(drop),
        running
            .client
            .create_product(create_request("Rug", "Wool", 100))
            .await
            .map(drop),
    ];

    for call in calls {
        let status = call.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(
            status.message(),
            "the product search backend is unavailable; try again later"
        );
    }
}

#[tokio::test]
async fn an_unreachable_elasticsearch_leaves_the_service_not_serving_and_its_calls_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);

    let mut running = starting(config(&url, "products"), None).await;

    wait_until(running.address, ServingStatus::NotServing).await;
    let status = running
        .client
        .list_products(ListProductsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "the product search backend is not ready; try again later"
    );
}

#[tokio::test]
async fn an_elasticsearch_that_comes_up_after_the_service_makes_it_serving_without_a_restart() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    let target = index
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    // Bound but not forwarding yet: connections are accepted and closed.
    let gate = Gate::closed(target).await;
    let mut running = starting(
        config(&format!("http://{}", gate.address), index.name()),
        None,
    )
    .await;
    wait_until(running.address, ServingStatus::NotServing).await;

    gate.open();

    wait_until(running.address, ServingStatus::Serving).await;
    let created = create(&mut running, "Lamp", "Brass", 100).await;
    let found = running
        .client
        .get_product(GetProductRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(found, created);
}

#[tokio::test]
async fn an_index_with_the_seed_mapping_keeps_the_service_not_serving() {
    let Some(index) = marketplace_testkit::elasticsearch::index().await else {
        return;
    };
    index.create(seed_mapping()).await;

    let mut running = starting(config(index.url(), index.name()), None).await;

    // Reached, and refused: the readiness check never passes, and the
    // reason (logged at each attempt) is the mapping; see the storage
    // tests for its text.
    wait_until(running.address, ServingStatus::NotServing).await;
    let status = running
        .client
        .list_products(ListProductsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(health(running.address).await, ServingStatus::NotServing);
}

/// The mapping the Go original's seed creates.
fn seed_mapping() -> serde_json::Value {
    serde_json::json!({
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

/// A port in front of `target` that accepts connections and closes them
/// at once until it is opened, then forwards them: a server that is not
/// up yet, then is.
struct Gate {
    address: SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _task: AbortOnDrop,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Gate {
    async fn closed(target: SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let is_open = open.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            address,
            open,
            _task: AbortOnDrop(task),
        }
    }

    fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_missing_search_url_names_the_variable() {
    let config = CatalogConfig {
        search_url: None,
        ..config("http://unused", "products")
    };

    let error = Application::build(config, &marketplace_grpc::Shared::default())
        .await
        .unwrap_err();

    assert!(
        error.to_string().contains("MARKETPLACE_CATALOG_SEARCH_URL"),
        "{error:#}"
    );
}

#[tokio::test]
async fn an_unsupported_search_url_names_the_variable() {
    let error = Application::build(
        config("sqlite://catalog.db", "products"),
        &marketplace_grpc::Shared::default(),
    )
    .await
    .unwrap_err();

    assert!(
        format!("{error:#}").contains("MARKETPLACE_CATALOG_SEARCH_URL"),
        "{error:#}"
    );
}

#[tokio::test]
async fn health_reports_the_catalog_service_as_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let running = tantivy().await;
    let mut health = HealthClient::new(channel(running.address).await);

    let response = health
        .check(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(response.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn reflection_lists_the_catalog_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let running = tantivy().await;
    let mut reflection = ServerReflectionClient::new(channel(running.address).await);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();

    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(services.iter().any(|s| s == SERVICE), "{services:?}");
}
