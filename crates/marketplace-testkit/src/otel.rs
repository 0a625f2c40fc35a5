//! An OpenTelemetry Collector of the test's own: the real collector,
//! receiving OTLP over gRPC and HTTP on free loopback ports and writing
//! every span it receives to a file that [`Collector::spans`] reads back.
//! Killed, and its directory removed, when the fixture is dropped.
//!
//! ```no_run
//! # async fn example() {
//! use std::time::Duration;
//!
//! let Some(collector) = marketplace_testkit::otel::collector().await else { return };
//! // Start the code under test with `collector.grpc_endpoint()` as its
//! // OTLP endpoint, make one request, then:
//! let spans = marketplace_testkit::eventually("the request's spans", Duration::from_secs(10), || {
//!     let spans = collector.spans();
//!     async move { (!spans.is_empty()).then_some(spans) }
//! })
//! .await;
//! assert!(spans.iter().all(|span| span.trace_id == spans[0].trace_id));
//! # }
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Backend;
use crate::process::{free_ports, tail};

/// How long the collector may take to start its pipeline.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times new ports are tried when one was taken meanwhile.
const START_ATTEMPTS: usize = 5;
/// What the collector logs once every receiver listens.
const READY_LINE: &str = "Everything is ready";

/// A running OpenTelemetry Collector and the directory it writes to.
#[derive(Debug)]
pub struct Collector {
    child: Option<Child>,
    dir: PathBuf,
    grpc_port: u16,
    http_port: u16,
}

/// One span as the collector received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id; empty for a trace's root span.
    pub parent_span_id: String,
    pub name: String,
    pub kind: SpanKind,
    /// The resource attribute `service.name` of the exporting process
    /// (empty when it set none).
    pub service_name: String,
    /// The span's own attributes, values as text: strings verbatim,
    /// numbers and booleans as written in Rust, arrays and maps as JSON.
    pub attributes: BTreeMap<String, String>,
}

impl Span {
    /// Whether this span starts its trace.
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
}

/// OTLP's `Span.SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// Starts a collector on free loopback ports and waits until it accepts
/// spans; `None` when no collector is configured (see the crate docs).
///
/// # Panics
///
/// When the collector is configured but does not start.
pub async fn collector() -> Option<Collector> {
    let binary = Backend::OtelCollector.locate()?;
    let dir = std::env::temp_dir().join(crate::unique_name("marketplace-otelcol-"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    // Owns the directory and each attempt's process from here on, so that a
    // panic below cleans up too.
    let mut collector = Collector {
        child: None,
        dir,
        grpc_port: 0,
        http_port: 0,
    };
    let config = collector.dir.join("config.json");
    let log = collector.log();
    for _ in 0..START_ATTEMPTS {
        let [grpc_port, http_port] = free_ports::<2>();
        (collector.grpc_port, collector.http_port) = (grpc_port, http_port);
        let text = config_json(grpc_port, http_port, &collector.spans_file()).to_string();
        std::fs::write(&config, text)
            .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let output =
            File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let errors = output
            .try_clone()
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let child = Command::new(&binary)
            // JSON is YAML, which is what the collector reads.
            .arg(format!("--config=file:{}", config.display()))
            .current_dir(&collector.dir)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        collector.child = Some(child);
        if collector.wait_ready().await {
            return Some(collector);
        }
    }
    panic!(
        "the OpenTelemetry Collector found no free ports in {START_ATTEMPTS} attempts:\n{}",
        tail(&log, 20)
    )
}

/// The collector's configuration: OTLP in on the two ports, every span out
/// to `spans` as OTLP JSON, one export request per line.
fn config_json(grpc_port: u16, http_port: u16, spans: &Path) -> Value {
    json!({
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": { "endpoint": format!("127.0.0.1:{grpc_port}") },
                    "http": { "endpoint": format!("127.0.0.1:{http_port}") },
                }
            }
        },
        "exporters": {
            "file": {
                "path": spans.to_string_lossy(),
                "format": "json",
                // Spans reach the file within this; the default is a second.
                "flush_interval": "20ms",
            }
        },
        "service": {
            "telemetry": {
                // The collector's own metrics would listen on a fixed port.
                "metrics": { "level": "none" },
                "logs": { "level": "info" },
            },
            // No batch processor: each export is written as it arrives.
            "pipelines": {
                "traces": { "receivers": ["otlp"], "exporters": ["file"] }
            }
        }
    })
}

