//! Building and running the order service.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use marketplace_config::{OrderConfig, env};
use marketplace_grpc::{ChannelSettings, Listener};
use tonic::service::Routes;

use crate::downstream::GrpcDownstream;
use crate::grpc::{OrderGrpc, OrderServiceServer, SERVICE_NAME};
use crate::storage::Orders;

/// The order service, bound and ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: Listener,
    shared: marketplace_grpc::Shared,
    grpc: OrderGrpc<Orders>,
}

impl Application {
    /// Connects to the store (creating the schema if needed), prepares the
    /// account and catalog clients (they connect on first use, so the
    /// service starts while they are still down) and binds the listener.
    pub async fn build(
        config: OrderConfig,
        shared: &marketplace_grpc::Shared,
    ) -> anyhow::Result<Self> {
        let url = config.database_url.as_ref().with_context(|| {
            format!(
                "no order database configured: set {} to a postgres:// URL or sqlite://PATH",
                env::ORDER_DATABASE_URL
            )
        })?;
        let store = Orders::connect(url, config.database_pool_size)
            .await
            .with_context(|| format!("opening the order database ({url:?})"))?;
        let settings = ChannelSettings {
            connect_timeout: config.downstream_timeout,
            call_timeout: config.downstream_timeout,
        };
        let downstream = GrpcDownstream::new(&config.account_url, &config.catalog_url, settings)
            .with_context(|| {
                format!(
                    "{} or {} is not a valid URL",
                    env::ORDER_ACCOUNT_URL,
                    env::ORDER_CATALOG_URL
                )
            })?;
        let listener = Listener::bind(config.listen_addr)
            .await
            .with_context(|| format!("binding {}", config.listen_addr))?;
        Ok(Self {
            shared: shared.clone(),
            listener,
            grpc: OrderGrpc::new(store, downstream),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// What must be up for the service to be ready (its store).
    pub fn readiness(&self) -> Vec<marketplace_telemetry::Readiness> {
        Vec::new()
    }

    /// Serves until `shutdown` completes, then ends open watches and lets
    /// calls in flight finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stopper = self.grpc.watch_stopper();
        let shutdown = async move {
            shutdown.await;
            stopper.stop();
        };
        let routes = Routes::new(OrderServiceServer::new(self.grpc));
        self.listener
            .serve(
                marketplace_grpc::Serving {
                    service_name: SERVICE_NAME,
                    component: "order",
                    metrics: self.shared.metrics.clone(),
                    readiness: Vec::new(),
                },
                routes,
                shutdown,
            )
            .await
            .context("serving the order service")
    }
}
