//! The running service: the store, the bound listener, and serving.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use marketplace_config::AccountConfig;
use marketplace_config::env::ACCOUNT_DATABASE_URL;
use marketplace_grpc::Listener;
use marketplace_proto::account::v1::account_service_server::{AccountServiceServer, SERVICE_NAME};
use tonic::service::Routes;

use crate::grpc::AccountGrpc;
use crate::storage::{Accounts, GuardedAccounts};

/// The account service, bound but not yet serving; its database may still
/// be starting (see [`Application::readiness`]).
#[derive(Debug)]
pub struct Application {
    store: GuardedAccounts,
    shared: marketplace_grpc::Shared,
    listener: Listener,
}

impl Application {
    /// Checks the database URL, binds the listener and starts the database
    /// in the background: a PostgreSQL server that is not reachable yet
    /// delays readiness, not start-up. A SQLite file is opened and migrated
    /// here, and a URL that cannot work is an error.
    pub async fn build(
        config: AccountConfig,
        shared: &marketplace_grpc::Shared,
    ) -> anyhow::Result<Self> {
        let url = config.database_url.with_context(|| {
            format!(
                "{ACCOUNT_DATABASE_URL} is not set: give the account database as a \
                 postgres:// URL or as sqlite://PATH"
            )
        })?;
        let store = Accounts::open(&url, config.database_pool_size)
            .await
            .with_context(|| {
                format!(
                    "cannot open the account database ({}) named by {ACCOUNT_DATABASE_URL}",
                    url.scheme()
                )
            })?;
        let listener = Listener::bind(config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
        let store = GuardedAccounts::new(store, shared);
        Ok(Self {
            store,
            listener,
            shared: shared.clone(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// What must be up for the service to be ready (its store).
    pub fn readiness(&self) -> Vec<marketplace_telemetry::Readiness> {
        vec![self.store.readiness()]
    }

    /// Serves until `shutdown` completes, then finishes the calls in flight.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let readiness = self.readiness();
        let routes = Routes::new(AccountServiceServer::new(AccountGrpc::new(self.store)));
        self.listener
            .serve(
                marketplace_grpc::Serving {
                    service_name: SERVICE_NAME,
                    component: "account",
                    metrics: self.shared.metrics.clone(),
                    readiness,
                },
                routes,
                shutdown,
            )
            .await
            .context("the account service's gRPC server failed")
    }
}
