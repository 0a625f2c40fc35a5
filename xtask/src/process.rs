//! Child processes: long-lived backends that are stopped whatever happens,
//! and commands run to completion with a progress line.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::progress::Progress;
use crate::signals;

const POLL: Duration = Duration::from_millis(100);

/// Puts the child in a process group of its own, so that a Ctrl-C on the
/// terminal reaches only xtask, which then stops the children in order; and
/// asks the kernel to kill the child if xtask itself dies without cleaning up.
pub(crate) fn detach_from_terminal(command: &mut Command) {
    command.process_group(0);
    kill_with_parent(command);
}

/// The parent-death signal is tied to the thread that forked, so children
/// spawned from a worker thread must not use it (see `spawn_watchdog`).
#[allow(unsafe_code)]
fn kill_with_parent(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl,
    // which is async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals a process group; it has no
    // memory-safety preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// A long-running child (a database, a search node) that is stopped when
/// this value is dropped: first politely, then with SIGKILL.
#[derive(Debug)]
pub(crate) struct Supervised {
    name: String,
    child: Option<Child>,
    stop_signal: libc::c_int,
    grace: Duration,
}

impl Supervised {
    /// Starts a child that the kernel kills if xtask dies. Call it from
    /// the main thread: the kernel tracks the forking thread, not the process.
    pub(crate) fn spawn(
        name: &str,
        mut command: Command,
        log: &Path,
        stop_signal: libc::c_int,
        grace: Duration,
    ) -> Result<Self> {
        kill_with_parent(&mut command);
        Self::start(name, command, log, stop_signal, grace)
    }

    /// Starts a child that outlives xtask: a watchdog that notices on its
    /// own when xtask is gone and cleans up after it. Stopped with SIGKILL,
    /// so that stopping it on purpose does not trigger its clean-up.
    pub(crate) fn spawn_watchdog(name: &str, command: Command, log: &Path) -> Result<Self> {
        Self::start(name, command, log, libc::SIGKILL, Duration::from_secs(5))
    }

    fn start(
        name: &str,
        mut command: Command,
        log: &Path,
        stop_signal: libc::c_int,
        grace: Duration,
    ) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            stop_signal,
            grace,
        })
    }

    /// The process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once the process has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub(crate) fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        signal_group(child.id(), self.stop_signal);
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                // The leader is gone; take any straggler in its group with it.
                signal_group(child.id(), libc::SIGKILL);
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
        eprintln!(
            "    {} did not stop within {:?}; killing it",
            self.name, self.grace
        );
        signal_group(child.id(), libc::SIGKILL);
        child.wait()?;
        Ok(())
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("    stopping {}: {e:#}", self.name);
        }
    }
}

/// Runs a command to completion with its output in `log`, printing a
/// progress line; on failure the tail of the log is shown.
pub(crate) fn run_logged(mut command: Command, label: &str, log: &Path) -> Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    detach_from_terminal(&mut command);
    let mut progress = Progress::start(label);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if signals::interrupted() {
            signal_group(child.id(), libc::SIGKILL);
            child.wait()?;
            signals::check()?;
        }
        progress.tick("");
        std::thread::sleep(POLL);
    };
    if !status.success() {
        bail!(
            "{label} failed ({status}); log {}:\n{}",
            log.display(),
            tail(log, 40)
        );
    }
    progress.finish();
    Ok(())
}

/// Runs a short command and returns its standard output; fails with its
/// standard error when it fails.
pub(crate) fn output(command: &mut Command) -> Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with the terminal's output (the test run itself). It gets
/// its own process group; an interruption is passed on to the whole group.
pub(crate) fn run_foreground(mut command: Command, label: &str) -> Result<ExitStatus> {
    command.stdin(Stdio::null());
    detach_from_terminal(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {label}"))?;
    let mut forwarded: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait()? {
            if forwarded.is_some() {
                signals::check()?;
            }
            return Ok(status);
        }
        if signals::interrupted() {
            match forwarded {
                None => {
                    signal_group(child.id(), libc::SIGINT);
                    forwarded = Some(Instant::now());
                }
                Some(at) if at.elapsed() > Duration::from_secs(10) => {
                    signal_group(child.id(), libc::SIGKILL);
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(POLL);
    }
}

/// The last `lines` lines of a text file, for error messages.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Processes whose command line mentions `needle`: used after shutdown to
/// prove that nothing a run started is left behind.
pub(crate) fn processes_mentioning(needle: &Path) -> Vec<(u32, String)> {
    let needle = needle.to_string_lossy().into_owned();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push((pid, cmdline.trim().to_owned()));
        }
    }
    found
}

/// Kills the given processes outright.
pub(crate) fn kill_all(pids: &[(u32, String)]) {
    for (pid, _) in pids {
        if let Ok(pid) = libc::pid_t::try_from(*pid) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Finds a free TCP port on loopback. The port is released before use, so
/// callers retry when a backend reports that the port was taken meanwhile.
pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// `N` distinct free loopback ports, all held at once while choosing so
/// that none is handed out twice.
pub(crate) fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Looks up an executable on `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
