//! Building and running the gateway.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::Service as _;
use actix_web::http::ConnectionType;
use actix_web::middleware::Condition;
use actix_web::{App, HttpServer, http::header};
use anyhow::Context;
use marketplace_config::{GatewayConfig, env};

use crate::cache::ProductCache;
use crate::downstream::{Downstream, DownstreamConfig};
use crate::http::{self, HttpLimits, State};
use crate::schema::{self, Limits};

/// How long a graceful shutdown waits for requests and open websockets.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The gateway, bound and ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<State>,
    drain_period: Duration,
    cors_origins: Vec<String>,
}

impl Application {
    /// Prepares the service clients (they connect on first use, so the
    /// gateway starts while the services are still down) and binds the
    /// listener. Metrics go to the process's registry (`shared.metrics`),
    /// which `/metrics` shows whole; the retry and breaker settings are
    /// `shared.resilience`.
    pub async fn build(
        config: GatewayConfig,
        shared: &marketplace_grpc::Shared,
    ) -> anyhow::Result<Self> {
        let downstream = Downstream::new(
            &DownstreamConfig {
                account_url: config.account_url.clone(),
                catalog_url: config.catalog_url.clone(),
                order_url: config.order_url.clone(),
                timeout: config.downstream_timeout,
            },
            shared,
        )
        .with_context(|| {
            format!(
                "{}, {} or {} is not a valid URL",
                env::GATEWAY_ACCOUNT_URL,
                env::GATEWAY_CATALOG_URL,
                env::GATEWAY_ORDER_URL
            )
        })?;
        let query_limits = Limits {
            depth: config.max_query_depth,
            complexity: config.max_query_complexity,
        };
        let cache = ProductCache::new(config.cache_ttl, config.cache_capacity, &shared.metrics);
        let listener = TcpListener::bind(config.listen_addr)
            .with_context(|| format!("binding {}", config.listen_addr))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            state: Arc::new(State {
                schema: schema::build(
                    downstream.clone(),
                    cache.clone(),
                    query_limits,
                    shared.metrics.clone(),
                ),
                downstream,
                cache,
                metrics: shared.metrics.clone(),
                limits: HttpLimits {
                    body_bytes: config.max_body_bytes,
                    ..HttpLimits::default()
                },
                query_limits,
                draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            }),
            drain_period: config.drain_period,
            cors_origins: config.allowed_origins().map(str::to_owned).collect(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting and lets the
    /// requests in flight finish (for at most ten seconds).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let origins = self.cors_origins;
        let app_state = Arc::clone(&state);
        let server = HttpServer::new(move || {
            let draining = Arc::clone(&app_state);
            App::new()
                .wrap_fn(move |request, service| {
                    let answer = service.call(request);
                    let draining = Arc::clone(&draining);
                    async move {
                        let mut response = answer.await?;
                        if draining.is_draining() {
                            response
                                .response_mut()
                                .head_mut()
                                .set_connection_type(ConnectionType::Close);
                        }
                        Ok(response)
                    }
                })
                .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
                .configure(http::configure(Arc::clone(&app_state)))
        })
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
        .listen(self.listener)
        .context("serving the gateway")?
        .run();
        let handle = server.handle();
        let drain_period = self.drain_period;
        tokio::spawn(async move {
            shutdown.await;
            // Keep serving a little, answering "not ready" and closing each
            // connection after its answer, so that no client sends a
            // request on a kept-alive connection the server is closing.
            state
                .draining
                .store(true, std::sync::atomic::Ordering::Release);
            tracing::info!(?drain_period, "shutting down: draining");
            tokio::time::sleep(drain_period).await;
            handle.stop(true).await;
        });
        tracing::info!(
            address = %self.local_addr,
            playground = %format!("http://{}/playground", browsable(self.local_addr)),
            "serving GraphQL"
        );
        server.await.context("serving the gateway")
    }
}

/// CORS for the configured origins: GraphQL's methods and headers only.
fn cors(origins: &[String]) -> Cors {
    origins
        .iter()
        .fold(Cors::default(), |cors, origin| cors.allowed_origin(origin))
        .allowed_methods(["GET", "POST"])
        .allowed_headers([header::CONTENT_TYPE, header::ACCEPT, header::AUTHORIZATION])
        .max_age(3600)
}

/// The address as a person types it into a browser: `localhost` for the
/// wildcard address.
pub fn browsable(address: SocketAddr) -> String {
    if address.ip().is_unspecified() {
        format!("localhost:{}", address.port())
    } else {
        address.to_string()
    }
}
