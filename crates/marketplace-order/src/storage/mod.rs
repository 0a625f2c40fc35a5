//! Where orders are kept: [`OrderStore`], with PostgreSQL for clusters and
//! SQLite for a single embedded process, chosen by URL scheme in
//! [`Orders::connect`].
//!
//! A store also announces every order created through any replica on the
//! same database ([`OrderStore::subscribe`]): PostgreSQL with
//! `pg_notify` inside the creating transaction, relayed by one `LISTEN`
//! connection per process; SQLite, a single process, after each commit.

mod guarded;
mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::error::Error;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use marketplace_config::SecretUrl;
use marketplace_domain::{Id, Money};
use marketplace_store::{Cut, ManagedStore, SqlKind, StoreError};
use marketplace_telemetry::Metrics;
use marketplace_telemetry::metrics::StoreErrorKind;
use tokio::sync::broadcast;

use crate::domain::{Order, OrderLine, Quantity, TakePerAccount};

pub use self::guarded::GuardedOrders;
pub use self::postgres::{PostgresOrders, sql as postgres_sql};
pub use self::sqlite::SqliteOrders;

/// How many new orders a slow watcher may fall behind before its watch is
/// ended rather than silently skipping orders.
const ANNOUNCEMENT_BUFFER: usize = 1024;

/// Longest wait for a pooled connection. Shorter than the callers' default
/// deadline (5 s), so a saturated or unreachable database is answered with
/// `UNAVAILABLE` rather than the caller's own `DEADLINE_EXCEEDED`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest wait for the connection that starts a PostgreSQL store: an
/// address that swallows packets would otherwise hold the start for
/// minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Orders, stored.
pub trait OrderStore: Send + Sync + 'static {
    /// Writes the order and all its lines in one transaction: all or nothing.
    fn create(&self, order: &Order) -> impl Future<Output = Result<(), StorageError>> + Send;

    fn get(&self, id: &Id) -> impl Future<Output = Result<Option<Order>, StorageError>> + Send;

    /// The newest `take` orders of each account, newest first, with their
    /// lines; in two queries whatever the number of accounts and orders.
    fn list_for_accounts(
        &self,
        account_ids: &[Id],
        take: TakePerAccount,
    ) -> impl Future<Output = Result<Vec<Order>, StorageError>> + Send;

    /// The orders created from now on, by this process or any other on the
    /// same database. A receiver that falls too far behind gets
    /// `RecvError::Lagged`.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Order>>;
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A unique constraint refused the write: the order id exists already,
    /// or a product is on two lines. Nothing was written.
    #[error("the order or one of its lines already exists")]
    Duplicate(#[source] sqlx::Error),
    /// The database cannot be reached right now (connection refused or
    /// lost, pool exhausted, server shutting down or busy, or its circuit
    /// breaker open).
    #[error("the order database is unreachable")]
    Unavailable(#[source] BoxError),
    #[error("the order database failed")]
    Unexpected(#[source] sqlx::Error),
    /// A stored row that no order could have produced.
    #[error("stored order {order_id} is malformed: {problem}")]
    Corrupt { order_id: String, problem: String },
    /// The database has not been reached and migrated since the service
    /// started; the source is the last attempt's failure, if any.
    #[error("the order database is not ready")]
    NotReady(#[source] Option<BoxError>),
}

impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Duplicate(error),
            sqlx::Error::Database(db) if is_connection_failure(db.as_ref()) => {
                Self::Unavailable(error.into())
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(error.into()),
            _ => Self::Unexpected(error),
        }
    }
}

/// A database that cannot be reached, or is not started yet, is
/// unavailable; any other error is its answer (see [`StoreError::kind`]).
/// A duplicate is the caller's.
impl StoreError for StorageError {
    fn kind(&self) -> StoreErrorKind {
        match self {
            Self::Unavailable(_) | Self::NotReady(_) => StoreErrorKind::Unavailable,
            Self::Duplicate(_) | Self::Unexpected(_) | Self::Corrupt { .. } => {
                StoreErrorKind::Unexpected
            }
        }
    }

    fn cut(cut: Cut) -> Self {
        Self::Unavailable(Box::new(cut))
    }

    fn not_ready(last_failure: Option<BoxError>) -> Self {
        Self::NotReady(last_failure)
    }
}

/// Whether a database's own error means "cannot serve now, try later",
/// read by the rules of the backend that raised it.
fn is_connection_failure(error: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = error.code() else {
        return false;
    };
    if error
        .try_downcast_ref::<sqlx::sqlite::SqliteError>()
        .is_some()
    {
        sqlite_means_unavailable(&code)
    } else {
        postgres_means_unavailable(&code)
    }
}

/// PostgreSQL's connection-exception class, shutdown and resource codes.
fn postgres_means_unavailable(sqlstate: &str) -> bool {
    sqlstate.starts_with("08")
        || sqlstate.starts_with("53")
        || matches!(sqlstate, "57P01" | "57P02" | "57P03")
}

/// SQLite's busy and locked result codes, extended ones included: the file
/// stayed locked by another connection for longer than the busy timeout.
fn sqlite_means_unavailable(code: &str) -> bool {
    const SQLITE_BUSY: i32 = 5;
    const SQLITE_LOCKED: i32 = 6;
    // Extended result codes keep the primary code in the low byte.
    code.parse::<i32>()
        .is_ok_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "{} must be at least 1",
        marketplace_config::env::ORDER_DATABASE_POOL_SIZE
    )]
    NoConnections,
    #[error(
        "unsupported order database URL scheme {0:?}: use postgres://USER:PASSWORD@HOST/DATABASE or sqlite://PATH"
    )]
    UnsupportedScheme(String),
    #[error(
        "{} is not a valid PostgreSQL URL",
        marketplace_config::env::ORDER_DATABASE_URL
    )]
    InvalidUrl(#[source] sqlx::Error),
    #[error("cannot connect to the order database")]
    Connect(#[source] sqlx::Error),
    #[error("cannot bring the order database schema up to date")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The Go original's tables (or others of the same names) are in the
    /// way: their money and time columns do not match this service's.
    #[error(
        "the order database already has an orders or order_items table that this service did not create \
         (perhaps the Go original's); point {} at an empty database, or move those tables away \
         and copy their rows in after the service has created its own",
        marketplace_config::env::ORDER_DATABASE_URL
    )]
    ForeignTables(#[source] sqlx::migrate::MigrateError),
}

