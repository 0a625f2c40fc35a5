//! Proves a test's own PostgreSQL server can be stopped and started again
//! on the same address, keeping its data.

// Test code: a failed unwrap is a failed test, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn a_stopped_server_refuses_connections_and_keeps_its_data_across_a_restart() {
    let Some(mut server) = marketplace_testkit::postgres::server().await else {
        return;
    };
    let url = server.url();
    let mut before = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE orders (id TEXT PRIMARY KEY); INSERT INTO orders VALUES ('o1')")
        .execute(&mut before)
        .await
        .unwrap();

    server.stop().await;
    let while_stopped = PgConnection::connect(&url).await;
    let lost = sqlx::query("SELECT 1").execute(&mut before).await;
    server.start().await;
    let mut after = PgConnection::connect(&server.url()).await.unwrap();
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM orders")
        .fetch_all(&mut after)
        .await
        .unwrap();

    assert!(while_stopped.is_err(), "connected to a stopped server");
    assert!(lost.is_err(), "a connection survived the shutdown");
    assert_eq!(server.url(), url);
    assert!(server.is_running());
    assert_eq!(ids, ["o1"]);
}

#[tokio::test]
async fn the_server_runs_on_loopback_and_stopping_twice_is_harmless() {
    let Some(mut server) = marketplace_testkit::postgres::server().await else {
        return;
    };
    let mut connection = PgConnection::connect(&server.url()).await.unwrap();
    let listen: String = sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    let _ = connection.close().await;

    server.stop().await;
    server.stop().await;

    assert_eq!(listen, "127.0.0.1");
    assert!(!server.is_running());
    assert!(PgConnection::connect(&server.url()).await.is_err());
}
