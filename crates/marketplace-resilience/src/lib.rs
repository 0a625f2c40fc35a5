//! Resilience for every call a process makes to something it depends on:
//! another service or a store.
//!
//! A [`Downstream`] guards one dependency. Each call through
//! [`Downstream::call`] gets:
//! - a deadline for all its attempts together;
//! - retries with exponential backoff and full jitter, only when the caller
//!   says the call is [`Idempotent::Yes`] and only after a failure of the
//!   dependency itself ([`Verdict::Failed`]), never after an answer such as
//!   "not found" or "invalid";
//! - a circuit breaker: after `breaker_failure_threshold` consecutive
//!   failures it opens and calls fail at once ([`Failure::Open`]) instead of
//!   waiting for their deadline; after `breaker_open_duration` one probe
//!   call is let through, whose success closes the breaker and whose
//!   failure opens it again.
//!
//! The breaker's state and the retries are exported as metrics
//! (`marketplace_circuit_breaker_state`, `marketplace_retries_total`,
//! `marketplace_circuit_breaker_rejected_total`).

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use marketplace_config::ResilienceConfig;
use marketplace_telemetry::metrics::{BreakerMetrics, Metrics};
use tokio::time::Instant;

/// What a finished attempt says about the dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answered, and the answer is the result.
    Ok,
    /// It answered, with an error that is the caller's (not found, invalid
    /// input): healthy for the breaker, and repeating it would not help.
    Rejected,
    /// It did not answer usefully (down, overloaded, timed out): counts
    /// against the breaker, and may be retried.
    Failed,
}

/// Whether repeating a call can do no harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotent {
    /// Reads, and writes that are keyed so a repeat changes nothing.
    Yes,
    /// Creations: a lost answer does not mean nothing was created.
    No,
}

/// Why a guarded call did not produce the attempt's own result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure<E> {
    /// The breaker is open: the dependency was not called.
    Open,
    /// The deadline passed before an attempt answered.
    TimedOut,
    /// The last attempt's own error.
    Failed(E),
}

/// How calls to one dependency are retried and cut off.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub deadline: Duration,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub failure_threshold: u32,
    pub open_duration: Duration,
}

impl Policy {
    /// The process's settings, with `deadline` for all attempts of a call.
    pub fn new(config: &ResilienceConfig, deadline: Duration) -> Self {
        Self {
            deadline,
            max_attempts: config.retry_max_attempts.max(1),
            initial_backoff: config.retry_initial_backoff,
            max_backoff: config.retry_max_backoff,
            failure_threshold: config.breaker_failure_threshold.max(1),
            open_duration: config.breaker_open_duration,
        }
    }

    /// The longest wait before retry number `retry` (0 for the first):
    /// the initial backoff doubled per retry, capped.
    fn backoff_cap(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(16));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// One dependency's guard: its policy and its circuit breaker. Cheap to
/// clone; clones share the breaker.
#[derive(Debug, Clone)]
pub struct Downstream {
    policy: Policy,
    breaker: Arc<Breaker>,
}

impl Downstream {
    /// A guard for `dependency` (`catalog`, `postgres`, ...), called by
    /// `component` (`order`, `gateway`, ...), whose breaker and retries are
    /// counted in `metrics`.
    pub fn new(component: &str, dependency: &str, policy: Policy, metrics: &Metrics) -> Self {
        let metrics = metrics.breaker(component, dependency);
        metrics.set_state(BreakerState::Closed as i64);
        Self {
            policy,
            breaker: Arc::new(Breaker {
                state: Mutex::new(State::Closed { failures: 0 }),
                dependency: dependency.to_owned(),
                metrics,
            }),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        self.breaker.lock().kind()
    }

    /// Runs `attempt` until it succeeds, is rejected, is not to be repeated
    /// or the deadline passes; `verdict` judges each attempt's result.
    pub async fn call<T, E, F, Fut>(
        &self,
        idempotent: Idempotent,
        mut attempt: F,
        verdict: impl Fn(&Result<T, E>) -> Verdict,
    ) -> Result<T, Failure<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let deadline = Instant::now() + self.policy.deadline;
        let mut retry = 0;
        loop {
            let Some(permit) = self.breaker.admit(self.policy.open_duration) else {
                self.breaker.metrics.rejected();
                return Err(Failure::Open);
            };
            let result = tokio::time::timeout_at(deadline, attempt()).await;
            let (outcome, failed) = match result {
                Ok(result) => {
                    let judged = verdict(&result);
                    (result.map_err(Failure::Failed), judged == Verdict::Failed)
                }
                Err(_) => (Err(Failure::TimedOut), true),
            };
            permit.finish(!failed, &self.policy);
            if !failed || idempotent == Idempotent::No || retry + 1 >= self.policy.max_attempts {
                return outcome;
            }
            let wait = jitter(self.policy.backoff_cap(retry));
            if Instant::now() + wait >= deadline {
                return outcome;
            }
            retry += 1;
            self.breaker.metrics.retried();
            tracing::debug!(
                dependency = %self.breaker.dependency,
                retry,
                wait_ms = wait.as_millis() as u64,
                "retrying after a failed attempt"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// A random wait between zero and `cap` (full jitter), so clients that
/// failed together do not retry together.
fn jitter(cap: Duration) -> Duration {
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

/// A circuit breaker's state, as exported in
/// `marketplace_circuit_breaker_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everything else fails fast until it ends.
    HalfOpen,
}

impl State {
    fn kind(&self) -> BreakerState {
        match self {
            Self::Closed { .. } => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen => BreakerState::HalfOpen,
        }
    }
}

#[derive(Debug)]
struct Breaker {
    state: Mutex<State>,
    dependency: String,
    metrics: BreakerMetrics,
}

impl Breaker {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a plain value that every critical section leaves
        // whole, so a panic elsewhere cannot have broken it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(&self, open_duration: Duration) -> Option<Permit<'_>> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Some(Permit {
                breaker: self,
                probe: false,
                open_duration,
                finished: false,
            }),
            State::Open { until } if Instant::now() >= until => {
                self.transition(&mut state, State::HalfOpen);
                Some(Permit {
                    breaker: self,
                    probe: true,
                    open_duration,
                    finished: false,
                })
            }
            State::Open { .. } | State::HalfOpen => None,
        }
    }

