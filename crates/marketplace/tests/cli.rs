//! The `marketplace` binary as an operator runs it: a real process, its
//! flags and environment, its health endpoint and its shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::marketplace;
use marketplace_config::env;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Polls without blocking the runtime, whose connections must stay
/// responsive for the server's graceful shutdown to finish.
async fn wait_with_deadline(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < end,
            "the process did not exit within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn help_documents_every_option_and_its_environment_variable() {
    let output = marketplace().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();

    assert!(output.status.success());
    for name in env::ALL {
        assert!(
            help.contains(&format!("[env: {name}")),
            "{name} missing from:\n{help}"
        );
    }
}

#[test]
fn a_missing_store_url_is_a_clear_startup_error() {
    let output = marketplace()
        .args([
            "serve",
            "--target",
            "account",
            "--account-listen-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success());
    assert!(stderr.contains(env::ACCOUNT_DATABASE_URL), "{stderr}");
}

#[test]
fn an_unknown_target_is_refused_with_the_choices() {
    let output = marketplace()
        .args(["serve", "--target", "billing"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(!output.status.success());
    assert!(
        stderr.contains("account") && stderr.contains("order"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_account_service_runs_from_the_environment_reports_serving_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("account.db").display());
    let mut served = common::serve(
        marketplace()
            .args(["serve"])
            .env(env::TARGET, "account")
            .env(env::ACCOUNT_LISTEN_ADDR, "127.0.0.1:0")
            .env(env::ACCOUNT_DATABASE_URL, database),
        false,
    );
    let address = served.address.clone();

    let channel =
        marketplace_grpc::channel(&format!("http://{address}"), Default::default()).unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "marketplace.account.v1.AccountService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    terminate(&served.child);
    let exit = wait_with_deadline(&mut served.child, Duration::from_secs(20)).await;

    assert_eq!(status, ServingStatus::Serving);
    assert!(exit.success(), "{exit}");
    assert!(dir.path().join("account.db").exists());
}
