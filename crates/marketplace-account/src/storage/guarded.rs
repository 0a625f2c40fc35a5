//! The account store as the service uses it: [`Accounts`] in a
//! [`Guarded`], which starts a PostgreSQL database in the background (a
//! SQLite file was opened before), keeps its readiness current, and traces,
//! times, counts and guards every call. Reads are retried after failures
//! of the database, creations never.

use marketplace_domain::{Id, Page};
use marketplace_resilience::Idempotent;
use marketplace_store::Guarded;

use super::{AccountStore, Accounts, StorageError};
use crate::domain::Account;

/// [`Accounts`], started in the background and guarded. Cheap to clone.
pub type GuardedAccounts = Guarded<Accounts>;

impl AccountStore for GuardedAccounts {
    async fn create(&self, account: &Account) -> Result<(), StorageError> {
        self.run("create", Idempotent::No, || self.store().create(account))
            .await
    }

    async fn get(&self, id: &Id) -> Result<Option<Account>, StorageError> {
        self.run("get", Idempotent::Yes, || self.store().get(id))
            .await
    }

    async fn get_many(&self, ids: &[Id]) -> Result<Vec<Account>, StorageError> {
        self.run("get_many", Idempotent::Yes, || self.store().get_many(ids))
            .await
    }

    async fn list(&self, page: Page) -> Result<Vec<Account>, StorageError> {
        self.run("list", Idempotent::Yes, || self.store().list(page))
            .await
    }
}
