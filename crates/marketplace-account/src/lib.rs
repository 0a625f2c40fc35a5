//! The account service: customer accounts over gRPC.
