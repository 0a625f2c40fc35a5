//! Telemetry of every GraphQL request, as a layer rather than per
//! resolver:
//!
//! - [`http_request`], an actix middleware on `/graphql`: each request
//!   (and each websocket connection) runs in a `graphql` server span
//!   joined to the caller's W3C trace, as part of its [`RequestContext`]
//!   (the caller's `x-request-id`, or a new one), and its answer carries
//!   the request id.
//! - [`Observe`], an async-graphql extension: each operation gets its
//!   errors' codes ([`crate::error::finish`]), is counted in
//!   `graphql_requests_total` and `graphql_request_duration_seconds` by
//!   type and root fields, names the span (`query products`) and is
//!   logged once when it finishes.
//!
//! Operations that never run (the document does not parse, fails
//! validation or a limit, or names no operation it holds) are counted
//! with `operation="invalid"`; their `operation_type` is the selected
//! operation's type when the document parses, else `unknown`.

use std::collections::{BTreeSet, HashSet};
use std::future::Future as _;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
    NextSubscribe, NextValidation,
};
use async_graphql::futures_util::stream::BoxStream;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{
    Request, Response, ServerError, ServerResult, ValidationResult, Value, Variables,
};
use futures::{Stream, StreamExt as _};
use marketplace_telemetry::context::REQUEST_ID_HEADER;
use marketplace_telemetry::{Metrics, RequestContext};
use opentelemetry::trace::TraceContextExt as _;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::schema::Limits;

/// The component the gateway's requests are served as.
pub const COMPONENT: &str = "gateway";

/// The headers a caller's context travels in.
const CARRIED: [&str; 3] = [REQUEST_ID_HEADER, "traceparent", "tracestate"];

/// The request and span a websocket connection was opened in: its
/// operations run as part of them.
#[derive(Debug, Clone)]
pub struct Connection {
    pub context: RequestContext,
    pub span: tracing::Span,
}

/// Runs a request to `/graphql` in its span and [`RequestContext`], and
/// answers with its `x-request-id`.
pub async fn http_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let span = tracing::info_span!(
        "graphql",
        otel.name = %format!("{} {}", request.method(), request.path()),
        otel.kind = "server",
        http.request.method = %request.method(),
        request_id = tracing::field::Empty,
        graphql.operation.type = tracing::field::Empty,
        graphql.operation.name = tracing::field::Empty,
        graphql.root_fields = tracing::field::Empty,
        graphql.code = tracing::field::Empty,
    );
    let context = RequestContext::for_request(COMPONENT, &carried(&request), &span);
    span.record("request_id", &*context.request_id);
    let request_id = HeaderValue::from_str(&context.request_id).ok();
    let mut response = context.scope(next.call(request)).instrument(span).await?;
    if let Some(value) = request_id {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Ok(response)
}

/// The headers of `request` that carry the caller's context, as
/// [`RequestContext::for_request`] reads them.
fn carried(request: &ServiceRequest) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for name in CARRIED {
        if let Some(value) = request
            .headers()
            .get(name)
            .and_then(|value| http::HeaderValue::from_bytes(value.as_bytes()).ok())
        {
            headers.insert(name, value);
        }
    }
    headers
}

/// The extension that counts, names and logs every GraphQL operation.
#[derive(Debug, Clone)]
pub struct Observe {
    metrics: Metrics,
    limits: Limits,
}

impl Observe {
    pub fn new(metrics: Metrics, limits: Limits) -> Self {
        Self { metrics, limits }
    }
}

impl ExtensionFactory for Observe {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ObserveOperation {
            metrics: self.metrics.clone(),
            limits: self.limits,
            operation: Arc::default(),
        })
    }
}

/// What is known of one operation as it goes through the engine.
#[derive(Debug, Default)]
struct Operation {
    /// The operation name the client selected, if any.
    name: Option<String>,
    /// The selected operation's type, once the document parsed.
    kind: Option<OperationType>,
    /// Its root fields, sorted and without repeats, joined by commas.
    fields: Option<String>,
    /// The document did not parse or failed validation.
    invalid: bool,
}

impl Operation {
    /// The `operation_type` and `operation` labels.
    fn labels(&self) -> (&'static str, String) {
        let kind = self.kind.map_or("unknown", type_name);
        match &self.fields {
            Some(fields) if !self.invalid => (kind, fields.clone()),
            _ => (kind, "invalid".to_owned()),
        }
    }
}

fn type_name(kind: OperationType) -> &'static str {
    match kind {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

/// [`Observe`] for one operation.
struct ObserveOperation {
    metrics: Metrics,
    limits: Limits,
    operation: Arc<Mutex<Operation>>,
}

fn lock(operation: &Mutex<Operation>) -> std::sync::MutexGuard<'_, Operation> {
    // Plain values, each write whole: a panic elsewhere cannot leave them
    // half-written.
    operation.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_graphql::async_trait::async_trait]
