//! Accounts in PostgreSQL: the seed's `accounts` table.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use marketplace_config::SecretUrl;
use marketplace_config::env::ACCOUNT_DATABASE_URL;
use marketplace_domain::{Id, Page};
use marketplace_store::pool::TimedPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres};

use super::{
    ACQUIRE_TIMEOUT, AccountStore, CONNECT_TIMEOUT, StorageError, account_from_row, distinct,
};
use crate::domain::Account;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

type Row = (String, String, DateTime<Utc>);

/// Accounts in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresAccounts {
    pool: TimedPool<Postgres>,
    /// Behind an `Arc`: the options are large, and the store is a
    /// variant of an enum.
    options: Arc<PgConnectOptions>,
}

impl PostgresAccounts {
    /// The database at `url` (`postgres://...`), not yet contacted: the
    /// pool connects on first use. Only a malformed URL fails here.
    pub fn new(url: &SecretUrl, pool_size: u32) -> Result<Self, StorageError> {
        let options = PgConnectOptions::from_str(url.expose()).map_err(|error| {
            StorageError::Configuration(format!(
                "{ACCOUNT_DATABASE_URL} is not a valid PostgreSQL URL: {error}"
            ))
        })?;
        let pool = TimedPool::lazy(
            PgPoolOptions::new()
                .max_connections(pool_size)
                .acquire_timeout(ACQUIRE_TIMEOUT),
            options.clone(),
        );
        Ok(Self {
            pool,
            options: Arc::new(options),
        })
    }

    /// Connects to `url` and migrates the schema: [`PostgresAccounts::new`]
    /// and [`PostgresAccounts::start`].
    pub async fn connect(url: &SecretUrl, pool_size: u32) -> Result<Self, StorageError> {
        let store = Self::new(url, pool_size)?;
        store.start().await?;
        Ok(store)
    }

    /// Reaches the database and migrates the schema. The migrator holds a
    /// PostgreSQL advisory lock while it works, so replicas starting
    /// together migrate one after the other.
    pub async fn start(&self) -> Result<(), StorageError> {
        // One connection of its own first, so that a database that is down
        // or refuses the credentials fails here with its own error rather
        // than as a pool timeout.
        let connection =
            tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&self.options))
                .await
                .map_err(|_| {
                    StorageError::Unavailable(
                        format!("no connection within {CONNECT_TIMEOUT:?}").into(),
                    )
                })??;
        connection.close().await?;
        MIGRATOR.run(self.pool.inner()).await?;
        Ok(())
    }

    /// Whether the database answers a trivial query.
    pub(super) async fn check(&self) -> Result<(), StorageError> {
        let mut connection = self.pool.acquire().await?;
        sqlx::query("SELECT 1").execute(&mut *connection).await?;
        Ok(())
    }

    pub(super) fn pool_mut(&mut self) -> &mut TimedPool<Postgres> {
        &mut self.pool
    }

    pub(super) fn pool(&self) -> &TimedPool<Postgres> {
        &self.pool
    }
}

/// Whether a PostgreSQL SQLSTATE means "cannot serve now, try again":
/// connection exceptions, too many connections, and the server shutting
/// down or starting up.
pub(super) fn means_unavailable(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "53300" | "57P01" | "57P02" | "57P03")
}

fn account(row: Row) -> Result<Account, StorageError> {
    let (id, name, created_at) = row;
    account_from_row(id, name, Some(created_at))
}

impl AccountStore for PostgresAccounts {
    async fn create(&self, account: &Account) -> Result<(), StorageError> {
        let mut connection = self.pool.acquire().await?;
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(account.id.as_str())
            .bind(account.name.as_str())
            .bind(account.created_at)
            .execute(&mut *connection)
            .await?;
        Ok(())
    }

    async fn get(&self, id: &Id) -> Result<Option<Account>, StorageError> {
        let mut connection = self.pool.acquire().await?;
        let row: Option<Row> =
            sqlx::query_as("SELECT id, name, created_at FROM accounts WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&mut *connection)
                .await?;
        row.map(account).transpose()
    }

    async fn get_many(&self, ids: &[Id]) -> Result<Vec<Account>, StorageError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.pool.acquire().await?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, name, created_at FROM accounts WHERE id = ANY($1) \
             ORDER BY created_at, id",
        )
        .bind(distinct(ids))
        .fetch_all(&mut *connection)
        .await?;
        rows.into_iter().map(account).collect()
    }

    async fn list(&self, page: Page) -> Result<Vec<Account>, StorageError> {
        let mut connection = self.pool.acquire().await?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, name, created_at FROM accounts ORDER BY created_at, id \
             LIMIT $1 OFFSET $2",
        )
        .bind(i64::from(page.take()))
        .bind(i64::from(page.skip()))
        .fetch_all(&mut *connection)
        .await?;
        rows.into_iter().map(account).collect()
    }
}
