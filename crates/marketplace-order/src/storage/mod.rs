//! Where orders are kept: [`OrderStore`], with PostgreSQL for clusters and
//! SQLite for a single embedded process, chosen by URL scheme in
//! [`Orders::connect`].
//!
//! A store also announces every order created through any replica on the
//! same database ([`OrderStore::subscribe`]): PostgreSQL with
//! `pg_notify` inside the creating transaction, relayed by one `LISTEN`
//! connection per process; SQLite, a single process, after each commit.

mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use marketplace_config::SecretUrl;
use marketplace_domain::{Id, Money};
use tokio::sync::broadcast;

use crate::domain::{Order, OrderLine, Quantity};

pub use self::postgres::{PostgresOrders, sql as postgres_sql};
pub use self::sqlite::SqliteOrders;

/// How many new orders a slow watcher may fall behind before its watch is
/// ended rather than silently skipping orders.
const ANNOUNCEMENT_BUFFER: usize = 1024;

/// Orders, stored.
pub trait OrderStore: Send + Sync + 'static {
    /// Writes the order and all its lines in one transaction: all or nothing.
    fn create(&self, order: &Order) -> impl Future<Output = Result<(), StorageError>> + Send;

    fn get(&self, id: &Id) -> impl Future<Output = Result<Option<Order>, StorageError>> + Send;

    /// Every order of each account, newest first, with its lines; in two
    /// queries whatever the number of accounts and orders.
    fn list_for_accounts(
        &self,
        account_ids: &[Id],
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
    #[error("the order database is unreachable")]
    Unavailable(#[source] sqlx::Error),
    #[error("the order database failed")]
    Unexpected(#[source] sqlx::Error),
    /// A stored row that no order could have produced.
    #[error("stored order {order_id} is malformed: {problem}")]
    Corrupt { order_id: String, problem: String },
}

impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Duplicate(error),
            sqlx::Error::Database(db) if is_connection_failure(db.code().as_deref()) => {
                Self::Unavailable(error)
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(error),
            _ => Self::Unexpected(error),
        }
    }
}

/// PostgreSQL's connection-exception class, shutdown and resource codes,
/// and SQLite's busy and locked codes: worth retrying later.
fn is_connection_failure(code: Option<&str>) -> bool {
    code.is_some_and(|code| {
        code.starts_with("08")
            || code.starts_with("53")
            || matches!(code, "57P01" | "57P02" | "57P03" | "5" | "6")
    })
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
    #[error("cannot connect to the order database")]
    Connect(#[source] sqlx::Error),
    #[error("cannot bring the order database schema up to date")]
    Migrate(#[source] sqlx::migrate::MigrateError),
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
    /// replicas at once.
    pub async fn connect(url: &SecretUrl, pool_size: u32) -> Result<Self, ConnectError> {
        if pool_size == 0 {
            return Err(ConnectError::NoConnections);
        }
        match url.scheme() {
            "postgres" | "postgresql" => Ok(Self::Postgres(
                PostgresOrders::connect(url.expose(), pool_size).await?,
            )),
            "sqlite" => Ok(Self::Sqlite(
                SqliteOrders::connect(url.expose(), pool_size).await?,
            )),
            other => Err(ConnectError::UnsupportedScheme(other.to_owned())),
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

    async fn list_for_accounts(&self, account_ids: &[Id]) -> Result<Vec<Order>, StorageError> {
        match self {
            Self::Postgres(store) => store.list_for_accounts(account_ids).await,
            Self::Sqlite(store) => store.list_for_accounts(account_ids).await,
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

fn id_strings(ids: &[Id]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
    ids.sort();
    ids.dedup();
    ids
}
