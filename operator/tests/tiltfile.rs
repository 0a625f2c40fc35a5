//! The Tiltfile, evaluated by the real `tilt alpha tiltfile-result` (with the
//! real `helm` it runs to render the chart): the resources it declares, the
//! images it builds and where it puts them, the order resources start in,
//! and the gateway forwarded to localhost:8080. Building the images and
//! deploying them needs Docker and a kind cluster, which the test machines
//! do not have; this is what can be checked without them.
//!
//! Evaluation does not contact the cluster: the kubeconfig given to tilt
//! only names the context `kind-marketplace` that kind-config.yaml creates,
//! at an address where nothing listens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use marketplace_operator::builders::{Component, child_name};
use marketplace_operator::crd::Marketplace;
use serde::Deserialize;
use serde_json::Value;

const SERVICES_IMAGE: &str = "ghcr.io/marketplace/marketplace";
const OPERATOR_IMAGE: &str = "ghcr.io/marketplace/marketplace-operator";
const CONTEXT: &str = "kind-marketplace";

const KUBECONFIG: &str = "\
apiVersion: v1
kind: Config
clusters:
  - name: kind-marketplace
    cluster:
      server: https://127.0.0.1:1
contexts:
  - name: kind-marketplace
    context:
      cluster: kind-marketplace
      user: kind-marketplace
current-context: kind-marketplace
users:
  - name: kind-marketplace
    user: {}
";

/// `false` (the test skips) when tilt or helm is not on PATH under plain
/// `cargo test`. `cargo xtask test` puts the ones it builds there and
/// requires them.
fn tools_present() -> bool {
    ["tilt", "helm"]
        .into_iter()
        .all(|tool| marketplace_testkit::program(tool).is_some())
}