impl Collector {
    /// The OTLP/gRPC endpoint, as an exporter is given it:
    /// `http://127.0.0.1:PORT`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// The OTLP/HTTP base endpoint, `http://127.0.0.1:PORT`; traces are
    /// posted to [`Collector::http_traces_url`] under it.
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The OTLP/HTTP traces URL: the base endpoint with `/v1/traces`.
    pub fn http_traces_url(&self) -> String {
        format!("{}/v1/traces", self.http_endpoint())
    }

    /// Every span received so far, in the order received. Spans reach the
    /// file some milliseconds after their export: poll with
    /// [`crate::eventually`].
    ///
    /// # Panics
    ///
    /// When the file cannot be read or holds something other than OTLP JSON.
    pub fn spans(&self) -> Vec<Span> {
        let path = self.spans_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_spans(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("reading {}: {e}", path.display()),
        }
    }

    fn spans_file(&self) -> PathBuf {
        self.dir.join("spans.jsonl")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("otelcol.log")
    }

    /// Waits until the current attempt's collector has started its
    /// pipeline: `true`, or `false` when it exited because a port was taken.
    async fn wait_ready(&mut self) -> bool {
        let log = self.log();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("a collector was started");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("address already in use") {
                    return false;
                }
                panic!(
                    "the OpenTelemetry Collector exited ({status}):\n{}",
                    tail(&log, 20)
                );
            }
            // Receivers start last, so once this is logged every port listens.
            if std::fs::read_to_string(&log).is_ok_and(|text| text.contains(READY_LINE)) {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "the OpenTelemetry Collector was not ready within {START_TIMEOUT:?}:\n{}",
                tail(&log, 20)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "testkit: the OpenTelemetry Collector's log:\n{}",
                tail(&self.log(), 20)
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The spans in the file exporter's output: one OTLP JSON
/// `ExportTraceServiceRequest` per line. A last line without its newline is
/// still being written and is left for the next read.
fn parse_spans(text: &str) -> Vec<Span> {
    let mut spans = Vec::new();
    let complete = text.split_inclusive('\n').filter(|l| l.ends_with('\n'));
    for line in complete.map(str::trim).filter(|l| !l.is_empty()) {
        let request: Value = serde_json::from_str(line).unwrap_or_else(|e| {
            panic!("the collector wrote a line that is not JSON ({e}): {line}")
        });
        for resource_spans in array(&request["resourceSpans"]) {
            let service_name = attributes(&resource_spans["resource"]["attributes"])
                .remove("service.name")
                .unwrap_or_default();
            for scope_spans in array(&resource_spans["scopeSpans"]) {
                for span in array(&scope_spans["spans"]) {
                    spans.push(Span {
                        trace_id: text_of(&span["traceId"]),
                        span_id: text_of(&span["spanId"]),
                        parent_span_id: text_of(&span["parentSpanId"]),
                        name: text_of(&span["name"]),
                        kind: SpanKind::from_otlp(&span["kind"]),
                        service_name: service_name.clone(),
                        attributes: attributes(&span["attributes"]),
                    });
                }
            }
        }
    }
    spans
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

fn text_of(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// OTLP `KeyValue`s as a map of texts.
fn attributes(list: &Value) -> BTreeMap<String, String> {
    array(list)
        .iter()
        .map(|kv| (text_of(&kv["key"]), any_value(&kv["value"])))
        .collect()
}

/// An OTLP `AnyValue` as text.
fn any_value(value: &Value) -> String {
    match plain(value) {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

/// An OTLP `AnyValue` as plain JSON: `{"intValue": "3"}` becomes `3`.
fn plain(value: &Value) -> Value {
    let Some((key, inner)) = value.as_object().and_then(|o| o.iter().next()) else {
        return Value::String(String::new());
    };
    match key.as_str() {
        // OTLP JSON writes 64-bit integers as strings.
        "intValue" => match inner {
            Value::String(text) => text
                .parse::<i64>()
                .map_or_else(|_| inner.clone(), Value::from),
            _ => inner.clone(),
        },
        "arrayValue" => Value::Array(array(&inner["values"]).iter().map(plain).collect()),
        "kvlistValue" => Value::Object(
            array(&inner["values"])
                .iter()
                .map(|kv| (text_of(&kv["key"]), plain(&kv["value"])))
                .collect(),
        ),
        // stringValue, boolValue, doubleValue, and bytesValue (base64).
        _ => inner.clone(),
    }
}

impl SpanKind {
    /// OTLP JSON writes the enum as its number; names are accepted too.
    fn from_otlp(value: &Value) -> Self {
        let number = value.as_u64().or_else(|| {
            let name = value.as_str()?;
            let names = [
                "SPAN_KIND_UNSPECIFIED",
                "SPAN_KIND_INTERNAL",
                "SPAN_KIND_SERVER",
                "SPAN_KIND_CLIENT",
                "SPAN_KIND_PRODUCER",
                "SPAN_KIND_CONSUMER",
            ];
            names.iter().position(|n| *n == name).map(|i| i as u64)
        });
        match number {
            Some(1) => Self::Internal,
            Some(2) => Self::Server,
            Some(3) => Self::Client,
            Some(4) => Self::Producer,
            Some(5) => Self::Consumer,
            _ => Self::Unspecified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line as the file exporter writes it, and the start of the next.
    const EXPORT: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"gateway"}}]},"scopeSpans":[{"scope":{},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"POST /graphql","kind":2,"attributes":[{"key":"http.status_code","value":{"intValue":"200"}},{"key":"ok","value":{"boolValue":true}},{"key":"ids","value":{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":"2"}]}}}],"status":{}},{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"aaa19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b174","name":"GetAccount","kind":3}]}]}]}
{"resourceSpans":[{"resou"#;

    #[test]
    fn spans_are_read_with_their_resource_service_and_text_attributes() {
        let spans = parse_spans(EXPORT);
        assert_eq!(spans.len(), 2, "{spans:?}");
        let root = &spans[0];
        assert!(root.is_root());
        assert_eq!(root.trace_id, "5b8efff798038103d269b633813fc60c");
        assert_eq!(root.name, "POST /graphql");
        assert_eq!(root.kind, SpanKind::Server);
        assert_eq!(root.service_name, "gateway");
        assert_eq!(root.attributes["http.status_code"], "200");
        assert_eq!(root.attributes["ok"], "true");
        assert_eq!(root.attributes["ids"], r#"["a",2]"#);
        let child = &spans[1];
        assert_eq!(child.parent_span_id, root.span_id);
        assert_eq!(child.kind, SpanKind::Client);
        assert!(child.attributes.is_empty());
    }

    #[test]
    fn an_unfinished_last_line_is_left_for_later() {
        assert!(parse_spans(r#"{"resourceSpans":[]"#).is_empty());
        assert!(parse_spans("").is_empty());
    }

    #[test]
    fn the_collector_listens_on_loopback_only_and_flushes_quickly() {
        let config = config_json(4317, 4318, Path::new("/tmp/x/spans.jsonl"));
        let protocols = &config["receivers"]["otlp"]["protocols"];
        assert_eq!(protocols["grpc"]["endpoint"], "127.0.0.1:4317");
        assert_eq!(protocols["http"]["endpoint"], "127.0.0.1:4318");
        assert_eq!(config["exporters"]["file"]["flush_interval"], "20ms");
        assert_eq!(config["service"]["telemetry"]["metrics"]["level"], "none");
    }
}