impl Extension for ObserveOperation {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let mut response = next.run(ctx).await;
        crate::error::finish(&mut response.errors, &self.limits);
        let code = first_code(&response.errors).unwrap_or("OK").to_owned();
        let finished = Finished::new(&self.operation, code, started, None);
        finished.record(&self.metrics, &tracing::Span::current(), true);
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let connection = ctx.data_opt::<Connection>().cloned();
        Box::pin(ObservedStream {
            inner: next.run(ctx, stream),
            connection,
            limits: self.limits,
            metrics: self.metrics.clone(),
            operation: Arc::clone(&self.operation),
            code: None,
            started: Some(Instant::now()),
        })
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        lock(&self.operation).name = request.operation_name.clone();
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await;
        let mut operation = lock(&self.operation);
        match &document {
            Ok(document) => {
                if let Some(selected) = selected(document, operation.name.as_deref()) {
                    operation.kind = Some(selected.ty);
                    operation.fields = Some(root_fields(document, selected));
                }
            }
            Err(_) => operation.invalid = true,
        }
        document
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await;
        if result.is_err() {
            lock(&self.operation).invalid = true;
        }
        result
    }
}

/// The operation the engine will run: the one named, or the only one.
fn selected<'a>(
    document: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match (&document.operations, name) {
        (DocumentOperations::Single(operation), None) => Some(&operation.node),
        (DocumentOperations::Single(_), Some(_)) => None,
        (DocumentOperations::Multiple(operations), Some(name)) => {
            operations.get(name).map(|operation| &operation.node)
        }
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next().map(|operation| &operation.node)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// The names (not aliases) of the fields `operation` selects at its root,
/// through fragments, sorted and without repeats: `accounts,products`.
/// After validation these are fields of the schema's root types, so the
/// label's values are bounded by the schema.
fn root_fields(document: &ExecutableDocument, operation: &OperationDefinition) -> String {
    fn collect<'a>(
        set: &'a SelectionSet,
        document: &'a ExecutableDocument,
        spread: &mut HashSet<&'a str>,
        names: &mut BTreeSet<&'a str>,
    ) {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    names.insert(field.node.name.node.as_str());
                }
                Selection::InlineFragment(fragment) => {
                    collect(&fragment.node.selection_set.node, document, spread, names);
                }
                Selection::FragmentSpread(fragment) => {
                    let name = fragment.node.fragment_name.node.as_str();
                    // A fragment is expanded once, so a cycle (which
                    // validation refuses later) cannot loop here.
                    if spread.insert(name)
                        && let Some(definition) = document.fragments.get(name)
                    {
                        collect(&definition.node.selection_set.node, document, spread, names);
                    }
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    collect(
        &operation.selection_set.node,
        document,
        &mut HashSet::new(),
        &mut names,
    );
    names.into_iter().collect::<Vec<_>>().join(",")
}

/// The `extensions.code` of the first error.
fn first_code(errors: &[ServerError]) -> Option<&str> {
    let error = errors.first()?;
    match error.extensions.as_ref()?.get("code")? {
        Value::String(code) => Some(code.as_str()),
        _ => None,
    }
}

/// An operation that finished, ready to be counted and logged.
struct Finished {
    operation: (&'static str, String),
    name: Option<String>,
    /// Named on the log line when it is written outside the request.
    request_id: Option<Arc<str>>,
    code: String,
    started: Instant,
}

impl Finished {
    fn new(
        operation: &Mutex<Operation>,
        code: String,
        started: Instant,
        request_id: Option<Arc<str>>,
    ) -> Self {
        let operation = lock(operation);
        Self {
            operation: operation.labels(),
            name: operation.name.clone(),
            request_id,
            code,
            started,
        }
    }

    /// Counts the operation, logs it and, when `rename`, names `span`
    /// after it.
    fn record(self, metrics: &Metrics, span: &tracing::Span, rename: bool) {
        let elapsed = self.started.elapsed();
        let (kind, operation) = &self.operation;
        metrics.observe_graphql(kind, operation, &self.code, elapsed);
        if rename {
            if operation != "invalid" {
                // The span was started when the request began (to read its
                // trace id), so its OpenTelemetry name is set directly.
                span.context()
                    .span()
                    .update_name(format!("{kind} {operation}"));
            }
            span.record("graphql.operation.type", *kind);
            span.record("graphql.root_fields", operation.as_str());
            span.record("graphql.code", self.code.as_str());
            if let Some(name) = &self.name {
                span.record("graphql.operation.name", name.as_str());
            }
        }
        tracing::info!(
            operation_type = kind,
            operation = %operation,
            operation_name = self.name.as_deref(),
            request_id = self.request_id.as_deref(),
            code = %self.code,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "GraphQL {kind} {operation} answered"
        );
    }
}

/// The responses of an operation sent over a websocket (a subscription,
/// or a query or mutation on that transport): polled as part of the
/// connection's request and span, their errors given codes, and the
/// operation counted and logged when the stream ends or is dropped (the
/// client unsubscribed or left), with the first error's code.
struct ObservedStream<'s> {
    inner: BoxStream<'s, Response>,
    connection: Option<Connection>,
    limits: Limits,
    metrics: Metrics,
    operation: Arc<Mutex<Operation>>,
    code: Option<String>,
    /// `None` once counted.
    started: Option<Instant>,
}

impl ObservedStream<'_> {
    /// Counts and logs the operation, once; `request_id` names it on the
    /// log line when that is written outside the request's context.
    fn finish(&mut self, request_id: Option<Arc<str>>) {
        if let Some(started) = self.started.take() {
            let code = self.code.take().unwrap_or_else(|| "OK".to_owned());
            let finished = Finished::new(&self.operation, code, started, request_id);
            finished.record(&self.metrics, &tracing::Span::current(), false);
        }
    }

    fn poll_observed(&mut self, cx: &mut Context<'_>) -> Poll<Option<Response>> {
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(mut response)) => {
                crate::error::finish(&mut response.errors, &self.limits);
                if self.code.is_none() {
                    self.code = first_code(&response.errors).map(str::to_owned);
                }
                Poll::Ready(Some(response))
            }
            Poll::Ready(None) => {
                self.finish(None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Stream for ObservedStream<'_> {
    type Item = Response;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(connection) = this.connection.clone() else {
            return this.poll_observed(cx);
        };
        // The websocket's messages are handled outside the request that
        // opened it, so each poll re-enters its span and context: the
        // calls the resolvers make carry its request id and trace.
        let _entered = connection.span.enter();
        let scoped = connection
            .context
            .scope(std::future::poll_fn(|cx| this.poll_observed(cx)));
        pin!(scoped).poll(cx)
    }
}

impl Drop for ObservedStream<'_> {
    /// The client unsubscribed or left before the stream ended.
    fn drop(&mut self) {
        let connection = self.connection.clone();
        let _entered = connection.as_ref().map(|c| c.span.enter());
        self.finish(
            connection
                .as_ref()
                .map(|c| Arc::clone(&c.context.request_id)),
        );
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    fn fields(query: &str, name: Option<&str>) -> Option<(OperationType, String)> {
        let document = parse_query(query).unwrap();
        selected(&document, name).map(|operation| (operation.ty, root_fields(&document, operation)))
    }

    #[test]
    fn the_operation_is_its_sorted_distinct_root_fields_through_fragments() {
        assert_eq!(
            fields(
                "{ products { id } a: accounts { id } b: accounts { name } __typename }",
                None
            ),
            Some((
                OperationType::Query,
                "__typename,accounts,products".to_owned()
            ))
        );
        assert_eq!(
            fields(
                "query Q { ...F ... on Query { order(id: \"x\") { id } } } fragment F on Query { products { id } ...F }",
                None
            ),
            Some((OperationType::Query, "order,products".to_owned()))
        );
        assert_eq!(
            fields(
                "query A { accounts { id } } mutation B { createOrder(order: {accountId: \"a\", products: []}) { id } }",
                Some("B")
            ),
            Some((OperationType::Mutation, "createOrder".to_owned()))
        );
    }

    #[test]
    fn no_operation_is_selected_when_the_name_matches_none_or_is_missing_among_several() {
        assert_eq!(fields("query A { products { id } }", Some("B")), None);
        assert_eq!(fields("{ products { id } }", Some("B")), None);
        assert_eq!(
            fields(
                "query A { products { id } } query B { accounts { id } }",
                None
            ),
            None
        );
    }

    async fn observed(schema_query: &str) -> String {
        let metrics = Metrics::new();
        let schema = crate::schema::builder()
            .extension(Observe::new(metrics.clone(), Limits::default()))
            .finish();
        let _ = schema.execute(schema_query).await;
        metrics.render()
    }

    #[tokio::test]
    async fn an_operation_is_counted_by_type_root_fields_and_code() {
        let text = observed("{ __typename }").await;
        assert!(
            text.contains(
                r#"graphql_requests_total{code="OK",operation="__typename",operation_type="query"} 1"#
            ),
            "{text}"
        );

        // The schema has no clients here: the resolver fails with INTERNAL.
        let text = observed("{ products { id } }").await;
        assert!(
            text.contains(
                r#"graphql_requests_total{code="INTERNAL",operation="products",operation_type="query"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_request_that_never_runs_is_counted_as_invalid_with_bad_user_input() {
        for (query, kind) in [
            ("{ products { id }", "unknown"),
            ("{ nonsense }", "query"),
            ("mutation { nonsense }", "mutation"),
        ] {
            let text = observed(query).await;
            let line = format!(
                r#"graphql_requests_total{{code="BAD_USER_INPUT",operation="invalid",operation_type="{kind}"}} 1"#
            );
            assert!(text.contains(&line), "{query}: {line} in\n{text}");
        }
    }
}
