//! Installs or builds every tool the test backends need, into the cache.
//!
//! Nothing is downloaded at test time except from the package registries
//! these machines reach: Go modules (the Kubernetes control plane, etcd,
//! kwok, helm and an OpenTelemetry Collector, all built from source), Maven Central (Elasticsearch) and
//! Debian's packages (PostgreSQL, a JDK, Chromium and its WebDriver). Each
//! finished install is marked with a fingerprint of what produced it, so a
//! changed version rebuilds.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cache::Cache;
use crate::process;
use crate::progress::Progress;
use crate::signals;
use crate::testuser::{self, User};

pub(crate) const KUBERNETES_VERSION: &str = "v1.35.4";
const ETCD_VERSION: &str = "v3.6.16";
const KWOK_VERSION: &str = "v0.8.0";
const HELM_VERSION: &str = "v3.22.0";
/// Prometheus 3.16.0: the Go module's versions are `v0.<3 digits of the
/// minor>.<patch>` for release 3.<minor>.<patch>.
const PROMETHEUS_MODULE_VERSION: &str = "v0.316.0";
const PROMETHEUS_VERSION: &str = "3.16.0";
/// The newest tilt release the Go module proxy serves (it refuses later ones).
const TILT_VERSION: &str = "v0.34.0";
/// One OpenTelemetry Collector release: its core modules that are still
/// v0 (otelcol, the OTLP receiver, service) and the contrib modules share
/// this version ...
const OTELCOL_VERSION: &str = "v0.165.0";
/// ... and the core modules declared stable (component, confmap and its
/// providers, the component kinds) carry the release's v1 version.
const OTELCOL_STABLE_VERSION: &str = "v1.71.0";
const ELASTICSEARCH_VERSION: &str = "7.17.29";
/// Pinned rather than fetched beside the archive, so a tampered mirror fails.
const ELASTICSEARCH_SHA1: &str = "cc70096055282bf9e56da8ee6861ac47da26ce71";

/// The Kubernetes staging modules that `k8s.io/kubernetes` replaces with
/// local directories in its own go.mod; a module that depends on it must
/// replace each with the matching published release instead.
const KUBERNETES_STAGING: &[&str] = &[
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-cli-plugin",
    "sample-controller",
];

/// Everything the backends are started from.
#[derive(Debug)]
pub(crate) struct Tools {
    /// kube-apiserver, kube-controller-manager, kube-scheduler, kubectl.
    pub(crate) kubernetes: PathBuf,
    pub(crate) etcd: PathBuf,
    /// kwok (the controller) and kwokctl.
    pub(crate) kwok: PathBuf,
    pub(crate) helm: PathBuf,
    /// promtool, which checks the chart's Prometheus alert rules.
    pub(crate) promtool: PathBuf,
    /// tilt, whose `tilt alpha tiltfile-result` evaluates the Tiltfile.
    pub(crate) tilt: PathBuf,
    /// An OpenTelemetry Collector (`otelcol`) with the OTLP receiver and the
    /// file exporter, which tests start to receive the traces services export.
    pub(crate) otelcol: PathBuf,
    /// An unpacked Elasticsearch distribution (never run in place).
    pub(crate) elasticsearch: PathBuf,
    /// PostgreSQL's bin directory (initdb, postgres, pg_isready).
    pub(crate) postgres: PathBuf,
    pub(crate) java_home: PathBuf,
    /// Headless Chromium and the chromedriver of the same version, for the
    /// tests that drive the GraphQL playground in a real browser.
    pub(crate) browser: Browser,
    /// Who runs PostgreSQL and Elasticsearch (`None`: the current user).
    pub(crate) user: Option<User>,
}

impl Tools {
    /// `PATH` with the built tools first, so that `kubectl`, `helm` and
    /// `kwokctl` are the versions built here.
    pub(crate) fn search_path(&self) -> Result<std::ffi::OsString> {
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let built = [
            &self.kubernetes,
            &self.kwok,
            &self.helm,
            &self.etcd,
            &self.promtool,
            &self.tilt,
        ]
        .map(|dir| dir.to_path_buf());
        Ok(std::env::join_paths(
            built.into_iter().chain(std::env::split_paths(&inherited)),
        )?)
    }
}

