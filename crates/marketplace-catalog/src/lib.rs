//! The catalog service: products and full-text search over gRPC.
