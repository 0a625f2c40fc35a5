//! PostgreSQL refuses to run as root and Elasticsearch refuses outright, so
//! when xtask runs as root the backends run as a dedicated system user.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process;

pub(crate) const NAME: &str = "marketplace-test";

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

pub(crate) fn running_as_root() -> Result<bool> {
    // /proc/self belongs to the effective user of the process reading it.
    Ok(std::fs::metadata("/proc/self")
        .context("reading /proc/self")?
        .uid()
        == 0)
}

/// The user to run backends as: `None` when xtask is not root (backends then
/// run as the invoking user), otherwise the dedicated user, created if needed.
pub(crate) fn ensure() -> Result<Option<User>> {
    if !running_as_root()? {
        return Ok(None);
    }
    if let Some(user) = lookup(NAME)? {
        return Ok(Some(user));
    }
    println!("==> creating the system user {NAME} to run PostgreSQL and Elasticsearch");
    process::output(Command::new("useradd").args([
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        NAME,
    ]))?;
    match lookup(NAME)? {
        Some(user) => Ok(Some(user)),
        None => bail!("useradd succeeded but {NAME} is not in /etc/passwd"),
    }
}

fn lookup(name: &str) -> Result<Option<User>> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    Ok(parse_passwd(&passwd, name))
}

fn parse_passwd(passwd: &str, name: &str) -> Option<User> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(User { uid, gid })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_named_user_and_ignores_prefixes() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      marketplace-tester:x:998:998::/nonexistent:/usr/sbin/nologin\n\
                      marketplace-test:x:999:997::/nonexistent:/usr/sbin/nologin\n";
        let user = parse_passwd(passwd, NAME).expect("user");
        assert_eq!((user.uid, user.gid), (999, 997));
    }

    #[test]
    fn a_missing_or_malformed_entry_is_none() {
        assert!(parse_passwd("root:x:0:0::/root:/bin/bash\n", NAME).is_none());
        assert!(parse_passwd("marketplace-test:x:abc:1::/:/bin/sh\n", NAME).is_none());
    }
}