    fn record(&self, success: bool, probe: bool, policy_threshold: u32, open_duration: Duration) {
        let mut state = self.lock();
        let open = State::Open {
            until: Instant::now() + open_duration,
        };
        match (&*state, success) {
            (State::Closed { .. }, true) => *state = State::Closed { failures: 0 },
            (State::Closed { failures }, false) => {
                let failures = failures + 1;
                if failures >= policy_threshold {
                    self.transition(&mut state, open);
                } else {
                    *state = State::Closed { failures };
                }
            }
            (State::HalfOpen, true) if probe => {
                self.transition(&mut state, State::Closed { failures: 0 });
            }
            (State::HalfOpen, false) if probe => self.transition(&mut state, open),
            // A call admitted before the breaker opened ends late: the
            // probe, not stragglers, decides what happens next.
            _ => {}
        }
    }

    fn transition(&self, state: &mut State, to: State) {
        let (from, kind) = (state.kind(), to.kind());
        *state = to;
        if from != kind {
            self.metrics.set_state(kind as i64);
            match kind {
                BreakerState::Open => tracing::warn!(
                    dependency = %self.dependency,
                    "circuit breaker open: calls fail at once until a probe succeeds"
                ),
                BreakerState::Closed => {
                    tracing::info!(dependency = %self.dependency, "circuit breaker closed");
                }
                BreakerState::HalfOpen => {
                    tracing::debug!(dependency = %self.dependency, "circuit breaker probing");
                }
            }
        }
    }
}

/// Leave to make one attempt. A probe dropped before it finishes (its
/// caller gave up) counts as a failure, so the breaker never waits forever
/// on a probe that will not report.
struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    open_duration: Duration,
    finished: bool,
}

