//! [`Guarded`]: a store started in the background, kept ready, and every
//! call traced, timed, counted and guarded.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use marketplace_grpc::Shared;
use marketplace_resilience::{Downstream, Failure, Idempotent, Policy, Verdict};
use marketplace_telemetry::Readiness;
use marketplace_telemetry::metrics::{StoreErrorKind, StoreMetrics};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::{BoxError, ManagedStore, StoreError};

/// Deadline of one storage call, retries included: under the callers'
/// 5 s, so that they hear `UNAVAILABLE` rather than their own timeout, and
/// above Elasticsearch's own request timeout (4 s).
const DEADLINE: Duration = Duration::from_millis(4500);

/// First and longest wait between two attempts to start the store.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// How often, and within how long, the store must answer once started.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A [`ManagedStore`], started in the background and guarded. Cheap to
/// clone.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Guarded<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

#[derive(Debug)]
struct Inner<S> {
    store: S,
    startup: Arc<Startup>,
    metrics: StoreMetrics,
    /// None for an embedded store: a local file has no outage to stop
    /// calling into.
    guard: Option<Downstream>,
    readiness: Readiness,
    _lifecycle: Option<AbortOnDrop>,
}

impl<S: ManagedStore> Guarded<S> {
    /// Guards `store` with the settings and metrics of `shared`, reports its
    /// pool, and starts it in the background unless it is embedded (then it
    /// is ready at once).
    pub fn new(mut store: S, shared: &Shared) -> Self {
        store.observe_pool(&shared.metrics);
        let metrics = shared.metrics.store(S::COMPONENT, store.store_label());
        let readiness = Readiness::new(S::NAME);
        let startup = Arc::new(Startup::default());
        let (guard, lifecycle) = if store.is_embedded() {
            startup.started();
            readiness.set(true);
            metrics.set_up(true);
            (None, None)
        } else {
            metrics.set_up(false);
            let guard = Downstream::new(
                S::COMPONENT,
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

    /// Up while the store answers; down until it has been started.
    pub fn readiness(&self) -> Readiness {
        self.inner.readiness.clone()
    }

    /// The store itself, for the attempts given to [`Guarded::run`] and
    /// for what needs no guard.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Runs one storage call `operation` (`create`, `get`, ...): traced,
    /// timed, counted and guarded. `attempt` makes the call on
    /// [`Guarded::store`]; it is repeated only if `idempotent`.
    pub async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        idempotent: Idempotent,
        attempt: F,
    ) -> Result<T, S::Error>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T, S::Error>> + Send,
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
            let kind = result.as_ref().err().map(StoreError::kind);
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

/// A store that cannot be reached counts against the breaker and may be
/// retried; any other error is the store's answer (see
/// [`StoreError::kind`]).
fn verdict<T, E: StoreError>(result: &Result<T, E>) -> Verdict {
    match result {
        Ok(_) => Verdict::Ok,
        Err(error) if error.kind() == StoreErrorKind::Unavailable => Verdict::Failed,
        Err(_) => Verdict::Rejected,
    }
}

fn from_failure<E: StoreError>(failure: Failure<E>) -> E {
    match failure {
        Failure::Failed(error) => error,
        Failure::Open => E::cut(Cut::BreakerOpen),
        Failure::TimedOut => E::cut(Cut::TimedOut),
    }
}

/// Why the guard ended a call without the store's own answer.
#[derive(Debug, thiserror::Error)]
pub enum Cut {
    #[error("the circuit breaker is open after consecutive failures")]
    BreakerOpen,
    #[error("no answer within {DEADLINE:?}")]
    TimedOut,
}

/// Whether the store has been started, and why not yet.
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

    fn not_ready<E: StoreError>(&self) -> E {
        let reason = self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        E::not_ready(reason.map(BoxError::from))
    }
}

/// Starts `store`, retrying until it succeeds, then checks it every
/// [`CHECK_INTERVAL`], keeping `readiness` and `metrics` current. Runs until
/// aborted.
async fn keep_ready<S: ManagedStore>(
    store: S,
    startup: Arc<Startup>,
    readiness: Readiness,
    metrics: StoreMetrics,
) {
    let name = S::NAME;
    let mut wait = FIRST_RETRY;
    while let Err(error) = store.start().await {
        let reason = marketplace_grpc::chain(&error);
        tracing::warn!(error = %reason, "{name} is not ready; trying again in {wait:?}");
        startup.failed(reason);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_RETRY);
    }
    startup.started();
    readiness.set(true);
    metrics.set_up(true);
    tracing::info!("{name} is ready");
    let mut up = true;
    loop {
        tokio::time::sleep(CHECK_INTERVAL).await;
        let answered = match tokio::time::timeout(CHECK_TIMEOUT, store.check(CHECK_TIMEOUT)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(marketplace_grpc::chain(&error)),
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        match (&answered, up) {
            (Err(reason), true) => {
                tracing::warn!(error = %reason, "{name} stopped answering; not ready");
            }
            (Ok(()), false) => tracing::info!("{name} answers again; ready"),
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

    /// A store that never starts, or an embedded one.
    #[derive(Debug, Clone)]
    struct Fake {
        embedded: bool,
    }

    #[derive(Debug, thiserror::Error)]
    enum FakeError {
        #[error("unreachable")]
        Unreachable(#[source] Option<BoxError>),
        #[error("refused")]
        Refused,
        #[error("not ready")]
        NotReady(#[source] Option<BoxError>),
    }

    impl StoreError for FakeError {
        fn kind(&self) -> StoreErrorKind {
            match self {
                Self::Unreachable(_) | Self::NotReady(_) => StoreErrorKind::Unavailable,
                Self::Refused => StoreErrorKind::Unexpected,
            }
        }

        fn cut(cut: Cut) -> Self {
            Self::Unreachable(Some(cut.into()))
        }

        fn not_ready(last_failure: Option<BoxError>) -> Self {
            Self::NotReady(last_failure)
        }
    }

    impl ManagedStore for Fake {
        type Error = FakeError;
        type StartError = FakeError;
        const COMPONENT: &'static str = "test";
        const NAME: &'static str = "the test store";

        fn store_label(&self) -> &'static str {
            "fake"
        }

        fn is_embedded(&self) -> bool {
            self.embedded
        }

        async fn start(&self) -> Result<(), FakeError> {
            Err(FakeError::Unreachable(None))
        }

        async fn check(&self, _timeout: Duration) -> Result<(), FakeError> {
            Ok(())
        }
    }

    #[test]
    fn only_an_unreachable_store_counts_against_the_breaker() {
        let unreachable = Err::<(), _>(FakeError::Unreachable(None));
        let refused = Err::<(), _>(FakeError::Refused);

        assert_eq!(verdict(&Ok::<_, FakeError>(())), Verdict::Ok);
        assert_eq!(verdict(&unreachable), Verdict::Failed);
        assert_eq!(verdict(&refused), Verdict::Rejected);
    }

    #[test]
    fn an_open_breaker_and_a_passed_deadline_are_the_store_being_unavailable() {
        for (failure, cause) in [
            (Failure::Open, "the circuit breaker is open"),
            (Failure::TimedOut, "no answer within 4.5s"),
        ] {
            let error: FakeError = from_failure(failure);

            assert_eq!(error.kind(), StoreErrorKind::Unavailable);
            let source = std::error::Error::source(&error).map(ToString::to_string);
            assert!(
                source.as_deref().is_some_and(|s| s.starts_with(cause)),
                "{source:?}"
            );
        }
        assert!(matches!(
            from_failure(Failure::Failed(FakeError::Refused)),
            FakeError::Refused
        ));
    }

    #[tokio::test]
    async fn a_store_not_started_yet_answers_not_ready_with_the_last_failure() {
        let store = Guarded::new(Fake { embedded: false }, &Shared::default());
        let mut calls = 0;

        let error = store
            .run("get", Idempotent::Yes, || {
                calls += 1;
                async { Ok(()) }
            })
            .await
            .unwrap_err();

        assert!(matches!(error, FakeError::NotReady(_)), "{error:?}");
        assert_eq!(calls, 0);
        assert!(!store.readiness().is_ready());
    }

    #[tokio::test]
    async fn an_embedded_store_is_ready_at_once_and_called_without_a_guard() {
        let store = Guarded::new(Fake { embedded: true }, &Shared::default());

        let answer = store
            .run("get", Idempotent::No, || async { Ok::<_, FakeError>(7) })
            .await;

        assert_eq!(answer.ok(), Some(7));
        assert!(store.readiness().is_ready());
    }
}
