//! What the store tells about itself: every call timed and counted by
//! operation, the pool's connections and waits, and whether the database
//! is up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use marketplace_account::domain::Account;
use marketplace_account::storage::{AccountStore, Accounts, GuardedAccounts, StorageError};
use marketplace_config::SecretUrl;
use marketplace_domain::{Id, Page};
use marketplace_grpc::Shared;
use marketplace_testkit::postgres;

use crate::common::{POOL_SIZE, name, sqlite_url};

/// A guarded store on `url`, once it is ready, and the process's metrics.
async fn guarded(url: &SecretUrl) -> (GuardedAccounts, Shared) {
    let shared = Shared::default();
    let store = GuardedAccounts::new(Accounts::open(url, POOL_SIZE).await.unwrap(), &shared);
    let readiness = store.readiness();
    marketplace_testkit::eventually(
        "the account database is ready",
        Duration::from_secs(30),
        || {
            let ready = readiness.is_ready();
            async move { ready.then_some(()) }
        },
    )
    .await;
    (store, shared)
}

/// The value of the series `series` (name and labels, exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

async fn each_call_is_timed_and_counted_by_operation(url: SecretUrl, store_label: &str) {
    let (store, shared) = guarded(&url).await;
    let account = Account::new(name("Ada Lovelace"));

    store.create(&account).await.unwrap();
    store.get(&account.id).await.unwrap();
    store.get(&Id::generate()).await.unwrap();
    store
        .get_many(std::slice::from_ref(&account.id))
        .await
        .unwrap();
    store.list(Page::default()).await.unwrap();

    let text = shared.metrics.render();
    for (operation, count) in [
        ("create", 1.0),
        ("get", 2.0),
        ("get_many", 1.0),
        ("list", 1.0),
    ] {
        let series = format!(
            r#"marketplace_store_operation_seconds_count{{component="account",operation="{operation}",store="{store_label}"}}"#
        );
        assert_eq!(sample(&text, &series), Some(count), "{series} in {text}");
    }
    // Nothing failed: every error series is there, at 0.
    let errors: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("marketplace_store_errors_total{"))
        .collect();
    assert_eq!(
        errors.len(),
        8,
        "two kinds for each of four operations: {text}"
    );
    assert!(
        errors.iter().all(|line| line.ends_with(" 0")),
        "nothing failed: {text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"marketplace_store_up{{component="account",store="{store_label}"}}"#)
        ),
        Some(1.0),
        "{text}"
    );
}

async fn the_pool_reports_its_size_connections_and_waits(url: SecretUrl) {
    let (store, shared) = guarded(&url).await;

    for _ in 0..3 {
        store.list(Page::default()).await.unwrap();
    }

    let text = shared.metrics.render();
    assert_eq!(
        sample(
            &text,
            r#"marketplace_db_pool_max_connections{component="account"}"#
        ),
        Some(f64::from(POOL_SIZE)),
        "{text}"
    );
    let waits = sample(
        &text,
        r#"marketplace_db_pool_acquire_seconds_count{component="account"}"#,
    )
    .unwrap();
    assert!(waits >= 3.0, "{waits} waits in {text}");
    // Connections go back to the pool in the background, after a ping.
    marketplace_testkit::eventually(
        "every connection is back in the pool",
        Duration::from_secs(10),
        || {
            let text = shared.metrics.render();
            let state = |state: &str| {
                sample(
                    &text,
                    &format!(
                        r#"marketplace_db_pool_connections{{component="account",state="{state}"}}"#
                    ),
                )
                .unwrap()
            };
            let (idle, in_use) = (state("idle"), state("in_use"));
            assert!(idle + in_use <= f64::from(POOL_SIZE), "{text}");
            async move { (idle >= 1.0 && in_use == 0.0).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn each_postgres_call_is_timed_and_counted_by_operation() {
    let Some(db) = postgres::database().await else {
        return;
    };
    each_call_is_timed_and_counted_by_operation(SecretUrl::new(db.url()), "postgres").await;
}

#[tokio::test]
async fn each_sqlite_call_is_timed_and_counted_by_operation() {
    let dir = tempfile::TempDir::new().unwrap();
    each_call_is_timed_and_counted_by_operation(sqlite_url(&dir), "sqlite").await;
}

#[tokio::test]
async fn the_postgres_pool_reports_its_size_connections_and_waits() {
    let Some(db) = postgres::database().await else {
        return;
    };
    the_pool_reports_its_size_connections_and_waits(SecretUrl::new(db.url())).await;
}

#[tokio::test]
async fn the_sqlite_pool_reports_its_size_connections_and_waits() {
    let dir = tempfile::TempDir::new().unwrap();
    the_pool_reports_its_size_connections_and_waits(sqlite_url(&dir)).await;
}

#[tokio::test]
async fn calls_before_the_database_is_ready_fail_as_not_ready_and_count_as_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let shared = Shared::default();
    let url = SecretUrl::new(format!("postgres://app@127.0.0.1:{port}/accounts"));
    let store = GuardedAccounts::new(Accounts::open(&url, POOL_SIZE).await.unwrap(), &shared);

    // The first start attempt fails at once: the port refuses connections.
    let error = marketplace_testkit::eventually(
        "a call fails naming why the database is not ready",
        Duration::from_secs(10),
        || async {
            match store.get(&Id::generate()).await {
                Err(StorageError::NotReady(Some(reason))) => Some(reason.to_string()),
                Err(StorageError::NotReady(None)) => None,
                other => panic!("{other:?}"),
            }
        },
    )
    .await;

    assert!(error.contains("refused"), "{error}");
    assert!(!store.readiness().is_ready());
    let text = shared.metrics.render();
    let failures = sample(
        &text,
        r#"marketplace_store_errors_total{component="account",kind="unavailable",operation="get",store="postgres"}"#,
    )
    .unwrap();
    assert!(failures >= 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            r#"marketplace_store_up{component="account",store="postgres"}"#
        ),
        Some(0.0),
        "{text}"
    );
}
