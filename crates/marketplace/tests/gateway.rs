//! The gateway's behaviour as clients see it over HTTP and websockets:
//! the Go original's queries, batched loading, limits, CORS, GET, a
//! service that is down or whose breaker is open, the order subscription,
//! request ids, operation metrics and the read cache. The marketplace
//! runs as one process on embedded storage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::sample;
use common::{Graphql, Served, embedded, eventually, marketplace, serve, wait_for};
use futures::{SinkExt as _, StreamExt as _};
use marketplace_config::env;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

struct Running {
    served: Served,
    graphql: Graphql,
    _dir: tempfile::TempDir,
}

fn running(args: &[&str]) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let served = embedded(&dir.path().join("data"), args);
    let graphql = Graphql::new(&served.address);
    Running {
        served,
        graphql,
        _dir: dir,
    }
}

fn id(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

/// How many calls of `method` the gateway itself made, whatever their
/// outcome (in one process the order service's calls are on `/metrics`
/// too, under its own component).
fn gateway_calls(graphql: &Graphql, method: &str) -> u64 {
    let (_, metrics) = graphql.get("/metrics");
    let label = format!("grpc_method=\"{method}\"");
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("grpc_client_handled_total{")
                && line.contains("component=\"gateway\"")
                && line.contains(&label)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The value of the sample of `name` with `labels` on `/metrics`.
fn metric(graphql: &Graphql, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    sample(&graphql.get("/metrics").1, name, labels)
}

#[test]
fn every_query_and_mutation_of_the_go_original_is_answered() {
    let marketplace = running(&[]);
    let graphql = &marketplace.graphql;

    // As the Go original's clients write them: literals inline, prices as
    // integers where they are whole, no variables.
    let account = graphql.data(
        r#"mutation { createAccount(account: {name: "John"}) { id name } }"#,
        json!({}),
    )["createAccount"]
        .clone();
    assert_eq!(account["name"], "John");
    let product = graphql.data(
        r#"mutation { createProduct(product: {name: "Kindle Oasis", description: "Kindle Oasis is the first waterproof Kindle with our largest 7-inch 300 ppi display.", price: 300}) { id name description price } }"#,
        json!({}),
    )["createProduct"]
        .clone();
    assert_eq!(product["price"], 300.0);
    let order = graphql.data(
        &format!(
            r#"mutation {{ createOrder(order: {{accountId: "{}", products: [{{id: "{}", quantity: 2}}]}}) {{ id createdAt totalPrice products {{ id name description price quantity }} }} }}"#,
            id(&account),
            id(&product)
        ),
        json!({}),
    )["createOrder"]
        .clone();
    assert_eq!(order["totalPrice"], 600.0);
    assert_eq!(order["products"][0]["quantity"], 2);

    let accounts = graphql.data(
        "query { accounts { id name orders { id createdAt totalPrice products { id name description price quantity } } } }",
        json!({}),
    );
    assert_eq!(
        accounts["accounts"],
        json!([{ "id": id(&account), "name": "John", "orders": [order] }])
    );
    let paged = graphql.data(
        "query { accounts(pagination: {skip: 0, take: 5}) { id name } }",
        json!({}),
    );
    assert_eq!(paged["accounts"], json!([account]));
    let one = graphql.data(
        &format!(
            r#"query {{ accounts(id: "{}") {{ id name }} }}"#,
            id(&account)
        ),
        json!({}),
    );
    assert_eq!(one["accounts"], json!([account]));

    let all = graphql.data(
        "query { products { id name description price } }",
        json!({}),
    );
    assert_eq!(all["products"], json!([product]));
    let paged = graphql.data(
        "query { products(pagination: {skip: 0, take: 10}) { id name description price } }",
        json!({}),
    );
    assert_eq!(paged["products"], json!([product]));
    let searched = graphql.data(
        r#"query { products(query: "kindle") { id name description price } }"#,
        json!({}),
    );
    assert_eq!(searched["products"], json!([product]));
    let one = graphql.data(
        &format!(
            r#"query {{ products(id: "{}") {{ id name description price }} }}"#,
            id(&product)
        ),
        json!({}),
    );
    assert_eq!(one["products"], json!([product]));
    // With variables, as generated clients send them.
    let variables = graphql.data(
        "query Products($pagination: PaginationInput, $query: String, $id: String) { products(pagination: $pagination, query: $query, id: $id) { id } }",
        json!({ "pagination": { "skip": 0, "take": 1 }, "query": "waterproof" }),
    );
    assert_eq!(variables["products"], json!([{ "id": id(&product) }]));
}

#[test]
fn nested_lists_cost_one_service_call_per_level() {
    let marketplace = running(&[]);
    let graphql = &marketplace.graphql;
    let products: Vec<String> = (0..20)
        .map(|i| {
            id(&graphql.data(
                "mutation($p: ProductInput!) { createProduct(product: $p) { id } }",
                json!({ "p": { "name": format!("Part {i}"), "description": "spare", "price": 1.25 } }),
            )["createProduct"])
        })
        .collect();
    for a in 0..100 {
        let account = id(&graphql.data(
            "mutation($a: AccountInput!) { createAccount(account: $a) { id } }",
            json!({ "a": { "name": format!("Customer {a}") } }),
        )["createAccount"]);
        for o in 0..2 {
            let lines: Vec<Value> = (0..3)
                .map(|l| json!({ "id": products[(a + o * 3 + l) % 20], "quantity": 1 }))
                .collect();
            graphql.data(
                "mutation($o: OrderInput!) { createOrder(order: $o) { id } }",
                json!({ "o": { "accountId": account, "products": lines } }),
            );
        }
    }
    let before: Vec<u64> = ["ListAccounts", "ListOrdersForAccounts", "GetProducts"]
        .iter()
        .map(|method| gateway_calls(graphql, method))
        .collect();

    let answer = graphql.data(
        "{ accounts(pagination: {take: 100}) { name orders { products { name } } } }",
        json!({}),
    );

    let after: Vec<u64> = ["ListAccounts", "ListOrdersForAccounts", "GetProducts"]
        .iter()
        .map(|method| gateway_calls(graphql, method))
        .collect();
    let accounts = answer["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 100);
    assert!(accounts.iter().all(|account| {
        let orders = account["orders"].as_array().unwrap();
        orders.len() == 2
            && orders
                .iter()
                .all(|order| order["products"].as_array().unwrap().len() == 3)
    }));
    let made: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // One call per level: 100 accounts, 200 orders and 600 lines.
    assert_eq!(
        made,
        [1, 1, 1],
        "ListAccounts, ListOrdersForAccounts, GetProducts"
    );
}

/// The introspection query of graphql-js's `getIntrospectionQuery()`, which
/// GraphiQL, Apollo and code generators send.
const INTROSPECTION: &str = r"
query IntrospectionQuery {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description
    args { ...InputValue }
    type { ...TypeRef }
    isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
}";

#[test]
fn the_standard_introspection_query_is_within_the_limits() {
    let marketplace = running(&[]);
    let graphql = &marketplace.graphql;

    let data = graphql.data(INTROSPECTION, json!({}));

    assert_eq!(data["__schema"]["queryType"]["name"], "Query");
    assert_eq!(data["__schema"]["subscriptionType"]["name"], "Subscription");
}

#[test]
fn queries_beyond_the_depth_and_complexity_limits_are_refused_naming_the_limit() {
    let marketplace = running(&[
        "--gateway-max-query-depth",
        "3",
        "--gateway-max-query-complexity",
        "500",
    ]);
    let graphql = &marketplace.graphql;

    let (code, message) = graphql.error(
        "{ accounts(pagination: {take: 1}) { orders(take: 1) { products { name } } } }",
        json!({}),
    );
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(
        message.contains("nested too deep") && message.contains('3'),
        "{message}"
    );

    // 100 accounts by default, each with 2 fields: over 500.
    let (code, message) = graphql.error(
        "{ accounts { id name } other: accounts { id name } x: accounts { id name } }",
        json!({}),
    );
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(
        message.contains("too complex") && message.contains("500"),
        "{message}"
    );

    // A smaller page is within the limit.
    graphql.data(
        "{ accounts(pagination: {take: 10}) { id name } }",
        json!({}),
    );
}

#[test]
fn the_default_limits_admit_the_go_originals_heaviest_query_and_refuse_many_copies() {
    let marketplace = running(&[]);
    let graphql = &marketplace.graphql;
    let one =
        "accounts { id name orders { id createdAt totalPrice products { name quantity price } } }";

    graphql.data(&format!("{{ {one} }}"), json!({}));
    let copies: String = (0..5).map(|i| format!("a{i}: {one} ")).collect();
    let (code, message) = graphql.error(&format!("{{ {copies} }}"), json!({}));

    assert_eq!(code, "BAD_USER_INPUT");
    assert!(message.contains("too complex"), "{message}");
}

#[test]
fn an_oversized_body_and_an_oversized_batch_are_refused_with_a_graphql_error() {
    let marketplace = running(&["--gateway-max-body-bytes", "2048"]);
    let graphql = &marketplace.graphql;
    let padding = " ".repeat(4096);

    let (status, body) =
        graphql.post_json(json!({ "query": format!("{{ products {{ id }} }}{padding}") }));
    assert_eq!(status, 413);
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert!(
        body["errors"][0]["message"].to_string().contains("2048"),
        "{body}"
    );

    let batch = |n| {
        (0..n)
            .map(|_| json!({ "query": "{ products { id } }" }))
            .collect()
    };
    let (status, body) = graphql.post_json(Value::Array(batch(11)));
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]["message"]
            .to_string()
            .contains("at most 10"),
        "{body}"
    );

    let (_, body) = graphql.post_json(Value::Array(batch(2)));
    assert_eq!(
        body,
        json!([{ "data": { "products": [] } }, { "data": { "products": [] } }])
    );
}

#[test]
fn malformed_requests_are_refused_with_a_graphql_error() {
    let marketplace = running(&[]);
    let graphql = &marketplace.graphql;
    let url = format!("{}/graphql", graphql.base);

    let mut not_json = graphql
        .agent()
        .post(&url)
        .header("content-type", "text/plain")
        .send("{ products { id } }")
        .unwrap();
    let mut broken = graphql
        .agent()
        .post(&url)
        .header("content-type", "application/json")
        .send("{\"query\": ")
        .unwrap();
    let (_, syntax) = graphql.post("{ products { id }", json!({}));

    assert_eq!(not_json.status().as_u16(), 415);
    let body: Value = not_json.body_mut().read_json().unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(broken.status().as_u16(), 400);
    let body: Value = broken.body_mut().read_json().unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(syntax["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

#[test]
fn get_answers_queries_but_refuses_mutations() {
    let marketplace = running(&[]);
    let graphql = &marketplace.graphql;

    let (status, body) = graphql.get("/graphql?query=%7Bproducts%7Bid%7D%7D");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({ "data": { "products": [] } })
    );

    let (status, body) = graphql
        .get("/graphql?query=mutation%7BcreateAccount(account:%7Bname:%22Eve%22%7D)%7Bid%7D%7D");
    assert_eq!(status, 405);
    assert!(body.contains("POST"), "{body}");
    let accounts = graphql.data("{ accounts { id } }", json!({}));
    assert_eq!(accounts["accounts"], json!([]));
}

#[test]
fn the_root_leads_to_the_playground_and_health_endpoints_answer() {
    let marketplace = running(&[]);
    let graphql = &marketplace.graphql;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();

    let response = agent.get(format!("{}/", graphql.base)).call().unwrap();

    assert_eq!(response.status().as_u16(), 307);
    assert_eq!(response.headers()["location"], "/playground");
    assert_eq!(graphql.get("/healthz").0, 200);
    assert_eq!(graphql.get("/readyz").0, 200);
    let (status, metrics) = graphql.get("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("marketplace_build_info{"), "{metrics}");
}

fn preflight(graphql: &Graphql, origin: &str) -> ureq::http::Response<ureq::Body> {
    let request = ureq::http::Request::builder()
        .method("OPTIONS")
        .uri(format!("{}/graphql", graphql.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(())
        .unwrap();
    graphql.agent().run(request).unwrap()
}

#[test]
fn cors_admits_the_configured_origins_only() {
    let marketplace = running(&[
        "--gateway-cors-origins",
        "https://shop.example.com,http://localhost:3000",
    ]);
    let graphql = &marketplace.graphql;

    let allowed = preflight(graphql, "https://shop.example.com");
    let other = preflight(graphql, "https://evil.example.net");

    assert_eq!(allowed.status().as_u16(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    let unconfigured_marketplace = running(&[]);
    let unconfigured = preflight(
        &unconfigured_marketplace.graphql,
        "https://shop.example.com",
    );
    assert!(
        !unconfigured
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn services_that_are_down_give_unavailable_and_the_gateway_is_not_ready() {
    let down = |_| format!("http://127.0.0.1:{}", free_port());
    let served = serve(
        marketplace()
            .args(["serve", "--target", "gateway"])
            .env(env::GATEWAY_LISTEN_ADDR, "127.0.0.1:0")
            .env(env::GATEWAY_ACCOUNT_URL, down(0))
            .env(env::GATEWAY_CATALOG_URL, down(1))
            .env(env::GATEWAY_ORDER_URL, down(2))
            .env(env::GATEWAY_DOWNSTREAM_TIMEOUT, "500ms"),
        true,
    );
    let graphql = Graphql::new(&served.address);

    let (code, message) = graphql.error("{ products { id } }", json!({}));
    let (readyz, body) = graphql.get("/readyz");

    assert_eq!(code, "UNAVAILABLE");
    assert_eq!(
        message,
        "the catalog service is unavailable; try again later"
    );
    assert_eq!(readyz, 503);
    assert!(
        body.contains("account") && body.contains("catalog") && body.contains("order"),
        "{body}"
    );
    assert_eq!(graphql.get("/healthz").0, 200);
    let (code, _) = graphql.error(
        r#"mutation { createAccount(account: {name: "Ada"}) { id } }"#,
        json!({}),
    );
    assert_eq!(code, "UNAVAILABLE");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A graphql-transport-ws connection, acknowledged.
async fn subscribe(address: &str, query: &str, variables: Value) -> Socket {
    let mut request = format!("ws://{address}/graphql")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": {} }),
    )
    .await;
    assert_eq!(receive(&mut socket).await["type"], "connection_ack");
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": variables } }),
    )
    .await;
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// The next protocol message, skipping pings.
async fn receive(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a message within 20 s")
            .expect("the socket stays open")
            .unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] != "ping" {
                return value;
            }
        }
    }
}

const ORDER_PLACED: &str = "subscription($account: String!) { orderPlaced(accountId: $account) { id accountId createdAt totalPrice products { id name price quantity } } }";

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_receives_the_order_placed_afterwards() {
    let marketplace = running(&[]);
    let (graphql, served) = (&marketplace.graphql, &marketplace.served);
    let account = id(&graphql.data(
        r#"mutation { createAccount(account: {name: "Sub"}) { id } }"#,
        json!({}),
    )["createAccount"]);
    let product = id(&graphql.data(
        r#"mutation { createProduct(product: {name: "Bell", description: "rings", price: 4.2}) { id } }"#,
        json!({}),
    )["createProduct"]);

    let mut socket = subscribe(&served.address, ORDER_PLACED, json!({ "account": account })).await;
    // The gateway counts a subscription once the order service has its
    // watch: from then on no order is missed.
    eventually("the subscription is open", Duration::from_secs(20), || {
        (graphql.metric("graphql_subscriptions_active") == Some(1.0)).then_some(())
    });
    let created = graphql.data(
        "mutation($o: OrderInput!) { createOrder(order: $o) { id accountId createdAt totalPrice products { id name price quantity } } }",
        json!({ "o": { "accountId": account, "products": [{ "id": product, "quantity": 2 }] } }),
    )["createOrder"]
        .clone();
    let event = receive(&mut socket).await;

    assert_eq!(event["type"], "next", "{event}");
    assert_eq!(event["id"], "1");
    assert_eq!(event["payload"]["data"]["orderPlaced"], created);
    assert_eq!(created["totalPrice"], 8.4);

    send(&mut socket, json!({ "id": "1", "type": "complete" })).await;
    eventually(
        "the subscription is closed",
        Duration::from_secs(20),
        || (graphql.metric("graphql_subscriptions_active") == Some(0.0)).then_some(()),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribing_to_an_unknown_or_malformed_account_is_an_error_with_its_code() {
    let marketplace = running(&[]);
    let served = &marketplace.served;

    for (account, code) in [
        ("0ujtsYcgvSTl8PAuAdqWYSMnLOv", "NOT_FOUND"),
        ("nope", "BAD_USER_INPUT"),
    ] {
        let mut socket =
            subscribe(&served.address, ORDER_PLACED, json!({ "account": account })).await;
        let event = receive(&mut socket).await;

        assert!(
            event["type"] == "error" || event["type"] == "next",
            "{event}"
        );
        let errors = if event["type"] == "error" {
            event["payload"].clone()
        } else {
            event["payload"]["errors"].clone()
        };
        assert_eq!(errors[0]["extensions"]["code"], code, "{event}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_connection_has_a_request_id_that_its_operations_carry_to_the_services() {
    let marketplace = running(&[]);
    let served = &marketplace.served;
    let request_id = format!("socket-{}", std::process::id());
    let mut request = format!("ws://{}/graphql", served.address)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    headers.insert("x-request-id", request_id.parse().unwrap());

    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": {} }),
    )
    .await;
    assert_eq!(receive(&mut socket).await["type"], "connection_ack");
    send(
        &mut socket,
        json!({ "id": "1", "type": "subscribe", "payload": {
            "query": ORDER_PLACED, "variables": { "account": "0ujtsYcgvSTl8PAuAdqWYSMnLOv" }
        } }),
    )
    .await;
    let event = receive(&mut socket).await;

    assert_eq!(
        response.headers()["x-request-id"].to_str().unwrap(),
        request_id
    );
    assert!(event.to_string().contains("NOT_FOUND"), "{event}");
    // The account service answered the subscription's GetAccount as part
    // of the connection's request, and the gateway logged the operation.
    wait_for(
        "the account service logs the connection's request id",
        Duration::from_secs(10),
        || logged(served, &request_id, "account", "AccountService/GetAccount"),
    );
    let line = wait_for(
        "the gateway logs the operation",
        Duration::from_secs(10),
        || logged(served, &request_id, "gateway", "GraphQL subscription"),
    );
    assert_eq!(line["operation"], "orderPlaced", "{line}");
    assert_eq!(line["code"], "NOT_FOUND", "{line}");
}

/// The first log line of `service` about `request_id` whose message
/// contains `message`.
fn logged(served: &Served, request_id: &str, service: &str, message: &str) -> Option<Value> {
    served.json_logs().into_iter().find(|line| {
        line["service"] == service
            && line["request_id"] == request_id
            && line["message"]
                .as_str()
                .is_some_and(|text| text.contains(message))
    })
}

/// Sends `{ products { id } }` with `x-request-id: given` (if any); the
/// `x-request-id` of the answer.
fn answered_request_id(graphql: &Graphql, given: Option<&str>) -> String {
    let mut request = graphql.agent().post(format!("{}/graphql", graphql.base));
    if let Some(given) = given {
        request = request.header("x-request-id", given);
    }
    let response = request
        .send_json(json!({ "query": "{ products { id } }" }))
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[test]
fn the_answer_carries_the_callers_request_id_or_a_new_one_when_it_is_missing_or_unusable() {
    let marketplace = running(&[]);
    let graphql = &marketplace.graphql;
    let too_long = "x".repeat(129);

    let kept = answered_request_id(graphql, Some("checkout-42"));
    let generated = [
        answered_request_id(graphql, None),
        answered_request_id(graphql, None),
        answered_request_id(graphql, Some("has space")),
        answered_request_id(graphql, Some(&too_long)),
    ];

    assert_eq!(kept, "checkout-42");
    for id in &generated {
        assert!(is_uuid(id), "{id} is a new UUID");
    }
    assert_ne!(generated[0], generated[1], "each request gets its own id");
}

#[test]
fn a_request_id_reaches_every_service_the_request_calls_and_names_the_gateways_log_line() {
    let marketplace = running(&[]);
    let (graphql, served) = (&marketplace.graphql, &marketplace.served);
    let account = id(&graphql.data(
        r#"mutation { createAccount(account: {name: "Traced"}) { id } }"#,
        json!({}),
    )["createAccount"]);
    let product = id(&graphql.data(
        r#"mutation { createProduct(product: {name: "Trace", description: "a path", price: 1}) { id } }"#,
        json!({}),
    )["createProduct"]);
    graphql.data(
        "mutation($o: OrderInput!) { createOrder(order: $o) { id } }",
        json!({ "o": { "accountId": account, "products": [{ "id": product, "quantity": 1 }] } }),
    );
    let request_id = format!("nested-{}", std::process::id());

    // The accounts' orders and their products are loaded in batches on
    // tasks of their own, which still carry the request.
    let response = graphql
        .agent()
        .post(format!("{}/graphql", graphql.base))
        .header("x-request-id", &request_id)
        .send_json(json!({ "query": "{ accounts { orders { products { name } } } }" }))
        .unwrap();

    assert_eq!(response.headers()["x-request-id"], request_id.as_str());
    for (service, call) in [
        ("account", "AccountService/ListAccounts"),
        ("order", "OrderService/ListOrdersForAccounts"),
        ("catalog", "CatalogService/GetProducts"),
    ] {
        wait_for(
            &format!("the {service} service logs {call} under the request id"),
            Duration::from_secs(10),
            || logged(served, &request_id, service, call),
        );
    }
    let line = wait_for(
        "the gateway logs the request",
        Duration::from_secs(10),
        || logged(served, &request_id, "gateway", "GraphQL query"),
    );
    assert_eq!(line["operation_type"], "query", "{line}");
    assert_eq!(line["operation"], "accounts", "{line}");
    assert_eq!(line["code"], "OK", "{line}");
    assert!(line["elapsed_ms"].as_f64().is_some(), "{line}");
}

#[test]
fn graphql_operations_are_counted_by_type_root_fields_and_outcome() {
    let marketplace = running(&[]);
    let graphql = &marketplace.graphql;

    graphql.data("{ products { id } }", json!({}));
    graphql.data("query Named { products { name } }", json!({}));
    graphql.data(
        "{ b: accounts { id } a: accounts { name } products { id } __typename }",
        json!({}),
    );
    graphql.error(r#"{ products(id: "nope") { id } }"#, json!({}));
    graphql.data(
        r#"mutation { createAccount(account: {name: "Counted"}) { id } }"#,
        json!({}),
    );
    graphql.error("{ products { id }", json!({}));
    graphql.error("{ nonsense }", json!({}));

    let text = graphql.get("/metrics").1;
    let count = |kind: &str, operation: &str, code: &str| {
        sample(
            &text,
            "graphql_requests_total",
            &[
                ("operation_type", kind),
                ("operation", operation),
                ("code", code),
            ],
        )
    };
    assert_eq!(count("query", "products", "OK"), Some(2.0), "{text}");
    // Several root fields are one label value with commas, which the
    // sample reader splits; the line is read whole.
    assert!(
        text.lines().any(|line| line
            == r#"graphql_requests_total{code="OK",operation="__typename,accounts,products",operation_type="query"} 1"#),
        "{text}"
    );
    assert_eq!(count("query", "products", "BAD_USER_INPUT"), Some(1.0));
    assert_eq!(count("mutation", "createAccount", "OK"), Some(1.0));
    // Requests that never ran: the document did not parse, or named a
    // field the schema does not have.
    assert_eq!(count("unknown", "invalid", "BAD_USER_INPUT"), Some(1.0));
    assert_eq!(count("query", "invalid", "BAD_USER_INPUT"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "graphql_request_duration_seconds_count",
            &[("operation_type", "query"), ("operation", "products")],
        ),
        Some(3.0),
        "{text}"
    );
}

#[test]
fn with_the_cache_on_repeated_listings_and_lookups_do_not_call_the_catalog_again() {
    let marketplace = running(&["--gateway-cache-ttl", "30s"]);
    let graphql = &marketplace.graphql;
    let create = |name: &str| {
        id(&graphql.data(
            "mutation($p: ProductInput!) { createProduct(product: $p) { id } }",
            json!({ "p": { "name": name, "description": "a desk lamp", "price": 20 } }),
        )["createProduct"])
    };
    let lamp = create("Lamp");
    const LISTING: &str = "{ products(pagination: {take: 10}) { id name } }";

    let first = graphql.data(LISTING, json!({}));
    let second = graphql.data(LISTING, json!({}));
    for _ in 0..2 {
        graphql.data(r#"{ products(query: "lamp") { id } }"#, json!({}));
    }
    let by_id = format!(r#"{{ products(id: "{lamp}") {{ id name price }} }}"#);
    let looked_up = [
        graphql.data(&by_id, json!({})),
        graphql.data(&by_id, json!({})),
    ];

    assert_eq!(first, second);
    assert_eq!(looked_up[0], looked_up[1]);
    assert_eq!(looked_up[0]["products"][0]["name"], "Lamp");
    assert_eq!(gateway_calls(graphql, "ListProducts"), 1);
    assert_eq!(gateway_calls(graphql, "SearchProducts"), 1);
    assert_eq!(gateway_calls(graphql, "GetProduct"), 1);
    let requests = |cache: &str, result: &str| {
        metric(
            graphql,
            "marketplace_cache_requests_total",
            &[("cache", cache), ("result", result)],
        )
    };
    assert_eq!(requests("product_page", "miss"), Some(2.0));
    assert_eq!(requests("product_page", "hit"), Some(2.0));
    assert_eq!(requests("product", "miss"), Some(1.0));
    assert_eq!(requests("product", "hit"), Some(1.0));

    // An order's products come from the cache too.
    let account = id(&graphql.data(
        r#"mutation { createAccount(account: {name: "Reader"}) { id } }"#,
        json!({}),
    )["createAccount"]);
    let order = id(&graphql.data(
        "mutation($o: OrderInput!) { createOrder(order: $o) { id } }",
        json!({ "o": { "accountId": account, "products": [{ "id": lamp, "quantity": 1 }] } }),
    )["createOrder"]);
    let ordered = graphql.data(
        "query($id: String!) { order(id: $id) { products { name } } }",
        json!({ "id": order }),
    );
    assert_eq!(ordered["order"]["products"][0]["name"], "Lamp");
    assert_eq!(gateway_calls(graphql, "GetProducts"), 0);
    assert_eq!(requests("product", "hit"), Some(2.0));

    // A product created through this gateway is in its next listing.
    let shade = create("Shade");
    let listed = graphql.data(LISTING, json!({}));
    let ids: Vec<String> = listed["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    assert!(ids.contains(&lamp) && ids.contains(&shade), "{listed}");
    assert_eq!(gateway_calls(graphql, "ListProducts"), 2);
}

#[test]
fn an_open_breaker_answers_unavailable_at_once_instead_of_waiting_for_the_deadline() {
    // A catalog that takes connections and never answers: each call waits
    // for the whole deadline.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = || format!("http://127.0.0.1:{}", free_port());
    let served = serve(
        marketplace()
            .args(["serve", "--target", "gateway"])
            .env(env::GATEWAY_LISTEN_ADDR, "127.0.0.1:0")
            .env(env::GATEWAY_ACCOUNT_URL, down())
            .env(
                env::GATEWAY_CATALOG_URL,
                format!("http://{}", silent.local_addr().unwrap()),
            )
            .env(env::GATEWAY_ORDER_URL, down())
            .env(env::GATEWAY_DOWNSTREAM_TIMEOUT, "1s")
            .env(env::BREAKER_FAILURE_THRESHOLD, "2")
            .env(env::BREAKER_OPEN_DURATION, "1m"),
        true,
    );
    let graphql = Graphql::new(&served.address);
    let timed = || {
        let started = Instant::now();
        let (code, message) = graphql.error("{ products { id } }", json!({}));
        (code, message, started.elapsed())
    };

    let slow = [timed(), timed()];
    let fast = [timed(), timed(), timed()];

    for (code, message, elapsed) in slow.iter().chain(&fast) {
        assert_eq!(code, "UNAVAILABLE", "{message} after {elapsed:?}");
        assert_eq!(
            message,
            "the catalog service is unavailable; try again later"
        );
    }
    for (_, _, elapsed) in &slow {
        assert!(*elapsed >= Duration::from_millis(900), "{elapsed:?}");
    }
    for (_, _, elapsed) in &fast {
        assert!(*elapsed < Duration::from_millis(500), "{elapsed:?}");
    }
    let breaker = [("component", "gateway"), ("dependency", "catalog")];
    assert_eq!(
        metric(&graphql, "marketplace_circuit_breaker_state", &breaker),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &graphql,
            "marketplace_circuit_breaker_rejected_total",
            &breaker
        ),
        Some(3.0)
    );
    // Calls the breaker refused never reached the catalog: only the two
    // before it opened were sent.
    assert_eq!(graphql.calls("ListProducts"), 2);
    drop(silent);
}
