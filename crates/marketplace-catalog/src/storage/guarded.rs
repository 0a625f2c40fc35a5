//! The product store as the service uses it: [`Products`] in a
//! [`Guarded`], which starts Elasticsearch in the background (a tantivy
//! index was opened before), pings it to keep its readiness current, and
//! traces, times, counts and guards every call. Reads and searches are
//! retried after failures of the store, creations never.

use marketplace_domain::Id;
use marketplace_resilience::Idempotent;
use marketplace_store::Guarded;

use super::{ProductStore, Products, StorageError};
use crate::domain::{Product, ResultWindow, SearchText};

/// [`Products`], started in the background and guarded. Cheap to clone.
pub type GuardedProducts = Guarded<Products>;

impl ProductStore for GuardedProducts {
    async fn create(&self, product: &Product) -> Result<(), StorageError> {
        self.run("create", Idempotent::No, || self.store().create(product))
            .await
    }

    async fn get(&self, id: &Id) -> Result<Option<Product>, StorageError> {
        self.run("get", Idempotent::Yes, || self.store().get(id))
            .await
    }

    async fn get_many(&self, ids: &[Id]) -> Result<Vec<Product>, StorageError> {
        self.run("get_many", Idempotent::Yes, || self.store().get_many(ids))
            .await
    }

    async fn list(&self, window: ResultWindow) -> Result<Vec<Product>, StorageError> {
        self.run("list", Idempotent::Yes, || self.store().list(window))
            .await
    }

    async fn search(
        &self,
        text: &SearchText,
        window: ResultWindow,
    ) -> Result<Vec<Product>, StorageError> {
        self.run("search", Idempotent::Yes, || {
            self.store().search(text, window)
        })
        .await
    }
}
