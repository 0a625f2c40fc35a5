//! The storage contract: the same checks against PostgreSQL and SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use marketplace_domain::{Id, Money};
use marketplace_order::domain::{self, Order, OrderLine, Quantity, TakePerAccount};
use marketplace_order::storage::{ConnectError, OrderStore, Orders, StorageError};
use tokio::sync::Mutex;

use crate::support::OrderDatabase;

fn money(minor_units: i64) -> Money {
    Money::from_minor_units(minor_units).unwrap()
}

fn line(quantity: u32, unit_price: i64) -> OrderLine {
    OrderLine {
        product_id: Id::generate(),
        quantity: Quantity::new(quantity).unwrap(),
        unit_price: money(unit_price),
    }
}

fn order(account_id: &Id, created_at: DateTime<Utc>, lines: Vec<OrderLine>) -> Order {
    let mut lines = lines;
    lines.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    let total_price = lines.iter().fold(Money::ZERO, |sum, line| {
        sum.plus(line.unit_price.times(line.quantity.get()).unwrap())
            .unwrap()
    });
    Order {
        id: Id::generate(),
        account_id: account_id.clone(),
        created_at,
        total_price,
        lines,
    }
}

/// As many orders per account as a listing may return.
const ALL: TakePerAccount = TakePerAccount::new(TakePerAccount::MAX);

async fn connect(database: &OrderDatabase) -> Orders {
    Orders::connect(&database.url(), 4).await.unwrap()
}

async fn every_field_round_trips_exactly(store: impl OrderStore) {
    let account = Id::generate();
    // The smallest amount, amounts whose decimal form binary floating
    // point cannot hold, and a total of exactly the largest `Money`.
    let lines = vec![
        line(1, 1),
        line(3, 10),
        line(7, 1999),
        line(1000, 70),
        line(1, 9_999_999_915_976),
    ];
    let placed = order(&account, domain::now(), lines);
    assert_eq!(placed.total_price.minor_units(), 10_000_000_000_000);

    store.create(&placed).await.unwrap();
    let read = store.get(&placed.id).await.unwrap();

    assert_eq!(read, Some(placed));
}

async fn an_unknown_order_is_none(store: impl OrderStore) {
    assert_eq!(store.get(&Id::generate()).await.unwrap(), None);
}

async fn orders_are_listed_per_account_newest_first_with_their_lines(store: impl OrderStore) {
    let (ada, grace, other) = (Id::generate(), Id::generate(), Id::generate());
    let start = domain::now();
    let at = |seconds: i64| start + TimeDelta::seconds(seconds);
    let placed = [
        order(&ada, at(1), vec![line(1, 100)]),
        order(&grace, at(2), vec![line(2, 250), line(1, 5)]),
        order(&ada, at(3), vec![line(4, 10), line(1, 20), line(9, 30)]),
        order(&other, at(4), vec![line(1, 1)]),
        order(&grace, at(5), vec![line(5, 1)]),
        order(&ada, at(6), vec![line(1, 7)]),
    ];
    for order in &placed {
        store.create(order).await.unwrap();
    }

    let listed = store
        .list_for_accounts(
            &[ada.clone(), grace.clone(), ada.clone(), Id::generate()],
            TakePerAccount::new(0),
        )
        .await
        .unwrap();

    let expected: Vec<Order> = [5, 4, 2, 1, 0].iter().map(|&i| placed[i].clone()).collect();
    assert_eq!(listed, expected);
    let adas: Vec<&Order> = listed.iter().filter(|o| o.account_id == ada).collect();
    assert_eq!(adas.len(), 3);
    assert!(adas.windows(2).all(|w| w[0].created_at > w[1].created_at));
    assert_eq!(store.list_for_accounts(&[], ALL).await.unwrap(), vec![]);
    assert_eq!(
        store
            .list_for_accounts(&[Id::generate()], ALL)
            .await
            .unwrap(),
        vec![]
    );
}

/// Places `count` orders for `account`, one second apart from `start` on,
/// and returns them newest first.
async fn place_orders(
    store: &impl OrderStore,
    account: &Id,
    start: DateTime<Utc>,
    count: i64,
) -> Vec<Order> {
    let mut placed = Vec::new();
    for i in 0..count {
        let one = order(account, start + TimeDelta::seconds(i), vec![line(1, 1 + i)]);
        store.create(&one).await.unwrap();
        placed.push(one);
    }
    placed.reverse();
    placed
}

async fn a_listing_returns_the_newest_20_orders_of_each_account_by_default(store: impl OrderStore) {
    let (busy, quiet) = (Id::generate(), Id::generate());
    let start = domain::now();
    let busys = place_orders(&store, &busy, start, 25).await;
    let quiets = place_orders(&store, &quiet, start, 3).await;

    let listed = store
        .list_for_accounts(&[busy.clone(), quiet.clone()], TakePerAccount::new(0))
        .await
        .unwrap();

    let of = |account: &Id| -> Vec<Order> {
        listed
            .iter()
            .filter(|o| o.account_id == *account)
            .cloned()
            .collect()
    };
    assert_eq!(of(&busy), busys[..20]);
    assert_eq!(of(&quiet), quiets);
    assert_eq!(listed.len(), 23);
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].created_at >= w[1].created_at),
        "newest first across accounts"
    );
}

