#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

#[test]
fn the_committed_sdl_is_what_the_schema_generates() {
    // cargo sets CARGO_MANIFEST_DIR when it runs the test; the value
    // compiled in names where the checkout was built, which may be gone.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let path = manifest_dir
        .join("../..")
        .join(marketplace_gateway::SDL_PATH);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();

    let generated = marketplace_gateway::schema::sdl();

    assert!(
        committed == generated,
        "{} is stale or missing: run `cargo xtask codegen` and commit the result",
        marketplace_gateway::SDL_PATH
    );
}
