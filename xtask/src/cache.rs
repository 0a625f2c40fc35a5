//! Where downloads, built tools and per-run state live: outside the clone,
//! under the home directory, so a warm machine reuses them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

#[derive(Debug, Clone)]
pub(crate) struct Cache {
    root: PathBuf,
}

impl Cache {
    /// `$MARKETPLACE_CACHE_DIR`, or `~/.cache/marketplace`.
    pub(crate) fn locate() -> Result<Self> {
        let root = match std::env::var_os("MARKETPLACE_CACHE_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = std::env::var_os("HOME").context("HOME is not set")?;
                PathBuf::from(home).join(".cache").join("marketplace")
            }
        };
        std::fs::create_dir_all(&root)
            .with_context(|| format!("creating the cache directory {}", root.display()))?;
        Ok(Self { root })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Finished installations, one directory per tool and version.
    pub(crate) fn tool(&self, name: &str) -> PathBuf {
        self.root.join("tools").join(name)
    }

    pub(crate) fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// Generated Go wrapper modules and their build logs.
    pub(crate) fn go_work(&self, name: &str) -> PathBuf {
        self.root.join("go").join(name)
    }

    /// kwokctl's working directory: every cluster a run creates lives here, so
    /// a later run can find and delete the clusters of a run that was killed.
    pub(crate) fn kwok_workdir(&self) -> PathBuf {
        self.root.join("kwok")
    }
}