pub(crate) fn ensure_all(cache: &Cache) -> Result<Tools> {
    let lock = File::create(cache.root().join("install.lock"))?;
    if lock.try_lock().is_err() {
        println!("==> another xtask is installing into the cache; waiting for it");
        lock.lock()?;
    }
    let user = testuser::ensure()?;
    let postgres = ensure_postgres(cache)?;
    let java_home = ensure_java(cache)?;
    let browser = ensure_browser(cache)?;
    let elasticsearch = ensure_elasticsearch(cache)?;
    let go = find_go()?;
    let kubernetes = go_build(cache, &go, &kubernetes_build())?;
    let etcd = go_build(cache, &go, &etcd_build())?;
    let kwok = go_build(cache, &go, &kwok_build())?;
    let helm = go_build(cache, &go, &helm_build())?;
    let promtool = go_build(cache, &go, &promtool_build())?;
    let tilt = go_build(cache, &go, &tilt_build())?;
    let otelcol = go_build(cache, &go, &otelcol_build())?;
    Ok(Tools {
        kubernetes,
        etcd,
        kwok,
        helm,
        promtool,
        tilt,
        otelcol,
        elasticsearch,
        postgres,
        java_home,
        browser,
        user,
    })
}

// ---------------------------------------------------------------------------
// Go-built tools

/// A binary set built from Go modules through a generated wrapper module.
#[derive(Debug)]
struct GoBuild {
    name: &'static str,
    version: &'static str,
    require: Vec<(String, String)>,
    replace: Vec<(String, String)>,
    /// (package path, binary name)
    packages: Vec<(String, String)>,
    /// Go files of the wrapper module itself (path in the module, text), for
    /// a binary assembled here rather than taken whole from another module.
    sources: Vec<(String, String)>,
    ldflags: String,
    /// `go mod tidy -e`: go on when a module that only a dependency's tests
    /// import cannot be fetched; `go build` still fails on anything the
    /// binary itself needs.
    tidy_tolerates_errors: bool,
    /// Build with cgo (and so the host's C compiler, which Rust's linking
    /// needs anyway), for a binary whose dependencies have no pure-Go build.
    cgo: bool,
}

impl GoBuild {
    fn dir_name(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }

    fn go_mod(&self) -> String {
        let mut text = format!(
            "// Generated by `cargo xtask`: a wrapper module that builds {} {}.\n\
             module marketplace.local/tools/{}\n\ngo 1.25.0\n\n",
            self.name, self.version, self.name
        );
        for (module, version) in &self.require {
            let _ = writeln!(text, "require {module} {version}");
        }
        for (module, target) in &self.replace {
            let _ = writeln!(text, "replace {module} => {target}");
        }
        text
    }

    fn tools_go(&self) -> String {
        let mut text = String::from("//go:build tools\n\npackage tools\n\nimport (\n");
        for (package, _) in &self.packages {
            let _ = writeln!(text, "\t_ \"{package}\"");
        }
        text.push_str(")\n");
        text
    }

    /// What a finished install is checked against.
    fn fingerprint(&self) -> String {
        let mut text = format!("{}{}", self.go_mod(), self.tools_go());
        for (path, source) in &self.sources {
            let _ = write!(text, "// {path}\n{source}");
        }
        let _ = writeln!(text, "ldflags: {}", self.ldflags);
        if self.cgo {
            text.push_str("cgo\n");
        }
        text
    }
}

fn kubernetes_build() -> GoBuild {
    let minor = KUBERNETES_VERSION.split('.').nth(1).unwrap_or_default();
    let staging_version = format!("v0.{}", KUBERNETES_VERSION.trim_start_matches("v1."));
    GoBuild {
        name: "kubernetes",
        version: KUBERNETES_VERSION,
        require: vec![("k8s.io/kubernetes".into(), KUBERNETES_VERSION.into())],
        replace: KUBERNETES_STAGING
            .iter()
            .map(|m| {
                (
                    format!("k8s.io/{m}"),
                    format!("k8s.io/{m} {staging_version}"),
                )
            })
            .collect(),
        packages: [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubectl",
        ]
        .iter()
        .map(|c| (format!("k8s.io/kubernetes/cmd/{c}"), (*c).to_owned()))
        .collect(),
        sources: vec![],
        tidy_tolerates_errors: false,
        cgo: false,
        // kwokctl and clients read the version from these; an unstamped build
        // reports v0.0.0 and is misread.
        ldflags: format!(
            "-s -w -X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION} \
             -X k8s.io/component-base/version.gitMajor=1 \
             -X k8s.io/component-base/version.gitMinor={minor} \
             -X k8s.io/component-base/version.gitTreeState=clean \
             -X k8s.io/client-go/pkg/version.gitVersion={KUBERNETES_VERSION} \
             -X k8s.io/client-go/pkg/version.gitMajor=1 \
             -X k8s.io/client-go/pkg/version.gitMinor={minor}"
        ),
    }
}

