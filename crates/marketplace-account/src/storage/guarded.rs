//! The account store as the service uses it.
//!
//! - A PostgreSQL database is started in the background: the service
//!   serves at once, answering `UNAVAILABLE` ("not ready") until the
//!   database has been reached and migrated, retrying with capped
//!   exponential backoff. A SQLite file was opened before.
//! - Then a check every two seconds keeps the readiness flag and
//!   `marketplace_store_up` current.
//! - Every call runs in a `store` client span, is timed and counted in
//!   `marketplace_store_*`, and goes through a [`Downstream`] guard: reads
//!   are retried after failures of the database, creations never; after
//!   consecutive failures the breaker opens and calls fail at once.

use std::error::Error;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use marketplace_domain::{Id, Page};
use marketplace_grpc::Shared;
use marketplace_resilience::{Downstream, Failure, Idempotent, Policy, Verdict};
use marketplace_telemetry::Readiness;
use marketplace_telemetry::metrics::{StoreErrorKind, StoreMetrics};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::{AccountStore, Accounts, StorageError};
use crate::domain::Account;

/// Deadline of one storage call, retries included: under the callers'
/// 5 s, so that they hear `UNAVAILABLE` rather than their own timeout.
const DEADLINE: Duration = Duration::from_millis(4500);

/// First and longest wait between two attempts to start the database.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// How often, and within how long, the database must answer once started.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What readiness calls the store, in `/readyz` and the logs.
const NAME: &str = "the account database";

/// [`Accounts`], started in the background and guarded. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GuardedAccounts {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Accounts,
    startup: Arc<Startup>,
    metrics: StoreMetrics,
    /// None for SQLite: a local file has no outage to stop calling into.
    guard: Option<Downstream>,
    readiness: Readiness,
    _lifecycle: Option<AbortOnDrop>,
}

impl GuardedAccounts {
    /// Guards `store` with the settings and metrics of `shared`, reports its
    /// pool, and starts it in the background unless it is embedded (then it
    /// is ready at once).
    pub fn new(mut store: Accounts, shared: &Shared) -> Self {
        store.observe_pool(&shared.metrics);
        let metrics = shared.metrics.store("account", store.store_label());
        let readiness = Readiness::new(NAME);
        let startup = Arc::new(Startup::default());
        let (guard, lifecycle) = if store.is_embedded() {
            startup.started();
            readiness.set(true);
            metrics.set_up(true);
            (None, None)
        } else {
            metrics.set_up(false);
            let guard = Downstream::new(
                "account",
                store.store_label(),
                Policy::new(&shared.resilience, DEADLINE),
                &shared.metrics,
            );
            let lifecycle = tokio::spawn(keep_ready(
                store.clone(),
                Arc::clone(&startup),
                readiness.clone(),
                metrics.clone(),
            ));
            (Some(guard), Some(AbortOnDrop(lifecycle)))
        };
        Self {
            inner: Arc::new(Inner {
                store,
                startup,
                metrics,
                guard,
                readiness,
                _lifecycle: lifecycle,
            }),
        }
    }

    /// Up while the database answers; down until it has been started.
    pub fn readiness(&self) -> Readiness {
        self.inner.readiness.clone()
    }

    /// Runs one storage call `operation` (`create`, `get`, ...): traced,
    /// timed, counted and guarded.
    async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        idempotent: Idempotent,
        attempt: F,
    ) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, StorageError>> + Send,
        T: Send,
    {
        let inner = &*self.inner;
        let span = tracing::info_span!(
            "store",
            otel.name = %format!("{} {operation}", inner.metrics.store()),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system = inner.store.db_system(),
            db.operation = operation,
        );
        async move {
            let started = Instant::now();
            let result = if !inner.startup.is_started() {
                Err(inner.startup.not_ready())
            } else if let Some(guard) = &inner.guard {
                guard
                    .call(idempotent, attempt, verdict)
                    .await
                    .map_err(from_failure)
            } else {
                let mut attempt = attempt;
                attempt().await
            };
            let kind = result.as_ref().err().map(error_kind);
            inner.metrics.observe(operation, started.elapsed(), kind);
            if let Some(kind) = kind {
                tracing::Span::current().record("otel.status_code", "ERROR");
                if kind == StoreErrorKind::Unavailable {
                    inner.store.note_failure();
                }
            }
            result
        }
        .instrument(span)
        .await
    }
}

impl AccountStore for GuardedAccounts {
    async fn create(&self, account: &Account) -> Result<(), StorageError> {
        let store = &self.inner.store;
        self.run("create", Idempotent::No, || store.create(account))
            .await
    }

    async fn get(&self, id: &Id) -> Result<Option<Account>, StorageError> {
        let store = &self.inner.store;
        self.run("get", Idempotent::Yes, || store.get(id)).await
    }