async fn a_listing_returns_as_many_orders_per_account_as_asked_up_to_100(store: impl OrderStore) {
    let (ada, grace) = (Id::generate(), Id::generate());
    let start = domain::now();
    let adas = place_orders(&store, &ada, start, 105).await;
    let graces = place_orders(&store, &grace, start, 5).await;
    let both = [ada.clone(), grace.clone()];

    let two = store
        .list_for_accounts(&both, TakePerAccount::new(2))
        .await
        .unwrap();
    let capped = store
        .list_for_accounts(&both, TakePerAccount::new(1000))
        .await
        .unwrap();

    // Same instants for both accounts: ties are broken by id, newest first.
    let mut expected: Vec<Order> = [&adas[..2], &graces[..2]].concat();
    expected.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    assert_eq!(two, expected);
    let capped_adas: Vec<Order> = capped
        .iter()
        .filter(|o| o.account_id == ada)
        .cloned()
        .collect();
    assert_eq!(capped_adas, adas[..100]);
    assert_eq!(capped.len(), 105);
}

async fn a_failing_line_leaves_no_order_behind(store: impl OrderStore) {
    let account = Id::generate();
    let mut broken = order(&account, domain::now(), vec![line(1, 100), line(2, 200)]);
    // The same product on two lines violates the lines' primary key, so the
    // second INSERT of the transaction fails after the first succeeded.
    broken.lines[1].product_id = broken.lines[0].product_id.clone();

    let error = store.create(&broken).await.unwrap_err();

    assert!(matches!(error, StorageError::Duplicate(_)), "{error:?}");
    assert_eq!(store.get(&broken.id).await.unwrap(), None);
    assert_eq!(
        store.list_for_accounts(&[account], ALL).await.unwrap(),
        vec![]
    );
}

async fn a_duplicate_order_id_is_refused_and_the_first_order_kept(store: impl OrderStore) {
    let account = Id::generate();
    let first = order(&account, domain::now(), vec![line(1, 100)]);
    let mut second = order(&account, domain::now(), vec![line(2, 300), line(1, 1)]);
    second.id = first.id.clone();
    store.create(&first).await.unwrap();

    let error = store.create(&second).await.unwrap_err();

    assert!(matches!(error, StorageError::Duplicate(_)), "{error:?}");
    assert_eq!(store.get(&first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(
        store.list_for_accounts(&[account], ALL).await.unwrap(),
        vec![first]
    );
}

async fn subscribers_receive_orders_created_after_they_subscribed(store: impl OrderStore) {
    let mut announcements = store.subscribe();
    let placed = order(&Id::generate(), domain::now(), vec![line(2, 150)]);

    store.create(&placed).await.unwrap();

    let announced = tokio::time::timeout(Duration::from_secs(10), announcements.recv())
        .await
        .expect("the new order is announced within 10 s")
        .unwrap();
    assert_eq!(*announced, placed);
}

macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let database = crate::support::OrderDatabase::sqlite();
                    super::$check(super::connect(&database).await).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    let Some(database) = crate::support::OrderDatabase::postgres().await else {
                        return;
                    };
                    super::$check(super::connect(&database).await).await;
                }
            )*
        }
    };
}

contract!(
    every_field_round_trips_exactly,
    an_unknown_order_is_none,
    orders_are_listed_per_account_newest_first_with_their_lines,
    a_listing_returns_the_newest_20_orders_of_each_account_by_default,
    a_listing_returns_as_many_orders_per_account_as_asked_up_to_100,
    a_failing_line_leaves_no_order_behind,
    a_duplicate_order_id_is_refused_and_the_first_order_kept,
    subscribers_receive_orders_created_after_they_subscribed,
);

#[tokio::test]
async fn eight_replicas_migrating_the_same_postgresql_database_at_once_all_succeed() {
    let Some(database) = OrderDatabase::postgres().await else {
        return;
    };
    let url = database.url();

    let connects = (0..8).map(|_| Orders::connect(&url, 2));
    let stores = futures::future::join_all(connects).await;

    for store in stores {
        let store = store.unwrap();
        assert_eq!(store.get(&Id::generate()).await.unwrap(), None);
    }
}

#[tokio::test]
async fn an_order_created_through_one_postgresql_replica_is_announced_by_another() {
    let Some(database) = OrderDatabase::postgres().await else {
        return;
    };
    let (watched, writer) = (connect(&database).await, connect(&database).await);
    let mut announcements = watched.subscribe();
    let placed = order(&Id::generate(), domain::now(), vec![line(1, 160)]);

    writer.create(&placed).await.unwrap();

    let announced = tokio::time::timeout(Duration::from_secs(10), announcements.recv())
        .await
        .expect("the other replica announces the order within 10 s")
        .unwrap();
    assert_eq!(*announced, placed);
}

