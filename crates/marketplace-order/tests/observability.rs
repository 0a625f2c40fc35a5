//! What the order service tells about itself: every storage call timed
//! and counted by operation, the pools' connections and waits, and the
//! calls it makes to the account and catalog services.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use marketplace_domain::{Id, Money};
use marketplace_grpc::Shared;
use marketplace_order::domain::{self, Order, OrderLine, Quantity, TakePerAccount};
use marketplace_order::storage::{GuardedOrders, OrderStore, Orders};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{
    Downstreams, OrderDatabase, order_client, order_request, sample, starting_order_service,
    wait_until,
};

/// A guarded store on `database`, once it is ready, and its metrics.
async fn guarded(database: &OrderDatabase) -> (GuardedOrders, Shared) {
    let shared = Shared::default();
    let store = GuardedOrders::new(Orders::open(&database.url(), 4).await.unwrap(), &shared);
    let readiness = store.readiness();
    marketplace_testkit::eventually(
        "the order database is ready",
        Duration::from_secs(30),
        || {
            let ready = readiness.is_ready();
            async move { ready.then_some(()) }
        },
    )
    .await;
    (store, shared)
}

fn order() -> Order {
    let unit_price = Money::from_minor_units(125).unwrap();
    Order {
        id: Id::generate(),
        account_id: Id::generate(),
        created_at: domain::now(),
        total_price: unit_price,
        lines: vec![OrderLine {
            product_id: Id::generate(),
            quantity: Quantity::new(1).unwrap(),
            unit_price,
        }],
    }
}

async fn each_call_is_timed_and_counted_and_the_pool_reported(
    database: OrderDatabase,
    store_label: &str,
    most_connections: f64,
) {
    let (store, shared) = guarded(&database).await;
    let placed = order();

    store.create(&placed).await.unwrap();
    assert_eq!(store.get(&placed.id).await.unwrap(), Some(placed.clone()));
    store
        .list_for_accounts(
            std::slice::from_ref(&placed.account_id),
            TakePerAccount::new(0),
        )
        .await
        .unwrap();

    let text = shared.metrics.render();
    for operation in ["create", "get", "list_for_accounts"] {
        let series = format!(
            r#"marketplace_store_operation_seconds_count{{component="order",operation="{operation}",store="{store_label}"}}"#
        );
        assert_eq!(sample(&text, &series), Some(1.0), "{series} in {text}");
    }
    // Nothing failed: every error series is there, at 0.
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("marketplace_store_errors_total{"))
        .collect();
    assert_eq!(errors.len(), 6, "two kinds for each operation: {text}");
    assert!(
        errors.iter().all(|line| line.ends_with(" 0")),
        "nothing failed: {text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"marketplace_store_up{{component="order",store="{store_label}"}}"#)
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"marketplace_db_pool_max_connections{component="order"}"#
        ),
        Some(most_connections),
        "{text}"
    );
    let waits = sample(
        &text,
        r#"marketplace_db_pool_acquire_seconds_count{component="order"}"#,
    )
    .unwrap();
    assert!(waits >= 3.0, "{text}");
    for state in ["idle", "in_use"] {
        let series =
            format!(r#"marketplace_db_pool_connections{{component="order",state="{state}"}}"#);
        assert!(sample(&text, &series).is_some(), "{series} in {text}");
    }
}

#[tokio::test]
async fn each_postgres_call_is_timed_and_counted_and_the_pool_reported() {
    let Some(database) = OrderDatabase::postgres().await else {
        return;
    };
    each_call_is_timed_and_counted_and_the_pool_reported(database, "postgres", 4.0).await;
}

#[tokio::test]
async fn each_sqlite_call_is_timed_and_counted_and_the_pool_reported() {
    // Four readers and the one writer.
    each_call_is_timed_and_counted_and_the_pool_reported(OrderDatabase::sqlite(), "sqlite", 5.0)
        .await;
}

#[tokio::test]
async fn the_calls_to_the_account_and_catalog_services_are_counted_by_method_and_code() {
    let downstreams = Downstreams::start().await;
    let account = downstreams.account().await;
    let product = downstreams.product(100).await;
    let shared = Shared::default();
    let database = OrderDatabase::sqlite();
    let service = starting_order_service(
        database.url(),
        downstreams.account.url(),
        downstreams.catalog.url(),
        Duration::from_secs(5),
        &shared,
    )
    .await;
    wait_until(&service, ServingStatus::Serving).await;
    let mut orders = order_client(&service).await;

    orders
        .create_order(order_request(&account, &[(&product, 1)]))
        .await
        .unwrap();
    let unknown = Id::generate().to_string();
    let status = orders
        .create_order(order_request(&unknown, &[(&product, 1)]))
        .await
        .unwrap_err();

    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let text = shared.metrics.render();
    for (service, method, code, count) in [
        ("account", "GetAccount", "OK", 1.0),
        ("account", "GetAccount", "NOT_FOUND", 1.0),
        ("catalog", "GetProducts", "OK", 2.0),
    ] {
        let series = format!(
            r#"grpc_client_handled_total{{component="order",grpc_code="{code}",grpc_method="{method}",grpc_service="marketplace.{service}.v1.{}Service"}}"#,
            if service == "account" {
                "Account"
            } else {
                "Catalog"
            }
        );
        assert_eq!(sample(&text, &series), Some(count), "{series} in {text}");
    }
    // An unknown account is an answer, not a failure of the service.
    for dependency in ["account", "catalog"] {
        let series = format!(
            r#"marketplace_circuit_breaker_state{{component="order",dependency="{dependency}"}}"#
        );
        assert_eq!(sample(&text, &series), Some(0.0), "{series} in {text}");
        let series =
            format!(r#"marketplace_retries_total{{component="order",dependency="{dependency}"}}"#);
        assert_eq!(sample(&text, &series), Some(0.0), "{series} in {text}");
    }
}
