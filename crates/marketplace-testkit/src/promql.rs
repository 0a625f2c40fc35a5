//! The PromQL queries of the chart's Grafana dashboards and Prometheus alert
//! rules, and the metric names they use, so that a test can compare those
//! names with what running processes export.
//!
//! Dashboard queries carry Grafana variables (`$namespace`,
//! `$__rate_interval`, ...), which are not PromQL: they are replaced by
//! plain values before parsing. Template variable queries of the form
//! `label_values(<selector>, <label>)` count too, by their selector.
//!
//! ```no_run
//! # fn example(chart: &std::path::Path, scraped: &str) {
//! let used = marketplace_testkit::promql::chart_metric_names(chart);
//! let exported = marketplace_testkit::promql::exported_names(scraped);
//! let missing: Vec<_> = used.keys().filter(|name| !exported.contains(*name)).collect();
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use promql_parser::parser::{self, Expr, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;

/// The chart's alert rule file, relative to the chart's directory.
pub const RULES_FILE: &str = "rules/marketplace.rules.yaml";

/// The chart's dashboards' directory, relative to the chart's directory.
pub const DASHBOARDS_DIR: &str = "dashboards";

/// A PromQL query and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The file and the panel, variable or alert, e.g.
    /// `overview.json: panel 3 "Requests per second"`.
    pub source: String,
    /// The query as written, Grafana variables and all.
    pub expr: String,
}

/// Every metric name the chart's dashboards and alert rules query, each
/// with the places that use it.
///
/// # Panics
///
/// When a file cannot be read or parsed, or a query is not PromQL.
pub fn chart_metric_names(chart: &Path) -> BTreeMap<String, Vec<String>> {
    let mut queries = Vec::new();
    for (file, dashboard) in dashboards(chart) {
        queries.extend(dashboard_queries(&file, &dashboard));
    }
    let rules_path = chart.join(RULES_FILE);
    let rules = std::fs::read_to_string(&rules_path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", rules_path.display()));
    queries.extend(
        rule_queries(RULES_FILE, &rules).unwrap_or_else(|error| panic!("{RULES_FILE}: {error}")),
    );
    assert!(!queries.is_empty(), "no queries in {}", chart.display());
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for query in queries {
        let names = metric_names(&query.expr)
            .unwrap_or_else(|error| panic!("{}: {:?}: {error}", query.source, query.expr));
        assert!(
            !names.is_empty(),
            "{}: {:?} queries no metric",
            query.source,
            query.expr
        );
        for name in names {
            used.entry(name).or_default().push(query.source.clone());
        }
    }
    used
}

/// The chart's dashboards, parsed, by file name, in file name order.
///
/// # Panics
///
/// When the directory or a file cannot be read, or a file is not JSON.
pub fn dashboards(chart: &Path) -> Vec<(String, Value)> {
    let dir = chart.join(DASHBOARDS_DIR);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()));
    let mut files: Vec<_> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
            let dashboard = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("{name} is not valid JSON: {error}"));
            (name, dashboard)
        })
        .collect()
}

/// Every panel of a dashboard, including the panels inside collapsed rows.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    fn collect<'a>(panels: &'a Value, into: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            into.push(panel);
            collect(&panel["panels"], into);
        }
    }
    let mut all = Vec::new();
    collect(&dashboard["panels"], &mut all);
    all
}

/// The PromQL of a dashboard: every panel target's `expr`, and every
/// template variable's query, `label_values(<selector>, <label>)` counting
/// as its selector.
pub fn dashboard_queries(file: &str, dashboard: &Value) -> Vec<Query> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push(Query {
                    source: format!("{file}: panel {} {title:?}", panel["id"]),
                    expr: expr.to_owned(),
                });
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|variable| variable["type"] == "query")
    {
        // Grafana keeps a Prometheus variable's query either as a string
        // or as an object with the string under `query`.
        let query = variable["query"]
            .as_str()
            .or_else(|| variable["query"]["query"].as_str())
            .unwrap_or_default();
        if let Some(selector) = label_values_selector(query) {
            queries.push(Query {
                source: format!("{file}: variable {}", variable["name"]),
                expr: selector.to_owned(),
            });
        }
    }
    queries
}

/// The selector of `label_values(<selector>, <label>)`; `None` for other
/// variable queries, and for `label_values(<label>)`, which names no metric.
fn label_values_selector(query: &str) -> Option<&str> {
    let arguments = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, _label) = arguments.rsplit_once(',')?;
    Some(selector.trim())
}

/// The `expr` of every rule of a Prometheus rule file.
///
/// # Errors
///
/// When the text is not a rule file: YAML with `groups`, each with `rules`,
/// each with an `expr`.
pub fn rule_queries(file: &str, rules: &str) -> Result<Vec<Query>, String> {
    let document: Value = serde_yaml::from_str(rules).map_err(|error| error.to_string())?;
    let groups = document["groups"]
        .as_array()
        .ok_or("the rule file has no `groups` list")?;
    let mut queries = Vec::new();
    for group in groups {
        let rules = group["rules"]
            .as_array()
            .ok_or_else(|| format!("the group {} has no `rules` list", group["name"]))?;
        for rule in rules {
            let name = rule["alert"].as_str().or_else(|| rule["record"].as_str());
            let expr = rule["expr"]
                .as_str()
                .ok_or_else(|| format!("the rule {name:?} has no `expr`"))?;
            queries.push(Query {
                source: format!("{file}: rule {}", name.unwrap_or("(unnamed)")),
                expr: expr.to_owned(),
            });
        }
    }
    Ok(queries)
}

