//! The gateway's clients of the account, catalog and order services. Every
//! call goes through [`Downstream::call`], which gives it a deadline (the
//! channel's), counts it, and turns a failure into the client's error.

use std::future::Future;
use std::time::{Duration, Instant};

use marketplace_grpc::{ChannelSettings, InvalidUrl};
use marketplace_proto::account::v1::account_service_client::AccountServiceClient;
use marketplace_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use marketplace_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::transport::Channel;
use tonic::{Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::metrics::Metrics;

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

    /// The gRPC service name its health check answers for.
    fn grpc_name(self) -> &'static str {
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
    /// Deadline of each call (and longest wait for a connection).
    pub timeout: Duration,
}

/// Clients of the three services. Cheap to clone: the channels are shared.
#[derive(Debug, Clone)]
pub struct Downstream {
    pub(crate) account: AccountServiceClient<Channel>,
    pub(crate) catalog: CatalogServiceClient<Channel>,
    pub(crate) order: OrderServiceClient<Channel>,
    /// For `WatchAccountOrders`, whose stream lives as long as the client's
    /// subscription: a channel without the per-call deadline.
    pub(crate) watch: OrderServiceClient<Channel>,
    channels: [(Service, Channel); 3],
    timeout: Duration,
    metrics: Metrics,
}

impl Downstream {
    /// Prepares the clients; they connect on first use, so the gateway
    /// starts while the services are still down.
    pub fn new(config: &DownstreamConfig, metrics: Metrics) -> Result<Self, InvalidUrl> {
        let settings = ChannelSettings {
            connect_timeout: config.timeout,
            call_timeout: config.timeout,
        };
        let account = marketplace_grpc::channel(&config.account_url, settings)?;
        let catalog = marketplace_grpc::channel(&config.catalog_url, settings)?;
        let order = marketplace_grpc::channel(&config.order_url, settings)?;
        let watch = marketplace_grpc::streaming_channel(&config.order_url, config.timeout)?;
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
            timeout: config.timeout,
            metrics,
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Runs one call to `service`, counting it under `method`; a failure
    /// becomes the error the GraphQL client sees. The call's answer (for a
    /// stream: its first response) must come within the deadline.
    pub async fn call<T>(
        &self,
        service: Service,
        method: &str,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, async_graphql::Error> {
        let started = Instant::now();
        // The unary channels enforce the deadline themselves; this bound
        // also covers the start of a stream, whose channel has none.
        let result = tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer within the deadline")));
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics
            .observe_call(service.name(), method, code, started.elapsed());
        result
            .map(Response::into_inner)
            .map_err(|status| crate::error::from_status(service, &status))
    }

    /// The services that do not answer their health check with SERVING
    /// within the call deadline (at most one second), checked at once.
    pub async fn not_serving(&self) -> Vec<Service> {
        let deadline = self.timeout.min(Duration::from_secs(1));
        let checks = self.channels.iter().map(|(service, channel)| {
            let mut client = HealthClient::new(channel.clone());
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
