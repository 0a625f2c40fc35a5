//! The account service: customer accounts over gRPC
//! (`marketplace.account.v1.AccountService`), stored in PostgreSQL or in an
//! embedded SQLite file.
//!
//! - [`domain`]: the [`Account`](domain::Account) record.
//! - [`storage`]: the [`AccountStore`](storage::AccountStore) trait, its
//!   PostgreSQL and SQLite implementations, and [`Accounts`](storage::Accounts),
//!   which picks one by the URL's scheme and runs the migrations.
//! - [`grpc`]: [`AccountGrpc`](grpc::AccountGrpc), the transport: request
//!   validation and error-to-status mapping.
//! - [`startup`]: the [`Application`] that binds, connects and serves.

pub mod domain;
pub mod grpc;
mod service;
pub mod startup;
pub mod storage;

pub use crate::startup::Application;
