//! The order service while what it depends on is down: a catalog that
//! stops answering, a database that is not up yet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use marketplace_config::{ResilienceConfig, SecretUrl};
use marketplace_grpc::Shared;
use marketplace_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{
    Downstreams, Gate, OrderDatabase, closed_port_url, order_client, order_request, sample,
    starting_order_service, wait_until,
};

const CATALOG_BREAKER: &str =
    r#"marketplace_circuit_breaker_state{component="order",dependency="catalog"}"#;
const CATALOG_REJECTED: &str =
    r#"marketplace_circuit_breaker_rejected_total{component="order",dependency="catalog"}"#;

/// Settings that open the catalog's breaker after a few failed calls and
/// probe again soon.
fn shared() -> Shared {
    Shared {
        metrics: marketplace_telemetry::Metrics::new(),
        resilience: ResilienceConfig {
            breaker_failure_threshold: 3,
            breaker_open_duration: Duration::from_millis(500),
            ..ResilienceConfig::default()
        },
    }
}

#[tokio::test]
async fn while_the_catalog_is_down_orders_fail_fast_with_unavailable_and_succeed_again_once_it_is_back()
 {
    let downstreams = Downstreams::start().await;
    let account = downstreams.account().await;
    let product = downstreams.product(125).await;
    let gate = Gate::closed(downstreams.catalog.addr).await;
    let shared = shared();
    let database = OrderDatabase::sqlite();
    let service = starting_order_service(
        database.url(),
        downstreams.account.url(),
        gate.url(),
        Duration::from_secs(2),
        &shared,
    )
    .await;
    wait_until(&service, ServingStatus::Serving).await;
    let mut orders = order_client(&service).await;
    let request = order_request(&account, &[(&product, 2)]);

    // The catalog fails every attempt, so its breaker opens.
    marketplace_testkit::eventually(
        "the order service's catalog breaker opens",
        Duration::from_secs(20),
        || {
            let (mut orders, request) = (orders.clone(), request.clone());
            let metrics = shared.metrics.clone();
            async move {
                let status = orders.create_order(request).await.unwrap_err();
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                (sample(&metrics.render(), CATALOG_BREAKER) == Some(1.0)).then_some(())
            }
        },
    )
    .await;

    // While it is open, orders fail at once, without waiting for the catalog.
    let started = Instant::now();
    let status = orders.create_order(request.clone()).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "the catalog service is unavailable; try again later"
    );
    assert!(took < Duration::from_millis(300), "failed after {took:?}");
    let rejected = sample(&shared.metrics.render(), CATALOG_REJECTED).unwrap();
    assert!(rejected >= 1.0, "{}", shared.metrics.render());

    // Back: within moments of the breaker's open duration, orders succeed.
    gate.open();
    let placed = place_eventually(&mut orders, &request).await;
    assert_eq!(placed.total_price.unwrap().minor_units, 250);
    assert_eq!(sample(&shared.metrics.render(), CATALOG_BREAKER), Some(0.0));
}

async fn place_eventually(
    orders: &mut OrderServiceClient<Channel>,
    request: &marketplace_proto::order::v1::CreateOrderRequest,
) -> marketplace_proto::order::v1::Order {
    marketplace_testkit::eventually("an order succeeds again", Duration::from_secs(10), || {
        let (mut orders, request) = (orders.clone(), request.clone());
        async move {
            match orders.create_order(request).await {
                Ok(response) => response.into_inner().order,
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    None
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_database_that_is_down_leaves_the_service_not_serving_and_orders_unavailable() {
    let downstreams = Downstreams::start().await;
    let account = downstreams.account().await;
    let product = downstreams.product(100).await;
    let url = closed_port_url()
        .await
        .replace("http://", "postgres://app:hunter2@");
    let service = starting_order_service(
        SecretUrl::new(format!("{url}/orders")),
        downstreams.account.url(),
        downstreams.catalog.url(),
        Duration::from_secs(5),
        &Shared::default(),
    )
    .await;

    wait_until(&service, ServingStatus::NotServing).await;
    let status = order_client(&service)
        .await
        .create_order(order_request(&account, &[(&product, 1)]))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "the order database is not ready; try again later"
    );
}

#[tokio::test]
async fn a_database_that_comes_up_after_the_service_makes_it_serving_without_a_restart() {
    let Some(mut server) = marketplace_testkit::postgres::server().await else {
        return;
    };
    server.stop().await;
    let downstreams = Downstreams::start().await;
    let account = downstreams.account().await;
    let product = downstreams.product(100).await;
    let service = starting_order_service(
        SecretUrl::new(server.url()),
        downstreams.account.url(),
        downstreams.catalog.url(),
        Duration::from_secs(5),
        &Shared::default(),
    )
    .await;
    wait_until(&service, ServingStatus::NotServing).await;

    server.start().await;

    wait_until(&service, ServingStatus::Serving).await;
    let placed = order_client(&service)
        .await
        .create_order(order_request(&account, &[(&product, 3)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(placed.total_price.unwrap().minor_units, 300);
}

/// How one CreateOrder under load ended.
#[derive(Debug, Clone)]
struct Outcome {
    started: Instant,
    result: Result<String, (Code, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_postgresql_under_load_loses_no_acknowledged_order_and_the_service_recovers_by_itself()
 {
    let Some(mut server) = marketplace_testkit::postgres::server().await else {
        return;
    };
    let downstreams = Downstreams::start().await;
    let account = downstreams.account().await;
    let product = downstreams.product(125).await;
    let service = starting_order_service(
        SecretUrl::new(server.url()),
        downstreams.account.url(),
        downstreams.catalog.url(),
        Duration::from_secs(5),
        &Shared::default(),
    )
    .await;
    wait_until(&service, ServingStatus::Serving).await;
    let orders = order_client(&service).await;
    let request = order_request(&account, &[(&product, 2)]);
    let outcomes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Outcome>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (mut orders, request) = (orders.clone(), request.clone());
            let (outcomes, stop) = (outcomes.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let started = Instant::now();
                    let result = match orders.create_order(request.clone()).await {
                        Ok(response) => Ok(response.into_inner().order.unwrap().id),
                        Err(status) => Err((status.code(), status.message().to_owned())),
                    };
                    outcomes.lock().unwrap().push(Outcome { started, result });
                }
            })
        })
        .collect();

    // Load before, during and after a restart of the database.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Instant::now();
    server.start().await;
    marketplace_testkit::eventually(
        "orders succeed again after PostgreSQL's restart",
        Duration::from_secs(20),
        || {
            let recent = outcomes
                .lock()
                .unwrap()
                .iter()
                .filter(|o| o.started > restarted && o.result.is_ok())
                .count();
            async move { (recent >= 20).then_some(()) }
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(!failed.is_empty(), "the restart was not noticed at all");
    for outcome in &failed {
        let (code, message) = outcome.result.as_ref().unwrap_err();
        assert_eq!(*code, Code::Unavailable, "{outcome:?}");
        assert_eq!(
            message, "the order database is unavailable; try again later",
            "{outcome:?}"
        );
    }
    // Every acknowledged order is there after the restart.
    let mut reader = orders.clone();
    let acknowledged: Vec<&String> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .collect();
    assert!(
        acknowledged.len() > 40,
        "only {} orders succeeded",
        acknowledged.len()
    );
    for id in acknowledged {
        let order = reader
            .get_order(marketplace_proto::order::v1::GetOrderRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap();
        assert_eq!(order.total_price.unwrap().minor_units, 250);
    }
}
