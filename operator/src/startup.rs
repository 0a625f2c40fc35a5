//! Running the operator: the [`reconcile`] pipeline for every Marketplace
//! in the cluster.
//!
//! - `/metrics` (Prometheus text format) and `/healthz` on `--metrics-addr`;
//! - leader election through the Lease `marketplace-operator` in
//!   `--lease-namespace` ([`leader`]): every replica campaigns, only the
//!   leader runs the controller;
//! - per-object exponential backoff on errors (the reconciler's
//!   [`reconcile::Backoff`]);
//! - graceful shutdown on SIGTERM/SIGINT: the controller finishes the
//!   reconciles in flight, then the Lease is released so that a follower
//!   takes over at once, and the process exits 0.
//!
//! A leader that loses its Lease (another replica took it over because this
//! one could not renew in time) stops its controller and exits with an
//! error instead of campaigning again: its caches and queue belong to a
//! term that is over, and a restart by the kubelet is the simplest way to
//! start clean.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use futures::{FutureExt as _, StreamExt};
use kube::client::ClientBuilder;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, controller, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::builders::MANAGER;
use crate::cache::{self, Caches};
use crate::config::Config;
use crate::crd::Marketplace;
use crate::leader::{self, Elector};
use crate::metrics::{self, Metrics};
use crate::reconcile::{self, Context};

