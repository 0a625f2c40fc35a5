//! The storage contract: the same checks against PostgreSQL and SQLite,
//! plus migrations (concurrent, repeated) on each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{Duration, TimeZone, Utc};
use marketplace_account::domain::Account;
use marketplace_account::storage::{AccountStore, Accounts};
use marketplace_config::SecretUrl;
use marketplace_domain::{Id, Page};
use marketplace_testkit::postgres;
use tempfile::TempDir;

use crate::common::{POOL_SIZE, name, sqlite_url};

/// An account created `seconds` after a fixed instant, so that tests
/// control the list order.
fn account_at(text: &str, seconds: i64) -> Account {
    let epoch = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    Account {
        id: Id::generate(),
        name: name(text),
        created_at: epoch + Duration::seconds(seconds) + Duration::microseconds(123_456),
    }
}

async fn created_accounts_are_returned_exactly(store: &impl AccountStore) {
    let account = Account::new(name("Ada Lovelace"));

    store.create(&account).await.unwrap();
    let found = store.get(&account.id).await.unwrap();

    assert_eq!(found, Some(account));
}

async fn an_unknown_id_is_not_found(store: &impl AccountStore) {
    store.create(&Account::new(name("Ada"))).await.unwrap();

    assert_eq!(store.get(&Id::generate()).await.unwrap(), None);
}

async fn get_many_returns_known_accounts_once_oldest_first(store: &impl AccountStore) {
    let (older, newer, other) = (account_at("a", 1), account_at("b", 2), account_at("c", 3));
    for account in [&newer, &older, &other] {
        store.create(account).await.unwrap();
    }
    let asked = [
        newer.id.clone(),
        Id::generate(),
        older.id.clone(),
        newer.id.clone(),
    ];

    let found = store.get_many(&asked).await.unwrap();

    assert_eq!(found, vec![older, newer]);
    assert_eq!(store.get_many(&[]).await.unwrap(), vec![]);
    assert_eq!(store.get_many(&[Id::generate()]).await.unwrap(), vec![]);
}

async fn list_pages_oldest_first_with_ties_broken_by_id(store: &impl AccountStore) {
    let mut accounts: Vec<Account> = (0..5).map(|i| account_at(&format!("n{i}"), i)).collect();
    // Two accounts created in the same microsecond: the id decides.
    let mut tie = account_at("tie", 2);
    tie.id = Id::generate();
    accounts.push(tie);
    for account in accounts.iter().rev() {
        store.create(account).await.unwrap();
    }
    accounts.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));

    let first = store.list(Page::new(0, 2)).await.unwrap();
    let second = store.list(Page::new(2, 2)).await.unwrap();
    let rest = store.list(Page::new(4, 0)).await.unwrap();
    let beyond = store.list(Page::new(10, 5)).await.unwrap();

    assert_eq!(first, accounts[0..2]);
    assert_eq!(second, accounts[2..4]);
    assert_eq!(rest, accounts[4..]);
    assert_eq!(beyond, vec![]);
}

async fn list_takes_100_by_default_and_at_most_1000(store: &impl AccountStore) {
    for i in 0..1001 {
        store.create(&account_at("many", i)).await.unwrap();
    }

    let default = store.list(Page::new(0, 0)).await.unwrap();
    let capped = store.list(Page::new(0, u32::MAX)).await.unwrap();
    let last = store.list(Page::new(1000, 0)).await.unwrap();

    assert_eq!(default.len(), 100);
    assert_eq!(capped.len(), 1000);
    assert_eq!(last.len(), 1);
    assert_eq!(default[..], capped[..100]);
}

async fn sql_in_a_name_is_stored_verbatim(store: &impl AccountStore) {
    let account = Account::new(name("'; DROP TABLE accounts; --"));

    store.create(&account).await.unwrap();

    assert_eq!(store.get(&account.id).await.unwrap(), Some(account.clone()));
    // The table is still there and still answers.
    assert_eq!(store.list(Page::default()).await.unwrap(), vec![account]);
}

async fn unicode_names_round_trip(store: &impl AccountStore) {
    let names = [
        "Zoë \u{1F680} Ünïcødé",
        "日本語の名前",
        "\u{05E9}\u{05DC}\u{05D5}\u{05DD}",
    ];
    let long = "é".repeat(200);
    for text in names.iter().copied().chain([long.as_str()]) {
        let account = Account::new(name(text));

        store.create(&account).await.unwrap();

        let found = store.get(&account.id).await.unwrap().unwrap();
        assert_eq!(found.name.as_str(), text);
    }
}

/// Runs each check on a fresh PostgreSQL database and on a fresh SQLite
/// file, as separate tests.
macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod postgres_contract {
            $(
                #[tokio::test]
                async fn $check() {
                    let Some((store, _db)) = crate::common::postgres_store().await else { return };
                    super::$check(&store).await;
                }
            )*
        }
        mod sqlite_contract {
            $(
                #[tokio::test]
                async fn $check() {
                    let (store, _dir) = crate::common::sqlite_store().await;
                    super::$check(&store).await;
                }
            )*
        }
    };
}