fn etcd_build() -> GoBuild {
    GoBuild {
        name: "etcd",
        version: ETCD_VERSION,
        require: vec![("go.etcd.io/etcd/server/v3".into(), ETCD_VERSION.into())],
        replace: vec![],
        packages: vec![("go.etcd.io/etcd/server/v3".into(), "etcd".into())],
        sources: vec![],
        ldflags: "-s -w".into(),
        tidy_tolerates_errors: false,
        cgo: false,
    }
}

fn kwok_build() -> GoBuild {
    GoBuild {
        name: "kwok",
        version: KWOK_VERSION,
        require: vec![("sigs.k8s.io/kwok".into(), KWOK_VERSION.into())],
        replace: vec![],
        packages: vec![
            ("sigs.k8s.io/kwok/cmd/kwok".into(), "kwok".into()),
            ("sigs.k8s.io/kwok/cmd/kwokctl".into(), "kwokctl".into()),
        ],
        sources: vec![],
        ldflags: format!("-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={KWOK_VERSION}"),
        tidy_tolerates_errors: false,
        cgo: false,
    }
}

fn helm_build() -> GoBuild {
    GoBuild {
        name: "helm",
        version: HELM_VERSION,
        require: vec![("helm.sh/helm/v3".into(), HELM_VERSION.into())],
        replace: vec![],
        packages: vec![("helm.sh/helm/v3/cmd/helm".into(), "helm".into())],
        sources: vec![],
        ldflags: format!("-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"),
        tidy_tolerates_errors: false,
        cgo: false,
    }
}

fn promtool_build() -> GoBuild {
    GoBuild {
        name: "promtool",
        version: PROMETHEUS_MODULE_VERSION,
        require: vec![(
            "github.com/prometheus/prometheus".into(),
            PROMETHEUS_MODULE_VERSION.into(),
        )],
        replace: vec![],
        packages: vec![(
            "github.com/prometheus/prometheus/cmd/promtool".into(),
            "promtool".into(),
        )],
        sources: vec![],
        ldflags: format!(
            "-s -w -X github.com/prometheus/common/version.Version={PROMETHEUS_VERSION}"
        ),
        tidy_tolerates_errors: true,
        cgo: false,
    }
}

