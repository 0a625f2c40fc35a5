//! What the fixtures that run a server of their own share: free ports, the
//! user that runs servers which refuse root, and their logs.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Set by `cargo xtask test` when the tests run as root: the system user
/// that runs the servers which refuse root (PostgreSQL).
pub(crate) const SYSTEM_USER_VAR: &str = "MARKETPLACE_TEST_SYSTEM_USER";

/// A user to run a server as, instead of the test's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SystemUser {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `None` when the test does not run as root (its servers then run as the
/// same user); otherwise the user named by [`SYSTEM_USER_VAR`].
///
/// # Panics
///
/// As root, when the variable is not set or names no user.
pub(crate) fn system_user() -> Option<SystemUser> {
    // /proc/self belongs to the effective user of the process reading it.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        return None;
    }
    let name = std::env::var(SYSTEM_USER_VAR).unwrap_or_else(|_| {
        panic!(
            "this test runs as root and starts a server that refuses root, but \
             {SYSTEM_USER_VAR} names no user to run it as; run it with `cargo xtask test`"
        )
    });
    let passwd = std::fs::read_to_string("/etc/passwd")
        .unwrap_or_else(|e| panic!("reading /etc/passwd: {e}"));
    let user = parse_passwd(&passwd, &name)
        .unwrap_or_else(|| panic!("{SYSTEM_USER_VAR}={name}: no such user in /etc/passwd"));
    Some(user)
}

fn parse_passwd(passwd: &str, name: &str) -> Option<SystemUser> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(SystemUser { uid, gid })
    })
}

/// `N` distinct free loopback ports, all held at once while choosing so
/// that none is handed out twice. They are released before the server
/// binds them, so callers retry when the server reports one taken.
pub(crate) fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<_> = (0..N)
        .map(|_| {
            std::net::TcpListener::bind(("127.0.0.1", 0))
                .unwrap_or_else(|e| panic!("binding a free loopback port: {e}"))
        })
        .collect();
    std::array::from_fn(|i| {
        listeners[i]
            .local_addr()
            .unwrap_or_else(|e| panic!("reading a bound port: {e}"))
            .port()
    })
}

/// The last `lines` lines of a log, for failure messages.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_user_is_found_and_prefixes_are_not() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      marketplace-tester:x:998:998::/nonexistent:/usr/sbin/nologin\n\
                      marketplace-test:x:999:997::/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(
            parse_passwd(passwd, "marketplace-test"),
            Some(SystemUser { uid: 999, gid: 997 })
        );
        assert_eq!(parse_passwd(passwd, "nobody"), None);
    }

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports::<3>();
        assert!(a != b && b != c && a != c, "{a} {b} {c}");
    }
}
