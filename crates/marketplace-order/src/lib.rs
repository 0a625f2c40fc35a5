//! The order service: orders priced from the catalog, over gRPC.
//!
//! Placing an order checks the account and prices every line with exactly
//! one call to the account service and one to the catalog, made at the
//! same time; the total is computed exactly ([`domain::price_order`]) and
//! the order and its lines are written in one transaction
//! ([`storage::OrderStore::create`]), committed before the answer.
//!
//! Both downstream services are called through one guard each (retries
//! of these reads, a circuit breaker: [`downstream::GrpcDownstream`]), and
//! the store as [`storage::GuardedOrders`]: started in the background, its
//! readiness checked, every call traced, timed and guarded.

pub mod domain;
pub mod downstream;
pub mod grpc;
pub mod service;
pub mod startup;
pub mod storage;

pub use crate::startup::Application;
