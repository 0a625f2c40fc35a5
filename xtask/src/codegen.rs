//! `cargo xtask codegen`: writes the committed artefacts generated from Rust
//! types. Tests in the generating crates fail when a committed file is stale.

use anyhow::{Context, Result};

/// Writes `deploy/crds/marketplace.dev_marketplaces.yaml` from the operator's
/// `Marketplace` types.
pub(crate) fn run() -> Result<()> {
    let root = crate::workspace_root();
    let path = root.join(marketplace_operator::CRD_PATH);
    let yaml = marketplace_operator::crd_yaml().context("serializing the Marketplace CRD")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let unchanged = std::fs::read_to_string(&path).is_ok_and(|current| current == yaml);
    if unchanged {
        println!("==> {} is up to date", marketplace_operator::CRD_PATH);
    } else {
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        println!("==> wrote {}", marketplace_operator::CRD_PATH);
    }
    Ok(())
}
