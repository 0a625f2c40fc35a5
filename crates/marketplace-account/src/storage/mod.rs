//! Where accounts are kept: the [`AccountStore`] trait and its two
//! implementations, [`PostgresAccounts`] and [`SqliteAccounts`], plus
//! [`Accounts`], which picks one by the URL's scheme, and
//! [`GuardedAccounts`], the store as the service uses it: started in the
//! background, every call traced, timed and guarded.
//!
//! Every value reaches SQL as a bound parameter, never as text formatted
//! into a statement.

mod guarded;
mod postgres;
mod sqlite;

use std::error::Error;
use std::future::Future;
use std::time::Duration;

use marketplace_config::SecretUrl;
use marketplace_config::env::{ACCOUNT_DATABASE_POOL_SIZE, ACCOUNT_DATABASE_URL};
use marketplace_domain::{Id, Page, Text, TextRule};
use marketplace_store::{Cut, ManagedStore, SqlKind, StoreError};
use marketplace_telemetry::Metrics;
use marketplace_telemetry::metrics::StoreErrorKind;

use crate::domain::Account;

pub use self::guarded::GuardedAccounts;
pub use self::postgres::PostgresAccounts;
pub use self::sqlite::SqliteAccounts;

/// Longest wait for a pooled connection. Shorter than the callers' default
/// deadline (5 s), so a down database is answered with `UNAVAILABLE` rather
/// than the caller's own `DEADLINE_EXCEEDED`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest wait for the connection that starts a PostgreSQL store: an
/// address that swallows packets would otherwise hold the start-up for
/// minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Storage of accounts.
pub trait AccountStore: Send + Sync + 'static {
    /// Stores a new account exactly as given.
    fn create(&self, account: &Account) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The account with this id, if there is one.
    fn get(&self, id: &Id) -> impl Future<Output = Result<Option<Account>, StorageError>> + Send;

    /// The accounts among `ids` that exist, each once, oldest first.
    fn get_many(
        &self,
        ids: &[Id],
    ) -> impl Future<Output = Result<Vec<Account>, StorageError>> + Send;

    /// One page of all accounts, oldest first (ties broken by id).
    fn list(&self, page: Page) -> impl Future<Output = Result<Vec<Account>, StorageError>> + Send;
}

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URL or settings cannot work; the message says what to change.
    #[error("{0}")]
    Configuration(String),
    /// The database cannot be reached right now (connection refused or
    /// lost, pool exhausted, server shutting down or busy).
    #[error("the account database is unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug, a schema mismatch, corrupt data.
    #[error("the account database failed")]
    Unexpected(#[source] BoxError),
    /// The database has not been reached and migrated since the service
    /// started; the source is the last attempt's failure, if any.
    #[error("the account database is not ready")]
    NotReady(#[source] Option<BoxError>),
}

type BoxError = Box<dyn Error + Send + Sync + 'static>;

impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            Self::Unavailable(error.into())
        } else {
            Self::Unexpected(error.into())
        }
    }
}

/// A database that cannot be reached, or is not started yet, is
/// unavailable; any other error is its answer (see [`StoreError::kind`]).
impl StoreError for StorageError {
    fn kind(&self) -> StoreErrorKind {
        match self {
            Self::Unavailable(_) | Self::NotReady(_) => StoreErrorKind::Unavailable,
            Self::Configuration(_) | Self::Unexpected(_) => StoreErrorKind::Unexpected,
        }
    }

    fn cut(cut: Cut) -> Self {
        Self::Unavailable(Box::new(cut))
    }

    fn not_ready(last_failure: Option<BoxError>) -> Self {
        Self::NotReady(last_failure)
    }
}

impl From<sqlx::migrate::MigrateError> for StorageError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        use sqlx::migrate::MigrateError;
        let unavailable = match &error {
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => is_unavailable(e),
            _ => false,
        };
        if unavailable {
            Self::Unavailable(error.into())
        } else {
            Self::Unexpected(error.into())
        }
    }
}

fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => {
            if let Some(pg) = database.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                postgres::means_unavailable(pg.code())
            } else if let Some(code) = database.code() {
                sqlite::means_unavailable(&code)
            } else {
                false
            }
        }
        _ => false,
    }
}

/// A stored row that is not a valid account: found only if something other
/// than this service wrote to the table.
#[derive(Debug, thiserror::Error)]
#[error("the stored account {id:?} is invalid: {reason}")]
struct InvalidRow {
    id: String,
    reason: String,
}

