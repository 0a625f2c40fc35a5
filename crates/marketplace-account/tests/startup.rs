//! Start-up refuses configurations that cannot work, with a message that
//! says what to change and never the URL's secrets; a PostgreSQL database
//! that cannot be reached yet only delays readiness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use marketplace_account::Application;
use marketplace_config::SecretUrl;
use marketplace_proto::account::v1::{CreateAccountRequest, GetAccountRequest};
use marketplace_testkit::postgres;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::common::{Keep, Running, config};

async fn build_error(url: Option<&str>) -> String {
    let error = Application::build(
        config(url.map(SecretUrl::new)),
        &marketplace_grpc::Shared::default(),
    )
    .await
    .unwrap_err();
    format!("{error:#}")
}

#[tokio::test]
async fn a_missing_database_url_names_the_variable() {
    let error = build_error(None).await;

    assert!(
        error.starts_with("MARKETPLACE_ACCOUNT_DATABASE_URL is not set"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unknown_scheme_names_the_variable_and_the_accepted_schemes() {
    let error = build_error(Some("mysql://app:hunter2@db:3306/accounts")).await;

    assert!(
        error.contains("MARKETPLACE_ACCOUNT_DATABASE_URL"),
        "{error}"
    );
    assert!(error.contains("postgres://"), "{error}");
    assert!(error.contains("sqlite://PATH"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

#[tokio::test]
async fn a_sqlite_url_without_a_path_is_refused() {
    let error = build_error(Some("sqlite://")).await;

    assert!(error.contains("names no SQLite file"), "{error}");
}

/// A URL of a port where nothing listens: bound a moment ago, then freed.
fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("postgres://app:hunter2@127.0.0.1:{port}/accounts")
}

#[tokio::test]
async fn a_database_that_is_down_leaves_the_service_not_serving_and_its_calls_unavailable() {
    let mut app = Running::starting(SecretUrl::new(closed_port_url()), Keep::Nothing).await;

    app.wait_until(ServingStatus::NotServing).await;
    let status = app
        .client
        .create_account(CreateAccountRequest {
            name: "too early".to_owned(),
        })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "the account database is not ready; try again later"
    );
}

#[tokio::test]
async fn the_readiness_flag_names_the_database_and_is_down_while_it_is_unreachable() {
    let application = Application::build(
        config(Some(SecretUrl::new(closed_port_url()))),
        &marketplace_grpc::Shared::default(),
    )
    .await
    .unwrap();

    let readiness = application.readiness();

    assert_eq!(readiness.len(), 1);
    assert_eq!(readiness[0].name(), "the account database");
    assert!(!readiness[0].is_ready());
}

#[tokio::test]
async fn a_database_that_comes_up_after_the_service_makes_it_serving_without_a_restart() {
    let Some(mut server) = postgres::server().await else {
        return;
    };
    server.stop().await;
    let mut app = Running::starting(SecretUrl::new(server.url()), Keep::Nothing).await;
    app.wait_until(ServingStatus::NotServing).await;

    server.start().await;

    app.wait_until(ServingStatus::Serving).await;
    let created = app
        .client
        .create_account(CreateAccountRequest {
            name: "after the database came up".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    let fetched = app
        .client
        .get_account(GetAccountRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(fetched, created);
}

#[tokio::test]
async fn a_sqlite_file_is_ready_at_once() {
    let dir = tempfile::TempDir::new().unwrap();
    let application = Application::build(
        config(Some(common::sqlite_url(&dir))),
        &marketplace_grpc::Shared::default(),
    )
    .await
    .unwrap();

    assert!(application.readiness().iter().all(|r| r.is_ready()));
}

#[tokio::test]
async fn a_pool_of_zero_connections_is_refused() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut config = config(Some(common::sqlite_url(&dir)));
    config.database_pool_size = 0;

    let error = format!(
        "{:#}",
        Application::build(config, &marketplace_grpc::Shared::default())
            .await
            .unwrap_err()
    );

    assert!(
        error.contains("MARKETPLACE_ACCOUNT_DATABASE_POOL_SIZE must be at least 1"),
        "{error}"
    );
}
