//! Interruption: SIGINT, SIGTERM and SIGHUP set a flag that every wait loop
//! checks, so that an interrupted run still stops what it started.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

pub(crate) fn install_handlers() -> Result<()> {
    let flag = FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, Arc::clone(flag))
            .with_context(|| format!("registering a handler for signal {signal}"))?;
    }
    Ok(())
}

pub(crate) fn interrupted() -> bool {
    FLAG.get().is_some_and(|flag| flag.load(Ordering::SeqCst))
}

/// Fails when the run has been interrupted; called between long steps.
pub(crate) fn check() -> Result<()> {
    if interrupted() {
        bail!("interrupted by a signal");
    }
    Ok(())
}
