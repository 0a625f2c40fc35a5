#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn the_committed_crd_is_what_the_rust_types_generate() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(marketplace_operator::CRD_PATH);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();

    let generated = marketplace_operator::crd_yaml().unwrap();

    assert!(
        committed == generated,
        "{} is stale or missing: run `cargo xtask codegen` and commit the result",
        marketplace_operator::CRD_PATH
    );
}