/// The store a URL names: `postgres://` (or `postgresql://`) or
/// `sqlite://PATH` (the file is created when absent).
#[derive(Debug, Clone)]
pub enum Orders {
    Postgres(PostgresOrders),
    Sqlite(SqliteOrders),
}

impl Orders {
    /// Connects and brings the schema up to date; safe to run from several
    /// replicas at once: [`Orders::open`] and [`Orders::start`].
    pub async fn connect(url: &SecretUrl, pool_size: u32) -> Result<Self, ConnectError> {
        let store = Self::open(url, pool_size).await?;
        store.start().await?;
        Ok(store)
    }

    /// The store `url` names, not yet started: PostgreSQL is only checked
    /// to be a valid URL and connects on first use ([`Orders::start`]); a
    /// SQLite file is local, so it is opened and migrated at once.
    pub async fn open(url: &SecretUrl, pool_size: u32) -> Result<Self, ConnectError> {
        if pool_size == 0 {
            return Err(ConnectError::NoConnections);
        }
        match url.scheme() {
            "postgres" | "postgresql" => Ok(Self::Postgres(PostgresOrders::new(
                url.expose(),
                pool_size,
            )?)),
            "sqlite" => Ok(Self::Sqlite(
                SqliteOrders::connect(url.expose(), pool_size).await?,
            )),
            other => Err(ConnectError::UnsupportedScheme(other.to_owned())),
        }
    }
}

impl Orders {
    fn kind(&self) -> SqlKind {
        match self {
            Self::Postgres(_) => SqlKind::Postgres,
            Self::Sqlite(_) => SqlKind::Sqlite,
        }
    }
}

impl ManagedStore for Orders {
    type Error = StorageError;
    type StartError = ConnectError;
    const COMPONENT: &'static str = "order";
    const NAME: &'static str = "the order database";

