//! What every marketplace binary shares for telemetry.
//!
//! - [`init`]: logs through `tracing` (JSON lines when not on a terminal,
//!   pretty on one; `RUST_LOG` filters), each line naming its service, and
//!   lines written while serving a request its request id and trace id;
//!   OpenTelemetry spans exported over OTLP when an endpoint is set.
//! - [`context`]: the request being served ([`RequestContext`]), and W3C
//!   `traceparent` and `x-request-id` carried across HTTP and gRPC calls.
//! - [`metrics`]: every Prometheus metric the marketplace exports, in one
//!   registry per process; the table in `docs/metrics.md` lists them.
//! - [`admin`]: the admin HTTP server of the gRPC services: `/metrics`,
//!   `/healthz` and `/readyz`, with [`Readiness`] flags behind the last.

pub mod admin;
pub mod context;
mod logs;
pub mod metrics;
mod tracing_setup;

pub use admin::Readiness;
pub use context::RequestContext;
pub use metrics::Metrics;
pub use tracing_setup::{Guard, init};
