//! Where products are kept and searched: Elasticsearch 7, or an embedded
//! tantivy index in a directory, behind one trait.

mod elasticsearch;
mod guarded;
mod tantivy;

use std::error::Error;
use std::future::Future;
use std::time::Duration;

use marketplace_config::SecretUrl;
use marketplace_config::env::CATALOG_SEARCH_URL;
use marketplace_domain::Id;
use marketplace_store::{BoxError, Cut, ManagedStore, StoreError};
use marketplace_telemetry::metrics::StoreErrorKind;

pub use self::elasticsearch::ElasticsearchProducts;
pub use self::guarded::GuardedProducts;
pub use self::tantivy::TantivyProducts;
use crate::domain::{Product, ResultWindow, SearchText};

/// The operations the catalog needs from its store.
pub trait ProductStore: Send + Sync + 'static {
    /// Stores a new product; it is visible to `get` and `search` as soon as
    /// this returns.
    fn create(&self, product: &Product) -> impl Future<Output = Result<(), StorageError>> + Send;

    fn get(&self, id: &Id) -> impl Future<Output = Result<Option<Product>, StorageError>> + Send;

    /// The products with these ids, in no particular order: each at most
    /// once, unknown ids left out.
    fn get_many(
        &self,
        ids: &[Id],
    ) -> impl Future<Output = Result<Vec<Product>, StorageError>> + Send;

    /// Newest first (`created_at` descending, then `id` descending).
    fn list(
        &self,
        window: ResultWindow,
    ) -> impl Future<Output = Result<Vec<Product>, StorageError>> + Send;

    /// Best match first over name (weighted double) and description; the
    /// text is split into words, never parsed as query syntax. A blank text
    /// answers like [`ProductStore::list`].
    fn search(
        &self,
        text: &SearchText,
        window: ResultWindow,
    ) -> impl Future<Output = Result<Vec<Product>, StorageError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The search URL names no backend this service can use.
    #[error("{0}")]
    InvalidUrl(String),
    /// The index exists but cannot be used as it is; the message says why
    /// and what to do.
    #[error("{0}")]
    IncompatibleIndex(String),
    /// The backend could not be reached or did not answer in time.
    #[error("the product store is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: a refused request, a malformed stored document, ...
    #[error("the product store failed")]
    Unexpected(#[source] anyhow::Error),
    /// The store has not been reached and its index made ready since the
    /// service started; the source is the last attempt's failure, if any.
    #[error("the product store is not ready")]
    NotReady(#[source] Option<Box<dyn Error + Send + Sync>>),
}

/// A store that cannot be reached, or is not started yet, is unavailable;
/// any other error is its answer: a refused request, a document this
/// service cannot read, a bug (see [`StoreError::kind`]).
impl StoreError for StorageError {
    fn kind(&self) -> StoreErrorKind {
        match self {
            Self::Unavailable(_) | Self::NotReady(_) => StoreErrorKind::Unavailable,
            Self::InvalidUrl(_) | Self::IncompatibleIndex(_) | Self::Unexpected(_) => {
                StoreErrorKind::Unexpected
            }
        }
    }

    fn cut(cut: Cut) -> Self {
        Self::Unavailable(cut.into())
    }

    fn not_ready(last_failure: Option<BoxError>) -> Self {
        Self::NotReady(last_failure)
    }
}

/// The store chosen by the search URL's scheme.
#[derive(Debug, Clone)]
pub enum Products {
    Elasticsearch(ElasticsearchProducts),
    Tantivy(TantivyProducts),
}

impl Products {
    /// `http://` or `https://`: Elasticsearch 7, with the product index
    /// `index_name` created when absent. `tantivy://PATH`: an embedded index
    /// in directory `PATH`, created when absent.
    pub async fn connect(url: &SecretUrl, index_name: &str) -> Result<Self, StorageError> {
        let store = Self::open(url, index_name).await?;
        store.start().await?;
        Ok(store)
    }

    /// The store `url` names, as [`Products::connect`] accepts it, not yet
    /// started: Elasticsearch is only checked to be a valid URL and is
    /// contacted by [`Products::start`]; a tantivy index is local, so it is
    /// opened (and created) at once.
    pub async fn open(url: &SecretUrl, index_name: &str) -> Result<Self, StorageError> {
        match url.scheme() {
            "http" | "https" => Ok(Self::Elasticsearch(ElasticsearchProducts::new(
                url, index_name,
            )?)),
            "tantivy" => {
                let path = url
                    .expose()
                    .strip_prefix("tantivy://")
                    .filter(|path| !path.is_empty())
                    .ok_or_else(|| {
                        StorageError::InvalidUrl(format!(
                            "{CATALOG_SEARCH_URL} must be tantivy://PATH with a directory path"
                        ))
                    })?;
                Ok(Self::Tantivy(TantivyProducts::open(path).await?))
            }
            other => Err(StorageError::InvalidUrl(format!(
                "{CATALOG_SEARCH_URL} has the unsupported scheme {other:?}: use http:// or https:// \
                 for Elasticsearch 7, or tantivy://PATH for an embedded index"
            ))),
        }
    }
}

impl ManagedStore for Products {
    type Error = StorageError;
    type StartError = StorageError;
    const COMPONENT: &'static str = "catalog";
    const NAME: &'static str = "the product search backend";

    /// Reaches Elasticsearch and makes its product index ready (nothing to
    /// do for tantivy, which [`Products::open`] opened).
    async fn start(&self) -> Result<(), StorageError> {
        match self {
            Self::Elasticsearch(store) => store.start().await,
            Self::Tantivy(_) => Ok(()),
        }
    }

    /// Whether the store answers within `timeout`, for readiness.
    async fn check(&self, timeout: Duration) -> Result<(), StorageError> {
        match self {
            Self::Elasticsearch(store) => store.check(timeout).await,
            Self::Tantivy(_) => Ok(()),
        }
    }

    /// Whether the store is a local index rather than a server.
    fn is_embedded(&self) -> bool {
        matches!(self, Self::Tantivy(_))
    }

    /// The `store` label of the metrics, and the OpenTelemetry `db.system`.
    fn store_label(&self) -> &'static str {
        match self {
            Self::Elasticsearch(_) => "elasticsearch",
            Self::Tantivy(_) => "tantivy",
        }
    }
}

