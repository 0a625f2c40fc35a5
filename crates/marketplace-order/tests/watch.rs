//! WatchAccountOrders: new orders of one account, as they are placed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use marketplace_config::OrderConfig;
use marketplace_proto::order::v1::{Order, WatchAccountOrdersRequest};
use tonic::Code;
use tonic::Streaming;

use crate::support::{
    Downstreams, OrderDatabase, World, order_client, order_request, start_order_service,
};

async fn next_order(stream: &mut Streaming<Order>) -> Order {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an order arrives within 10 s")
        .unwrap()
        .expect("the stream is still open")
}

async fn watch(world: &mut World, account: &str) -> Streaming<Order> {
    world
        .orders
        .watch_account_orders(WatchAccountOrdersRequest {
            account_id: account.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_watcher_receives_its_accounts_new_orders_and_no_one_elses_on_sqlite() {
    let mut world = World::on(OrderDatabase::sqlite()).await;
    let (mine, theirs) = (
        world.downstreams.account().await,
        world.downstreams.account().await,
    );
    let product = world.downstreams.product(10).await;
    let mut stream = watch(&mut world, &mine).await;

    world
        .orders
        .create_order(order_request(&theirs, &[(&product, 1)]))
        .await
        .unwrap();
    let placed = world
        .orders
        .create_order(order_request(&mine, &[(&product, 3)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    let received = next_order(&mut stream).await;
    assert_eq!(received, placed);
}

#[tokio::test]
async fn a_watcher_receives_orders_placed_through_another_replica_on_postgresql() {
    let Some(database) = OrderDatabase::postgres().await else {
        return;
    };
    let mut world = World::on(database).await;
    let other_replica = start_order_service(
        &world.database,
        world.downstreams.account.url(),
        world.downstreams.catalog.url(),
        Duration::from_secs(5),
    )
    .await;
    let mut other_orders = order_client(&other_replica).await;
    let (mine, theirs) = (
        world.downstreams.account().await,
        world.downstreams.account().await,
    );
    let product = world.downstreams.product(70).await;
    let mut stream = watch(&mut world, &mine).await;

    other_orders
        .create_order(order_request(&theirs, &[(&product, 1)]))
        .await
        .unwrap();
    let placed = other_orders
        .create_order(order_request(&mine, &[(&product, 2)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();

    let received = next_order(&mut stream).await;
    assert_eq!(received, placed);
    assert_eq!(received.total_price.unwrap().minor_units, 140);
}

#[tokio::test]
async fn watching_a_malformed_account_id_is_refused() {
    let mut world = World::on(OrderDatabase::sqlite()).await;

    let status = world
        .orders
        .watch_account_orders(WatchAccountOrdersRequest {
            account_id: "someone".into(),
        })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("account_id"), "{status:?}");
    assert!(status.message().contains("\"someone\""), "{status:?}");
}

#[tokio::test]
async fn stopping_the_service_ends_open_watches_so_shutdown_completes() {
    let downstreams = Downstreams::start().await;
    let database = OrderDatabase::sqlite();
    let app = marketplace_order::Application::build(
        OrderConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            database_url: Some(database.url()),
            database_pool_size: 2,
            account_url: downstreams.account.url(),
            catalog_url: downstreams.catalog.url(),
            downstream_timeout: Duration::from_secs(5),
        },
        &marketplace_grpc::Shared::default(),
    )
    .await
    .unwrap();
    let url = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let mut orders =
        marketplace_proto::order::v1::order_service_client::OrderServiceClient::connect(url)
            .await
            .unwrap();
    let mut stream = orders
        .watch_account_orders(WatchAccountOrdersRequest {
            account_id: marketplace_domain::Id::generate().to_string(),
        })
        .await
        .unwrap()
        .into_inner();

    stop.send(()).unwrap();

    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the watch ends within 10 s")
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable);
    assert!(ended.message().contains("watch again"), "{ended:?}");
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the server stops within 10 s")
        .unwrap()
        .unwrap();
}
