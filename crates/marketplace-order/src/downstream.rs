//! The services an order depends on: the account service (does the account
//! exist?) and the catalog (what do these products cost?).

use std::collections::HashMap;
use std::future::Future;

use marketplace_domain::{Id, Money};
use marketplace_grpc::observe::ObservedChannel;
use marketplace_grpc::{ChannelSettings, InvalidUrl, Shared};
use marketplace_proto::account::v1::GetAccountRequest;
use marketplace_proto::account::v1::account_service_client::AccountServiceClient;
use marketplace_proto::catalog::v1::GetProductsRequest;
use marketplace_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use marketplace_resilience::{Downstream as Guard, Failure, Idempotent, Policy};
use tonic::{Code, Status};

/// What placing an order asks of other services.
pub trait Downstream: Send + Sync + 'static {
    /// Whether the account exists.
    fn account_exists(&self, id: &Id)
    -> impl Future<Output = Result<bool, DownstreamError>> + Send;

    /// The current price of each of `ids` that exists; unknown ids are left
    /// out. One call whatever the number of ids.
    fn prices(
        &self,
        ids: &[Id],
    ) -> impl Future<Output = Result<HashMap<Id, Money>, DownstreamError>> + Send;
}

/// Which downstream service failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Account,
    Catalog,
}

impl Service {
    /// The service as clients are told about it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Account => "the account service",
            Self::Catalog => "the catalog service",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DownstreamError {
    /// Down, unreachable or too slow: worth retrying later.
    #[error("{} is unavailable", .service.name())]
    Unavailable {
        service: Service,
        #[source]
        status: Status,
    },
    /// Anything else, such as a malformed answer.
    #[error("{} failed", .service.name())]
    Unexpected {
        service: Service,
        #[source]
        status: Status,
    },
}

impl DownstreamError {
    fn from_status(service: Service, status: Status) -> Self {
        match status.code() {
            // Connection failures and an open breaker surface as
            // UNAVAILABLE, the channel's deadline as CANCELLED ("Timeout
            // expired") and the guard's as DEADLINE_EXCEEDED; an overloaded
            // service sheds calls with RESOURCE_EXHAUSTED.
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted => Self::Unavailable { service, status },
            _ => Self::Unexpected { service, status },
        }
    }

    fn malformed(service: Service, what: String) -> Self {
        Self::Unexpected {
            service,
            status: Status::internal(what),
        }
    }

    pub fn service(&self) -> Service {
        match self {
            Self::Unavailable { service, .. } | Self::Unexpected { service, .. } => *service,
        }
    }
}

/// The account and catalog services over gRPC: every call traced,
/// carrying the request id and counted (`grpc_client_*`), and guarded per
/// service: reads retried after failures of the service, a breaker that
/// fails calls at once while the service is down.
#[derive(Debug, Clone)]
pub struct GrpcDownstream {
    accounts: AccountServiceClient<ObservedChannel>,
    catalog: CatalogServiceClient<ObservedChannel>,
    account_guard: Guard,
    catalog_guard: Guard,
}

impl GrpcDownstream {
    /// Clients that connect on first use, each call bounded by `settings`
    /// and all attempts of one call by `settings.call_timeout`, with the
    /// metrics and retry and breaker settings of `shared`.
    pub fn new(
        account_url: &str,
        catalog_url: &str,
        settings: ChannelSettings,
        shared: &Shared,
    ) -> Result<Self, InvalidUrl> {
        let channel =
            |url| marketplace_grpc::observed_channel(url, settings, "order", &shared.metrics);
        let guard = |dependency| {
            Guard::new(
                "order",
                dependency,
                Policy::new(&shared.resilience, settings.call_timeout),
                &shared.metrics,
            )
        };
        Ok(Self {
            accounts: AccountServiceClient::new(channel(account_url)?),
            catalog: CatalogServiceClient::new(channel(catalog_url)?),
            account_guard: guard("account"),
            catalog_guard: guard("catalog"),
        })
    }
}

/// A guarded call's failure as the downstream error of `service`: an open
/// breaker and a passed deadline are the service being unavailable.
fn failed(service: Service, failure: Failure<Status>) -> DownstreamError {
    DownstreamError::from_status(
        service,
        marketplace_grpc::failure_status(service.name(), failure),
    )
}

impl Downstream for GrpcDownstream {
    async fn account_exists(&self, id: &Id) -> Result<bool, DownstreamError> {
        let request = GetAccountRequest {
            id: id.as_str().to_owned(),
        };
        let answer = self
            .account_guard
            .call(
                Idempotent::Yes,
                || {
                    let (mut client, request) = (self.accounts.clone(), request.clone());
                    async move { client.get_account(request).await }
                },
                marketplace_grpc::verdict,
            )
            .await;
        match answer {
            Ok(_) => Ok(true),
            Err(Failure::Failed(status)) if status.code() == Code::NotFound => Ok(false),
            Err(failure) => Err(failed(Service::Account, failure)),
        }
    }

    async fn prices(&self, ids: &[Id]) -> Result<HashMap<Id, Money>, DownstreamError> {
        let request = GetProductsRequest {
            ids: ids.iter().map(|id| id.as_str().to_owned()).collect(),
        };
        let products = self
            .catalog_guard
            .call(
                Idempotent::Yes,
                || {
                    let (mut client, request) = (self.catalog.clone(), request.clone());
                    async move { client.get_products(request).await }
                },
                marketplace_grpc::verdict,
            )
            .await
            .map_err(|failure| failed(Service::Catalog, failure))?
            .into_inner()
            .products;
        products
            .into_iter()
            .map(|product| {
                let id = Id::parse(&product.id).map_err(|e| {
                    DownstreamError::malformed(Service::Catalog, format!("product id: {e}"))
                })?;
                let price = product
                    .price
                    .ok_or_else(|| format!("product {id} has no price"))
                    .and_then(|p| {
                        Money::from_minor_units(p.minor_units)
                            .map_err(|e| format!("product {id} price: {e}"))
                    })
                    .map_err(|what| DownstreamError::malformed(Service::Catalog, what))?;
                Ok((id, price))
            })
            .collect()
    }
}
