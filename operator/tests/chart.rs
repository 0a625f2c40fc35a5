//! The Helm chart (`deploy/helm/marketplace-operator`), checked with the
//! real `helm`: it lints clean, renders what its golden files hold, refuses
//! bad values naming the value, ships the generated CRD itself, and grants
//! exactly the permissions the README lists. Installing, upgrading and
//! uninstalling it, and the operator running with its ServiceAccount, are
//! `cargo xtask e2e kwok`, on a cluster of their own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

const CHART: &str = "deploy/helm/marketplace-operator";

/// Set to rewrite the golden files from the chart instead of comparing.
const UPDATE_VAR: &str = "MARKETPLACE_UPDATE_GOLDEN";

/// The golden renderings: (file under operator/tests/golden, `--set` values).
/// Dashboards are left out of the goldens (they are data, checked by the
/// dashboard tests) and covered by their own test below.
const GOLDENS: &[(&str, &[&str])] = &[
    ("chart-defaults.yaml", &["dashboards.enabled=false"]),
    (
        "chart-everything.yaml",
        &[
            "dashboards.enabled=false",
            "replicaCount=2",
            "image.tag=1.2.3",
            "imagePullSecrets[0].name=regcred",
            "operator.concurrency=4",
            "operator.logLevel=info\\,marketplace_operator=debug",
            "serviceMonitor.enabled=true",
            "serviceMonitor.labels.release=prometheus",
            "prometheusRule.enabled=true",
            "marketplace.create=true",
            "marketplace.name=market",
            "marketplace.spec.gateway.replicas=3",
            "nodeSelector.kubernetes\\.io/os=linux",
        ],
    ),
];

/// `helm`, run from the workspace root; `None` (the test skips) when it is
/// not on PATH under plain `cargo test`. `cargo xtask test` puts the one it
/// builds there and requires it.
fn helm() -> Option<Command> {
    let mut command = Command::new(marketplace_testkit::program("helm")?);
    command.current_dir(common::workspace_root());
    Some(command)
}

