//! The order service: orders priced from the catalog, over gRPC.
