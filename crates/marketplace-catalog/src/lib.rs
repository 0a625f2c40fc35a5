//! The catalog service: products and full-text search over gRPC.
//!
//! Products live in Elasticsearch 7 (`http://`/`https://` search URL) or in
//! an embedded tantivy index (`tantivy://PATH`), behind
//! [`storage::ProductStore`]; [`storage::GuardedProducts`] is the store as
//! served (started in the background, its readiness checked, every call
//! traced, timed and guarded by a circuit breaker); [`grpc::CatalogGrpc`]
//! serves `marketplace.catalog.v1.CatalogService` over any store, and
//! [`Application`] wires it up from a [`marketplace_config::CatalogConfig`].

pub mod domain;
pub mod grpc;
pub mod startup;
pub mod storage;

pub use crate::startup::Application;