impl ProductStore for Products {
    async fn create(&self, product: &Product) -> Result<(), StorageError> {
        match self {
            Self::Elasticsearch(store) => store.create(product).await,
            Self::Tantivy(store) => store.create(product).await,
        }
    }

    async fn get(&self, id: &Id) -> Result<Option<Product>, StorageError> {
        match self {
            Self::Elasticsearch(store) => store.get(id).await,
            Self::Tantivy(store) => store.get(id).await,
        }
    }

    async fn get_many(&self, ids: &[Id]) -> Result<Vec<Product>, StorageError> {
        match self {
            Self::Elasticsearch(store) => store.get_many(ids).await,
            Self::Tantivy(store) => store.get_many(ids).await,
        }
    }

    async fn list(&self, window: ResultWindow) -> Result<Vec<Product>, StorageError> {
        match self {
            Self::Elasticsearch(store) => store.list(window).await,
            Self::Tantivy(store) => store.list(window).await,
        }
    }

    async fn search(
        &self,
        text: &SearchText,
        window: ResultWindow,
    ) -> Result<Vec<Product>, StorageError> {
        match self {
            Self::Elasticsearch(store) => store.search(text, window).await,
            Self::Tantivy(store) => store.search(text, window).await,
        }
    }
}

/// `ids` without repeats, in their first order.
fn distinct(ids: &[Id]) -> Vec<&Id> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter().filter(|id| seen.insert(*id)).collect()
}

/// A product from stored fields, which are checked again: a document
/// written by something else must not become an invalid `Product`.
fn product_from_fields(
    id: &str,
    name: &str,
    description: &str,
    price_minor_units: i64,
    created_at: chrono::DateTime<chrono::Utc>,
) -> Result<Product, StorageError> {
    use marketplace_domain::{Money, Text, TextRule};
    let stored = |error: &dyn std::fmt::Display| {
        StorageError::Unexpected(anyhow::anyhow!("stored product {id:?} is invalid: {error}"))
    };
    Ok(Product {
        id: Id::parse(id).map_err(|e| stored(&e))?,
        name: Text::parse(name, TextRule::PRODUCT_NAME).map_err(|e| stored(&e))?,
        description: Text::parse(description, TextRule::PRODUCT_DESCRIPTION)
            .map_err(|e| stored(&e))?,
        price: Money::from_minor_units(price_minor_units).map_err(|e| stored(&e))?,
        created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_cut_off_or_not_started_is_unavailable_and_its_answers_are_not() {
        let cut = [Cut::BreakerOpen, Cut::TimedOut].map(StorageError::cut);
        assert!(
            cut.iter()
                .all(|error| matches!(error, StorageError::Unavailable(_)))
        );
        let not_ready = StorageError::not_ready(Some("connection refused".into()));
        assert!(matches!(not_ready, StorageError::NotReady(Some(_))));

        let unavailable = StorageError::Unavailable(anyhow::anyhow!("connection refused"));
        for error in cut.iter().chain([&not_ready, &unavailable]) {
            assert_eq!(error.kind(), StoreErrorKind::Unavailable, "{error:?}");
        }
        let incompatible = StorageError::IncompatibleIndex("price is a double".to_owned());
        let malformed = StorageError::Unexpected(anyhow::anyhow!("malformed document"));
        assert_eq!(incompatible.kind(), StoreErrorKind::Unexpected);
        assert_eq!(malformed.kind(), StoreErrorKind::Unexpected);
    }
}
