//! Orders in PostgreSQL. Money crosses SQL as integer minor units and is
//! converted inside PostgreSQL, where NUMERIC arithmetic is exact.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use marketplace_domain::Id;
use marketplace_store::pool::TimedPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection, Postgres};
use tokio::sync::{Mutex, broadcast};
use tokio::task::JoinHandle;

use super::{ACQUIRE_TIMEOUT, ConnectError, LineRow, OrderRow, OrderStore, StorageError};
use crate::domain::{Order, TakePerAccount};

/// The statements of the create transaction, in the order they run:
/// `BEGIN; INSERT_ORDER; INSERT_ORDER_ITEMS; NOTIFY_ORDER_CREATED; COMMIT`.
pub mod sql {
    /// `$1` id, `$2` account id, `$3` total in minor units (bigint),
    /// `$4` created at.
    pub const INSERT_ORDER: &str = "INSERT INTO orders (id, account_id, total_price, created_at) \
         VALUES ($1, $2, ($3::numeric / 100), $4)";

    /// Every line in one statement: `$1` order id, then parallel arrays of
    /// product ids, quantities and unit prices in minor units.
    pub const INSERT_ORDER_ITEMS: &str = "INSERT INTO order_items (order_id, product_id, quantity, price) \
         SELECT $1::varchar, line.product_id, line.quantity, (line.price::numeric / 100) \
         FROM UNNEST($2::varchar[], $3::int[], $4::bigint[]) AS line (product_id, quantity, price)";

    /// Delivered to every listening replica when the transaction commits,
    /// and not at all if it rolls back. `$1` order id.
    pub const NOTIFY_ORDER_CREATED: &str = "SELECT pg_notify('marketplace_orders', $1)";

    /// The channel of [`NOTIFY_ORDER_CREATED`].
    pub const ORDERS_CHANNEL: &str = "marketplace_orders";

    pub const SELECT_ORDER: &str = "SELECT id, account_id, (total_price * 100)::bigint, created_at \
         FROM orders WHERE id = $1";

    /// The newest `$2` orders of each of the accounts `$1`, newest first.
    pub const SELECT_ORDERS_OF_ACCOUNTS: &str = "SELECT id, account_id, total_minor_units, created_at FROM ( \
             SELECT id, account_id, (total_price * 100)::bigint AS total_minor_units, created_at, \
                 ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY created_at DESC, id DESC) AS newness \
             FROM orders WHERE account_id = ANY($1::varchar[]) \
         ) AS ranked WHERE newness <= $2 \
         ORDER BY created_at DESC, id DESC";

    pub const SELECT_LINES_OF_ORDERS: &str = "SELECT order_id, product_id, quantity, (price * 100)::bigint \
         FROM order_items WHERE order_id = ANY($1::varchar[]) \
         ORDER BY order_id, product_id";
}

/// Orders in PostgreSQL, announced across replicas with `LISTEN/NOTIFY`.
#[derive(Debug, Clone)]
pub struct PostgresOrders {
    pool: TimedPool<Postgres>,
    /// The listener holds its connection for good, so it gets a pool of
    /// its own instead of a slot of the one serving requests.
    listener_pool: PgPool,
    /// Behind an `Arc`: the options are large, and the store is a
    /// variant of an enum.
    options: Arc<PgConnectOptions>,
    announcements: broadcast::Sender<Arc<Order>>,
    /// The relay of notifications, once started; stopped when the last
    /// clone of the store is dropped.
    relay: Arc<Mutex<Option<AbortOnDrop>>>,
}

impl PostgresOrders {
    /// Connects with at most `pool_size` connections (plus one for
    /// `LISTEN`), runs the migrations and starts listening:
    /// [`PostgresOrders::new`] and [`PostgresOrders::start`].
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self, ConnectError> {
        let store = Self::new(url, pool_size)?;
        store.start().await?;
        Ok(store)
    }