/// `expr` with its Grafana variables replaced by values PromQL accepts:
/// the interval variables (`$__rate_interval`, `$__interval`, `$__range`)
/// by a duration, the dashboard's own variables (`$name`, `${name}`,
/// `${name:format}`) by a word.
///
/// # Errors
///
/// On another built-in variable (`$__...`), or an unclosed `${`.
pub fn substitute_grafana_variables(expr: &str) -> Result<String, String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("an unclosed `${{` in {expr:?}"))?;
            let name = braced[..end].split(':').next().unwrap_or_default();
            (name, end + 2)
        } else {
            let end = after
                .find(|character: char| !(character.is_ascii_alphanumeric() || character == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() {
            // A `$` that starts no variable, such as a regex anchor.
            out.push('$');
        } else if let Some(builtin) = name.strip_prefix("__") {
            match builtin {
                "rate_interval" | "interval" | "range" => out.push_str("5m"),
                _ => return Err(format!("the Grafana variable ${name} in {expr:?}")),
            }
        } else {
            out.push_str("variable");
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The metric names a query selects, its Grafana variables substituted.
///
/// # Errors
///
/// When the query is not PromQL.
pub fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let promql = substitute_grafana_variables(expr)?;
    let parsed = parser::parse(&promql)?;
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &parsed)?;
    Ok(names.0)
}

struct Names(BTreeSet<String>);

impl Names {
    fn add(&mut self, selector: &VectorSelector) {
        if let Some(name) = &selector.name {
            self.0.insert(name.clone());
        }
        // `{__name__="x"}` selects by name too.
        for matcher in &selector.matchers.matchers {
            if matcher.name == "__name__" {
                self.0.insert(matcher.value.clone());
            }
        }
    }
}

impl ExprVisitor for Names {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        match expr {
            Expr::VectorSelector(selector) => self.add(selector),
            Expr::MatrixSelector(matrix) => self.add(&matrix.vs),
            _ => {}
        }
        Ok(true)
    }
}

/// The names of the samples in a Prometheus text exposition: a
/// histogram's as its `_bucket`, `_sum` and `_count` series, which is what
/// queries select.
pub fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The metric names of `used` (name: where it is queried) that are not in
/// `exported`, each with where it is used, one per line.
pub fn not_exported(
    used: &BTreeMap<String, Vec<String>>,
    exported: &BTreeSet<String>,
) -> Vec<String> {
    used.iter()
        .filter(|(name, _)| !exported.contains(*name))
        .map(|(name, sources)| format!("{name} (used by {})", sources.join("; ")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr)
            .expect("the query parses")
            .into_iter()
            .collect()
    }

    #[test]
    fn the_names_of_a_ratio_of_rates_are_both_counters() {
        assert_eq!(
            names(
                r#"sum by (grpc_service) (rate(grpc_server_handled_total{grpc_code!="OK"}[5m]))
                   / sum by (grpc_service) (rate(grpc_server_requests_total[5m]))"#
            ),
            ["grpc_server_handled_total", "grpc_server_requests_total"]
        );
    }

    #[test]
    fn grafana_variables_are_substituted_before_parsing() {
        let expr = r#"histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket{namespace="$namespace", job=~"${job:regex}"}[$__rate_interval])))"#;

        assert_eq!(names(expr), ["x_seconds_bucket"]);
        assert_eq!(
            substitute_grafana_variables("up{a=~\"$a|b$\"}[$__range]").unwrap(),
            "up{a=~\"variable|b$\"}[5m]"
        );
        assert!(substitute_grafana_variables("up[$__from]").is_err());
    }

    #[test]
    fn a_query_that_is_not_promql_is_an_error() {
        assert!(metric_names("sum(rate(x[5m])").is_err());
    }

    #[test]
    fn a_name_matcher_counts_as_a_name() {
        assert_eq!(names(r#"{__name__="up", job="a"}"#), ["up"]);
    }

    #[test]
    fn dashboard_queries_include_nested_panels_and_label_values_variables() {
        let dashboard = json!({
            "panels": [
                { "id": 1, "type": "row", "title": "row", "panels": [
                    { "id": 2, "title": "inner", "targets": [{ "expr": "rate(a_total[5m])" }] }
                ] },
                { "id": 3, "title": "outer", "targets": [{ "expr": "b" }] }
            ],
            "templating": { "list": [
                { "name": "datasource", "type": "datasource", "query": "prometheus" },
                { "name": "namespace", "type": "query",
                  "query": { "query": "label_values(c_info{job=\"x\"}, namespace)" } },
                { "name": "all", "type": "query", "query": "label_values(namespace)" }
            ] }
        });

        let queries = dashboard_queries("d.json", &dashboard);

        let exprs: Vec<&str> = queries.iter().map(|query| query.expr.as_str()).collect();
        assert_eq!(exprs, ["rate(a_total[5m])", "b", "c_info{job=\"x\"}"]);
        assert_eq!(queries[0].source, "d.json: panel 2 \"inner\"");
    }

    #[test]
    fn rule_queries_are_the_expr_of_each_rule() {
        let rules = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 5m\n";

        let queries = rule_queries("r.yaml", rules).unwrap();

        assert_eq!(
            queries,
            [Query {
                source: "r.yaml: rule A".to_owned(),
                expr: "up == 0".to_owned()
            }]
        );
        assert!(rule_queries("r.yaml", "groups: [{ name: g }]").is_err());
    }

    #[test]
    fn exported_names_are_the_sample_names() {
        let text = "# HELP h_seconds time\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_sum 0.1\nh_seconds_count 1\nup 1\n";

        let exported: Vec<String> = exported_names(text).into_iter().collect();

        assert_eq!(
            exported,
            ["h_seconds_bucket", "h_seconds_count", "h_seconds_sum", "up"]
        );
    }
}