fn tilt_build() -> GoBuild {
    /// The `replace` lines of tilt's go.mod at [`TILT_VERSION`].
    const TILT_REPLACE: &[(&str, &str)] = &[
        (
            "github.com/emicklei/go-restful/v3",
            "github.com/emicklei/go-restful/v3 v3.9.0",
        ),
        (
            "github.com/pkg/browser",
            "github.com/tilt-dev/browser v0.0.1",
        ),
        (
            "k8s.io/apimachinery",
            "github.com/tilt-dev/apimachinery v0.32.0-tilt-20250103",
        ),
    ];

    /// Checksums of the github.com/tilt-dev modules tilt needs, seeded into the
    /// wrapper's go.sum: the checksum database the Go proxy relays has no entry
    /// for several of them (tilt itself, go-get, starlark-lsp: lookups answer
    /// 404), and the go command refuses a module it cannot verify. All but
    /// tilt's own lines are copied from tilt's go.sum at [`TILT_VERSION`];
    /// tilt's are those of the archive the Go proxy serves.
    const TILT_GO_SUM: &str = "\
github.com/tilt-dev/apimachinery v0.32.0-tilt-20250103 h1:Yb8KVd/19O2k/WoBCyVq3QhAiqAVVtEB8fyU4gonYoo=
github.com/tilt-dev/apimachinery v0.32.0-tilt-20250103/go.mod h1:GpHVgxoKlTxClKcteaeuF1Ul/lDVb74KpZcxcmLDElE=
github.com/tilt-dev/browser v0.0.1 h1:e+mFToX6A7pkMlGFrXW5VLvS7qS0HVbcXqmR0uPrWUA=
github.com/tilt-dev/browser v0.0.1/go.mod h1:2DaMt8P8xEqDFzxaAbraOig5iUmQdd1wtO1Tb6tODHA=
github.com/tilt-dev/clusterid v0.1.6 h1:nkU78/AifCAemucL2lWeZRzZLprif9hjIc6keGfwUyo=
github.com/tilt-dev/clusterid v0.1.6/go.mod h1:0Ymq2EAiHlLt61243A6xqS9VRcmGqUAATZM+tryv4WI=
github.com/tilt-dev/dockerignore v0.1.1 h1:/MPYqcD8qMCMyh3yiHuQdzbMQi9NL4vVopo6/9D/XvE=
github.com/tilt-dev/dockerignore v0.1.1/go.mod h1:2ooUDj8B9FNWYvHadA4EKG0JDaeAOjiq5P+mvEzS2eY=
github.com/tilt-dev/fsnotify v1.4.8-0.20220602155310-fff9c274a375 h1:QB54BJwA6x8QU9nHY3xJSZR2kX9bgpZekRKGkLTmEXA=
github.com/tilt-dev/fsnotify v1.4.8-0.20220602155310-fff9c274a375/go.mod h1:xRroudyp5iVtxKqZCrA6n2TLFRBf8bmnjr1UD4x+z7g=
github.com/tilt-dev/go-get v0.2.3 h1:en+uZDENUWg31fxdoXb5O/5MC+b6SK7DplCm5cUSs4o=
github.com/tilt-dev/go-get v0.2.3/go.mod h1:sqJ1OH6ggqbd2+J5TFsDGP/CXeRAXBxR52m5FtL0+xo=
github.com/tilt-dev/localregistry-go v0.0.0-20201021185044-ffc4c827f097 h1:CiCHb20O+poFO331eFOiXRscunvAhKBfDmDoY2mf45A=
github.com/tilt-dev/localregistry-go v0.0.0-20201021185044-ffc4c827f097/go.mod h1:SX7bKYACP+RsddxA+NBkfVzr5DOr5ranTirgT7xlxjA=
github.com/tilt-dev/probe v0.3.1 h1:PQhXSBkgcGBUU/eKt4vgAUKsAWWjBr2F53xNAc0E7zs=
github.com/tilt-dev/probe v0.3.1/go.mod h1:F53NFbqblwu5oyIk2t+BPkswiboxuF8e5D3wbPnY4JA=
github.com/tilt-dev/starlark-lsp v0.0.0-20230210155543-84c13fe0ff94 h1:IV0e4/w6PswnHdVmAZ6Ipo8ZdgaPn1nWTNR7Sd2LETo=
github.com/tilt-dev/starlark-lsp v0.0.0-20230210155543-84c13fe0ff94/go.mod h1:bnkWmNDRqs9DgHgrImOSt6dFAcVcN14pqhR3iZsWWaE=
github.com/tilt-dev/tilt v0.34.0 h1:oJAAkIiV34TEdlNqjDWkKG29hsAln7Ao28F+RTEZN24=
github.com/tilt-dev/tilt v0.34.0/go.mod h1:dpD6l7dIe2p7iwLp2NSDNWpHnzhbVjOJYnyEDt4fPvc=
github.com/tilt-dev/tilt-apiserver v0.14.0 h1:hLi+4ZjM052uGH/A+OfXsEz23uo22XPsAFoxzAfPOj8=
github.com/tilt-dev/tilt-apiserver v0.14.0/go.mod h1:2sa/Do437sI/7mdYgLEsTBS6VNYL9QJviocLSTmoslY=
github.com/tilt-dev/wmclient v0.0.0-20201109174454-1839d0355fbc h1:wGkAoZhrvnmq93B4W2v+agiPl7xzqUaxXkxmKrwJ6bc=
github.com/tilt-dev/wmclient v0.0.0-20201109174454-1839d0355fbc/go.mod h1:n01fG3LbImzxBP3GGCTHkgXuPeJusWg6xv0QYGm9HtE=
";

    GoBuild {
        name: "tilt",
        version: TILT_VERSION,
        require: vec![("github.com/tilt-dev/tilt".into(), TILT_VERSION.into())],
        // A wrapper module does not inherit the `replace` lines of tilt's own
        // go.mod, and tilt is built and tested with them.
        replace: TILT_REPLACE
            .iter()
            .map(|(module, target)| ((*module).to_owned(), (*target).to_owned()))
            .collect(),
        packages: vec![("github.com/tilt-dev/tilt/cmd/tilt".into(), "tilt".into())],
        sources: vec![("go.sum".into(), TILT_GO_SUM.into())],
        // goreleaser stamps `main.version` without the leading `v`, and
        // `tilt version` prints it.
        ldflags: format!(
            "-s -w -X main.version={}",
            TILT_VERSION.trim_start_matches('v')
        ),
        tidy_tolerates_errors: true,
        // `tilt lsp` parses with tree-sitter, a C library, and tilt's CLI
        // links it in whatever the subcommand.
        cgo: true,
    }
}

/// The components of the collector: (kind, Go package), each from a module
/// of [`OTELCOL_VERSION`]. The kind names the `otelcol.Factories` field and
/// the Go package of its factory type.
const OTELCOL_COMPONENTS: &[(&str, &str)] = &[
    (
        "receiver",
        "go.opentelemetry.io/collector/receiver/otlpreceiver",
    ),
    (
        "exporter",
        "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter",
    ),
];