/// Turns stored columns back into an [`Account`].
fn account_from_row(
    id: String,
    name: String,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Account, StorageError> {
    let invalid = |reason: String| {
        StorageError::Unexpected(
            InvalidRow {
                id: id.clone(),
                reason,
            }
            .into(),
        )
    };
    let parsed_id = Id::parse(&id).map_err(|e| invalid(e.to_string()))?;
    let name = Text::parse(&name, TextRule::ACCOUNT_NAME).map_err(|e| invalid(e.to_string()))?;
    let created_at = created_at.ok_or_else(|| invalid("created_at is out of range".to_owned()))?;
    Ok(Account {
        id: parsed_id,
        name,
        created_at,
    })
}

/// The ids to look up, each once (duplicates would only lengthen the query).
fn distinct(ids: &[Id]) -> Vec<&str> {
    let mut distinct: Vec<&str> = ids.iter().map(Id::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    distinct
}

/// The store named by `MARKETPLACE_ACCOUNT_DATABASE_URL`.
#[derive(Debug, Clone)]
pub enum Accounts {
    Postgres(PostgresAccounts),
    Sqlite(SqliteAccounts),
}

impl Accounts {
    /// The database `url` names, as [`Accounts::connect`] accepts it, not
    /// yet started: PostgreSQL is only checked to be a valid URL and
    /// connects on first use ([`Accounts::start`]); a SQLite file is local,
    /// so it is opened and migrated at once.
    pub async fn open(url: &SecretUrl, pool_size: u32) -> Result<Self, StorageError> {
        if pool_size == 0 {
            return Err(StorageError::Configuration(format!(
                "{ACCOUNT_DATABASE_POOL_SIZE} must be at least 1"
            )));
        }
        match url.scheme() {
            "postgres" | "postgresql" => Ok(Self::Postgres(PostgresAccounts::new(url, pool_size)?)),
            "sqlite" => Ok(Self::Sqlite(SqliteAccounts::connect(url, pool_size).await?)),
            other => Err(StorageError::Configuration(format!(
                "{ACCOUNT_DATABASE_URL} has the scheme {other:?}; accepted are postgres://, \
                 postgresql:// (PostgreSQL) and sqlite://PATH (an embedded SQLite file)"
            ))),
        }
    }

    /// Connects to the database `url` names (`postgres://` or
    /// `postgresql://` for PostgreSQL, `sqlite://PATH` for a SQLite file,
    /// created if missing), with at most `pool_size` connections, and brings
    /// its schema up to date. Safe when several replicas start at once: the
    /// PostgreSQL migrator holds an advisory lock while it migrates.
    pub async fn connect(url: &SecretUrl, pool_size: u32) -> Result<Self, StorageError> {
        if pool_size == 0 {
            return Err(StorageError::Configuration(format!(
                "{ACCOUNT_DATABASE_POOL_SIZE} must be at least 1"
            )));
        }
        match url.scheme() {
            "postgres" | "postgresql" => Ok(Self::Postgres(
                PostgresAccounts::connect(url, pool_size).await?,
            )),
            "sqlite" => Ok(Self::Sqlite(SqliteAccounts::connect(url, pool_size).await?)),
            other => Err(StorageError::Configuration(format!(
                "{ACCOUNT_DATABASE_URL} has the scheme {other:?}; accepted are postgres://, \
                 postgresql:// (PostgreSQL) and sqlite://PATH (an embedded SQLite file)"
            ))),
        }
    }
}

impl Accounts {
    fn kind(&self) -> SqlKind {
        match self {
            Self::Postgres(_) => SqlKind::Postgres,
            Self::Sqlite(_) => SqlKind::Sqlite,
        }
    }
}

impl ManagedStore for Accounts {
    type Error = StorageError;
    type StartError = StorageError;
    const COMPONENT: &'static str = "account";
    const NAME: &'static str = "the account database";

    /// Reaches the database and brings its schema up to date (nothing to
    /// do for SQLite, which [`Accounts::open`] migrated).
    async fn start(&self) -> Result<(), StorageError> {
        match self {
            Self::Postgres(store) => store.start().await,
            Self::Sqlite(_) => Ok(()),
        }
    }

    /// Whether the database answers, for readiness.
    async fn check(&self, _timeout: Duration) -> Result<(), StorageError> {
        match self {
            Self::Postgres(store) => store.check().await,
            Self::Sqlite(_) => Ok(()),
        }
    }

    fn is_embedded(&self) -> bool {
        self.kind().is_embedded()
    }

    fn store_label(&self) -> &'static str {
        self.kind().store_label()
    }

    fn db_system(&self) -> &'static str {
        self.kind().db_system()
    }

    /// Reports the pool in `metrics` as the account service's.
    fn observe_pool(&mut self, metrics: &Metrics) {
        match self {
            Self::Postgres(store) => store.pool_mut().observe("account", metrics),
            Self::Sqlite(store) => store.pool_mut().observe("account", metrics),
        }
    }

    /// Records that the database just failed (see
    /// [`marketplace_store::pool`]).
    fn note_failure(&self) {
        if let Self::Postgres(store) = self {
            store.pool().note_failure();
        }
    }
}

impl AccountStore for Accounts {
    async fn create(&self, account: &Account) -> Result<(), StorageError> {
        match self {
            Self::Postgres(store) => store.create(account).await,
            Self::Sqlite(store) => store.create(account).await,
        }
    }

    async fn get(&self, id: &Id) -> Result<Option<Account>, StorageError> {
        match self {
            Self::Postgres(store) => store.get(id).await,
            Self::Sqlite(store) => store.get(id).await,
        }
    }

    async fn get_many(&self, ids: &[Id]) -> Result<Vec<Account>, StorageError> {
        match self {
            Self::Postgres(store) => store.get_many(ids).await,
            Self::Sqlite(store) => store.get_many(ids).await,
        }
    }

    async fn list(&self, page: Page) -> Result<Vec<Account>, StorageError> {
        match self {
            Self::Postgres(store) => store.list(page).await,
            Self::Sqlite(store) => store.list(page).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_or_unstarted_database_is_unavailable() {
        for unavailable in [
            StorageError::Unavailable("connection refused".into()),
            StorageError::cut(Cut::BreakerOpen),
            StorageError::cut(Cut::TimedOut),
            StorageError::not_ready(None),
        ] {
            assert_eq!(
                unavailable.kind(),
                StoreErrorKind::Unavailable,
                "{unavailable:?}"
            );
        }
        for answered in [
            StorageError::Unexpected("malformed row".into()),
            StorageError::Configuration("no such scheme".to_owned()),
        ] {
            assert_eq!(answered.kind(), StoreErrorKind::Unexpected, "{answered:?}");
        }
    }
}