    /// The database at `url`, not yet contacted: the pools connect on
    /// first use. Only a malformed URL fails here.
    pub fn new(url: &str, pool_size: u32) -> Result<Self, ConnectError> {
        let options = PgConnectOptions::from_str(url).map_err(ConnectError::InvalidUrl)?;
        let pool = TimedPool::lazy(
            PgPoolOptions::new()
                .max_connections(pool_size.max(1))
                .acquire_timeout(ACQUIRE_TIMEOUT),
            options.clone(),
        );
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options.clone());
        let (announcements, _) = broadcast::channel(super::ANNOUNCEMENT_BUFFER);
        Ok(Self {
            pool,
            listener_pool,
            options: Arc::new(options),
            announcements,
            relay: Arc::default(),
        })
    }

    /// Reaches the database, runs the migrations under sqlx's advisory lock
    /// (so that replicas starting together do not race) and starts
    /// listening for new orders. Safe to call again after a failure.
    pub async fn start(&self) -> Result<(), ConnectError> {
        // One connection of its own first, so that a database that is down
        // or refuses the credentials fails with its own error rather than
        // as a pool timeout.
        let connection = tokio::time::timeout(
            super::CONNECT_TIMEOUT,
            PgConnection::connect_with(&self.options),
        )
        .await
        .map_err(|_| {
            ConnectError::Connect(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {:?}", super::CONNECT_TIMEOUT),
            )))
        })?
        .map_err(ConnectError::Connect)?;
        let _ = connection.close().await;
        sqlx::migrate!("./migrations/postgres")
            .run(self.pool.inner())
            .await
            .map_err(super::migrate_error)?;
        let mut relay = self.relay.lock().await;
        if relay.is_none() {
            // Listening before `start` returns means every order created
            // after it returns is announced.
            let listener = listen(&self.listener_pool)
                .await
                .map_err(ConnectError::Connect)?;
            *relay = Some(AbortOnDrop(tokio::spawn(relay_notifications(
                listener,
                self.listener_pool.clone(),
                self.pool.clone(),
                self.announcements.clone(),
            ))));
        }
        Ok(())
    }

    /// Whether the database answers a trivial query.
    pub(super) async fn check(&self) -> Result<(), StorageError> {
        let mut connection = self.pool.acquire().await?;
        sqlx::query("SELECT 1").execute(&mut *connection).await?;
        Ok(())
    }

    pub(super) fn pool(&self) -> &TimedPool<Postgres> {
        &self.pool
    }

    pub(super) fn pool_mut(&mut self) -> &mut TimedPool<Postgres> {
        &mut self.pool
    }
}

async fn select_lines(
    connection: &mut PgConnection,
    order_ids: &[String],
) -> Result<Vec<LineRow>, sqlx::Error> {
    let rows: Vec<(String, String, i32, i64)> = sqlx::query_as(sql::SELECT_LINES_OF_ORDERS)
        .bind(order_ids)
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(order_id, product_id, quantity, price_minor_units)| LineRow {
                order_id,
                product_id,
                quantity: i64::from(quantity),
                price_minor_units,
            },
        )
        .collect())
}

async fn select_order(
    connection: &mut PgConnection,
    id: &Id,
) -> Result<Option<Order>, StorageError> {
    let Some(row) = sqlx::query_as::<_, OrderTuple>(sql::SELECT_ORDER)
        .bind(id.as_str())
        .fetch_optional(&mut *connection)
        .await?
    else {
        return Ok(None);
    };
    let lines = select_lines(connection, &[id.as_str().to_owned()]).await?;
    Ok(super::assemble(vec![order_row(row)], lines)?.pop())
}

type OrderTuple = (String, String, i64, DateTime<Utc>);

fn order_row((id, account_id, total_minor_units, created_at): OrderTuple) -> OrderRow {
    OrderRow {
        id,
        account_id,
        total_minor_units,
        created_at,
    }
}

