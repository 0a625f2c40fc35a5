//! Connecting to the store, binding the listener and serving.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use marketplace_config::CatalogConfig;
use marketplace_config::env::CATALOG_SEARCH_URL;
use marketplace_grpc::Listener;
use marketplace_proto::catalog::v1::catalog_service_server::{CatalogServiceServer, SERVICE_NAME};
use tonic::service::Routes;

use crate::grpc::CatalogGrpc;
use crate::storage::{GuardedProducts, Products};

/// The catalog service, bound and not yet serving; its store may still be
/// starting (see [`Application::readiness`]).
#[derive(Debug)]
pub struct Application {
    listener: Listener,
    shared: marketplace_grpc::Shared,
    products: GuardedProducts,
}

impl Application {
    /// Checks the search URL, binds the listener and starts the store in
    /// the background: an Elasticsearch that is not reachable yet, or whose
    /// index cannot be used, delays readiness, not start-up (the reason is
    /// logged at each attempt). A tantivy index is opened here, and a URL
    /// that cannot work is an error.
    pub async fn build(
        config: CatalogConfig,
        shared: &marketplace_grpc::Shared,
    ) -> anyhow::Result<Self> {
        let url = config.search_url.with_context(|| {
            format!(
                "{CATALOG_SEARCH_URL} is not set: give an Elasticsearch 7 URL \
                 (http://host:9200) or tantivy://PATH for an embedded index"
            )
        })?;
        let products = Products::open(&url, &config.index_name)
            .await
            .with_context(|| {
                format!(
                    "opening the product store ({CATALOG_SEARCH_URL}, a {} URL)",
                    url.scheme()
                )
            })?;
        let listener = Listener::bind(config.listen_addr)
            .await
            .with_context(|| format!("binding {}", config.listen_addr))?;
        let products = GuardedProducts::new(products, shared);
        Ok(Self {
            listener,
            products,
            shared: shared.clone(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// What must be up for the service to be ready (its store).
    pub fn readiness(&self) -> Vec<marketplace_telemetry::Readiness> {
        vec![self.products.readiness()]
    }

    /// Serves until `shutdown` completes, then lets calls in flight finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let readiness = self.readiness();
        let routes = Routes::new(CatalogServiceServer::new(CatalogGrpc::new(self.products)));
        self.listener
            .serve(
                marketplace_grpc::Serving {
                    service_name: SERVICE_NAME,
                    component: "catalog",
                    metrics: self.shared.metrics.clone(),
                    readiness,
                },
                routes,
                shutdown,
            )
            .await
            .context("serving gRPC")
    }
}