/// A minimal OpenTelemetry Collector. The wrapper's own main package is what
/// the OpenTelemetry Collector Builder (ocb) generates for the manifest
/// [`OTELCOL_COMPONENTS`] (with the env and file configuration providers),
/// written out here so that ocb is not one more tool to build.
fn otelcol_build() -> GoBuild {
    let core = |path: &str, version: &str| {
        (
            format!("go.opentelemetry.io/collector/{path}"),
            version.to_owned(),
        )
    };
    let mut require = vec![
        core("otelcol", OTELCOL_VERSION),
        core("service", OTELCOL_VERSION),
        core("connector", OTELCOL_VERSION),
        core("component", OTELCOL_STABLE_VERSION),
        core("confmap", OTELCOL_STABLE_VERSION),
        core("confmap/provider/envprovider", OTELCOL_STABLE_VERSION),
        core("confmap/provider/fileprovider", OTELCOL_STABLE_VERSION),
        core("exporter", OTELCOL_STABLE_VERSION),
        core("extension", OTELCOL_STABLE_VERSION),
        core("processor", OTELCOL_STABLE_VERSION),
        core("receiver", OTELCOL_STABLE_VERSION),
    ];
    require.extend(
        OTELCOL_COMPONENTS
            .iter()
            .map(|(_, package)| ((*package).to_owned(), OTELCOL_VERSION.to_owned())),
    );
    GoBuild {
        name: "otelcol",
        version: OTELCOL_VERSION,
        require,
        replace: vec![],
        packages: vec![(
            "marketplace.local/tools/otelcol/cmd/otelcol".into(),
            "otelcol".into(),
        )],
        sources: vec![("cmd/otelcol/main.go".into(), otelcol_main_go())],
        ldflags: "-s -w".into(),
        // The file exporter's tests import a contrib encoding extension whose
        // module archive the Go proxy does not serve; tidy looks at the
        // dependencies' tests, the build does not.
        tidy_tolerates_errors: true,
        cgo: false,
    }
}

/// The collector's `main` package as ocb generates it (its main.go,
/// main_others.go and components.go in one file).
fn otelcol_main_go() -> String {
    let version = OTELCOL_VERSION.trim_start_matches('v');
    let stable = OTELCOL_STABLE_VERSION;
    let alias = |package: &str| package.rsplit('/').next().unwrap_or(package).to_owned();
    let mut imports = String::new();
    for (_, package) in OTELCOL_COMPONENTS {
        let _ = writeln!(imports, "\t{} \"{package}\"", alias(package));
    }
    let mut factories = String::new();
    for kind in [
        "extension",
        "receiver",
        "exporter",
        "processor",
        "connector",
    ] {
        let field = format!("{}{}s", kind[..1].to_uppercase(), &kind[1..]);
        let (mut list, mut modules) = (String::new(), String::new());
        for (_, package) in OTELCOL_COMPONENTS.iter().filter(|(k, _)| *k == kind) {
            let name = alias(package);
            let _ = write!(list, "\n\t\t{name}.NewFactory(),");
            let _ = write!(
                modules,
                "\n\t\t{name}.NewFactory().Type(): \"{package} {OTELCOL_VERSION}\","
            );
        }
        let modules_field = format!("{}Modules", field.trim_end_matches('s'));
        let _ = write!(
            factories,
            "\n\tfactories.{field}, err = otelcol.MakeFactoryMap[{kind}.Factory]({list}\n\t)\n\
             \tif err != nil {{\n\t\treturn otelcol.Factories{{}}, err\n\t}}\n\
             \tfactories.{modules_field} = makeModulesMap(factories.{field}, map[component.Type]string{{{modules}\n\t}})\n"
        );
    }
    format!(
        r#"// Generated by `cargo xtask`: what the OpenTelemetry Collector Builder
// (ocb) generates for a collector with the components imported below.

// Program otelcol is a minimal OpenTelemetry Collector for Marketplace's tests.
package main

import (
	"os"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	envprovider "go.opentelemetry.io/collector/confmap/provider/envprovider"
	fileprovider "go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/receiver"
	otelconftelemetry "go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
{imports})

func main() {{
	info := component.BuildInfo{{
		Command:     "otelcol",
		Description: "OpenTelemetry Collector for Marketplace's tests",
		Version:     "{version}",
	}}

	set := otelcol.CollectorSettings{{
		BuildInfo: info,
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{{
			ResolverSettings: confmap.ResolverSettings{{
				ProviderFactories: []confmap.ProviderFactory{{
					envprovider.NewFactory(),
					fileprovider.NewFactory(),
				}},
			}},
		}},
		ProviderModules: map[string]string{{
			envprovider.NewFactory().Create(confmap.ProviderSettings{{}}).Scheme():  "go.opentelemetry.io/collector/confmap/provider/envprovider {stable}",
			fileprovider.NewFactory().Create(confmap.ProviderSettings{{}}).Scheme(): "go.opentelemetry.io/collector/confmap/provider/fileprovider {stable}",
		}},
	}}

	if err := otelcol.NewCommand(set).Execute(); err != nil {{
		// cobra has printed the error.
		os.Exit(1)
	}}
}}

type aliasProvider interface{{ DeprecatedAlias() component.Type }}

func makeModulesMap[T component.Factory](factories map[component.Type]T, modules map[component.Type]string) map[component.Type]string {{
	for compType, factory := range factories {{
		if ap, ok := any(factory).(aliasProvider); ok {{
			alias := ap.DeprecatedAlias()
			if alias.String() != "" {{
				modules[alias] = modules[compType]
			}}
		}}
	}}
	return modules
}}

func components() (otelcol.Factories, error) {{
	var err error
	factories := otelcol.Factories{{
		Telemetry: otelconftelemetry.NewFactory(),
	}}
{factories}
	return factories, nil
}}
"#
    )
}

