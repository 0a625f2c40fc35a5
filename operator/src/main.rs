//! `marketplace-operator`: runs the [`reconcile`] pipeline for every
//! Marketplace in the cluster.
//!
//! This first cut has the controller, per-object exponential backoff on
//! errors and graceful shutdown on SIGTERM/SIGINT. Next: leader election
//! through a Lease, `/metrics` (reconciles, errors by reason, duration
//! histogram) and `/healthz`.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use marketplace_operator::builders::MANAGER;
use marketplace_operator::crd::Marketplace;
use marketplace_operator::reconcile::{self, Context};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?;
    // Only the children the operator made: the owner reference routes their
    // events to the Marketplace, the label keeps the caches small.
    let children =
        || watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    tracing::info!("starting the Marketplace controller");
    Controller::new(
        Api::<Marketplace>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Deployment>::all(client.clone()), children())
    .owns(Api::<StatefulSet>::all(client.clone()), children())
    .owns(Api::<Service>::all(client.clone()), children())
    .owns(Api::<Secret>::all(client.clone()), children())
    .shutdown_on_signal()
    .run(
        reconcile::reconcile,
        reconcile::error_policy,
        Arc::new(Context::new(client)),
    )
    .for_each(|result| async move {
        match result {
            Ok((object, _)) => tracing::debug!(%object, "reconciled"),
            // Reconcile errors are logged by the error policy.
            Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
            Err(error) => tracing::warn!("controller: {error}"),
        }
    })
    .await;
    tracing::info!("stopped");
    Ok(())
}
