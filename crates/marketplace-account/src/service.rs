//! What the service does with valid requests, whatever the transport.

use marketplace_domain::{Id, Page, Text};

use crate::domain::Account;
use crate::storage::{AccountStore, StorageError};

/// The most ids one `GetAccounts` call may ask for.
pub(crate) const MAX_BATCH: usize = 1000;

/// Why a valid request still failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    #[error("no account has the id {0}")]
    NotFound(Id),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub(crate) async fn create_account(
    store: &impl AccountStore,
    name: Text,
) -> Result<Account, ServiceError> {
    let account = Account::new(name);
    store.create(&account).await?;
    Ok(account)
}

pub(crate) async fn get_account(
    store: &impl AccountStore,
    id: Id,
) -> Result<Account, ServiceError> {
    store.get(&id).await?.ok_or(ServiceError::NotFound(id))
}

/// The accounts among `ids` that exist, each once; unknown ids are left
/// out, since a batch loader asks for ids it has not checked.
pub(crate) async fn get_accounts(
    store: &impl AccountStore,
    ids: &[Id],
) -> Result<Vec<Account>, ServiceError> {
    Ok(store.get_many(ids).await?)
}

pub(crate) async fn list_accounts(
    store: &impl AccountStore,
    page: Page,
) -> Result<Vec<Account>, ServiceError> {
    Ok(store.list(page).await?)
}