fn find_go() -> Result<PathBuf> {
    process::which("go")
        .or_else(|| Some(PathBuf::from("/usr/local/go/bin/go")).filter(|p| p.is_file()))
        .context("Go is needed to build the Kubernetes control plane, etcd, kwok, helm and the OpenTelemetry Collector; install Go 1.26 or newer")
}

fn go_build(cache: &Cache, go: &Path, build: &GoBuild) -> Result<PathBuf> {
    let dest = cache.tool(&build.dir_name());
    let marker = dest.join(".fingerprint");
    if std::fs::read_to_string(&marker).is_ok_and(|f| f == build.fingerprint()) {
        println!(
            "==> {} {}: cached in {}",
            build.name,
            build.version,
            dest.display()
        );
        return Ok(dest);
    }
    signals::check()?;
    let work = cache.go_work(&build.dir_name());
    std::fs::create_dir_all(&work)?;
    std::fs::write(work.join("go.mod"), build.go_mod())?;
    let _ = std::fs::remove_file(work.join("go.sum"));
    std::fs::write(work.join("tools.go"), build.tools_go())?;
    for (path, source) in &build.sources {
        let file = work.join(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(file, source)?;
    }

    let staging = cache.tool(&format!("{}.partial", build.dir_name()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;

    let go_command = |args: &[&str]| {
        let mut command = Command::new(go);
        command
            .args(args)
            .current_dir(&work)
            .env("CGO_ENABLED", if build.cgo { "1" } else { "0" })
            // Never fetch a different Go toolchain: the machines reach the
            // module proxy, not the toolchain downloads.
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod");
        command
    };
    let tidy: &[&str] = if build.tidy_tolerates_errors {
        &["mod", "tidy", "-e"]
    } else {
        &["mod", "tidy"]
    };
    process::run_logged(
        go_command(tidy),
        &format!("{} {}: resolving Go modules", build.name, build.version),
        &work.join("tidy.log"),
    )?;
    for (package, binary) in &build.packages {
        let output = staging.join(binary);
        let output = output.to_string_lossy();
        process::run_logged(
            go_command(&[
                "build",
                "-trimpath",
                "-ldflags",
                &build.ldflags,
                "-o",
                &output,
                package,
            ]),
            &format!("{} {}: go build {binary}", build.name, build.version),
            &work.join(format!("build-{binary}.log")),
        )?;
    }
    std::fs::write(staging.join(".fingerprint"), build.fingerprint())?;
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&staging, &dest)?;
    Ok(dest)
}

// ---------------------------------------------------------------------------
// Elasticsearch from Maven Central

fn ensure_elasticsearch(cache: &Cache) -> Result<PathBuf> {
    let dest = cache.tool(&format!("elasticsearch-{ELASTICSEARCH_VERSION}"));
    let marker = dest.join(".fingerprint");
    if std::fs::read_to_string(&marker).is_ok_and(|f| f == ELASTICSEARCH_SHA1) {
        println!(
            "==> elasticsearch {ELASTICSEARCH_VERSION}: cached in {}",
            dest.display()
        );
        return Ok(dest);
    }
    let archive = cache
        .downloads()
        .join(format!("elasticsearch-{ELASTICSEARCH_VERSION}.zip"));
    if sha1_of(&archive).ok().as_deref() != Some(ELASTICSEARCH_SHA1) {
        let url = format!(
            "https://repo1.maven.org/maven2/org/elasticsearch/distribution/integ-test-zip/\
             elasticsearch/{ELASTICSEARCH_VERSION}/elasticsearch-{ELASTICSEARCH_VERSION}.zip"
        );
        download(
            &url,
            &archive,
            &format!("elasticsearch {ELASTICSEARCH_VERSION}: downloading"),
        )?;
        let actual = sha1_of(&archive)?;
        if actual != ELASTICSEARCH_SHA1 {
            let _ = std::fs::remove_file(&archive);
            bail!("{url} has SHA-1 {actual}, expected {ELASTICSEARCH_SHA1}");
        }
    }
    let staging = cache.tool(&format!("elasticsearch-{ELASTICSEARCH_VERSION}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    let progress = Progress::start(format!("elasticsearch {ELASTICSEARCH_VERSION}: unpacking"));
    let mut zip = zip::ZipArchive::new(File::open(&archive)?)
        .with_context(|| format!("opening {}", archive.display()))?;
    zip.extract(&staging)
        .with_context(|| format!("unpacking {}", archive.display()))?;
    progress.finish();
    let top = staging.join(format!("elasticsearch-{ELASTICSEARCH_VERSION}"));
    if !top.join("bin").join("elasticsearch").is_file() {
        bail!("{} does not contain bin/elasticsearch", archive.display());
    }
    std::fs::write(top.join(".fingerprint"), ELASTICSEARCH_SHA1)?;
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&top, &dest)?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(dest)
}

fn download(url: &str, dest: &Path, label: &str) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut progress = Progress::start(label);
    // The system's trust store, not a bundled one: machines behind a
    // TLS-inspecting proxy trust its CA there and nowhere else.
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder().tls_config(tls).build().into();
    let mut response = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let total = response.body().content_length();
    let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
    let partial = dest.with_extension("partial");
    let mut file = File::create(&partial)?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut done: u64 = 0;
    loop {
        signals::check()?;
        let n = reader
            .read(&mut buffer)
            .with_context(|| format!("reading {url}"))?;
        if n == 0 {
            break;
        }
        file.write_all(&buffer[..n])?;
        done += n as u64;
        let detail = match total {
            Some(total) => format!("{} / {} MiB", done >> 20, total >> 20),
            None => format!("{} MiB", done >> 20),
        };
        progress.tick(&detail);
    }
    file.sync_all()?;
    std::fs::rename(&partial, dest)?;
    progress.finish();
    Ok(())
}

fn sha1_of(path: &Path) -> Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = sha1_smol::Sha1::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.digest().to_string())
}