#[tokio::test]
async fn announcements_resume_after_the_postgresql_listener_connection_is_killed() {
    let Some(database) = OrderDatabase::postgres().await else {
        return;
    };
    let TestDatabaseRef(db) = TestDatabaseRef::of(&database);
    let store = connect(&database).await;
    let announcements = Arc::new(Mutex::new(store.subscribe()));
    let admin = db.pool().await;

    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(killed, [true], "the one listening connection was killed");

    // Orders placed while the listener reconnects are not announced, so
    // keep placing until one is.
    marketplace_testkit::eventually(
        "an order announced after the listener reconnected",
        Duration::from_secs(20),
        || {
            let (store, announcements) = (store.clone(), Arc::clone(&announcements));
            async move {
                let placed = order(&Id::generate(), domain::now(), vec![line(1, 5)]);
                store.create(&placed).await.unwrap();
                let mut announcements = announcements.lock().await;
                let next = tokio::time::timeout(Duration::from_millis(500), announcements.recv());
                matches!(next.await, Ok(Ok(_))).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn money_is_stored_in_postgresql_as_exact_numeric() {
    let Some(database) = OrderDatabase::postgres().await else {
        return;
    };
    let TestDatabaseRef(db) = TestDatabaseRef::of(&database);
    let store = connect(&database).await;
    let mut placed = order(
        &Id::generate(),
        domain::now(),
        vec![line(3, 10), line(3, 20), line(1, 70)],
    );
    placed.total_price = money(160);
    store.create(&placed).await.unwrap();

    let pool = db.pool().await;
    let (total,): (String,) = sqlx::query_as("SELECT total_price::text FROM orders WHERE id = $1")
        .bind(placed.id.as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut prices: Vec<String> =
        sqlx::query_scalar("SELECT price::text FROM order_items WHERE order_id = $1")
            .bind(placed.id.as_str())
            .fetch_all(&pool)
            .await
            .unwrap();
    prices.sort();

    assert_eq!(total, "1.60");
    assert_eq!(prices, ["0.10", "0.20", "0.70"]);
}

#[tokio::test]
async fn an_unsupported_scheme_and_an_empty_pool_are_refused_with_the_variable_named() {
    let mysql = Orders::connect(&marketplace_config::SecretUrl::new("mysql://db/orders"), 4)
        .await
        .unwrap_err();
    let empty = Orders::connect(&OrderDatabase::sqlite().url(), 0)
        .await
        .unwrap_err();

    assert!(mysql.to_string().contains("sqlite://PATH"), "{mysql}");
    assert!(
        empty
            .to_string()
            .contains("MARKETPLACE_ORDER_DATABASE_POOL_SIZE"),
        "{empty}"
    );
}

#[tokio::test]
async fn the_go_originals_tables_stop_the_start_with_an_error_saying_what_to_do() {
    let Some(database) = OrderDatabase::postgres().await else {
        return;
    };
    let TestDatabaseRef(db) = TestDatabaseRef::of(&database);
    let admin = db.pool().await;
    // The seed's schema, as the Go original created it, with one order.
    for statement in [
        "CREATE TABLE orders (id VARCHAR PRIMARY KEY, account_id VARCHAR NOT NULL, \
         total_price DECIMAL(10,2) NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
        "CREATE TABLE order_items (order_id VARCHAR NOT NULL, product_id VARCHAR NOT NULL, \
         quantity INTEGER NOT NULL, price DECIMAL(10,2) NOT NULL, PRIMARY KEY (order_id, product_id))",
        "INSERT INTO orders (id, account_id, total_price) \
         VALUES ('0ujtsYcgvSTl8PAuAdqWYSMnLOv', '0ujzPyRiIAffKhBux4PvQdDqMHY', 1.60)",
    ] {
        sqlx::query(statement).execute(&admin).await.unwrap();
    }

    let error = Orders::connect(&database.url(), 2).await.unwrap_err();

    assert!(matches!(error, ConnectError::ForeignTables(_)), "{error:?}");
    let message = error.to_string();
    for needle in ["orders", "Go original", "MARKETPLACE_ORDER_DATABASE_URL"] {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(kept, 1, "the existing rows are left alone");
}

#[tokio::test]
async fn a_sqlite_file_locked_by_another_writer_is_unavailable_within_the_callers_deadline() {
    let database = OrderDatabase::sqlite();
    let store = connect(&database).await;
    let url = database.url();
    let mut other = <sqlx::SqliteConnection as sqlx::Connection>::connect(url.expose())
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let placed = order(&Id::generate(), domain::now(), vec![line(1, 1)]);

    let started = std::time::Instant::now();
    let error = store.create(&placed).await.unwrap_err();

    assert!(matches!(error, StorageError::Unavailable(_)), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_millis(4500),
        "gave up after {:?}",
        started.elapsed()
    );
}

/// The PostgreSQL fixture inside an [`OrderDatabase`].
struct TestDatabaseRef<'a>(&'a marketplace_testkit::postgres::TestDatabase);

impl<'a> TestDatabaseRef<'a> {
    fn of(database: &'a OrderDatabase) -> Self {
        match database {
            OrderDatabase::Postgres(db) => Self(db),
            OrderDatabase::Sqlite(_) => unreachable!("a PostgreSQL database"),
        }
    }
}