impl OrderStore for PostgresOrders {
    async fn create(&self, order: &Order) -> Result<(), StorageError> {
        let mut product_ids = Vec::with_capacity(order.lines.len());
        let mut quantities = Vec::with_capacity(order.lines.len());
        let mut prices = Vec::with_capacity(order.lines.len());
        for line in &order.lines {
            product_ids.push(line.product_id.as_str().to_owned());
            // At most `Quantity::MAX`, so it fits an INTEGER.
            quantities.push(i32::try_from(line.quantity.get()).unwrap_or(i32::MAX));
            prices.push(line.unit_price.minor_units());
        }
        let mut connection = self.pool.acquire().await?;
        let mut transaction = connection.begin().await?;
        sqlx::query(sql::INSERT_ORDER)
            .bind(order.id.as_str())
            .bind(order.account_id.as_str())
            .bind(order.total_price.minor_units())
            .bind(order.created_at)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(sql::INSERT_ORDER_ITEMS)
            .bind(order.id.as_str())
            .bind(&product_ids)
            .bind(&quantities)
            .bind(&prices)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(sql::NOTIFY_ORDER_CREATED)
            .bind(order.id.as_str())
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn get(&self, id: &Id) -> Result<Option<Order>, StorageError> {
        let mut connection = self.pool.acquire().await?;
        select_order(&mut connection, id).await
    }

    async fn list_for_accounts(
        &self,
        account_ids: &[Id],
        take: TakePerAccount,
    ) -> Result<Vec<Order>, StorageError> {
        if account_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.pool.acquire().await?;
        let orders: Vec<OrderRow> = sqlx::query_as::<_, OrderTuple>(sql::SELECT_ORDERS_OF_ACCOUNTS)
            .bind(super::id_strings(account_ids))
            .bind(i64::from(take.get()))
            .fetch_all(&mut *connection)
            .await?
            .into_iter()
            .map(order_row)
            .collect();
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let order_ids: Vec<String> = orders.iter().map(|o| o.id.clone()).collect();
        let lines = select_lines(&mut connection, &order_ids).await?;
        super::assemble(orders, lines)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Order>> {
        self.announcements.subscribe()
    }
}

/// Stops the relay when the last clone of the store is dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(sql::ORDERS_CHANNEL).await?;
    Ok(listener)
}

/// Turns each notification into the stored order and announces it to this
/// process's watchers. Runs for the life of the store, reconnecting with
/// backoff when the connection fails.
async fn relay_notifications(
    listener: PgListener,
    listener_pool: PgPool,
    pool: TimedPool<Postgres>,
    announcements: broadcast::Sender<Arc<Order>>,
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let mut backoff = FIRST_BACKOFF;
    let mut listener = Some(listener);
    loop {
        let Some(active) = listener.as_mut() else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match listen(&listener_pool).await {
                Ok(fresh) => {
                    tracing::info!("listening for new orders again");
                    listener = Some(fresh);
                }
                Err(error) => tracing::warn!(
                    error = %marketplace_grpc::chain(&error),
                    "reconnecting the new-order listener failed; retrying in {backoff:?}"
                ),
            }
            continue;
        };
        match active.try_recv().await {
            Ok(Some(notification)) => {
                backoff = FIRST_BACKOFF;
                // Nobody in this process is watching: no need to read it.
                if announcements.receiver_count() == 0 {
                    continue;
                }
                if let Some(order) = fetch_announced(&pool, notification.payload()).await {
                    // Sending fails only when every watcher has gone since.
                    let _ = announcements.send(Arc::new(order));
                }
            }
            Ok(None) => tracing::warn!(
                "the new-order listener lost its connection and reconnected; \
                 orders placed meanwhile were not announced to watchers"
            ),
            Err(error) => {
                tracing::warn!(
                    error = %marketplace_grpc::chain(&error),
                    "listening for new orders failed; reconnecting in {backoff:?}"
                );
                // Dropped first: the listener's pool has room for one.
                listener = None;
            }
        }
    }
}

async fn fetch_announced(pool: &TimedPool<Postgres>, payload: &str) -> Option<Order> {
    let Ok(id) = Id::parse(payload) else {
        tracing::warn!(payload, "ignoring a malformed new-order notification");
        return None;
    };
    let read = async {
        let mut connection = pool.acquire().await?;
        select_order(&mut connection, &id).await
    };
    match read.await {
        Ok(Some(order)) => Some(order),
        Ok(None) => {
            tracing::warn!(order_id = %id, "a notified order is not in the database");
            None
        }
        Err(error) => {
            tracing::warn!(order_id = %id, error = %marketplace_grpc::chain(&error), "reading a notified order failed; it is not announced");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn a_read_waiting_for_a_busy_pool_gives_up_within_the_callers_deadline() {
        let Some(database) = marketplace_testkit::postgres::database().await else {
            return;
        };
        let store = PostgresOrders::connect(database.url(), 1).await.unwrap();
        let _held = store.pool.inner().acquire().await.unwrap();

        let started = Instant::now();
        let error = store.get(&Id::generate()).await.unwrap_err();

        assert!(matches!(error, StorageError::Unavailable(_)), "{error:?}");
        let waited = started.elapsed();
        assert!(
            waited >= ACQUIRE_TIMEOUT && waited < Duration::from_millis(4500),
            "{waited:?}"
        );
    }
}
