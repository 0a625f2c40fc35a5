//! Proves the PostgreSQL that `cargo xtask test` starts is a real server,
//! and that each test gets a database of its own.

// Test code: a failed unwrap is a failed test, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::postgres::PgDatabaseError;

#[tokio::test]
async fn the_server_is_a_real_postgresql_that_reports_its_version() {
    let Some(db) = marketplace_testkit::postgres::database().await else {
        return;
    };
    let pool = db.pool().await;

    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let version_num: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&pool)
        .await
        .unwrap();
    let current: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();

    assert!(
        version.starts_with("PostgreSQL "),
        "version() said {version:?}"
    );
    // DROP DATABASE ... WITH (FORCE), which the fixture relies on, is 13+.
    assert!(version_num >= 13_00_00, "server_version_num {version_num}");
    assert_eq!(current, db.name());
}

#[tokio::test]
async fn a_migration_runs_and_rows_round_trip_verbatim() {
    let Some(db) = marketplace_testkit::postgres::database().await else {
        return;
    };
    let pool = db.pool().await;
    let accounts = [
        ("2a1", "Ada Lovelace"),
        ("2b2", "'; DROP TABLE accounts; --"),
        ("2c3", "Zoë \u{1F680} Ünïcødé"),
    ];

    sqlx::migrate!("tests/migrations").run(&pool).await.unwrap();
    for (id, name) in accounts {
        sqlx::query("INSERT INTO accounts (id, name) VALUES ($1, $2)")
            .bind(id)
            .bind(name)
            .execute(&pool)
            .await
            .unwrap();
    }
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, name FROM accounts ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let stamped: i64 =
        sqlx::query_scalar("SELECT count(*) FROM accounts WHERE created_at IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();

    let expected: Vec<(String, String)> = accounts
        .iter()
        .map(|(i, n)| ((*i).into(), (*n).into()))
        .collect();
    assert_eq!(rows, expected);
    assert_eq!(stamped, 3);
    assert_eq!(applied, vec![20_261_124_000_000]);
}

#[tokio::test]
async fn the_primary_key_is_enforced_by_the_server() {
    let Some(db) = marketplace_testkit::postgres::database().await else {
        return;
    };
    let pool = db.pool().await;
    sqlx::migrate!("tests/migrations").run(&pool).await.unwrap();
    let insert = "INSERT INTO accounts (id, name) VALUES ('same', 'first')";
    sqlx::query(insert).execute(&pool).await.unwrap();

    let error = sqlx::query(insert).execute(&pool).await.unwrap_err();

    let code = error
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<PgDatabaseError>())
        .map(|e| e.code());
    assert_eq!(code, Some("23505"), "{error}");
}

#[tokio::test]
async fn each_test_database_is_private_and_dropped_with_its_fixture() {
    let Some(first) = marketplace_testkit::postgres::database().await else {
        return;
    };
    let second = marketplace_testkit::postgres::database()
        .await
        .expect("configured for the first one");
    let (first_pool, second_pool) = (first.pool().await, second.pool().await);

    sqlx::query("CREATE TABLE only_here (x int)")
        .execute(&first_pool)
        .await
        .unwrap();
    let visible: Option<String> = sqlx::query_scalar("SELECT to_regclass('only_here')::text")
        .fetch_one(&second_pool)
        .await
        .unwrap();
    let name = first.name().to_owned();
    // The pool is still open: dropping the fixture must end its connections.
    drop(first);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&second_pool)
        .await
        .unwrap();

    assert_eq!(visible, None);
    assert_eq!(left, 0, "database {name} outlived its fixture");
    drop(first_pool);
}