// ---------------------------------------------------------------------------
// Debian packages: PostgreSQL and a JDK

fn ensure_postgres(cache: &Cache) -> Result<PathBuf> {
    if let Some(dir) = find_postgres_bindir() {
        println!("==> postgresql: {}", dir.display());
        return Ok(dir);
    }
    // Debian's server package creates and starts a cluster of its own on
    // port 5432, which a test run must not leave behind. postgresql-common
    // reads drop-ins from createcluster.d; one of them switches that off
    // before the server package is installed.
    apt_install(cache, &["postgresql-common"])?;
    let drop_in = Path::new("/etc/postgresql-common/createcluster.d/marketplace-test.conf");
    if let Some(dir) = drop_in.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        drop_in,
        "# Written by `cargo xtask`: tests run throwaway clusters of their own.\n\
         create_main_cluster = false\n",
    )?;
    apt_install(cache, &["postgresql"])?;
    find_postgres_bindir()
        .context("PostgreSQL was installed but no /usr/lib/postgresql/*/bin/postgres exists")
}

fn find_postgres_bindir() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .flatten()
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file()).then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
}

fn ensure_java(cache: &Cache) -> Result<PathBuf> {
    if let Some(home) = find_java_home() {
        return Ok(home);
    }
    apt_install(cache, &["openjdk-17-jre-headless"])?;
    find_java_home().context("a JDK was installed but `java` is not on PATH")
}

fn find_java_home() -> Option<PathBuf> {
    for var in ["ES_JAVA_HOME", "JAVA_HOME"] {
        if let Some(home) = std::env::var_os(var).map(PathBuf::from)
            && home.join("bin").join("java").is_file()
        {
            return Some(home);
        }
    }
    let java = std::fs::canonicalize(process::which("java")?).ok()?;
    Some(java.parent()?.parent()?.to_path_buf())
}

