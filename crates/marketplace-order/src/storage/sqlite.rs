//! Orders in an embedded SQLite file: money as INTEGER minor units,
//! timestamps as INTEGER microseconds since the Unix epoch. One process
//! owns the file, so new orders are announced in-process after commit.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use marketplace_domain::Id;
use marketplace_store::pool::{TimedPool, stats_of};
use marketplace_telemetry::Metrics;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, Sqlite, SqliteConnection};
use tokio::sync::broadcast;

use super::{ACQUIRE_TIMEOUT, ConnectError, LineRow, OrderRow, OrderStore, StorageError};
use crate::domain::{Order, TakePerAccount};

const INSERT_ORDER: &str =
    "INSERT INTO orders (id, account_id, total_price, created_at) VALUES (?1, ?2, ?3, ?4)";
const INSERT_ORDER_ITEM: &str =
    "INSERT INTO order_items (order_id, product_id, quantity, price) VALUES (?1, ?2, ?3, ?4)";
const SELECT_ORDER: &str =
    "SELECT id, account_id, total_price, created_at FROM orders WHERE id = ?1";
// Ids travel as one JSON array, so each query is one statement whatever
// their number. Ids are KSUIDs (alphanumeric), so they need no escaping.
// The newest ?2 orders of each account, newest first.
const SELECT_ORDERS_OF_ACCOUNTS: &str = "SELECT id, account_id, total_price, created_at FROM ( \
         SELECT id, account_id, total_price, created_at, \
             ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY created_at DESC, id DESC) AS newness \
         FROM orders WHERE account_id IN (SELECT value FROM json_each(?1)) \
     ) WHERE newness <= ?2 \
     ORDER BY created_at DESC, id DESC";
const SELECT_LINES_OF_ORDERS: &str = "SELECT order_id, product_id, quantity, price FROM order_items \
     WHERE order_id IN (SELECT value FROM json_each(?1)) \
     ORDER BY order_id, product_id";

/// Orders in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteOrders {
    /// Reads run concurrently (WAL).
    pool: TimedPool<Sqlite>,
    /// SQLite lets one writer in at a time; one connection for writes makes
    /// them wait in the pool's fair queue instead of in SQLite's busy
    /// handler, whose sleep-and-retry gave creates a long latency tail.
    writer: TimedPool<Sqlite>,
    announcements: broadcast::Sender<Arc<Order>>,
}

impl SqliteOrders {
    /// Opens (creating if needed) the file of a `sqlite://PATH` URL and
    /// brings its schema up to date.
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self, ConnectError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(ConnectError::Connect)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            // Writers queue for the file's one write lock instead of failing,
            // for less than the callers' default deadline (5 s).
            .busy_timeout(Duration::from_secs(3));
        let writer = TimedPool::lazy(
            SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT),
            options.clone(),
        );
        // Opened now, so that a file that cannot be opened fails as such.
        drop(writer.acquire().await.map_err(ConnectError::Connect)?);
        sqlx::migrate!("./migrations/sqlite")
            .run(writer.inner())
            .await
            .map_err(ConnectError::Migrate)?;
        let pool = TimedPool::lazy(
            SqlitePoolOptions::new()
                .max_connections(pool_size.max(1))
                .acquire_timeout(ACQUIRE_TIMEOUT),
            options,
        );
        drop(pool.acquire().await.map_err(ConnectError::Connect)?);
        let (announcements, _) = broadcast::channel(super::ANNOUNCEMENT_BUFFER);
        Ok(Self {
            pool,
            writer,
            announcements,
        })
    }

    /// Reports both pools together as the order service's, and times
    /// their checkouts.
    pub(super) fn observe_pools(&mut self, metrics: &Metrics) {
        let stats = stats_of(vec![self.pool.inner().clone(), self.writer.inner().clone()]);
        let acquire_seconds = metrics.pool("order", stats);
        self.pool.time_into(acquire_seconds.clone());
        self.writer.time_into(acquire_seconds);
    }
}

async fn lines_of(
    connection: &mut SqliteConnection,
    order_ids: &[&str],
) -> Result<Vec<LineRow>, sqlx::Error> {
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(SELECT_LINES_OF_ORDERS)
        .bind(json_array(order_ids))
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(order_id, product_id, quantity, price_minor_units)| LineRow {
                order_id,
                product_id,
                quantity,
                price_minor_units,
            },
        )
        .collect())
}

