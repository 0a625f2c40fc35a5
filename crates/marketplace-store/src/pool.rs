//! Connection checkouts as the store makes them: each wait for a pooled
//! connection is timed into `marketplace_db_pool_acquire_seconds`, and
//! after the database has failed, a connection that sat idle since before
//! the failure is tested before it is used.
//!
//! Testing every checkout (sqlx's `test_before_acquire`) would cost a round
//! trip per request. A connection that was returned to the pool after the
//! last failure was tested then (sqlx pings on release), so only the older
//! ones can have been broken by a restart.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use marketplace_telemetry::Metrics;
use marketplace_telemetry::metrics::PoolStats;
use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::{Connection, Database, Pool};

/// A pool whose checkouts are timed and, after a failure, tested.
#[derive(Debug)]
pub struct TimedPool<DB: Database> {
    pool: Pool<DB>,
    acquire_seconds: Option<prometheus::Histogram>,
    failures: LastFailure,
}

impl<DB: Database> Clone for TimedPool<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            acquire_seconds: self.acquire_seconds.clone(),
            failures: self.failures.clone(),
        }
    }
}

impl<DB: Database> TimedPool<DB> {
    /// A pool from `options` that connects on first use to `connect`.
    pub fn lazy(
        options: PoolOptions<DB>,
        connect: <DB::Connection as Connection>::Options,
    ) -> Self {
        let failures = LastFailure::default();
        let suspects = failures.clone();
        let pool = options
            .test_before_acquire(false)
            .before_acquire(move |connection, meta| {
                test_if(suspects.predates(meta.idle_for), connection)
            })
            .connect_lazy_with(connect);
        Self {
            pool,
            acquire_seconds: None,
            failures,
        }
    }

    /// A pooled connection; the wait is timed, failed waits included.
    pub async fn acquire(&self) -> Result<PoolConnection<DB>, sqlx::Error> {
        let started = Instant::now();
        let connection = self.pool.acquire().await;
        if let Some(histogram) = &self.acquire_seconds {
            histogram.observe(started.elapsed().as_secs_f64());
        }
        connection
    }

    /// The pool itself, for the migrator.
    pub fn inner(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Records that the database just failed: connections idle since
    /// before now are tested at their next checkout.
    pub fn note_failure(&self) {
        self.failures.note();
    }

    /// Reports the pool's connections as `component`'s in `metrics`, and
    /// times checkouts into its acquire histogram. Called once, at start.
    pub fn observe(&mut self, component: &str, metrics: &Metrics) {
        self.time_into(metrics.pool(component, stats_of(vec![self.pool.clone()])));
    }

    /// Times checkouts into `histogram`, for pools reported together.
    pub fn time_into(&mut self, histogram: prometheus::Histogram) {
        self.acquire_seconds = Some(histogram);
    }
}

/// Reads the connections of `pools` (one component's), summed.
pub fn stats_of<DB: Database>(pools: Vec<Pool<DB>>) -> impl Fn() -> PoolStats + Send + Sync {
    move || {
        pools.iter().fold(
            PoolStats {
                open: 0,
                idle: 0,
                max: 0,
            },
            |sum, pool| PoolStats {
                open: sum.open + pool.size(),
                idle: sum.idle + u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
                max: sum.max + pool.options().get_max_connections(),
            },
        )
    }
}

type Test<'c> = Pin<Box<dyn Future<Output = Result<bool, sqlx::Error>> + Send + 'c>>;

/// Keeps `connection` when it is not `suspect` or answers a ping; a
/// connection that fails the ping is closed and another one is taken.
fn test_if<C: Connection>(suspect: bool, connection: &mut C) -> Test<'_> {
    Box::pin(async move {
        if !suspect {
            return Ok(true);
        }
        Ok(connection.ping().await.is_ok())
    })
}

/// When the database last failed, if it has.
#[derive(Debug, Clone, Default)]
struct LastFailure(Arc<Mutex<Option<Instant>>>);

impl LastFailure {
    fn note(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Whether a connection idle for `idle_for` was returned to the pool
    /// before the last failure.
    fn predates(&self, idle_for: Duration) -> bool {
        let Some(failed_at) = *self.0.lock().unwrap_or_else(PoisonError::into_inner) else {
            return false;
        };
        Instant::now()
            .checked_sub(idle_for)
            .is_none_or(|released| released <= failed_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connections_idle_since_before_the_last_failure_are_suspect() {
        let failures = LastFailure::default();
        assert!(!failures.predates(Duration::from_secs(3600)));

        failures.note();

        assert!(failures.predates(Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!failures.predates(Duration::from_millis(5)));
    }
}