/// Debian's Chromium and its WebDriver; the tests start chromedriver
/// themselves, one per test, with a profile of their own.
#[derive(Debug)]
pub(crate) struct Browser {
    pub(crate) chromium: PathBuf,
    pub(crate) chromedriver: PathBuf,
}

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn ensure_browser(cache: &Cache) -> Result<Browser> {
    let browser = Browser {
        chromium: PathBuf::from(CHROMIUM),
        chromedriver: PathBuf::from(CHROMEDRIVER),
    };
    let installed =
        |browser: &Browser| browser.chromium.is_file() && browser.chromedriver.is_file();
    if !installed(&browser) {
        // Both at once, even when only the driver is missing: Debian's
        // chromium-driver requires the chromium of exactly its version, and
        // apt upgrades the browser to match.
        apt_install(cache, &["chromium", "chromium-driver"])?;
        if !installed(&browser) {
            bail!(
                "chromium and chromium-driver were installed but {CHROMIUM} or {CHROMEDRIVER} is missing"
            );
        }
    }
    println!("==> chromium: {CHROMIUM}, {CHROMEDRIVER}");
    Ok(browser)
}

pub(crate) fn apt_install(cache: &Cache, packages: &[&str]) -> Result<()> {
    static UPDATED: std::sync::Once = std::sync::Once::new();
    if !testuser::running_as_root()? {
        bail!(
            "{} is missing; install it with `sudo apt-get install {}`",
            packages.join(", "),
            packages.join(" ")
        );
    }
    let apt = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    let log = cache.root().join("apt.log");
    let mut updated = Ok(());
    UPDATED.call_once(|| updated = process::run_logged(apt(&["update"]), "apt-get update", &log));
    updated?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend_from_slice(packages);
    process::run_logged(
        apt(&args),
        &format!("apt-get install {}", packages.join(" ")),
        &log,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubernetes_wrapper_replaces_every_staging_module_with_its_release() {
        let go_mod = kubernetes_build().go_mod();
        assert!(go_mod.contains("require k8s.io/kubernetes v1.35.4\n"));
        assert!(go_mod.contains("replace k8s.io/client-go => k8s.io/client-go v0.35.4\n"));
        assert_eq!(go_mod.matches("replace ").count(), KUBERNETES_STAGING.len());
    }

    #[test]
    fn the_kubernetes_build_stamps_its_version() {
        let ldflags = kubernetes_build().ldflags;
        assert!(ldflags.contains("version.gitVersion=v1.35.4"));
        assert!(ldflags.contains("version.gitMinor=35"));
    }

    #[test]
    fn a_changed_version_changes_the_fingerprint() {
        let mut build = etcd_build();
        let before = build.fingerprint();
        build.require[0].1 = "v3.6.0".into();
        assert_ne!(before, build.fingerprint());
    }

    #[test]
    fn the_collector_pins_one_release_of_core_and_contrib() {
        let go_mod = otelcol_build().go_mod();
        assert!(go_mod.contains("require go.opentelemetry.io/collector/otelcol v0.165.0\n"));
        assert!(go_mod.contains("require go.opentelemetry.io/collector/component v1.71.0\n"));
        assert!(go_mod.contains(
            "require github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter v0.165.0\n"
        ));
    }

    #[test]
    fn the_collector_registers_the_otlp_receiver_and_the_file_exporter() {
        let main_go = otelcol_main_go();
        assert!(main_go.contains(
            "otelcol.MakeFactoryMap[receiver.Factory](\n\t\totlpreceiver.NewFactory(),\n\t)"
        ));
        assert!(main_go.contains(
            "otelcol.MakeFactoryMap[exporter.Factory](\n\t\tfileexporter.NewFactory(),\n\t)"
        ));
        assert!(main_go.contains("otelcol.MakeFactoryMap[processor.Factory](\n\t)"));
        assert!(main_go.contains(
            "fileexporter.NewFactory().Type(): \"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter v0.165.0\""
        ));
    }

    #[test]
    fn a_changed_collector_source_changes_the_fingerprint() {
        let mut build = otelcol_build();
        let before = build.fingerprint();
        build.sources[0].1.push_str("// changed\n");
        assert_ne!(before, build.fingerprint());
    }

    #[test]
    fn tools_go_imports_every_package() {
        let text = kwok_build().tools_go();
        assert!(text.starts_with("//go:build tools"));
        assert!(text.contains("\t_ \"sigs.k8s.io/kwok/cmd/kwokctl\"\n"));
    }

    #[test]
    fn sha1_matches_a_known_digest() {
        let dir = std::env::temp_dir().join(format!("xtask-sha1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("abc");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(
            sha1_of(&file).unwrap(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
