//! The gRPC transport: turns requests into valid domain values (or
//! `INVALID_ARGUMENT`), calls the service, and turns its errors into
//! statuses that reveal nothing of the backend.

use std::time::SystemTime;

use marketplace_domain::{Id, Page, Text, TextRule};
use marketplace_proto::account::v1 as proto;
use marketplace_proto::account::v1::account_service_server::AccountService;
use tonic::{Request, Response, Status};

use crate::domain::Account;
use crate::service::{self, MAX_BATCH, ServiceError};
use crate::storage::{AccountStore, StorageError};

/// `marketplace.account.v1.AccountService` over any [`AccountStore`].
#[derive(Debug, Clone)]
pub struct AccountGrpc<S> {
    store: S,
}

impl<S: AccountStore> AccountGrpc<S> {
    pub fn new(store: S) -> Self {
        Self { store }
    }
}

/// A valid `CreateAccountRequest`.
struct NewAccount {
    name: Text,
}

impl TryFrom<proto::CreateAccountRequest> for NewAccount {
    type Error = Status;

    fn try_from(request: proto::CreateAccountRequest) -> Result<Self, Status> {
        let name = Text::parse(&request.name, TextRule::ACCOUNT_NAME)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        Ok(Self { name })
    }
}

/// A valid `GetAccountRequest`.
struct AccountId(Id);

impl TryFrom<proto::GetAccountRequest> for AccountId {
    type Error = Status;

    fn try_from(request: proto::GetAccountRequest) -> Result<Self, Status> {
        Id::parse(&request.id)
            .map(Self)
            .map_err(|error| Status::invalid_argument(format!("id: {error}")))
    }
}

/// A valid `GetAccountsRequest`.
struct AccountIds(Vec<Id>);

impl TryFrom<proto::GetAccountsRequest> for AccountIds {
    type Error = Status;

    fn try_from(request: proto::GetAccountsRequest) -> Result<Self, Status> {
        if request.ids.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "ids: at most {MAX_BATCH} ids per call, got {}",
                request.ids.len()
            )));
        }
        request
            .ids
            .iter()
            .enumerate()
            .map(|(index, id)| {
                Id::parse(id)
                    .map_err(|error| Status::invalid_argument(format!("ids[{index}]: {error}")))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl From<proto::ListAccountsRequest> for PageRequest {
    fn from(request: proto::ListAccountsRequest) -> Self {
        Self(Page::new(request.skip, request.take))
    }
}

/// A `ListAccountsRequest`: every skip and take is valid (take 0 means the
/// default, a large take is capped).
struct PageRequest(Page);

fn to_proto(account: Account) -> proto::Account {
    proto::Account {
        id: account.id.to_string(),
        name: account.name.into_string(),
        created_at: Some(SystemTime::from(account.created_at).into()),
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::NotFound(_) => Status::not_found(error.to_string()),
            ServiceError::Storage(error @ StorageError::Unavailable(_)) => {
                marketplace_grpc::unavailable("the account database", &error)
            }
            ServiceError::Storage(error @ StorageError::NotReady(_)) => {
                marketplace_grpc::not_ready("the account database", &error)
            }
            ServiceError::Storage(error) => {
                marketplace_grpc::internal("the account database", &error)
            }
        }
    }
}

#[tonic::async_trait]
impl<S: AccountStore> AccountService for AccountGrpc<S> {
    async fn create_account(
        &self,
        request: Request<proto::CreateAccountRequest>,
    ) -> Result<Response<proto::CreateAccountResponse>, Status> {
        let NewAccount { name } = request.into_inner().try_into()?;
        let account = service::create_account(&self.store, name).await?;
        Ok(Response::new(proto::CreateAccountResponse {
            account: Some(to_proto(account)),
        }))
    }

    async fn get_account(
        &self,
        request: Request<proto::GetAccountRequest>,
    ) -> Result<Response<proto::GetAccountResponse>, Status> {
        let AccountId(id) = request.into_inner().try_into()?;
        let account = service::get_account(&self.store, id).await?;
        Ok(Response::new(proto::GetAccountResponse {
            account: Some(to_proto(account)),
        }))
    }

    async fn get_accounts(
        &self,
        request: Request<proto::GetAccountsRequest>,
    ) -> Result<Response<proto::GetAccountsResponse>, Status> {
        let AccountIds(ids) = request.into_inner().try_into()?;
        let accounts = service::get_accounts(&self.store, &ids).await?;
        Ok(Response::new(proto::GetAccountsResponse {
            accounts: accounts.into_iter().map(to_proto).collect(),
        }))
    }

    async fn list_accounts(
        &self,
        request: Request<proto::ListAccountsRequest>,
    ) -> Result<Response<proto::ListAccountsResponse>, Status> {
        let PageRequest(page) = request.into_inner().into();
        let accounts = service::list_accounts(&self.store, page).await?;
        Ok(Response::new(proto::ListAccountsResponse {
            accounts: accounts.into_iter().map(to_proto).collect(),
        }))
    }
}
