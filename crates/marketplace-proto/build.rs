//! Compiles `proto/` with protox (a protobuf compiler in Rust, so no system
//! `protoc` is needed) and generates the prost messages and tonic services.
//! The encoded descriptor set is kept for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

const FILES: &[&str] = &[
    "marketplace/common/v1/money.proto",
    "marketplace/account/v1/account.proto",
    "marketplace/catalog/v1/catalog.proto",
    "marketplace/order/v1/order.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    // A directory here makes Cargo watch every file below it.
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let descriptors = protox::compile(FILES, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("marketplace_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
