//! Finding the backends `cargo xtask test` started, through the environment.

use std::fmt;

/// Set to `required` by `cargo xtask test`: a missing backend then fails.
pub const REQUIRED_VAR: &str = "MARKETPLACE_TEST_BACKENDS";

/// A real backend the tests can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Elasticsearch,
    Kubernetes,
    /// The Chromium binary that browser tests run headless.
    Chromium,
    /// The chromedriver of that Chromium; each browser test starts its own.
    Chromedriver,
    /// An OpenTelemetry Collector binary; each trace test starts its own.
    OtelCollector,
    /// PostgreSQL's bin directory, for a test that runs a server of its own.
    PostgresBin,
}

impl Backend {
    /// The environment variable through which `cargo xtask test` passes the
    /// backend's address (a URL; for Kubernetes a kubeconfig path; for the
    /// browser and the collector the paths of their binaries; for a
    /// PostgreSQL server of the test's own the directory of its binaries).
    pub const fn env_var(self) -> &'static str {
        match self {
            Self::Postgres => "MARKETPLACE_TEST_POSTGRES_URL",
            Self::Elasticsearch => "MARKETPLACE_TEST_ELASTICSEARCH_URL",
            Self::Kubernetes => "MARKETPLACE_TEST_KUBECONFIG",
            Self::Chromium => "MARKETPLACE_TEST_CHROMIUM",
            Self::Chromedriver => "MARKETPLACE_TEST_CHROMEDRIVER",
            Self::OtelCollector => "MARKETPLACE_TEST_OTELCOL",
            Self::PostgresBin => "MARKETPLACE_TEST_POSTGRES_BIN",
        }
    }

    /// The backend's address; `None` (after printing why the test skips)
    /// under plain `cargo test`.
    ///
    /// # Panics
    ///
    /// Under `cargo xtask test`, when the backend is not configured.
    pub fn locate(self) -> Option<String> {
        let value = std::env::var(self.env_var()).ok();
        let required = std::env::var(REQUIRED_VAR).is_ok_and(|v| v == "required");
        match resolve(self, value, required) {
            Ok(found) => found,
            Err(message) => panic!("{message}"),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Postgres => "PostgreSQL",
            Self::Elasticsearch => "Elasticsearch",
            Self::Kubernetes => "a Kubernetes API server",
            Self::Chromium => "Chromium",
            Self::Chromedriver => "chromedriver",
            Self::OtelCollector => "an OpenTelemetry Collector",
            Self::PostgresBin => "PostgreSQL's programs",
        })
    }
}

fn resolve(
    backend: Backend,
    value: Option<String>,
    required: bool,
) -> Result<Option<String>, String> {
    match value.filter(|v| !v.trim().is_empty()) {
        Some(value) => Ok(Some(value)),
        None if required => Err(format!(
            "this test needs {backend}, but {} is not set although {REQUIRED_VAR}=required",
            backend.env_var()
        )),
        None => {
            let test = std::thread::current()
                .name()
                .unwrap_or("this test")
                .to_owned();
            eprintln!(
                "skipping {test}: it needs {backend} ({} is not set); run it with `cargo xtask test`",
                backend.env_var()
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_backend_is_found() {
        let found = resolve(Backend::Postgres, Some("postgres://x".into()), true);
        assert_eq!(found, Ok(Some("postgres://x".into())));
    }

    #[test]
    fn a_missing_backend_skips_under_plain_cargo_test() {
        assert_eq!(resolve(Backend::Elasticsearch, None, false), Ok(None));
        assert_eq!(
            resolve(Backend::Elasticsearch, Some("  ".into()), false),
            Ok(None)
        );
    }

    #[test]
    fn a_missing_backend_fails_under_xtask() {
        let error = resolve(Backend::Kubernetes, None, true).unwrap_err();
        assert!(error.contains("MARKETPLACE_TEST_KUBECONFIG"), "{error}");
    }
}
