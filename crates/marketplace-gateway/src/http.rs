//! The HTTP side: `/graphql` (POST, GET and websocket subscriptions),
//! `/playground`, `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::middleware::from_fn;
use actix_web::{HttpRequest, HttpResponse, web};
use async_graphql::http::parse_query_string;
use async_graphql::parser::types::OperationType;
use async_graphql::{BatchRequest, Data, Request};
use async_graphql_actix_web::GraphQLSubscription;
use futures::StreamExt as _;
use marketplace_telemetry::{Metrics, RequestContext};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::cache::ProductCache;
use crate::downstream::Downstream;
use crate::error::ErrorCode;
use crate::loaders::Loaders;
use crate::observe::{self, Connection};
use crate::schema::{Limits, MarketplaceSchema};

/// The playground page: one self-contained file, so that it works offline
/// and loads nothing from other hosts.
const PLAYGROUND: &str = include_str!("playground.html");

/// What every handler shares.
#[derive(Clone)]
pub struct State {
    pub schema: MarketplaceSchema,
    pub downstream: Downstream,
    pub cache: ProductCache,
    /// The process's metrics, which `/metrics` shows.
    pub metrics: Metrics,
    pub limits: HttpLimits,
    pub query_limits: Limits,
    /// Set on SIGTERM: not ready, and every answer closes its connection.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

impl State {
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl State {
    /// The loaders of one request (or websocket connection).
    fn loaders(&self) -> Loaders {
        Loaders::new(&self.downstream, &self.cache)
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("limits", &self.limits)
            .field("query_limits", &self.query_limits)
            .field("cache", &self.cache.is_on())
            .finish_non_exhaustive()
    }
}

/// Limits on the HTTP request itself, before any GraphQL runs.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request body, in bytes.
    pub body_bytes: usize,
    /// Most operations in one batched request.
    pub batch: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            body_bytes: 64 * 1024,
            batch: 10,
        }
    }
}

/// Adds the gateway's routes to an actix `App`.
pub fn configure(state: Arc<State>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config| {
        config
            .app_data(web::Data::from(state))
            .route("/", web::get().to(root))
            .route("/playground", web::get().to(playground))
            .service(
                web::resource("/graphql")
                    .wrap(from_fn(observe::http_request))
                    .route(web::post().to(graphql_post))
                    .route(web::get().to(graphql_get)),
            )
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics));
    }
}

async fn root() -> HttpResponse {
    HttpResponse::TemporaryRedirect()
        .insert_header((header::LOCATION, "/playground"))
        .finish()
}

async fn playground() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(PLAYGROUND)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok\n")
}

/// Ready when every service behind the gateway answers its health check,
/// and not shutting down.
async fn readyz(state: web::Data<State>) -> HttpResponse {
    if state.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .content_type(ContentType::plaintext())
            .body("shutting down\n");
    }
    let down = state.downstream.not_serving().await;
    if down.is_empty() {
        HttpResponse::Ok()
            .content_type(ContentType::plaintext())
            .body("ok\n")
    } else {
        let names: Vec<&str> = down.iter().map(|service| service.name()).collect();
        HttpResponse::ServiceUnavailable()
            .content_type(ContentType::plaintext())
            .body(format!("not serving: {}\n", names.join(", ")))
    }
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

async fn graphql_post(
    state: web::Data<State>,
    request: HttpRequest,
    mut body: web::Payload,
) -> HttpResponse {
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !json {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the GraphQL request as JSON with Content-Type: application/json".to_owned(),
        );
    }
    let limit = state.limits.body_bytes;
    let too_large = || {
        request_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    if request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|length| length > limit)
    {
        return too_large();
    }
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) if bytes.len() + chunk.len() <= limit => bytes.extend_from_slice(&chunk),
            Ok(_) => return too_large(),
            Err(error) => {
                return request_error(
                    StatusCode::BAD_REQUEST,
                    format!("the request body could not be read: {error}"),
                );
            }
        }
    }
    let batch: BatchRequest = match serde_json::from_slice(&bytes) {
        Ok(batch) => batch,
        Err(error) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                format!("the request body is not a GraphQL request in JSON: {error}"),
            );
        }
    };
    if let BatchRequest::Batch(requests) = &batch
        && requests.len() > state.limits.batch
    {
        return request_error(
            StatusCode::BAD_REQUEST,
            format!(
                "the batch has {} operations; at most {} are allowed",
                requests.len(),
                state.limits.batch
            ),
        );
    }
    execute(&state, batch).await
}

async fn graphql_get(
    state: web::Data<State>,
    request: HttpRequest,
    body: web::Payload,
) -> HttpResponse {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    if upgrade {
        let mut data = Data::default();
        data.insert(state.loaders());
        // The connection's operations run as part of the request that
        // opened it, long after its handler returned.
        if let Some(context) = RequestContext::current() {
            data.insert(Connection {
                context,
                span: tracing::Span::current(),
            });
        }
        return GraphQLSubscription::new(state.schema.clone())
            .with_data(data)
            .start(&request, body)
            .unwrap_or_else(|error| {
                request_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the websocket handshake failed ({error}); use the graphql-transport-ws or graphql-ws protocol"
                    ),
                )
            });
    }
    let mut graphql = match parse_query_string(request.query_string()) {
        Ok(graphql) => graphql,
        Err(error) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                format!("the query string is not a GraphQL request: {error}"),
            );
        }
    };
    // A GET request can be sent by a link or an image on another site, so
    // it must never change anything.
    if is_mutation(&mut graphql) {
        return request_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "mutations must be sent with POST".to_owned(),
        );
    }
    execute(&state, BatchRequest::Single(graphql)).await
}

/// Whether the operation the request selects is a mutation (a query that
/// does not parse is left for execution to report).
fn is_mutation(request: &mut Request) -> bool {
    let name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return false;
    };
    document
        .operations
        .iter()
        .any(|(operation_name, operation)| {
            let selected = match (&name, operation_name) {
                (Some(wanted), Some(found)) => wanted == found.as_str(),
                (None, _) => true,
                (Some(_), None) => false,
            };
            selected && operation.node.ty == OperationType::Mutation
        })
}

async fn execute(state: &State, batch: BatchRequest) -> HttpResponse {
    let operations = match &batch {
        BatchRequest::Single(_) => 1,
        BatchRequest::Batch(requests) => requests.len(),
    };
    // Loaders per request: their batches never mix requests.
    let batch = batch.data(state.loaders());
    // The operations give themselves their codes, are counted and name
    // the request's span (`observe::Observe`); a batch of several is
    // named as such.
    let response = state.schema.execute_batch(batch).await;
    if operations > 1 {
        tracing::Span::current()
            .context()
            .span()
            .update_name(format!("graphql batch of {operations}"));
    }
    HttpResponse::Ok().json(response)
}

/// A request refused before any GraphQL ran, in the GraphQL response shape
/// so that clients read it as they read every other error.
fn request_error(status: StatusCode, message: String) -> HttpResponse {
    tracing::info!(
        status = status.as_u16(),
        reason = %message,
        "GraphQL request refused before it ran"
    );
    let body = serde_json::json!({
        "errors": [{
            "message": message,
            "extensions": { "code": ErrorCode::BadUserInput.as_str() },
        }]
    });
    HttpResponse::build(status).json(body)
}
