//! A service's store as the service uses it, the same for every service:
//! [`Guarded`] wraps the storage enum of a service (which implements
//! [`ManagedStore`], its errors [`StoreError`]).
//!
//! - A store reached over the network is started in the background: the
//!   service serves at once, answering "not ready" until the store has
//!   been reached and made ready (migrated, its index created), retrying
//!   with capped exponential backoff. An embedded store was opened before
//!   and is ready at once.
//! - Then a check every two seconds keeps the readiness flag and
//!   `marketplace_store_up` current.
//! - Every call runs in a `store` client span, is timed and counted in
//!   `marketplace_store_*`, and goes through a [`Downstream`] guard: reads
//!   are retried after failures of the store, creations never; after
//!   consecutive failures the breaker opens and calls fail at once.
//!
//! With the `sqlx` feature, [`pool`] holds the sqlx pool whose checkouts
//! are timed and, after a failure of the database, tested.
//!
//! [`Downstream`]: marketplace_resilience::Downstream

mod guarded;
#[cfg(feature = "sqlx")]
pub mod pool;

use std::error::Error;
use std::future::Future;
use std::time::Duration;

use marketplace_telemetry::Metrics;
use marketplace_telemetry::metrics::StoreErrorKind;

pub use self::guarded::{Cut, Guarded};

/// Any error, as the cause of another.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// The SQL database a store runs on, for the stores that run on
/// PostgreSQL or an embedded SQLite file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlKind {
    Postgres,
    Sqlite,
}

impl SqlKind {
    /// The `store` label of the metrics ([`ManagedStore::store_label`]).
    pub fn store_label(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }

    /// The OpenTelemetry `db.system` ([`ManagedStore::db_system`]).
    pub fn db_system(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::Sqlite => "sqlite",
        }
    }

    /// A local file rather than a server ([`ManagedStore::is_embedded`]).
    pub fn is_embedded(self) -> bool {
        self == Self::Sqlite
    }
}

/// A store a service keeps: its storage enum, which picks a backend by the
/// URL's scheme.
pub trait ManagedStore: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// What a call, or a check, fails with.
    type Error: StoreError;
    /// What starting the store fails with.
    type StartError: Error + Send + 'static;

    /// The part of the marketplace that keeps the store (`account`), as
    /// metrics name it.
    const COMPONENT: &'static str;
    /// What readiness calls the store (`the account database`), in
    /// `/readyz`, the logs and answers.
    const NAME: &'static str;

    /// The `store` label of the metrics (`postgres`).
    fn store_label(&self) -> &'static str;

    /// The OpenTelemetry `db.system` (`postgresql`); the store label unless
    /// the two differ.
    fn db_system(&self) -> &'static str {
        self.store_label()
    }

    /// Whether the store is local (a file, a directory) rather than a
    /// server: it was opened before, and has no outage to stop calling into.
    fn is_embedded(&self) -> bool;

    /// Reports the store's connection pools in `metrics`, if it has any.
    /// Called once, before the store is shared.
    fn observe_pool(&mut self, _metrics: &Metrics) {}

    /// Reaches the store and makes it ready to serve (schema, index).
    fn start(&self) -> impl Future<Output = Result<(), Self::StartError>> + Send;

    /// Whether the store answers within `timeout`, for readiness.
    fn check(&self, timeout: Duration) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Records that the store just failed to answer (a pool may then test
    /// its idle connections).
    fn note_failure(&self) {}
}

/// The error of a [`ManagedStore`].
pub trait StoreError: Error + Send + Sync + 'static {
    /// What the metrics count the error as. Only
    /// [`StoreErrorKind::Unavailable`] counts against the breaker and may
    /// be retried: any other error is an answer from a working store (a
    /// constraint, a row this service cannot read, a bug), and counting it
    /// would let one bad row or request open the breaker for every caller.
    fn kind(&self) -> StoreErrorKind;

    /// The store being unavailable because the guard ended the call.
    fn cut(cut: Cut) -> Self;

    /// The store not started yet; `last_failure` is why, if an attempt has
    /// failed.
    fn not_ready(last_failure: Option<BoxError>) -> Self;
}
