//! Accounts in an embedded SQLite file.
//!
//! `created_at` is stored as whole microseconds since the Unix epoch (UTC)
//! in an INTEGER column: it sorts and compares exactly, and round-trips the
//! microsecond timestamps the service creates.

use std::str::FromStr;

use chrono::DateTime;
use marketplace_config::SecretUrl;
use marketplace_config::env::ACCOUNT_DATABASE_URL;
use marketplace_domain::{Id, Page};
use marketplace_store::pool::TimedPool;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};

use super::{ACQUIRE_TIMEOUT, AccountStore, StorageError, account_from_row, distinct};
use crate::domain::Account;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's write lock before
/// failing with "database is locked".
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

type Row = (String, String, i64);

/// Accounts in a SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteAccounts {
    pool: TimedPool<Sqlite>,
}

impl SqliteAccounts {
    /// Opens `url` (`sqlite://PATH`), creating the file if it is missing,
    /// in WAL mode (readers do not block the writer), and migrates the
    /// schema.
    pub async fn connect(url: &SecretUrl, pool_size: u32) -> Result<Self, StorageError> {
        let path = url
            .expose()
            .trim_start_matches("sqlite:")
            .trim_start_matches("//");
        if path.is_empty() || path.starts_with('?') {
            return Err(StorageError::Configuration(format!(
                "{ACCOUNT_DATABASE_URL} names no SQLite file; write sqlite://PATH"
            )));
        }
        let options = SqliteConnectOptions::from_str(url.expose())
            .map_err(|error| {
                StorageError::Configuration(format!(
                    "{ACCOUNT_DATABASE_URL} is not a valid SQLite URL: {error}"
                ))
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT);
        // One connection of its own first, so that a database that is down
        // or refuses the credentials fails here with its own error rather
        // than as a pool timeout.
        SqliteConnection::connect_with(&options)
            .await?
            .close()
            .await?;
        let pool = TimedPool::lazy(
            SqlitePoolOptions::new()
                .max_connections(pool_size)
                .acquire_timeout(ACQUIRE_TIMEOUT),
            options,
        );
        MIGRATOR.run(pool.inner()).await?;
        Ok(Self { pool })
    }

    pub(super) fn pool_mut(&mut self) -> &mut TimedPool<Sqlite> {
        &mut self.pool
    }
}

/// Whether a SQLite result code means "cannot serve now, try again": the
/// file stayed locked by another writer for longer than the busy timeout.
pub(super) fn means_unavailable(code: &str) -> bool {
    const SQLITE_BUSY: i32 = 5;
    const SQLITE_LOCKED: i32 = 6;
    // Extended result codes keep the primary code in the low byte.
    code.parse::<i32>()
        .is_ok_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

fn account(row: Row) -> Result<Account, StorageError> {
    let (id, name, created_at) = row;
    account_from_row(id, name, DateTime::from_timestamp_micros(created_at))
}

impl AccountStore for SqliteAccounts {
    async fn create(&self, account: &Account) -> Result<(), StorageError> {
        let mut connection = self.pool.acquire().await?;
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(account.id.as_str())
            .bind(account.name.as_str())
            .bind(account.created_at.timestamp_micros())
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
        let ids = distinct(ids);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // SQLite has no arrays: one bound placeholder per id (at most 1000,
        // far below SQLite's limit on parameters).
        let mut query: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT id, name, created_at FROM accounts WHERE id IN (");
        let mut placeholders = query.separated(", ");
        for id in ids {
            placeholders.push_bind(id);
        }
        query.push(") ORDER BY created_at, id");
        let mut connection = self.pool.acquire().await?;
        let rows: Vec<Row> = query.build_query_as().fetch_all(&mut *connection).await?;
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
