//! The services an order depends on: the account service (does the account
//! exist?) and the catalog (what do these products cost?).

use std::collections::HashMap;
use std::future::Future;

use marketplace_domain::{Id, Money};
use marketplace_grpc::{ChannelSettings, InvalidUrl};
use marketplace_proto::account::v1::GetAccountRequest;
use marketplace_proto::account::v1::account_service_client::AccountServiceClient;
use marketplace_proto::catalog::v1::GetProductsRequest;
use marketplace_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use tonic::transport::Channel;
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
            // Connection failures surface as UNAVAILABLE, and the channel's
            // deadline as CANCELLED ("Timeout expired").
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                Self::Unavailable { service, status }
            }
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

/// The account and catalog services over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcDownstream {
    accounts: AccountServiceClient<Channel>,
    catalog: CatalogServiceClient<Channel>,
}

impl GrpcDownstream {
    /// Clients that connect on first use, each call bounded by `settings`.
    pub fn new(
        account_url: &str,
        catalog_url: &str,
        settings: ChannelSettings,
    ) -> Result<Self, InvalidUrl> {
        Ok(Self {
            accounts: AccountServiceClient::new(marketplace_grpc::channel(account_url, settings)?),
            catalog: CatalogServiceClient::new(marketplace_grpc::channel(catalog_url, settings)?),
        })
    }
}

impl Downstream for GrpcDownstream {
    async fn account_exists(&self, id: &Id) -> Result<bool, DownstreamError> {
        let request = GetAccountRequest {
            id: id.as_str().to_owned(),
        };
        match self.accounts.clone().get_account(request).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(DownstreamError::from_status(Service::Account, status)),
        }
    }

    async fn prices(&self, ids: &[Id]) -> Result<HashMap<Id, Money>, DownstreamError> {
        let request = GetProductsRequest {
            ids: ids.iter().map(|id| id.as_str().to_owned()).collect(),
        };
        let products = self
            .catalog
            .clone()
            .get_products(request)
            .await
            .map_err(|status| DownstreamError::from_status(Service::Catalog, status))?
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