contract!(
    created_accounts_are_returned_exactly,
    an_unknown_id_is_not_found,
    get_many_returns_known_accounts_once_oldest_first,
    list_pages_oldest_first_with_ties_broken_by_id,
    list_takes_100_by_default_and_at_most_1000,
    sql_in_a_name_is_stored_verbatim,
    unicode_names_round_trip,
);

#[tokio::test]
async fn eight_replicas_migrating_one_postgres_database_at_once_all_succeed() {
    let Some(db) = postgres::database().await else {
        return;
    };
    let url = SecretUrl::new(db.url());

    let mut replicas = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = url.clone();
        replicas.spawn(async move { Accounts::connect(&url, 1).await });
    }
    let results = replicas.join_all().await;

    for result in &results {
        assert!(result.is_ok(), "{result:?}");
    }
    let pool = db.pool().await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'accounts'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'accounts' ORDER BY indexname",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(applied, 1);
    assert_eq!(tables, 1);
    assert_eq!(indexes, ["accounts_created_at_id", "accounts_pkey"]);
}

#[tokio::test]
async fn reconnecting_to_a_postgres_database_keeps_its_accounts() {
    let Some(db) = postgres::database().await else {
        return;
    };
    let url = SecretUrl::new(db.url());
    let account = Account::new(name("kept"));
    let first = Accounts::connect(&url, POOL_SIZE).await.unwrap();
    first.create(&account).await.unwrap();
    drop(first);

    let second = Accounts::connect(&url, POOL_SIZE).await.unwrap();

    assert!(matches!(second, Accounts::Postgres(_)));
    assert_eq!(second.get(&account.id).await.unwrap(), Some(account));
}

#[tokio::test]
async fn reconnecting_to_a_sqlite_file_keeps_its_accounts() {
    let dir = TempDir::new().unwrap();
    let url = sqlite_url(&dir);
    let account = Account::new(name("kept"));
    let first = Accounts::connect(&url, POOL_SIZE).await.unwrap();
    first.create(&account).await.unwrap();
    drop(first);

    let second = Accounts::connect(&url, POOL_SIZE).await.unwrap();

    assert!(matches!(second, Accounts::Sqlite(_)));
    assert_eq!(second.get(&account.id).await.unwrap(), Some(account));
}

#[tokio::test]
async fn a_sqlite_file_is_created_in_wal_mode() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("accounts.db");

    Accounts::connect(&sqlite_url(&dir), POOL_SIZE)
        .await
        .unwrap();

    assert!(path.exists());
    let mut connection = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        path.display()
    ))
    .await
    .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn an_unknown_scheme_names_the_variable_and_the_accepted_schemes() {
    let url = SecretUrl::new("mysql://app:hunter2@db/accounts");

    let error = Accounts::connect(&url, POOL_SIZE)
        .await
        .unwrap_err()
        .to_string();

    assert!(
        error.contains("MARKETPLACE_ACCOUNT_DATABASE_URL"),
        "{error}"
    );
    assert!(error.contains("\"mysql\""), "{error}");
    assert!(
        error.contains("postgres://") && error.contains("sqlite://PATH"),
        "{error}"
    );
    assert!(!error.contains("hunter2"), "{error}");
}

#[tokio::test]
async fn a_table_the_go_original_created_is_adopted_with_its_accounts() {
    let Some(db) = postgres::database().await else {
        return;
    };
    let pool = db.pool().await;
    // The seed's schema and a row as the Go original wrote it.
    sqlx::raw_sql(
        "CREATE TABLE accounts (
             id VARCHAR PRIMARY KEY,
             name VARCHAR NOT NULL,
             created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
         );
         INSERT INTO accounts (id, name, created_at)
         VALUES ('0ujtsYcgvSTl8PAuAdqWYSMnLOv', 'Seed customer', '2020-05-17 10:20:30.123456');",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let store = Accounts::connect(&SecretUrl::new(db.url()), POOL_SIZE)
        .await
        .unwrap();
    let id = Id::parse("0ujtsYcgvSTl8PAuAdqWYSMnLOv").unwrap();
    let adopted = store.get(&id).await.unwrap().unwrap();
    let fresh = Account::new(name("after adoption"));
    store.create(&fresh).await.unwrap();

    assert_eq!(adopted.name.as_str(), "Seed customer");
    assert_eq!(
        adopted.created_at,
        Utc.with_ymd_and_hms(2020, 5, 17, 10, 20, 30).unwrap() + Duration::microseconds(123_456)
    );
    assert_eq!(
        store.list(Page::default()).await.unwrap(),
        vec![adopted, fresh]
    );
}
