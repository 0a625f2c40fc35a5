//! The order store as the service uses it: [`Orders`] in a [`Guarded`],
//! which starts a PostgreSQL database in the background (a SQLite file was
//! opened before), keeps its readiness current, and traces, times, counts
//! and guards every call. Reads are retried after failures of the
//! database, creations never; watching new orders needs no guard.

use std::sync::Arc;

use marketplace_domain::Id;
use marketplace_resilience::Idempotent;
use marketplace_store::Guarded;
use tokio::sync::broadcast;

use super::{OrderStore, Orders, StorageError};
use crate::domain::{Order, TakePerAccount};

/// [`Orders`], started in the background and guarded. Cheap to clone.
pub type GuardedOrders = Guarded<Orders>;

impl OrderStore for GuardedOrders {
    async fn create(&self, order: &Order) -> Result<(), StorageError> {
        self.run("create", Idempotent::No, || self.store().create(order))
            .await
    }

    async fn get(&self, id: &Id) -> Result<Option<Order>, StorageError> {
        self.run("get", Idempotent::Yes, || self.store().get(id))
            .await
    }

    async fn list_for_accounts(
        &self,
        account_ids: &[Id],
        take: TakePerAccount,
    ) -> Result<Vec<Order>, StorageError> {
        self.run("list_for_accounts", Idempotent::Yes, || {
            self.store().list_for_accounts(account_ids, take)
        })
        .await
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Order>> {
        self.store().subscribe()
    }
}
