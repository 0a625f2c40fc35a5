//! Test fixtures over the real backends that `cargo xtask test` starts.
//!
//! Each fixture gives a test something of its own on a shared backend (a
//! database, an index name, a namespace), or a process of its own (a
//! chromedriver with a fresh browser profile, an OpenTelemetry Collector, a
//! PostgreSQL server it can restart), and removes it when dropped, so tests
//! run in parallel without seeing each other's data.
//!
//! A fixture returns `None` when its backend is not configured: under plain
//! `cargo test` the test then skips itself with a message naming the command
//! that provides the backends. Under `cargo xtask test` a missing backend is
//! a failure, never a skip.
//!
//! ```no_run
//! # async fn example() {
//! let Some(db) = marketplace_testkit::postgres::database().await else { return };
//! let pool = db.pool().await;
//! # }
//! ```

// A fixture that cannot be set up fails the test that asked for it, with the
// reason; that is what a panic in a test is for.
#![allow(clippy::expect_used, clippy::panic)]

mod backend;
pub mod browser;
pub mod elasticsearch;
pub mod kubernetes;
pub mod otel;
pub mod postgres;
mod process;
pub mod promql;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use crate::backend::{Backend, REQUIRED_VAR};

/// The path of `program` (`helm`, `promtool`, `tilt`) on `PATH`, where `cargo
/// xtask test` puts the tools it builds; `None` (after printing why the
/// test skips) under plain `cargo test` without it.
///
/// # Panics
///
/// Under `cargo xtask test` (`MARKETPLACE_TEST_BACKENDS=required`), when
/// `program` is not on `PATH`.
pub fn program(program: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let test = std::thread::current()
            .name()
            .unwrap_or("this test")
            .to_owned();
        let required = std::env::var(REQUIRED_VAR).is_ok_and(|value| value == "required");
        assert!(
            !required,
            "{test} needs {program} on PATH, which `cargo xtask test` provides, \
             but it is not there although {REQUIRED_VAR}=required"
        );
        eprintln!("skipping {test}: it needs {program} on PATH; run it with `cargo xtask test`");
    }
    found
}

/// A name no other test uses: `prefix` followed by 12 random hex digits.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &id[..12])
}

/// Polls `check` until it returns `Some`, or panics naming `what` once
/// `timeout` has passed. For waiting on a backend to converge, never a sleep.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(50);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

/// Runs asynchronous clean-up from `Drop`, which cannot await: on a thread
/// of its own with a runtime of its own, so it works inside or outside one.
pub(crate) fn block_on_cleanup<F>(what: String, cleanup: F)
where
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let joined = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(runtime) => runtime.block_on(cleanup),
            Err(e) => Err(format!("no runtime for clean-up: {e}")),
        }
    })
    .join();
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("testkit: cleaning up {what} failed: {e}"),
        Err(_) => eprintln!("testkit: cleaning up {what} panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_keep_the_prefix() {
        let (a, b) = (unique_name("t_"), unique_name("t_"));
        assert_ne!(a, b);
        assert!(a.starts_with("t_"));
        assert_eq!(a.len(), 14);
    }

    #[tokio::test]
    async fn eventually_returns_the_first_value_found() {
        let mut calls = 0;
        let value = eventually("the third call", Duration::from_secs(5), || {
            calls += 1;
            let found = (calls == 3).then_some(calls);
            async move { found }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after")]
    async fn eventually_gives_up_at_the_deadline() {
        eventually::<(), _, _>("nothing", Duration::from_millis(100), || async { None }).await;
    }
}
