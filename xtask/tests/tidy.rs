//! Repository hygiene checked as a test, so that `cargo xtask test` (and CI)
//! fails on it like on any other defect.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One level above xtask. cargo sets `CARGO_MANIFEST_DIR` when it runs a
/// test, which stays right when the checkout moved after the build (cargo
/// does not rebuild a relocated workspace); the compiled-in value is the
/// fallback.
fn workspace_root() -> PathBuf {
    let xtask = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    xtask
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

#[test]
fn the_code_is_formatted() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());

    let output = Command::new(cargo)
        .args(["fmt", "--all", "--check"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo fmt runs");

    assert!(
        output.status.success(),
        "`cargo fmt --all` would change these files:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let ci = std::fs::read_to_string(workspace_root().join(".ci/run")).expect(".ci/run");

    assert!(
        readme.contains("\ncargo xtask test\n"),
        "the README no longer shows `cargo xtask test`"
    );
    assert!(
        ci.lines().any(|line| line.trim() == "cargo xtask test"),
        ".ci/run does not run `cargo xtask test`"
    );
}

#[test]
fn the_readme_documents_every_service_setting() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");

    let missing: Vec<&str> = marketplace_config::env::ALL
        .iter()
        .copied()
        .filter(|name| !readme.contains(&format!("| `{name}` |")))
        .collect();

    assert!(
        missing.is_empty(),
        "README.md's settings table lacks {missing:?}"
    );
}
