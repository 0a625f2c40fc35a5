//! The order service: orders priced from the catalog, over gRPC.
//!
//! Placing an order checks the account and prices every line with exactly
//! one call to the account service and one to the catalog, made at the
//! same time; the total is computed exactly ([`domain::price_order`]) and
//! the order and its lines are written in one transaction
//! ([`storage::OrderStore::create`]).

pub mod domain;
pub mod downstream;
pub mod grpc;
pub mod service;
pub mod startup;
pub mod storage;

pub use crate::startup::Application;
