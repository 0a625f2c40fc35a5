//! Proves the OpenTelemetry Collector fixture is a real collector: a span
//! exported to it over OTLP/HTTP comes back through `spans()`.

// Test code: a failed unwrap is a failed test, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use marketplace_testkit::otel::SpanKind;
use serde_json::json;

/// POSTs `body` as JSON to `url` (`http://host:port/path`); the status code.
fn post_json(url: &str, body: &serde_json::Value) -> u16 {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (address, path) = rest.split_once('/').expect("a URL with a path");
    let body = body.to_string();
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /{path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).expect("a status line");
    status.parse().unwrap()
}

#[tokio::test]
async fn a_span_exported_over_otlp_http_is_read_back_with_its_service_and_attributes() {
    let Some(collector) = marketplace_testkit::otel::collector().await else {
        return;
    };
    let trace_id = "5b8efff798038103d269b633813fc60c";
    let request = json!({
        "resourceSpans": [{
            "resource": { "attributes": [
                { "key": "service.name", "value": { "stringValue": "marketplace-gateway" } }
            ] },
            "scopeSpans": [{
                "scope": { "name": "testkit" },
                "spans": [
                    {
                        "traceId": trace_id,
                        "spanId": "eee19b7ec3c1b174",
                        "name": "POST /graphql",
                        "kind": 2,
                        "startTimeUnixNano": "1700000000000000000",
                        "endTimeUnixNano": "1700000000100000000",
                        "attributes": [
                            { "key": "http.response.status_code", "value": { "intValue": "200" } },
                            { "key": "graphql.operation.name", "value": { "stringValue": "Products" } }
                        ]
                    },
                    {
                        "traceId": trace_id,
                        "spanId": "0102030405060708",
                        "parentSpanId": "eee19b7ec3c1b174",
                        "name": "marketplace.catalog.v1.CatalogService/ListProducts",
                        "kind": 3,
                        "startTimeUnixNano": "1700000000010000000",
                        "endTimeUnixNano": "1700000000090000000"
                    }
                ]
            }]
        }]
    });

    let url = collector.http_traces_url();
    let status = tokio::task::spawn_blocking(move || post_json(&url, &request))
        .await
        .unwrap();
    let spans = marketplace_testkit::eventually(
        "the collector to write both spans",
        Duration::from_secs(10),
        || {
            let spans = collector.spans();
            async move { (spans.len() >= 2).then_some(spans) }
        },
    )
    .await;

    assert_eq!(status, 200);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let (root, child) = (&spans[0], &spans[1]);
    assert!(root.is_root(), "{root:?}");
    assert_eq!(root.trace_id, trace_id);
    assert_eq!(root.span_id, "eee19b7ec3c1b174");
    assert_eq!(root.name, "POST /graphql");
    assert_eq!(root.kind, SpanKind::Server);
    assert_eq!(root.service_name, "marketplace-gateway");
    assert_eq!(root.attributes["http.response.status_code"], "200");
    assert_eq!(root.attributes["graphql.operation.name"], "Products");
    assert_eq!(child.trace_id, trace_id);
    assert_eq!(child.parent_span_id, root.span_id);
    assert_eq!(child.kind, SpanKind::Client);
    let grpc = collector.grpc_endpoint();
    let grpc_address = grpc.strip_prefix("http://").unwrap();
    assert!(grpc_address.starts_with("127.0.0.1:"), "{grpc}");
    assert!(
        TcpStream::connect(grpc_address).is_ok(),
        "nothing listens on {grpc}"
    );
    assert_ne!(grpc, collector.http_endpoint());
}

#[tokio::test]
async fn each_test_gets_a_collector_of_its_own() {
    let Some(first) = marketplace_testkit::otel::collector().await else {
        return;
    };
    let Some(second) = marketplace_testkit::otel::collector().await else {
        return;
    };

    assert_ne!(first.grpc_endpoint(), second.grpc_endpoint());
    assert_ne!(first.http_endpoint(), second.http_endpoint());
    assert!(first.spans().is_empty());
    assert!(second.spans().is_empty());
}
