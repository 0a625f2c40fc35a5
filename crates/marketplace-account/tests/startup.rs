//! Start-up refuses configurations that cannot work, with a message that
//! says what to change and never the URL's secrets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use marketplace_account::Application;
use marketplace_config::SecretUrl;

use crate::common::config;

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

#[tokio::test]
async fn a_database_that_is_down_fails_start_up_with_the_reason() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app:hunter2@127.0.0.1:{port}/accounts");

    let error = build_error(Some(&url)).await;

    assert!(
        error.starts_with(
            "cannot open the account database (postgres) named by MARKETPLACE_ACCOUNT_DATABASE_URL"
        ),
        "{error}"
    );
    assert!(error.contains("refused"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
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