impl Permit<'_> {
    fn finish(mut self, success: bool, policy: &Policy) {
        self.finished = true;
        self.breaker.record(
            success,
            self.probe,
            policy.failure_threshold,
            self.open_duration,
        );
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.finished && self.probe {
            self.breaker
                .record(false, true, u32::MAX, self.open_duration);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy() -> Policy {
        Policy {
            deadline: Duration::from_secs(5),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            failure_threshold: 3,
            open_duration: Duration::from_secs(2),
        }
    }

    fn guard(policy: Policy) -> (Downstream, Metrics) {
        let metrics = Metrics::new();
        (
            Downstream::new("order", "catalog", policy, &metrics),
            metrics,
        )
    }

    fn judge(result: &Result<u32, &'static str>) -> Verdict {
        match result {
            Ok(_) => Verdict::Ok,
            Err("not found") => Verdict::Rejected,
            Err(_) => Verdict::Failed,
        }
    }

    /// Calls that fail `failures` times, then answer with the attempt
    /// count.
    fn flaky(
        failures: u32,
    ) -> (
        Arc<AtomicU32>,
        impl FnMut() -> std::future::Ready<Result<u32, &'static str>>,
    ) {
        let attempts = Arc::new(AtomicU32::new(0));
        let counter = attempts.clone();
        (attempts, move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            std::future::ready(if n > failures { Ok(n) } else { Err("down") })
        })
    }

    /// A guard without retries whose breaker three failures opened, its
    /// open duration (2 s) since passed: the next call is the probe.
    async fn open_for_its_duration() -> Downstream {
        let (guard, _) = guard(Policy {
            max_attempts: 1,
            ..policy()
        });
        for _ in 0..3 {
            let (_, call) = flaky(u32::MAX);
            let _ = guard.call(Idempotent::Yes, call, judge).await;
        }
        assert_eq!(guard.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(2)).await;
        guard
    }

    #[tokio::test(start_paused = true)]
    async fn an_idempotent_call_is_retried_after_a_failure_of_the_dependency() {
        let (guard, metrics) = guard(policy());
        let (attempts, call) = flaky(2);

        let result = guard.call(Idempotent::Yes, call, judge).await;

        assert_eq!(result, Ok(3));
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        assert!(
            metrics
                .render()
                .contains(r#"marketplace_retries_total{component="order",dependency="catalog"} 2"#),
            "{}",
            metrics.render()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_creation_is_never_repeated() {
        let (guard, _) = guard(policy());
        let (attempts, call) = flaky(1);

        let result = guard.call(Idempotent::No, call, judge).await;

        assert_eq!(result, Err(Failure::Failed("down")));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_is_the_callers_error_is_not_retried_and_keeps_the_breaker_closed() {
        let (guard, _) = guard(policy());
        for _ in 0..10 {
            let attempts = AtomicU32::new(0);
            let result: Result<u32, _> = guard
                .call(
                    Idempotent::Yes,
                    || {
                        attempts.fetch_add(1, Ordering::SeqCst);
                        std::future::ready(Err("not found"))
                    },
                    judge,
                )
                .await;
            assert_eq!(result, Err(Failure::Failed("not found")));
            assert_eq!(attempts.load(Ordering::SeqCst), 1);
        }
        assert_eq!(guard.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_consecutive_failures_and_then_fails_without_calling() {
        let (guard, metrics) = guard(Policy {
            max_attempts: 1,
            ..policy()
        });
        for _ in 0..3 {
            let (_, call) = flaky(u32::MAX);
            assert_eq!(
                guard.call(Idempotent::Yes, call, judge).await,
                Err(Failure::Failed("down"))
            );
        }
        assert_eq!(guard.state(), BreakerState::Open);

        let (attempts, call) = flaky(0);
        let result = guard.call(Idempotent::Yes, call, judge).await;

        assert_eq!(result, Err(Failure::Open));
        assert_eq!(attempts.load(Ordering::SeqCst), 0);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"marketplace_circuit_breaker_state{component="order",dependency="catalog"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"marketplace_circuit_breaker_rejected_total{component="order",dependency="catalog"} 1"#
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_open_duration_a_successful_probe_closes_the_breaker() {
        let guard = open_for_its_duration().await;

        let (_, call) = flaky(0);
        assert_eq!(guard.call(Idempotent::Yes, call, judge).await, Ok(1));

        assert_eq!(guard.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_the_breaker_again() {
        let guard = open_for_its_duration().await;
        let (_, call) = flaky(u32::MAX);
        let _ = guard.call(Idempotent::Yes, call, judge).await;

        assert_eq!(guard.state(), BreakerState::Open);
        let (attempts, call) = flaky(0);
        assert_eq!(
            guard.call(Idempotent::Yes, call, judge).await,
            Err(Failure::Open)
        );
        assert_eq!(attempts.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_whose_caller_gave_up_counts_as_a_failure() {
        let guard = open_for_its_duration().await;

        let abandoned = guard.call(
            Idempotent::Yes,
            std::future::pending::<Result<u32, &'static str>>,
            judge,
        );
        let _ = tokio::time::timeout(Duration::from_millis(10), abandoned).await;

        assert_eq!(guard.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_all_attempts_together() {
        let (guard, _) = guard(Policy {
            deadline: Duration::from_millis(100),
            ..policy()
        });

        let started = Instant::now();
        let result = guard
            .call(
                Idempotent::Yes,
                std::future::pending::<Result<u32, &'static str>>,
                judge,
            )
            .await;

        assert_eq!(result, Err(Failure::TimedOut));
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let policy = policy();
        assert_eq!(policy.backoff_cap(0), Duration::from_millis(10));
        assert_eq!(policy.backoff_cap(1), Duration::from_millis(20));
        assert_eq!(policy.backoff_cap(3), Duration::from_millis(80));
        assert_eq!(policy.backoff_cap(4), Duration::from_millis(100));
        assert_eq!(policy.backoff_cap(40), Duration::from_millis(100));
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(10)) <= Duration::from_millis(10));
        }
    }
}