/// Runs helm and returns (success, stdout, stderr).
fn run(mut command: Command) -> (bool, String, String) {
    let output = command.output().expect("running helm");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `helm template` of the chart with `values`, as one string.
fn template(values: &[&str]) -> Option<String> {
    let mut command = helm()?;
    command.args([
        "template",
        "marketplace-operator",
        CHART,
        "--namespace",
        "marketplace-system",
    ]);
    for value in values {
        command.args(["--set", value]);
    }
    let (ok, stdout, stderr) = run(command);
    assert!(ok, "helm template {values:?} failed: {stderr}");
    Some(stdout)
}

/// The rendered objects, parsed.
fn objects(rendered: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(rendered)
        .map(|document| Value::deserialize(document).expect("helm renders valid YAML"))
        .filter(|object| !object.is_null())
        .collect()
}

fn kind_and_name(object: &Value) -> (String, String) {
    (
        object["kind"].as_str().unwrap_or_default().to_owned(),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[test]
fn the_chart_passes_helm_lint_in_strict_mode() {
    let Some(mut command) = helm() else { return };
    command.args(["lint", "--strict", CHART]);
    let (ok, stdout, stderr) = run(command);

    assert!(ok, "helm lint --strict failed:\n{stdout}{stderr}");
    assert!(
        stdout.contains("0 chart(s) failed"),
        "unexpected helm lint output:\n{stdout}"
    );
}

#[test]
fn the_rendered_chart_matches_its_golden_files() {
    let golden_dir = common::workspace_root().join("operator/tests/golden");
    let update = std::env::var_os(UPDATE_VAR).is_some();
    let mut stale = Vec::new();
    for (file, values) in GOLDENS {
        let Some(rendered) = template(values) else {
            return;
        };
        let path = golden_dir.join(file);
        if update {
            std::fs::create_dir_all(&golden_dir).unwrap();
            std::fs::write(&path, &rendered).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if golden != rendered {
            stale.push(first_difference(&path, &golden, &rendered));
        }
    }
    assert!(
        stale.is_empty(),
        "the chart renders differently from its golden files; if the change is intended, \
         run `{UPDATE_VAR}=1 cargo xtask test -- -p marketplace-operator --test chart` and \
         review the diff:\n{}",
        stale.join("\n")
    );
}

fn first_difference(path: &Path, golden: &str, rendered: &str) -> String {
    let line = golden
        .lines()
        .zip(rendered.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| golden.lines().count().min(rendered.lines().count()));
    format!(
        "{} line {}:\n  golden:   {:?}\n  rendered: {:?}",
        path.display(),
        line + 1,
        golden.lines().nth(line).unwrap_or("<end>"),
        rendered.lines().nth(line).unwrap_or("<end>")
    )
}

#[test]
fn bad_values_are_refused_naming_the_value() {
    let cases: &[(&str, &str)] = &[
        (
            "unknownKey=1",
            "additional properties 'unknownKey' not allowed",
        ),
        ("operator.concurrency=-1", "/operator/concurrency"),
        ("operator.logFormat=xml", "/operator/logFormat"),
        ("operator.metricsPort=70000", "/operator/metricsPort"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("replicaCount=one", "/replicaCount"),
        ("resources.requests.cpu=lots", "/resources/requests/cpu"),
        ("serviceMonitor.interval=soon", "/serviceMonitor/interval"),
        ("marketplace.name=Shop_1", "/marketplace/name"),
        (
            "marketplace.name=a-name-longer-than-forty-one-characters-xyz",
            "/marketplace/name",
        ),
        ("dashboards.enabled=maybe", "/dashboards/enabled"),
    ];
    for (value, expected) in cases {
        let Some(mut command) = helm() else { return };
        command.args(["template", "marketplace-operator", CHART, "--set", value]);
        let (ok, _, stderr) = run(command);

        assert!(!ok, "helm accepted --set {value}");
        assert!(
            stderr.contains(expected),
            "--set {value}: the error does not name {expected:?}:\n{stderr}"
        );
    }
}

#[test]
fn a_service_account_that_is_not_created_must_be_named() {
    let Some(mut command) = helm() else { return };
    command.args([
        "template",
        "marketplace-operator",
        CHART,
        "--set",
        "serviceAccount.create=false",
    ]);
    let (ok, _, stderr) = run(command);

    assert!(!ok);
    assert!(
        stderr.contains("serviceAccount.name is required"),
        "{stderr}"
    );
}

#[test]
fn the_chart_installs_the_crd_that_codegen_generates_not_a_copy() {
    let root = common::workspace_root();
    let in_chart = root
        .join(CHART)
        .join("crds/marketplace.dev_marketplaces.yaml");
    let link = std::fs::read_link(&in_chart)
        .unwrap_or_else(|e| panic!("{} is not a symbolic link: {e}", in_chart.display()));
    assert_eq!(
        in_chart
            .parent()
            .unwrap()
            .join(link)
            .canonicalize()
            .unwrap(),
        root.join(marketplace_operator::CRD_PATH)
            .canonicalize()
            .unwrap()
    );

    let Some(mut command) = helm() else { return };
    command.args(["show", "crds", CHART]);
    let (ok, stdout, stderr) = run(command);
    assert!(ok, "{stderr}");
    let generated = std::fs::read_to_string(root.join(marketplace_operator::CRD_PATH)).unwrap();
    assert_eq!(stdout.trim(), generated.trim());
}

#[test]
fn the_operator_image_defaults_to_the_operators_own_version() {
    let Some(rendered) = template(&[]) else {
        return;
    };
    let deployment = objects(&rendered)
        .into_iter()
        .find(|object| kind_and_name(object).0 == "Deployment")
        .expect("a Deployment");
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();

    assert_eq!(
        image,
        format!(
            "ghcr.io/marketplace/marketplace-operator:{}",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn every_dashboard_becomes_a_configmap_for_the_grafana_sidecar() {
    let dashboards: BTreeSet<String> =
        std::fs::read_dir(common::workspace_root().join(CHART).join("dashboards"))
            .expect("the chart has dashboards")
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".json"))
            .collect();
    assert!(!dashboards.is_empty());
    let Some(rendered) = template(&["dashboards.annotations.grafana_folder=Marketplace"]) else {
        return;
    };

    let mut shipped = BTreeSet::new();
    for object in objects(&rendered) {
        if kind_and_name(&object).0 != "ConfigMap" {
            continue;
        }
        assert_eq!(object["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(
            object["metadata"]["annotations"]["grafana_folder"],
            "Marketplace"
        );
        let data = object["data"].as_mapping().unwrap();
        for (file, content) in data {
            let file = file.as_str().unwrap().to_owned();
            let on_disk = std::fs::read_to_string(
                common::workspace_root()
                    .join(CHART)
                    .join("dashboards")
                    .join(&file),
            )
            .unwrap();
            assert!(
                content.as_str().map(str::trim) == Some(on_disk.trim()),
                "the ConfigMap's {file} is not the dashboard file as it is"
            );
            shipped.insert(file);
        }
    }
    assert_eq!(shipped, dashboards);
}

/// One permission as the README's table and the chart's roles state it.
type Rule = (String, String, String, String);

#[test]
fn the_chart_grants_exactly_the_permissions_the_readme_lists() {
    let Some(rendered) = template(&[]) else {
        return;
    };
    let mut granted = BTreeSet::new();
    for object in objects(&rendered) {
        let (kind, _) = kind_and_name(&object);
        let scope = match kind.as_str() {
            "ClusterRole" => "cluster",
            "Role" => "release namespace",
            _ => continue,
        };
        for rule in object["rules"].as_sequence().unwrap() {
            let list = |key: &str| -> Vec<String> {
                rule[key]
                    .as_sequence()
                    .map(|items| {
                        items
                            .iter()
                            .map(|item| item.as_str().unwrap().to_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let names = list("resourceNames");
            for group in list("apiGroups") {
                for resource in list("resources") {
                    let resource = if names.is_empty() {
                        resource
                    } else {
                        format!("{resource}/{}", names.join(","))
                    };
                    granted.insert((
                        scope.to_owned(),
                        if group.is_empty() {
                            "core".to_owned()
                        } else {
                            group.clone()
                        },
                        resource,
                        list("verbs").join(", "),
                    ));
                }
            }
        }
    }

    let listed = readme_rbac_table(&common::workspace_root().join("README.md"));
    assert_eq!(
        listed, granted,
        "the README's table of what the chart grants differs from the chart's roles"
    );
}

/// The rows of the README's table under "What the chart grants": scope,
/// API group, resource, verbs.
fn readme_rbac_table(readme: &Path) -> BTreeSet<Rule> {
    let text = std::fs::read_to_string(readme).unwrap();
    let section = text
        .split("### What the chart grants")
        .nth(1)
        .expect("the README has a section \"What the chart grants\"");
    section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|row| {
            let cells: Vec<String> = row
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('`').to_owned())
                .collect();
            assert!(cells.len() >= 4, "a short row in the README's table: {row}");
            (
                cells[0].clone(),
                cells[1].clone(),
                cells[2].clone(),
                cells[3].clone(),
            )
        })
        .collect()
}
