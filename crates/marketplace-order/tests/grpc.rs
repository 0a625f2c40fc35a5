//! The order service over gRPC, with the real account and catalog services.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use marketplace_proto::order::v1::{
    GetOrderRequest, ListOrdersForAccountsRequest, Order, OrderLine,
};
use tokio::net::TcpListener;
use tonic::{Code, Status};

use crate::support::{
    Downstreams, OrderDatabase, World, closed_port_url, order_client, order_request,
    start_order_service,
};

/// Words that would mean a backend's own error text reached the client.
const BACKEND_WORDS: &[&str] = &[
    "sqlx",
    "database",
    "transport",
    "tcp",
    "refused",
    "h2",
    "tantivy",
    "Timeout expired",
];

/// The status has `code` and a message containing every one of `needles`
/// and nothing of a backend's error text.
fn assert_status(status: &Status, code: Code, needles: &[&str]) {
    assert_eq!(status.code(), code, "{status:?}");
    let message = status.message();
    for needle in needles {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    // What the message must say (ids among it, which are random and may
    // contain anything, "h2" included) is not backend text.
    let rest = needles.iter().fold(message.to_lowercase(), |rest, needle| {
        rest.replace(&needle.to_lowercase(), "")
    });
    for word in BACKEND_WORDS {
        assert!(
            !rest.contains(&word.to_lowercase()),
            "{message:?} reveals {word:?}"
        );
    }
}

fn total(order: &Order) -> i64 {
    order.total_price.unwrap().minor_units
}

fn unit_price(line: &OrderLine) -> i64 {
    line.unit_price.unwrap().minor_units
}

async fn the_acceptance_example_totals_exactly_1_60(database: OrderDatabase) {
    let mut world = World::on(database).await;
    let account = world.downstreams.account().await;
    let a = world.downstreams.product(10).await;
    let b = world.downstreams.product(20).await;
    let c = world.downstreams.product(70).await;

    let created = world
        .orders
        .create_order(order_request(&account, &[(&a, 3), (&b, 3), (&c, 1)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    assert_eq!(total(&created), 160);
    assert_eq!(created.account_id, account);
    let mut lines: Vec<(String, u32, i64)> = created
        .lines
        .iter()
        .map(|l| (l.product_id.clone(), l.quantity, unit_price(l)))
        .collect();
    lines.sort();
    let mut expected = vec![(a, 3, 10), (b, 3, 20), (c, 1, 70)];
    expected.sort();
    assert_eq!(lines, expected);
    let read = world
        .orders
        .get_order(GetOrderRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(read, created);
    let listed = world
        .orders
        .list_orders_for_accounts(ListOrdersForAccountsRequest {
            account_ids: vec![account],
            take_per_account: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert_eq!(listed, vec![created]);
}

#[tokio::test]
async fn the_acceptance_example_totals_exactly_1_60_on_sqlite() {
    the_acceptance_example_totals_exactly_1_60(OrderDatabase::sqlite()).await;
}

#[tokio::test]
async fn the_acceptance_example_totals_exactly_1_60_on_postgresql() {
    let Some(database) = OrderDatabase::postgres().await else {
        return;
    };
    the_acceptance_example_totals_exactly_1_60(database).await;
}

async fn orders_of_several_accounts_are_listed_newest_first(database: OrderDatabase) {
    let mut world = World::on(database).await;
    let (ada, grace, idle) = (
        world.downstreams.account().await,
        world.downstreams.account().await,
        world.downstreams.account().await,
    );
    let product = world.downstreams.product(250).await;
    let mut placed = Vec::new();
    for (account, quantity) in [(&ada, 1), (&grace, 2), (&ada, 3), (&grace, 4)] {
        let order = world
            .orders
            .create_order(order_request(account, &[(&product, quantity)]))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        placed.push(order);
    }

    let listed = world
        .orders
        .list_orders_for_accounts(ListOrdersForAccountsRequest {
            account_ids: vec![ada.clone(), grace.clone(), idle],
            take_per_account: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .orders;

    placed.reverse();
    assert_eq!(listed, placed);
    assert_eq!(
        listed.iter().map(total).collect::<Vec<_>>(),
        [1000, 750, 500, 250]
    );
}

#[tokio::test]
async fn orders_of_several_accounts_are_listed_newest_first_on_sqlite() {
    orders_of_several_accounts_are_listed_newest_first(OrderDatabase::sqlite()).await;
}

#[tokio::test]
async fn orders_of_several_accounts_are_listed_newest_first_on_postgresql() {
    let Some(database) = OrderDatabase::postgres().await else {
        return;
    };
    orders_of_several_accounts_are_listed_newest_first(database).await;
}

#[tokio::test]
async fn a_listing_returns_the_newest_take_per_account_orders_of_each_account() {
    let (mut world, ada, product, _) = counted_world().await;
    let grace = world.downstreams.account().await;
    let mut placed = Vec::new();
    for (account, quantity) in [(&ada, 1), (&grace, 2), (&ada, 3), (&grace, 4), (&ada, 5)] {
        let order = world
            .orders
            .create_order(order_request(account, &[(&product, quantity)]))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        placed.push(order);
    }

    let listed = world
        .orders
        .list_orders_for_accounts(ListOrdersForAccountsRequest {
            account_ids: vec![ada, grace],
            take_per_account: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .orders;

    assert_eq!(listed, vec![placed[4].clone(), placed[3].clone()]);
}

#[tokio::test]
async fn each_order_makes_one_account_call_and_one_catalog_call_whatever_its_lines() {
    let mut world = World::with(Downstreams::start_counted().await, OrderDatabase::sqlite()).await;
    let account = world.downstreams.account().await;
    let mut products = Vec::new();
    for price in 1..=50 {
        products.push(world.downstreams.product(price).await);
    }

    for lines in [1, 5, 50] {
        let request: Vec<(&str, u32)> = products[..lines].iter().map(|p| (p.as_str(), 2)).collect();
        let before = world.downstreams.calls();

        let order = world
            .orders
            .create_order(order_request(&account, &request))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();

        let after = world.downstreams.calls();
        assert_eq!(order.lines.len(), lines);
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (1, 1),
            "calls to (account, catalog) for an order of {lines} lines"
        );
    }
}

/// A world whose downstreams count calls, an account and two products.
async fn counted_world() -> (World, String, String, String) {
    let world = World::with(Downstreams::start_counted().await, OrderDatabase::sqlite()).await;
    let account = world.downstreams.account().await;
    let a = world.downstreams.product(100).await;
    let b = world.downstreams.product(200).await;
    (world, account, a, b)
}

/// Creating the order fails with `code` and a message containing
/// `needles`, and, when `calls` says so, without calling any downstream.
async fn assert_refused_before_any_call(
    request: marketplace_proto::order::v1::CreateOrderRequest,
    needles: &[&str],
) {
    let (mut world, _, _, _) = counted_world().await;
    let before = world.downstreams.calls();

    let status = world.orders.create_order(request).await.unwrap_err();

    assert_status(&status, Code::InvalidArgument, needles);
    assert_eq!(
        world.downstreams.calls(),
        before,
        "no downstream was called"
    );
}

const SOME_ACCOUNT: &str = "0ujtsYcgvSTl8PAuAdqWYSMnLOv";
const SOME_PRODUCT: &str = "0ujzPyRiIAffKhBux4PvQdDqMHY";

#[tokio::test]
async fn an_order_without_lines_is_refused() {
    assert_refused_before_any_call(
        order_request(SOME_ACCOUNT, &[]),
        &["an order needs at least one line"],
    )
    .await;
}

#[tokio::test]
async fn an_order_of_101_lines_is_refused() {
    let products: Vec<String> = (0..101)
        .map(|_| marketplace_domain::Id::generate().to_string())
        .collect();
    let lines: Vec<(&str, u32)> = products.iter().map(|p| (p.as_str(), 1)).collect();

    assert_refused_before_any_call(order_request(SOME_ACCOUNT, &lines), &["at most 100", "101"])
        .await;
}

#[tokio::test]
async fn a_product_on_two_lines_is_refused_naming_it() {
    assert_refused_before_any_call(
        order_request(SOME_ACCOUNT, &[(SOME_PRODUCT, 1), (SOME_PRODUCT, 2)]),
        &[SOME_PRODUCT, "more than one line"],
    )
    .await;
}

#[tokio::test]
async fn a_quantity_of_zero_is_refused_naming_the_product() {
    assert_refused_before_any_call(
        order_request(SOME_ACCOUNT, &[(SOME_PRODUCT, 0)]),
        &[SOME_PRODUCT, "between 1 and 1000", "not 0"],
    )
    .await;
}

#[tokio::test]
async fn a_quantity_of_1001_is_refused_naming_the_product() {
    assert_refused_before_any_call(
        order_request(SOME_ACCOUNT, &[(SOME_PRODUCT, 1001)]),
        &[SOME_PRODUCT, "between 1 and 1000", "not 1001"],
    )
    .await;
}

#[tokio::test]
async fn a_malformed_account_id_is_refused() {
    assert_refused_before_any_call(
        order_request("not-an-id", &[(SOME_PRODUCT, 1)]),
        &["account_id", "not-an-id", "27-character"],
    )
    .await;
}

#[tokio::test]
async fn a_malformed_product_id_is_refused() {
    assert_refused_before_any_call(
        order_request(SOME_ACCOUNT, &[(SOME_PRODUCT, 1), ("bad'id", 1)]),
        &["lines[1].product_id", "bad'id", "27-character"],
    )
    .await;
}

#[tokio::test]
async fn an_unknown_account_is_not_found_by_name() {
    let (mut world, _, a, _) = counted_world().await;
    let unknown = marketplace_domain::Id::generate().to_string();

    let status = world
        .orders
        .create_order(order_request(&unknown, &[(&a, 1)]))
        .await
        .unwrap_err();

    assert_status(
        &status,
        Code::NotFound,
        &[&format!("account {unknown} does not exist")],
    );
}

#[tokio::test]
async fn unknown_products_are_not_found_and_every_one_is_named() {
    let (mut world, account, a, _) = counted_world().await;
    let unknown_1 = marketplace_domain::Id::generate().to_string();
    let unknown_2 = marketplace_domain::Id::generate().to_string();

    let status = world
        .orders
        .create_order(order_request(
            &account,
            &[(&unknown_1, 1), (&a, 1), (&unknown_2, 1)],
        ))
        .await
        .unwrap_err();

    assert_status(
        &status,
        Code::NotFound,
        &[&unknown_1, &unknown_2, "do not exist"],
    );
    assert!(!status.message().contains(&a));
    let listed = world
        .orders
        .list_orders_for_accounts(ListOrdersForAccountsRequest {
            account_ids: vec![account],
            take_per_account: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert!(listed.is_empty(), "nothing was stored");
}

#[tokio::test]
async fn an_account_service_that_is_down_makes_the_order_unavailable() {
    let downstreams = Downstreams::start().await;
    let product = downstreams.product(100).await;
    let database = OrderDatabase::sqlite();
    let service = start_order_service(
        &database,
        closed_port_url().await,
        downstreams.catalog.url(),
        Duration::from_secs(5),
    )
    .await;

    let status = order_client(&service)
        .await
        .create_order(order_request(SOME_ACCOUNT, &[(&product, 1)]))
        .await
        .unwrap_err();

    assert_status(
        &status,
        Code::Unavailable,
        &["the account service is unavailable; try again later"],
    );
}

#[tokio::test]
async fn a_catalog_service_that_is_down_makes_the_order_unavailable() {
    let downstreams = Downstreams::start().await;
    let account = downstreams.account().await;
    let database = OrderDatabase::sqlite();
    let service = start_order_service(
        &database,
        downstreams.account.url(),
        closed_port_url().await,
        Duration::from_secs(5),
    )
    .await;

    let status = order_client(&service)
        .await
        .create_order(order_request(&account, &[(SOME_PRODUCT, 1)]))
        .await
        .unwrap_err();

    assert_status(
        &status,
        Code::Unavailable,
        &["the catalog service is unavailable; try again later"],
    );
}

#[tokio::test]
async fn a_catalog_that_never_answers_makes_the_order_unavailable_at_the_deadline() {
    let downstreams = Downstreams::start().await;
    let account = downstreams.account().await;
    // Connections are queued by the kernel but never accepted or answered.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let database = OrderDatabase::sqlite();
    let service = start_order_service(
        &database,
        downstreams.account.url(),
        format!("http://{}", silent.local_addr().unwrap()),
        Duration::from_millis(500),
    )
    .await;
    let mut orders = order_client(&service).await;

    let status = tokio::time::timeout(
        Duration::from_secs(10),
        orders.create_order(order_request(&account, &[(SOME_PRODUCT, 1)])),
    )
    .await
    .expect("the order service answers soon after its 500 ms downstream deadline")
    .unwrap_err();

    assert_status(
        &status,
        Code::Unavailable,
        &["the catalog service is unavailable; try again later"],
    );
}

#[tokio::test]
async fn an_order_whose_total_exceeds_the_largest_amount_is_refused() {
    let (mut world, account, _, _) = counted_world().await;
    let priciest = world.downstreams.product(10_000_000_000_000).await;

    let status = world
        .orders
        .create_order(order_request(&account, &[(&priciest, 2)]))
        .await
        .unwrap_err();

    assert_status(
        &status,
        Code::InvalidArgument,
        &["exceed the maximum amount of 100000000000.00"],
    );
}

#[tokio::test]
async fn a_malformed_order_id_is_refused_and_an_unknown_one_is_not_found() {
    let (mut world, _, _, _) = counted_world().await;
    let unknown = marketplace_domain::Id::generate().to_string();

    let malformed = world
        .orders
        .get_order(GetOrderRequest { id: "42".into() })
        .await
        .unwrap_err();
    let absent = world
        .orders
        .get_order(GetOrderRequest {
            id: unknown.clone(),
        })
        .await
        .unwrap_err();

    assert_status(&malformed, Code::InvalidArgument, &["id", "\"42\""]);
    assert_status(
        &absent,
        Code::NotFound,
        &[&format!("order {unknown} does not exist")],
    );
}

#[tokio::test]
async fn listing_more_than_100_accounts_or_a_malformed_id_is_refused() {
    let (mut world, account, _, _) = counted_world().await;
    let too_many: Vec<String> = (0..101)
        .map(|_| marketplace_domain::Id::generate().to_string())
        .collect();

    let many = world
        .orders
        .list_orders_for_accounts(ListOrdersForAccountsRequest {
            account_ids: too_many,
            take_per_account: 0,
        })
        .await
        .unwrap_err();
    let malformed = world
        .orders
        .list_orders_for_accounts(ListOrdersForAccountsRequest {
            account_ids: vec![account, "nope".into()],
            take_per_account: 0,
        })
        .await
        .unwrap_err();
    let empty = world
        .orders
        .list_orders_for_accounts(ListOrdersForAccountsRequest {
            account_ids: vec![],
            take_per_account: 0,
        })
        .await
        .unwrap()
        .into_inner();

    assert_status(&many, Code::InvalidArgument, &["at most 100 ", "101"]);
    assert_status(
        &malformed,
        Code::InvalidArgument,
        &["account_ids[1]", "\"nope\""],
    );
    assert!(empty.orders.is_empty());
}

#[tokio::test]
async fn the_server_reports_serving_for_the_order_service() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let (world, _, _, _) = counted_world().await;

    let status = HealthClient::new(world.service.channel().await)
        .check(HealthCheckRequest {
            service: "marketplace.order.v1.OrderService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;

    assert_eq!(status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn reflection_lists_the_order_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let (world, _, _, _) = counted_world().await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };

    let mut responses = ServerReflectionClient::new(world.service.channel().await)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();

    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a list of services: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"marketplace.order.v1.OrderService".to_owned()),
        "{names:?}"
    );
}
