//! The gateway's clients of the account, catalog and order services. Every
//! call goes through [`Downstream::call`], which guards it (a deadline for
//! all attempts, retries for reads, a circuit breaker per service) and
//! turns a failure into the client's error. The channels trace, count and
//! carry the request id of every call themselves
//! ([`marketplace_grpc::observe::ObservedChannel`]).

use std::future::Future;
use std::time::Duration;

use marketplace_grpc::observe::ObservedChannel;
use marketplace_grpc::{ChannelSettings, InvalidUrl, Shared};
use marketplace_proto::account::v1::account_service_client::AccountServiceClient;
use marketplace_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use marketplace_proto::order::v1::order_service_client::OrderServiceClient;
use marketplace_resilience::Policy;
use marketplace_telemetry::Metrics;
use tonic::{Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub use marketplace_resilience::Idempotent;

/// The component name under which the gateway's calls are counted.
const COMPONENT: &str = "gateway";

/// The largest answer taken from the order service: a full
/// `ListOrdersForAccounts` page (100 accounts, 100 orders each, 100 lines
/// each) with room to spare.
const ORDER_LISTING_BYTES: usize = 128 * 1024 * 1024;

/// A service behind the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Account,
    Catalog,
    Order,
}

impl Service {
    pub const ALL: [Self; 3] = [Self::Account, Self::Catalog, Self::Order];

    /// The short name used in metrics and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Catalog => "catalog",
            Self::Order => "order",
        }
    }

    /// The full gRPC service name, as in metrics and health checks.
    pub fn grpc_name(self) -> &'static str {
        match self {
            Self::Account => "marketplace.account.v1.AccountService",
            Self::Catalog => "marketplace.catalog.v1.CatalogService",
            Self::Order => "marketplace.order.v1.OrderService",
        }
    }
}

/// Where the services are and how long a call to them may take.
#[derive(Debug, Clone)]
pub struct DownstreamConfig {
    pub account_url: String,
    pub catalog_url: String,
    pub order_url: String,
    /// Deadline of each call, all attempts included (and longest wait for
    /// a connection).
    pub timeout: Duration,
}

/// Clients of the three services. Cheap to clone: the channels and the
/// breakers are shared.
#[derive(Debug, Clone)]
pub struct Downstream {
    pub(crate) account: AccountServiceClient<ObservedChannel>,
    pub(crate) catalog: CatalogServiceClient<ObservedChannel>,
    pub(crate) order: OrderServiceClient<ObservedChannel>,
    /// For `WatchAccountOrders`, whose stream lives as long as the client's
    /// subscription: a channel without the per-call deadline.
    pub(crate) watch: OrderServiceClient<ObservedChannel>,
    channels: [(Service, ObservedChannel); 3],
    guards: [marketplace_resilience::Downstream; 3],
    timeout: Duration,
    metrics: Metrics,
}

impl Downstream {
    /// Prepares the clients; they connect on first use, so the gateway
    /// starts while the services are still down.
    pub fn new(config: &DownstreamConfig, shared: &Shared) -> Result<Self, InvalidUrl> {
        let settings = ChannelSettings {
            connect_timeout: config.timeout,
            call_timeout: config.timeout,
        };
        let metrics = &shared.metrics;
        let observed =
            |url: &str| marketplace_grpc::observed_channel(url, settings, COMPONENT, metrics);
        let account = observed(&config.account_url)?;
        let catalog = observed(&config.catalog_url)?;
        let order = observed(&config.order_url)?;
        let watch = ObservedChannel::new(
            marketplace_grpc::streaming_channel(&config.order_url, config.timeout)?,
            COMPONENT,
            metrics.clone(),
        );
        let policy = Policy::new(&shared.resilience, config.timeout);
        let guards = Service::ALL.map(|service| {
            marketplace_resilience::Downstream::new(COMPONENT, service.name(), policy, metrics)
        });
        Ok(Self {
            account: AccountServiceClient::new(account.clone()),
            catalog: CatalogServiceClient::new(catalog.clone()),
            // 100 accounts' 100 newest orders of up to 100 lines each reach
            // tens of megabytes, past tonic's default 4 MiB.
            order: OrderServiceClient::new(order.clone())
                .max_decoding_message_size(ORDER_LISTING_BYTES),
            watch: OrderServiceClient::new(watch),
            channels: [
                (Service::Account, account),
                (Service::Catalog, catalog),
                (Service::Order, order),
            ],
            guards,
            timeout: config.timeout,
            metrics: metrics.clone(),
        })
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn guard(&self, service: Service) -> &marketplace_resilience::Downstream {
        match service {
            Service::Account => &self.guards[0],
            Service::Catalog => &self.guards[1],
            Service::Order => &self.guards[2],
        }
    }

    /// Runs `rpc` (one gRPC method) on a clone of `client` with a
    /// clone of `request`, guarded by `service`'s breaker and deadline, and repeated
    /// after a failure of the service when the call is idempotent. The
    /// call's answer (for a stream: its first response) must come within
    /// the deadline; a failure becomes the error the GraphQL client sees.
    pub async fn call<C, Q, T, Fut>(
        &self,
        service: Service,
        idempotent: Idempotent,
        client: &C,
        request: Q,
        rpc: impl Fn(C, Q) -> Fut,
    ) -> Result<T, async_graphql::Error>
    where
        C: Clone,
        Q: Clone,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let result = self
            .guard(service)
            .call(
                idempotent,
                || rpc(client.clone(), request.clone()),
                marketplace_grpc::verdict,
            )
            .await;
        // Calls an open breaker refused never reach the channel, which
        // counts every attempt it sends; the breaker counts them itself
        // (`marketplace_circuit_breaker_rejected_total`).
        result.map(Response::into_inner).map_err(|failure| {
            let status = marketplace_grpc::failure_status(service.name(), failure);
            crate::error::from_status(service, &status)
        })
    }

    /// The services that do not answer their health check with SERVING
    /// within the call deadline (at most one second), checked at once.
    /// Health checks bypass the breakers and are not counted.
    pub async fn not_serving(&self) -> Vec<Service> {
        let deadline = self.timeout.min(Duration::from_secs(1));
        let checks = self.channels.iter().map(|(service, channel)| {
            let mut client = HealthClient::new(channel.channel().clone());
            let request = HealthCheckRequest {
                service: service.grpc_name().to_owned(),
            };
            async move {
                let answer = tokio::time::timeout(deadline, client.check(request)).await;
                let serving = matches!(
                    answer,
                    Ok(Ok(ref response)) if response.get_ref().status == ServingStatus::Serving as i32
                );
                (!serving).then_some(*service)
            }
        });
        futures::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}
