//! Building and running the order service.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use marketplace_config::{OrderConfig, env};
use marketplace_grpc::{ChannelSettings, Listener};
use tonic::service::Routes;

use crate::downstream::GrpcDownstream;
use crate::grpc::{OrderGrpc, OrderServiceServer, SERVICE_NAME};
use crate::storage::{GuardedOrders, Orders};

/// The order service, bound and not yet serving; its database may still be
/// starting (see [`Application::readiness`]).
#[derive(Debug)]
pub struct Application {
    listener: Listener,
    shared: marketplace_grpc::Shared,
    readiness: marketplace_telemetry::Readiness,
    grpc: OrderGrpc<GuardedOrders>,
}

impl Application {
    /// Checks the database URL, prepares the account and catalog clients
    /// (they connect on first use, so the service starts while they are
    /// still down), binds the listener and starts the database in the
    /// background: a PostgreSQL server that is not reachable yet delays
    /// readiness, not start-up. A SQLite file is opened and migrated here,
    /// and a URL that cannot work is an error.
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
        let store = Orders::open(url, config.database_pool_size)
            .await
            .with_context(|| format!("opening the order database ({url:?})"))?;
        let settings = ChannelSettings {
            connect_timeout: config.downstream_timeout,
            call_timeout: config.downstream_timeout,
        };
        let downstream =
            GrpcDownstream::new(&config.account_url, &config.catalog_url, settings, shared)
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
        let store = GuardedOrders::new(store, shared);
        Ok(Self {
            shared: shared.clone(),
            listener,
            readiness: store.readiness(),
            grpc: OrderGrpc::new(store, downstream),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// What must be up for the service to be ready (its store).
    pub fn readiness(&self) -> Vec<marketplace_telemetry::Readiness> {
        vec![self.readiness.clone()]
    }

    /// Serves until `shutdown` completes, then ends open watches and lets
    /// calls in flight finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let readiness = self.readiness();
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
                    readiness,
                },
                routes,
                shutdown,
            )
            .await
            .context("serving the order service")
    }
}
