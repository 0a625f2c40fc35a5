//! Progress lines for long steps (downloads, Go builds, waiting for a
//! backend): redrawn in place on a terminal, one line every so often in CI.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a progress line is printed when stdout is not a terminal.
const LOG_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub(crate) struct Progress {
    label: String,
    started: Instant,
    last_line: Instant,
    terminal: bool,
}

impl Progress {
    pub(crate) fn start(label: impl Into<String>) -> Self {
        let label = label.into();
        println!("==> {label}");
        let now = Instant::now();
        Self {
            label,
            started: now,
            last_line: now,
            terminal: std::io::stdout().is_terminal(),
        }
    }

    /// Reports that the step is still going, with an optional detail such as
    /// bytes downloaded.
    pub(crate) fn tick(&mut self, detail: &str) {
        let elapsed = self.started.elapsed().as_secs();
        let mut out = std::io::stdout().lock();
        if self.terminal {
            let _ = write!(out, "\r\x1b[2K    {}: {elapsed}s {detail}", self.label);
            let _ = out.flush();
        } else if self.last_line.elapsed() >= LOG_INTERVAL {
            self.last_line = Instant::now();
            let _ = writeln!(
                out,
                "    {}: still running after {elapsed}s {detail}",
                self.label
            );
        }
    }

    pub(crate) fn finish(self) -> Duration {
        let elapsed = self.started.elapsed();
        if self.terminal {
            print!("\r\x1b[2K");
        }
        println!("    {}: done in {:.1}s", self.label, elapsed.as_secs_f64());
        elapsed
    }
}