fn json_array(ids: &[&str]) -> String {
    let quoted: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
    format!("[{}]", quoted.join(","))
}

type OrderTuple = (String, String, i64, i64);

fn order_row(
    (id, account_id, total_minor_units, created_at): OrderTuple,
) -> Result<OrderRow, StorageError> {
    let created_at =
        DateTime::from_timestamp_micros(created_at).ok_or_else(|| StorageError::Corrupt {
            order_id: id.clone(),
            problem: format!("created_at {created_at} is out of range"),
        })?;
    Ok(OrderRow {
        id,
        account_id,
        total_minor_units,
        created_at,
    })
}

impl OrderStore for SqliteOrders {
    async fn create(&self, order: &Order) -> Result<(), StorageError> {
        let mut connection = self.writer.acquire().await?;
        let mut transaction = connection.begin().await?;
        sqlx::query(INSERT_ORDER)
            .bind(order.id.as_str())
            .bind(order.account_id.as_str())
            .bind(order.total_price.minor_units())
            .bind(order.created_at.timestamp_micros())
            .execute(&mut *transaction)
            .await?;
        // Local statements are cheap: one per line, same transaction.
        for line in &order.lines {
            sqlx::query(INSERT_ORDER_ITEM)
                .bind(order.id.as_str())
                .bind(line.product_id.as_str())
                .bind(i64::from(line.quantity.get()))
                .bind(line.unit_price.minor_units())
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        // Sending fails only when nobody is watching.
        let _ = self.announcements.send(Arc::new(order.clone()));
        Ok(())
    }

    async fn get(&self, id: &Id) -> Result<Option<Order>, StorageError> {
        let mut connection = self.pool.acquire().await?;
        let Some(row) = sqlx::query_as::<_, OrderTuple>(SELECT_ORDER)
            .bind(id.as_str())
            .fetch_optional(&mut *connection)
            .await?
        else {
            return Ok(None);
        };
        let lines = lines_of(&mut connection, &[id.as_str()]).await?;
        Ok(super::assemble(vec![order_row(row)?], lines)?.pop())
    }

    async fn list_for_accounts(
        &self,
        account_ids: &[Id],
        take: TakePerAccount,
    ) -> Result<Vec<Order>, StorageError> {
        if account_ids.is_empty() {
            return Ok(Vec::new());
        }
        let account_ids = super::id_strings(account_ids);
        let account_ids: Vec<&str> = account_ids.iter().map(String::as_str).collect();
        let mut connection = self.pool.acquire().await?;
        let orders = sqlx::query_as::<_, OrderTuple>(SELECT_ORDERS_OF_ACCOUNTS)
            .bind(json_array(&account_ids))
            .bind(i64::from(take.get()))
            .fetch_all(&mut *connection)
            .await?
            .into_iter()
            .map(order_row)
            .collect::<Result<Vec<_>, _>>()?;
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let order_ids: Vec<&str> = orders.iter().map(|o| o.id.as_str()).collect();
        let lines = lines_of(&mut connection, &order_ids).await?;
        super::assemble(orders, lines)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Order>> {
        self.announcements.subscribe()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Instant;

    use marketplace_domain::Money;

    use super::*;

    #[tokio::test]
    async fn a_write_waiting_for_the_busy_writer_gives_up_within_the_callers_deadline() {
        let dir = tempfile::TempDir::new().unwrap();
        let url = format!("sqlite://{}", dir.path().join("orders.db").display());
        let store = SqliteOrders::connect(&url, 1).await.unwrap();
        let _held = store.writer.inner().acquire().await.unwrap();
        let order = Order {
            id: Id::generate(),
            account_id: Id::generate(),
            created_at: crate::domain::now(),
            total_price: Money::ZERO,
            lines: vec![],
        };

        let started = Instant::now();
        let error = store.create(&order).await.unwrap_err();

        assert!(matches!(error, StorageError::Unavailable(_)), "{error:?}");
        let waited = started.elapsed();
        assert!(
            waited >= ACQUIRE_TIMEOUT && waited < Duration::from_millis(4500),
            "{waited:?}"
        );
    }
}