/// What `tilt alpha tiltfile-result` reports for the Tiltfile with the
/// Tiltfile settings `settings` (the arguments after `tilt up --`); `None`
/// when the test skips. Fails the test, with tilt's log, when the Tiltfile
/// does not evaluate.
fn evaluate(settings: &[&str]) -> Option<Evaluation> {
    if !tools_present() {
        return None;
    }
    let root = common::workspace_root().canonicalize().unwrap();
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(&kubeconfig, KUBECONFIG).unwrap();
    let output = Command::new("tilt")
        .args(["alpha", "tiltfile-result", "--file", "Tiltfile"])
        .arg("--")
        .args(settings)
        .current_dir(&root)
        .env("KUBECONFIG", &kubeconfig)
        // Tilt keeps its state (and the analytics choice) here instead of
        // in the user's home, and reports no usage.
        .env("TILT_DEV_DIR", home.path().join("tilt-dev"))
        .env("TILT_DISABLE_ANALYTICS", "1")
        .output()
        .expect("running tilt");
    assert!(
        output.status.success(),
        "tilt alpha tiltfile-result {settings:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).expect("tilt prints JSON");
    Some(Evaluation { root, result })
}

struct Evaluation {
    root: PathBuf,
    result: Value,
}

#[derive(Debug, Clone, Copy)]
enum Script {
    Update,
    Serve,
}

impl Evaluation {
    fn manifests(&self) -> &[Value] {
        self.result["Manifests"]
            .as_array()
            .expect("a list of manifests")
    }

    fn names(&self) -> BTreeSet<&str> {
        self.manifests()
            .iter()
            .map(|manifest| manifest["Name"].as_str().unwrap())
            .collect()
    }

    /// The Tilt resource `name`.
    fn manifest(&self, name: &str) -> &Value {
        self.manifests()
            .iter()
            .find(|manifest| manifest["Name"] == name)
            .unwrap_or_else(|| panic!("no resource {name}; there are {:?}", self.names()))
    }

    /// The resources that `name` waits for before it starts.
    fn dependencies(&self, name: &str) -> BTreeSet<&str> {
        self.manifest(name)["ResourceDependencies"]
            .as_array()
            .map(|names| names.iter().map(|n| n.as_str().unwrap()).collect())
            .unwrap_or_default()
    }

    /// The Kubernetes objects resource `name` applies.
    fn objects(&self, name: &str) -> Vec<serde_yaml::Value> {
        let yaml = self.manifest(name)["DeployTarget"]["yaml"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} applies no Kubernetes objects"));
        serde_yaml::Deserializer::from_str(yaml)
            .map(|document| serde_yaml::Value::deserialize(document).unwrap())
            .filter(|object| !object.is_null())
            .collect()
    }

    /// The one object of `kind` that resource `name` applies.
    fn object(&self, name: &str, kind: &str) -> serde_yaml::Value {
        let mut found: Vec<_> = self
            .objects(name)
            .into_iter()
            .filter(|object| object["kind"].as_str() == Some(kind))
            .collect();
        assert_eq!(found.len(), 1, "{name} applies {} {kind}s", found.len());
        found.remove(0)
    }

    /// The image build of resource `name`: its only image target.
    fn image(&self, name: &str) -> &Value {
        let targets = self.manifest(name)["ImageTargets"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} builds no image"));
        assert_eq!(targets.len(), 1, "{name} builds {targets:?}");
        &targets[0]
    }

    /// The shell script local resource `name` runs, its update `cmd` or
    /// its `serve_cmd`.
    fn script(&self, name: &str, command: Script) -> &str {
        let target = &self.manifest(name)["DeployTarget"];
        let argv = match command {
            Script::Update => &target["UpdateCmdSpec"]["args"],
            Script::Serve => &target["ServeCmd"]["Argv"],
        };
        let argv = argv
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no {command:?} command"));
        assert_eq!(argv[..2], ["sh", "-c"], "{name}: {argv:?}");
        argv[2].as_str().unwrap()
    }

    fn dockerfile(&self, name: &str) -> String {
        std::fs::read_to_string(self.root.join("deploy/images").join(name)).unwrap()
    }
}

/// Fails the test when `sh` cannot parse `script`.
fn assert_valid_shell(script: &str) {
    let output = Command::new("sh")
        .args(["-n", "-c", script])
        .output()
        .expect("running sh");
    assert!(
        output.status.success(),
        "sh cannot parse {script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether a build with `image`'s context patterns takes in `path` (relative
/// to the repository root), for the patterns the Tiltfile uses: `only`
/// lists as `**` followed by `!<path>` exceptions, `ignore` lists of globs.
fn context_includes(evaluation: &Evaluation, image: &Value, path: &str) -> bool {
    let root = evaluation.root.to_str().unwrap();
    image["BuildDetails"]["contextIgnores"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|ignore| ignore["basePath"] == root)
        .all(|ignore| {
            let patterns: Vec<&str> = ignore["patterns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            !ignores(&patterns, path)
        })
}

/// Docker-ignore semantics, enough for these patterns: the last matching
/// pattern wins, `!` re-includes, a pattern matches a path or any parent.
fn ignores(patterns: &[&str], path: &str) -> bool {
    let mut ignored = false;
    for pattern in patterns {
        let (negated, glob) = pattern
            .strip_prefix('!')
            .map_or((false, *pattern), |glob| (true, glob));
        let parents = Path::new(path)
            .ancestors()
            .filter(|p| !p.as_os_str().is_empty());
        if parents
            .into_iter()
            .any(|candidate| glob_matches(glob, candidate.to_str().unwrap()))
        {
            ignored = !negated;
        }
    }
    ignored
}

/// `*` matches within one path segment, `**` any number of segments.
fn glob_matches(glob: &str, path: &str) -> bool {
    let globs: Vec<&str> = glob.split('/').collect();
    let parts: Vec<&str> = path.split('/').collect();
    segments_match(&globs, &parts)
}

fn segments_match(globs: &[&str], parts: &[&str]) -> bool {
    match (globs.first(), parts.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            segments_match(&globs[1..], parts)
                || (!parts.is_empty() && segments_match(globs, &parts[1..]))
        }
        (Some(glob), Some(part)) => {
            segment_matches(glob, part) && segments_match(&globs[1..], &parts[1..])
        }
        _ => false,
    }
}

fn segment_matches(glob: &str, part: &str) -> bool {
    match glob.split_once('*') {
        None => glob == part,
        Some((prefix, suffix)) => {
            part.len() >= prefix.len() + suffix.len()
                && part.starts_with(prefix)
                && part.ends_with(suffix)
        }
    }
}

#[test]
fn the_tiltfile_declares_the_crd_the_operator_the_marketplace_and_the_gateway_and_nothing_uncategorized()
 {
    let Some(tilt) = evaluate(&[]) else { return };

    assert_eq!(
        tilt.names(),
        BTreeSet::from([
            "marketplace-crds",
            "marketplace-operator",
            "shop",
            "gateway"
        ])
    );

    let crd = tilt.object("marketplace-crds", "CustomResourceDefinition");
    assert_eq!(crd["metadata"]["name"], "marketplaces.marketplace.dev");
    assert_eq!(tilt.objects("marketplace-crds").len(), 1);

    // The operator's Deployment with everything it needs to run.
    let kinds: BTreeSet<String> = tilt
        .objects("marketplace-operator")
        .iter()
        .map(|object| object["kind"].as_str().unwrap().to_owned())
        .collect();
    for kind in [
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
    ] {
        assert!(
            kinds.contains(kind),
            "the operator resource has no {kind}: {kinds:?}"
        );
    }

    let marketplace = tilt.object("shop", "Marketplace");
    assert_eq!(marketplace["metadata"]["name"], "shop");
    assert_eq!(tilt.objects("shop").len(), 1);
}

#[test]
fn resources_start_in_order_crd_operator_marketplace_then_the_gateway_forward() {
    let Some(tilt) = evaluate(&[]) else { return };

    assert_eq!(tilt.dependencies("marketplace-crds"), BTreeSet::new());
    assert_eq!(
        tilt.dependencies("marketplace-operator"),
        BTreeSet::from(["marketplace-crds"])
    );
    assert_eq!(
        tilt.dependencies("shop"),
        BTreeSet::from(["marketplace-operator"])
    );
    assert_eq!(tilt.dependencies("gateway"), BTreeSet::from(["shop"]));
}

#[test]
fn each_image_is_built_from_its_dockerfile_and_rebuilt_when_the_rust_sources_change() {
    let Some(tilt) = evaluate(&[]) else { return };

    for (resource, image, dockerfile) in [
        (
            "marketplace-operator",
            OPERATOR_IMAGE,
            "operator.Dockerfile",
        ),
        ("shop", SERVICES_IMAGE, "marketplace.Dockerfile"),
    ] {
        let target = tilt.image(resource);
        assert_eq!(target["selector"], image);
        let build = &target["BuildDetails"];
        assert_eq!(build["context"], tilt.root.to_str().unwrap(), "{image}");
        assert_eq!(
            build["dockerfileContents"],
            tilt.dockerfile(dockerfile),
            "{image}"
        );
        // The default build compiles in the image: no build arguments, so
        // the Dockerfile's `build` stage.
        assert!(build["args"].is_null(), "{image}: {}", build["args"]);

        for changed in [
            "Cargo.toml",
            "Cargo.lock",
            "proto/marketplace/catalog/v1/catalog.proto",
            "crates/marketplace-gateway/src/http.rs",
            "operator/src/reconcile.rs",
            "deploy/images/marketplace.Dockerfile",
        ] {
            assert!(
                context_includes(&tilt, target, changed),
                "{image}: a change to {changed} does not rebuild it"
            );
        }
        for unchanged in [
            "README.md",
            "docs/metrics.md",
            "target/debug/marketplace",
            "operator/tests/tiltfile.rs",
            "crates/marketplace-gateway/tests/graphql.rs",
            "deploy/helm/marketplace-operator/values.yaml",
        ] {
            assert!(
                !context_includes(&tilt, target, unchanged),
                "{image}: a change to {unchanged} rebuilds it"
            );
        }
    }
}

#[test]
fn tilt_puts_the_images_it_builds_into_the_operator_deployment_and_the_marketplace() {
    let Some(tilt) = evaluate(&[]) else { return };

    // The operator's Deployment names the operator image, which Tilt
    // replaces by the one it built.
    let deployment = tilt.object("marketplace-operator", "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let image = container["image"].as_str().unwrap();
    assert!(image.starts_with(&format!("{OPERATOR_IMAGE}:")), "{image}");
    assert_eq!(
        tilt.manifest("marketplace-operator")["DeployTarget"]["imageMaps"],
        serde_json::json!(["ghcr.io_marketplace_marketplace-operator"])
    );

    // The Marketplace names the services' image in `spec.image`, and Tilt
    // knows to replace its repository and tag there.
    let deploy = &tilt.manifest("shop")["DeployTarget"];
    assert_eq!(
        deploy["imageMaps"],
        serde_json::json!(["ghcr.io_marketplace_marketplace"])
    );
    let locators = deploy["imageLocators"].as_array().unwrap();
    assert_eq!(locators.len(), 1, "{locators:?}");
    assert_eq!(
        locators[0]["objectSelector"]["kindRegexp"],
        "(?i)Marketplace"
    );
    assert_eq!(locators[0]["path"], "{.spec.image}");
    assert_eq!(
        locators[0]["object"],
        serde_json::json!({"repoField": "repository", "tagField": "tag"})
    );
    let marketplace = tilt.object("shop", "Marketplace");
    assert_eq!(marketplace["spec"]["image"]["repository"], SERVICES_IMAGE);
    assert!(marketplace["spec"]["image"]["tag"].is_string());
}

#[test]
fn the_gateway_the_operator_creates_is_forwarded_to_localhost_8080() {
    let Some(tilt) = evaluate(&[]) else { return };

    // The gateway's Service as the operator names it for this Marketplace.
    let marketplace: Marketplace =
        serde_yaml::from_value(tilt.object("shop", "Marketplace")).unwrap();
    let service = child_name(&marketplace, Component::Gateway);
    let port = marketplace.spec.gateway.service.port;
    let namespace = marketplace.metadata.namespace.as_deref().unwrap();

    let script = tilt.script("gateway", Script::Serve);
    assert!(
        script.contains(&format!(
            "kubectl --context {CONTEXT} --namespace {namespace} port-forward service/{service} 8080:{port}"
        )),
        "{script}"
    );
    // It comes back after the gateway's pod is replaced, once the
    // operator's Deployment of that name has rolled out.
    assert!(script.starts_with("while true; do"), "{script}");
    assert!(
        script.contains(&format!("rollout status deployment/{service} ")),
        "{script}"
    );
    assert_valid_shell(script);

    let gateway = &tilt.manifest("gateway")["DeployTarget"];
    assert_eq!(
        gateway["ReadinessProbe"]["httpGet"],
        serde_json::json!({"path": "/readyz", "port": 8080})
    );
    let links: Vec<String> = gateway["Links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|link| {
            let url = &link["URL"];
            format!(
                "{}://{}{}",
                url["Scheme"].as_str().unwrap(),
                url["Host"].as_str().unwrap(),
                url["Path"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        links.contains(&"http://localhost:8080/playground".to_owned()),
        "{links:?}"
    );
}

#[test]
fn tilt_down_deletes_the_stores_volumes_with_the_marketplace() {
    let Some(tilt) = evaluate(&[]) else { return };

    // A development loop starts clean: `tilt down` leaves no volumes or
    // database passwords behind for the next `tilt up`.
    let marketplace: Marketplace =
        serde_yaml::from_value(tilt.object("shop", "Marketplace")).unwrap();
    assert!(marketplace.spec.volumes.delete_with_marketplace);
}

#[test]
fn with_local_cargo_the_images_take_the_binaries_cargo_builds_on_the_host() {
    let Some(tilt) = evaluate(&["--local-cargo"]) else {
        return;
    };

    assert_eq!(
        tilt.names(),
        BTreeSet::from([
            "cargo-build",
            "marketplace-crds",
            "marketplace-operator",
            "shop",
            "gateway"
        ])
    );
    let script = tilt.script("cargo-build", Script::Update);
    assert!(
        script.contains("cargo build --locked --profile image")
            && script.contains("-p marketplace -p marketplace-operator"),
        "{script}"
    );
    assert_valid_shell(script);
    // It runs again when the sources change.
    let deps = &tilt.manifest("cargo-build")["DeployTarget"]["Deps"];
    for source in ["Cargo.lock", "proto", "crates", "operator"] {
        let path = tilt.root.join(source);
        assert!(
            deps.as_array()
                .unwrap()
                .contains(&Value::from(path.to_str().unwrap())),
            "cargo-build does not watch {source}: {deps}"
        );
    }

    for (resource, binary, dockerfile) in [
        (
            "marketplace-operator",
            "marketplace-operator",
            "operator.Dockerfile",
        ),
        ("shop", "marketplace", "marketplace.Dockerfile"),
    ] {
        assert!(
            tilt.dependencies(resource).contains("cargo-build"),
            "{resource} does not wait for the binaries"
        );
        // The Dockerfile's prebuilt stage, which copies the binary from
        // where the cargo-build resource puts it.
        let staged = format!("target/images/{binary}");
        assert!(script.contains("target/images"), "{script}");
        assert!(
            tilt.dockerfile(dockerfile)
                .contains(&format!("ARG BINARY={staged}\n")),
            "{dockerfile} does not copy {staged}"
        );
        let target = tilt.image(resource);
        assert_eq!(
            target["BuildDetails"]["args"],
            serde_json::json!(["BINARY_SOURCE=prebuilt"])
        );
        assert!(context_includes(&tilt, target, &staged), "{resource}");
        assert!(
            !context_includes(&tilt, target, "crates/marketplace-gateway/src/http.rs"),
            "{resource}: the image build still takes the sources"
        );
    }
}