    async fn get_many(&self, ids: &[Id]) -> Result<Vec<Account>, StorageError> {
        let store = &self.inner.store;
        self.run("get_many", Idempotent::Yes, || store.get_many(ids))
            .await
    }

    async fn list(&self, page: Page) -> Result<Vec<Account>, StorageError> {
        let store = &self.inner.store;
        self.run("list", Idempotent::Yes, || store.list(page)).await
    }
}

/// A database that cannot be reached counts against the breaker and may be
/// retried. Any other error is an answer from a working database (a
/// constraint, a row this service cannot read, a bug): counting it would
/// let one bad row or request open the breaker for every caller, and
/// repeating it would fail the same way.
fn verdict<T>(result: &Result<T, StorageError>) -> Verdict {
    match result {
        Ok(_) => Verdict::Ok,
        Err(StorageError::Unavailable(_)) => Verdict::Failed,
        Err(_) => Verdict::Rejected,
    }
}

fn from_failure(failure: Failure<StorageError>) -> StorageError {
    match failure {
        Failure::Failed(error) => error,
        Failure::Open => StorageError::Unavailable(Box::new(Cut::BreakerOpen)),
        Failure::TimedOut => StorageError::Unavailable(Box::new(Cut::TimedOut)),
    }
}

/// Why the guard ended a call without the database's own answer.
#[derive(Debug, thiserror::Error)]
enum Cut {
    #[error("the circuit breaker is open after consecutive failures")]
    BreakerOpen,
    #[error("no answer within {DEADLINE:?}")]
    TimedOut,
}

fn error_kind(error: &StorageError) -> StoreErrorKind {
    match error {
        StorageError::Unavailable(_) | StorageError::NotReady(_) => StoreErrorKind::Unavailable,
        StorageError::Configuration(_) | StorageError::Unexpected(_) => StoreErrorKind::Unexpected,
    }
}

/// Whether the database has been started, and why not yet.
#[derive(Debug, Default)]
struct Startup {
    started: AtomicBool,
    last_failure: Mutex<Option<String>>,
}

impl Startup {
    fn started(&self) {
        self.started.store(true, Ordering::Release);
    }

    fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    fn failed(&self, reason: String) {
        *self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }

    fn not_ready(&self) -> StorageError {
        let reason = self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        StorageError::NotReady(reason.map(Box::<dyn Error + Send + Sync>::from))
    }
}

/// Starts `store`, retrying until it succeeds, then checks it every
/// [`CHECK_INTERVAL`], keeping `readiness` and `metrics` current. Runs until
/// aborted.
async fn keep_ready(
    store: Accounts,
    startup: Arc<Startup>,
    readiness: Readiness,
    metrics: StoreMetrics,
) {
    let mut wait = FIRST_RETRY;
    while let Err(error) = store.start().await {
        let reason = marketplace_grpc::chain(&error);
        tracing::warn!(error = %reason, "{NAME} is not ready; trying again in {wait:?}");
        startup.failed(reason);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_RETRY);
    }
    startup.started();
    readiness.set(true);
    metrics.set_up(true);
    tracing::info!("{NAME} is ready");
    let mut up = true;
    loop {
        tokio::time::sleep(CHECK_INTERVAL).await;
        let answered = match tokio::time::timeout(CHECK_TIMEOUT, store.check()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(marketplace_grpc::chain(&error)),
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        match (&answered, up) {
            (Err(reason), true) => {
                tracing::warn!(error = %reason, "{NAME} stopped answering; not ready");
            }
            (Ok(()), false) => tracing::info!("{NAME} answers again; ready"),
            _ => {}
        }
        if answered.is_err() {
            store.note_failure();
        }
        up = answered.is_ok();
        readiness.set(up);
        metrics.set_up(up);
    }
}

/// Stops the background task when the last clone of the store is dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(error: StorageError) -> Result<(), StorageError> {
        Err(error)
    }

    #[test]
    fn only_an_unreachable_database_counts_against_the_breaker() {
        let unavailable = failed(StorageError::Unavailable("connection refused".into()));
        let unexpected = failed(StorageError::Unexpected("malformed row".into()));

        assert_eq!(verdict(&Ok::<_, StorageError>(())), Verdict::Ok);
        assert_eq!(verdict(&unavailable), Verdict::Failed);
        assert_eq!(verdict(&unexpected), Verdict::Rejected);
    }

    #[test]
    fn an_open_breaker_and_a_passed_deadline_are_the_database_being_unavailable() {
        for failure in [Failure::Open, Failure::TimedOut] {
            let error = from_failure(failure);

            assert!(matches!(error, StorageError::Unavailable(_)), "{error:?}");
            assert_eq!(error_kind(&error), StoreErrorKind::Unavailable);
        }
        assert_eq!(
            error_kind(&StorageError::NotReady(None)),
            StoreErrorKind::Unavailable
        );
    }
}