    /// Reaches the database, brings its schema up to date and starts
    /// listening for new orders (nothing to do for SQLite, which
    /// [`Orders::open`] migrated).
    async fn start(&self) -> Result<(), ConnectError> {
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

    /// Reports the pools in `metrics` as the order service's.
    fn observe_pool(&mut self, metrics: &Metrics) {
        match self {
            Self::Postgres(store) => store.pool_mut().observe("order", metrics),
            Self::Sqlite(store) => store.observe_pools(metrics),
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

impl OrderStore for Orders {
    async fn create(&self, order: &Order) -> Result<(), StorageError> {
        match self {
            Self::Postgres(store) => store.create(order).await,
            Self::Sqlite(store) => store.create(order).await,
        }
    }

    async fn get(&self, id: &Id) -> Result<Option<Order>, StorageError> {
        match self {
            Self::Postgres(store) => store.get(id).await,
            Self::Sqlite(store) => store.get(id).await,
        }
    }

    async fn list_for_accounts(
        &self,
        account_ids: &[Id],
        take: TakePerAccount,
    ) -> Result<Vec<Order>, StorageError> {
        match self {
            Self::Postgres(store) => store.list_for_accounts(account_ids, take).await,
            Self::Sqlite(store) => store.list_for_accounts(account_ids, take).await,
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Order>> {
        match self {
            Self::Postgres(store) => store.subscribe(),
            Self::Sqlite(store) => store.subscribe(),
        }
    }
}

/// An `orders` row, as both backends read it.
struct OrderRow {
    id: String,
    account_id: String,
    total_minor_units: i64,
    created_at: DateTime<Utc>,
}

/// An `order_items` row, as both backends read it.
struct LineRow {
    order_id: String,
    product_id: String,
    quantity: i64,
    price_minor_units: i64,
}

/// Joins orders with their lines, keeping the orders' order.
fn assemble(orders: Vec<OrderRow>, lines: Vec<LineRow>) -> Result<Vec<Order>, StorageError> {
    let mut lines_by_order: HashMap<String, Vec<OrderLine>> = HashMap::new();
    for row in lines {
        let corrupt = |problem: String| StorageError::Corrupt {
            order_id: row.order_id.clone(),
            problem,
        };
        let line = OrderLine {
            product_id: Id::parse(&row.product_id).map_err(|e| corrupt(e.to_string()))?,
            quantity: u32::try_from(row.quantity)
                .ok()
                .and_then(|q| Quantity::new(q).ok())
                .ok_or_else(|| corrupt(format!("quantity {}", row.quantity)))?,
            unit_price: Money::from_minor_units(row.price_minor_units)
                .map_err(|e| corrupt(format!("unit price: {e}")))?,
        };
        lines_by_order.entry(row.order_id).or_default().push(line);
    }
    orders
        .into_iter()
        .map(|row| {
            let corrupt = |problem: String| StorageError::Corrupt {
                order_id: row.id.clone(),
                problem,
            };
            let mut lines = lines_by_order.remove(&row.id).unwrap_or_default();
            lines.sort_by(|a, b| a.product_id.cmp(&b.product_id));
            Ok(Order {
                id: Id::parse(&row.id).map_err(|e| corrupt(e.to_string()))?,
                account_id: Id::parse(&row.account_id).map_err(|e| corrupt(e.to_string()))?,
                created_at: row.created_at,
                total_price: Money::from_minor_units(row.total_minor_units)
                    .map_err(|e| corrupt(format!("total price: {e}")))?,
                lines,
            })
        })
        .collect()
}

/// Names the case of a first migration that fails because its tables
/// exist already: the only way that happens is tables of another origin.
fn migrate_error(error: sqlx::migrate::MigrateError) -> ConnectError {
    use sqlx::migrate::MigrateError;
    let duplicate_table = match &error {
        MigrateError::Execute(sqlx::Error::Database(db))
        | MigrateError::ExecuteMigration(sqlx::Error::Database(db), _) => {
            // PostgreSQL's duplicate_table.
            db.code().as_deref() == Some("42P07")
        }
        _ => false,
    };
    if duplicate_table {
        ConnectError::ForeignTables(error)
    } else {
        ConnectError::Migrate(error)
    }
}

fn id_strings(ids: &[Id]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_busy_and_locked_are_unavailable_extended_codes_included() {
        // SQLITE_BUSY, SQLITE_LOCKED, BUSY_SNAPSHOT (517), LOCKED_SHAREDCACHE
        // (262), BUSY_RECOVERY (261), BUSY_TIMEOUT (773).
        for code in ["5", "6", "517", "262", "261", "773"] {
            assert!(sqlite_means_unavailable(code), "{code}");
        }
        // SQLITE_ERROR, SQLITE_CONSTRAINT, CONSTRAINT_PRIMARYKEY (1555),
        // IOERR_SHMMAP (5386, which begins like a PostgreSQL 53 code).
        for code in ["1", "19", "1555", "5386", "", "08006"] {
            assert!(!sqlite_means_unavailable(code), "{code}");
        }
    }

    #[test]
    fn postgres_connection_shutdown_and_resource_codes_are_unavailable() {
        for code in ["08006", "08001", "53300", "57P01", "57P02", "57P03"] {
            assert!(postgres_means_unavailable(code), "{code}");
        }
        for code in ["23505", "42P01", "57014", "5", "6"] {
            assert!(!postgres_means_unavailable(code), "{code}");
        }
    }

    #[test]
    fn a_duplicate_is_the_callers_and_only_a_cut_or_lost_database_is_unavailable() {
        let duplicate = StorageError::Duplicate(sqlx::Error::RowNotFound);
        let failed = StorageError::Unexpected(sqlx::Error::RowNotFound);
        assert_eq!(duplicate.kind(), StoreErrorKind::Unexpected);
        assert_eq!(failed.kind(), StoreErrorKind::Unexpected);

        let lost = StorageError::from(sqlx::Error::PoolTimedOut);
        let open = StorageError::cut(Cut::BreakerOpen);
        let late = StorageError::cut(Cut::TimedOut);
        for error in [lost, open, late, StorageError::not_ready(None)] {
            assert_eq!(error.kind(), StoreErrorKind::Unavailable, "{error:?}");
        }
    }
}
