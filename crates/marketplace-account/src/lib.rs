//! The account service: customer accounts over gRPC
//! (`marketplace.account.v1.AccountService`), stored in PostgreSQL or in an
//! embedded SQLite file.
//!
//! - [`domain`]: the [`Account`](domain::Account) record.
//! - [`storage`]: the [`AccountStore`](storage::AccountStore) trait, its
//!   PostgreSQL and SQLite implementations, [`Accounts`](storage::Accounts),
//!   which picks one by the URL's scheme and runs the migrations, and
//!   [`GuardedAccounts`](storage::GuardedAccounts), the store as served:
//!   started in the background, its readiness checked, every call traced,
//!   timed and guarded by a circuit breaker.
//! - [`grpc`]: [`AccountGrpc`](grpc::AccountGrpc), the transport: request
//!   validation and error-to-status mapping.
//! - [`startup`]: the [`Application`] that binds, starts the store and
//!   serves.

pub mod domain;
pub mod grpc;
mod service;
pub mod startup;
pub mod storage;

pub use crate::startup::Application;
