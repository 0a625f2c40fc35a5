//! A fresh PostgreSQL database per test, dropped when the fixture is.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::Backend;

/// A database of its own on the run's PostgreSQL server.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

/// Creates an empty database; `None` when PostgreSQL is not configured
/// (see the crate docs).
///
/// # Panics
///
/// When the server is configured but the database cannot be created.
pub async fn database() -> Option<TestDatabase> {
    let admin_url = Backend::Postgres.locate()?;
    let name = crate::unique_name("test_");
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {admin_url}: {e}"));
    // The name is generated above from hex digits, never from input.
    sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    let _ = admin.close().await;
    let mut url = url::Url::parse(&admin_url).expect("MARKETPLACE_TEST_POSTGRES_URL is a URL");
    url.set_path(&format!("/{name}"));
    Some(TestDatabase {
        name,
        url: url.into(),
        admin_url,
    })
}

impl TestDatabase {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection URL for this database, as a service would be given.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.url).expect("the test database URL parses")
    }

    /// A small pool on this database.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(5)
            .connect_with(self.connect_options())
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (name, admin_url) = (self.name.clone(), self.admin_url.clone());
        crate::block_on_cleanup(format!("database {name}"), async move {
            let mut admin = PgConnection::connect(&admin_url)
                .await
                .map_err(|e| e.to_string())?;
            // FORCE ends the test's own connections that are still open.
            sqlx::raw_sql(AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
            )))
            .execute(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
            let _ = admin.close().await;
            Ok(())
        });
    }
}