/// Runs the operator until SIGTERM/SIGINT (then `Ok`) or until it loses
/// its Lease (then an error). Logging must be set up before.
pub async fn run(args: Config) -> anyhow::Result<()> {
    let lease_namespace = args.lease_namespace();

    let metrics = Metrics::new().context("registering the metrics")?;
    let config = kube::Config::infer()
        .await
        .context("configuring the Kubernetes client (in-cluster or KUBECONFIG)")?;
    // The Lease has a client of its own so that only the controller's
    // writes are counted.
    let lease_client =
        Client::try_from(config.clone()).context("building the Kubernetes client")?;
    let client = ClientBuilder::try_from(config)
        .context("building the Kubernetes client")?
        .with_layer(&metrics.count_writes())
        .build();

    let (stop_sender, stop) = watch::channel(false);
    tokio::spawn(async move {
        if let Err(error) = stop_signal().await {
            tracing::error!("listening for SIGTERM/SIGINT: {error}");
        }
        let _ = stop_sender.send(true);
    });

    let listener = metrics::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {}", args.metrics_addr))?;
    tracing::info!(
        address = %listener.local_addr().context("reading the metrics address")?,
        "serving /metrics and /healthz"
    );
    let server = tokio::spawn(metrics.clone().serve(listener, stopped(stop.clone())));

    let elector = Arc::new(Elector::new(
        lease_client,
        &lease_namespace,
        leader::identity(),
    ));
    tracing::info!(
        identity = elector.identity(),
        namespace = lease_namespace,
        lease = leader::LEASE_NAME,
        "campaigning for the leader Lease"
    );
    let (leading_sender, leading) = watch::channel(false);
    let campaign = tokio::spawn(campaign(
        Arc::clone(&elector),
        metrics.clone(),
        leading_sender,
    ));

    let (mut stop_wait, mut leading_wait) = (stop.clone(), leading.clone());
    let lost = tokio::select! {
        leading_now = leading_wait.wait_for(|leading| *leading) => {
            // The answer holds a read lock of the watch channel: kept while
            // the controller runs, it would block the campaign's write when
            // the Lease is lost, and with it the runtime.
            drop(leading_now);
            tracing::info!("leading: starting the Marketplace controller");
            run_controller(
                client,
                elector.identity().to_owned(),
                metrics.clone(),
                args.concurrency,
                stop.clone(),
                leading.clone(),
            ).await;
            !*stop.borrow()
        }
        _ = stop_wait.wait_for(|stop| *stop) => false,
    };

    campaign.abort();
    let _ = campaign.await;
    metrics.set_leader(false);
    if lost {
        server.abort();
        anyhow::bail!("lost the leader Lease to another replica; exiting to start clean");
    }
    if let Err(error) = elector.release().await {
        tracing::warn!("releasing the leader Lease: {error}");
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!("the metrics server: {error}"),
        Err(error) => tracing::warn!("the metrics server task: {error}"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Campaigns for the Lease forever: renews it while leading, tries to
/// acquire it otherwise, and publishes whether this replica leads.
async fn campaign(elector: Arc<Elector>, metrics: Metrics, leading: watch::Sender<bool>) {
    let mut renewed: Option<Instant> = None;
    loop {
        metrics.beat();
        let was_leading = *leading.borrow();
        let now_leading = match elector.try_acquire_or_renew().await {
            Ok(true) => {
                renewed = Some(Instant::now());
                true
            }
            Ok(false) => false,
            // Keep leading through short API outages, but stop before the
            // Lease can expire and another replica take over.
            Err(error) => {
                tracing::warn!("campaigning for the leader Lease: {error}");
                was_leading
                    && renewed.is_some_and(|renewed| renewed.elapsed() < leader::RENEW_DEADLINE)
            }
        };
        if now_leading != was_leading {
            if now_leading {
                tracing::info!(identity = elector.identity(), "acquired the leader Lease");
            } else {
                tracing::warn!(identity = elector.identity(), "lost the leader Lease");
            }
            metrics.set_leader(now_leading);
            let _ = leading.send(now_leading);
        }
        tokio::time::sleep(if now_leading {
            leader::RENEW_INTERVAL
        } else {
            leader::RETRY_INTERVAL
        })
        .await;
    }
}

/// Runs the controller until `stop` is raised or this replica stops
/// `leading`, then lets the reconciles in flight finish (for at most
/// [`GRACE`]).
async fn run_controller(
    client: Client,
    identity: String,
    metrics: Metrics,
    concurrency: u16,
    stop: watch::Receiver<bool>,
    leading: watch::Receiver<bool>,
) {
    let controller = Controller::new(
        Api::<Marketplace>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(controller::Config::default().concurrency(concurrency));
    // Only the children the operator made, cached: their owner references
    // route their changes to their Marketplace, and the reconciler reads
    // them from the caches instead of the API server.
    let (controller, caches) = Caches::watch(&client, controller);
    let controller = cache::watch_external_secrets(&client, controller);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.to_owned(),
            instance: Some(identity),
        },
    );
    let store = controller.store();
    let (graceful_stop, graceful_leading) = (stop.clone(), leading.clone());
    let running = controller
        .graceful_shutdown_on(async move {
            if shutdown(graceful_stop, graceful_leading).await {
                tracing::info!("stopping: finishing the reconciles in flight");
            } else {
                tracing::warn!("stopping the controller: the leader Lease is lost");
            }
        })
        .run(
            move |marketplace, context| {
                let metrics = metrics.clone();
                async move {
                    let _in_flight = metrics.reconcile_started();
                    let started = Instant::now();
                    let result = reconcile::reconcile(marketplace, context).await;
                    metrics.reconciled(started.elapsed(), result.as_ref().err());
                    result
                }
            },
            reconcile::error_policy,
            Arc::new(Context::new(client, caches, recorder)),
        )
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                // Reconcile errors are logged by the error policy.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => tracing::warn!("controller: {error}"),
            }
        });
    // kube-runtime's graceful shutdown never ends when it is asked for
    // before the caches are filled (its runner waits for them forever); no
    // reconcile can have started then, so the controller is just dropped.
    let cut_short = async {
        shutdown(stop, leading).await;
        if store.wait_until_ready().now_or_never().is_some() {
            tokio::time::sleep(GRACE).await;
            tracing::warn!("the reconciles in flight did not finish within {GRACE:?}");
        }
    };
    tokio::select! {
        () = running => {}
        () = cut_short => {}
    }
}

/// How long the reconciles in flight may take to finish on shutdown.
const GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// Resolves when the controller must stop: `true` when asked to stop,
/// `false` when the Lease is lost.
async fn shutdown(stop: watch::Receiver<bool>, leading: watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = stopped(stop) => true,
        () = lost(leading) => false,
    }
}

/// Resolves when the stop flag is raised.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Resolves when this replica stops leading.
async fn lost(mut leading: watch::Receiver<bool>) {
    let _ = leading.wait_for(|leading| !*leading).await;
}

async fn stop_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        result = tokio::signal::ctrl_c() => {
            result?;
            tracing::info!("SIGINT: shutting down");
        }
    }
    Ok(())
}
