//! The HTTP side: `/graphql` (POST, GET and websocket subscriptions),
//! `/playground`, `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, web};
use async_graphql::http::parse_query_string;
use async_graphql::parser::types::OperationType;
use async_graphql::{BatchRequest, BatchResponse, Data, Request, ServerError, Value};
use async_graphql_actix_web::GraphQLSubscription;
use futures::StreamExt as _;

use crate::downstream::Downstream;
use crate::error::ErrorCode;
use crate::loaders::Loaders;
use crate::schema::{Limits, MarketplaceSchema};

/// The playground page: one self-contained file, so that it works offline
/// and loads nothing from other hosts.
const PLAYGROUND: &str = include_str!("playground.html");

/// What every handler shares.
#[derive(Clone)]
pub struct State {
    pub schema: MarketplaceSchema,
    pub downstream: Downstream,
    pub limits: HttpLimits,
    pub query_limits: Limits,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("limits", &self.limits)
            .field("query_limits", &self.query_limits)
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
            .route("/graphql", web::post().to(graphql_post))
            .route("/graphql", web::get().to(graphql_get))
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

/// Ready when every service behind the gateway answers its health check.
async fn readyz(state: web::Data<State>) -> HttpResponse {
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
        .body(state.downstream.metrics().render())
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
        data.insert(Loaders::new(&state.downstream));
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
    // Loaders per request: their caches and batches never mix requests.
    let batch = batch.data(Loaders::new(&state.downstream));
    let mut response = state.schema.execute_batch(batch).await;
    match &mut response {
        BatchResponse::Single(response) => finish_errors(&mut response.errors, &state.query_limits),
        BatchResponse::Batch(responses) => {
            for response in responses {
                finish_errors(&mut response.errors, &state.query_limits);
            }
        }
    }
    HttpResponse::Ok().json(response)
}

/// Gives every error an `extensions.code`: errors without a path are about
/// the request itself (it does not parse, names an unknown field, exceeds a
/// limit) and so BAD_USER_INPUT; the resolvers set their own codes, and one
/// that did not is a defect, reported as INTERNAL. The limits' own messages
/// are replaced by ones that say what the limit is.
fn finish_errors(errors: &mut [ServerError], limits: &Limits) {
    for error in errors {
        if error.message == "Query is nested too deep." {
            error.message = format!(
                "the query is nested too deep: at most {} levels of selections are allowed",
                limits.depth
            );
        } else if error.message == "Query is too complex." {
            error.message = format!(
                "the query is too complex: its estimated cost is over the limit of {}; \
                 ask for fewer items with take, or fewer nested lists",
                limits.complexity
            );
        }
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|extensions| extensions.get("code").is_some());
        if !has_code {
            let code = if error.path.is_empty() {
                ErrorCode::BadUserInput
            } else {
                tracing::error!(message = %error.message, path = ?error.path, "an error without a code");
                error.message = "internal error; the cause is logged on the gateway".to_owned();
                ErrorCode::Internal
            };
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", Value::String(code.as_str().to_owned()));
        }
    }
}

/// A request refused before any GraphQL ran, in the GraphQL response shape
/// so that clients read it as they read every other error.
fn request_error(status: StatusCode, message: String) -> HttpResponse {
    let body = serde_json::json!({
        "errors": [{
            "message": message,
            "extensions": { "code": ErrorCode::BadUserInput.as_str() },
        }]
    });
    HttpResponse::build(status).json(body)
}
