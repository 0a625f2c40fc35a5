//! The GraphQL gateway: the Go original's API (a superset of it) over the
//! account, catalog and order services.
//!
//! - [`schema`]: queries, mutations and the `orderPlaced` subscription,
//!   with depth and complexity limits.
//! - [`loaders`]: batched loading, so nested lists cost a bounded number of
//!   service calls per level.
//! - [`error`]: every error carries `extensions.code`; backend text never
//!   reaches the client.
//! - [`downstream`]: the service clients, every call guarded (deadline,
//!   retries for reads, a circuit breaker per service) and observed.
//! - [`cache`]: the optional read cache of the catalog's products.
//! - [`observe`]: request ids, spans, logs and metrics of every GraphQL
//!   request and operation.
//! - [`http`]: the actix-web routes; [`startup`]: bind, serve, drain.

pub mod cache;
pub mod downstream;
pub mod error;
pub mod http;
pub mod loaders;
pub mod observe;
pub mod schema;
pub mod startup;
pub mod types;

pub use startup::Application;

/// Where `cargo xtask codegen` writes [`schema::sdl`], from the workspace
/// root; a test fails when the committed file is stale.
pub const SDL_PATH: &str = "crates/marketplace-gateway/schema.graphql";
