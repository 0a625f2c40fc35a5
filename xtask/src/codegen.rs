//! `cargo xtask codegen`: writes the committed artefacts generated from Rust
//! types. Tests in the generating crates fail when a committed file is stale.

use anyhow::{Context, Result};

/// Writes `deploy/crds/marketplace.dev_marketplaces.yaml` from the operator's
/// `Marketplace` types and the gateway's `schema.graphql` from its schema.
pub(crate) fn run() -> Result<()> {
    let crd = marketplace_operator::crd_yaml().context("serializing the Marketplace CRD")?;
    write_if_changed(marketplace_operator::CRD_PATH, &crd)?;
    write_if_changed(
        marketplace_gateway::SDL_PATH,
        &marketplace_gateway::schema::sdl(),
    )
}

/// Writes `contents` to `relative` (from the workspace root) unless the file
/// already holds exactly that.
fn write_if_changed(relative: &str, contents: &str) -> Result<()> {
    let path = crate::workspace_root().join(relative);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let unchanged = std::fs::read_to_string(&path).is_ok_and(|current| current == contents);
    if unchanged {
        println!("==> {relative} is up to date");
    } else {
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        println!("==> wrote {relative}");
    }
    Ok(())
}
