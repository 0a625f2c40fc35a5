//! Products in an Elasticsearch 7 index.
//!
//! User text reaches Elasticsearch only as JSON string values built with
//! `serde_json`, and only inside a `multi_match` query, which analyses it
//! into words: never `query_string`, whose syntax a user could speak.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use chrono::{DateTime, SecondsFormat, Utc};
use elasticsearch::auth::Credentials;
use elasticsearch::cluster::ClusterHealthParts;
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{StatusCode, Url};
use elasticsearch::indices::{IndicesCreateParts, IndicesGetMappingParts};
use elasticsearch::params::{OpType, Refresh, WaitForStatus};
use elasticsearch::{Elasticsearch, GetParts, IndexParts, MgetParts, SearchParts};
use marketplace_config::SecretUrl;
use marketplace_domain::Id;
use serde_json::{Value, json};

use super::{ProductStore, StorageError, distinct, product_from_fields};
use crate::domain::{Product, ResultWindow, SearchText};

/// Longest wait for any one request while serving. Under the callers' 5 s
/// deadline, so a hung Elasticsearch reaches them as `UNAVAILABLE` rather
/// than `DEADLINE_EXCEEDED`; `refresh=wait_for` on create waits at most for
/// the next refresh (every second by default), well within it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// Longest wait for a start-up request: creating the index and waiting up
/// to 30 s (server side) for its primary shard. Nobody is waiting on a
/// deadline yet.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(40);

/// The fields reads depend on, with the type they need: sorting (`id`,
/// `created_at` to the nanosecond), reading the exact price, searching
/// words. `price` is only written, so the seed's `float` may stay.
const REQUIRED_FIELDS: [(&str, &str); 5] = [
    ("id", "keyword"),
    ("name", "text"),
    ("description", "text"),
    ("price_minor_units", "long"),
    ("created_at", "date_nanos"),
];

/// The product index in one Elasticsearch cluster.
#[derive(Debug, Clone)]
pub struct ElasticsearchProducts {
    client: Elasticsearch,
    index: String,
}

impl ElasticsearchProducts {
    /// The index settings and mappings created at start-up.
    pub fn mapping() -> Value {
        product_mapping()
    }

    /// The `_search` body behind [`ProductStore::list`].
    pub fn list_request(window: ResultWindow) -> Value {
        list_body(window)
    }

    /// The `_search` body behind [`ProductStore::search`] for a text that
    /// is not blank.
    pub fn search_request(text: &SearchText, window: ResultWindow) -> Value {
        search_body(text, window)
    }
}

/// The product mapping: the seed's fields, plus the exact price.
///
/// Money stays exact: `price_minor_units` (a `long`) holds the amount that
/// is read back. `price`, the seed's field in major units for range queries
/// and sorting, is a `double`: every amount up to the 100-billion maximum is
/// a distinct double that reads back as the same cents (a `float` would
/// store 19.99 as 19.9899997711). A `scaled_float` with a scaling factor of
/// 100 would store whole cents, but it lives in the `mapper-extras` module,
/// which minimal Elasticsearch distributions (the integration-test one the
/// tests run) do not have.
///
/// `created_at` is a `date_nanos`, not a millisecond `date`: products
/// created within one millisecond still list newest first, exactly as the
/// embedded backend orders them by microsecond.
fn product_mapping() -> Value {
    json!({
        "mappings": {
            "properties": {
                "id": { "type": "keyword" },
                "name": { "type": "text" },
                "description": { "type": "text" },
                "price": { "type": "double" },
                "price_minor_units": { "type": "long" },
                "created_at": { "type": "date_nanos" }
            }
        }
    })
}

/// The request body listing products newest first.
fn list_body(window: ResultWindow) -> Value {
    json!({
        "from": window.skip(),
        "size": window.take(),
        "track_total_hits": false,
        "query": { "match_all": {} },
        "sort": [
            { "created_at": { "order": "desc" } },
            { "id": { "order": "desc" } }
        ]
    })
}

/// The request body searching for `text` as words: a name match counts
/// double, the better of the two fields ranks the product, and ties are
/// newest first so that pages are stable.
fn search_body(text: &SearchText, window: ResultWindow) -> Value {
    json!({
        "from": window.skip(),
        "size": window.take(),
        "track_total_hits": false,
        "query": {
            "multi_match": {
                "query": text.as_str(),
                "fields": ["name^2", "description"],
                "type": "best_fields"
            }
        },
        "sort": [
            { "_score": { "order": "desc" } },
            { "created_at": { "order": "desc" } },
            { "id": { "order": "desc" } }
        ]
    })
}

impl ElasticsearchProducts {
    /// Connects to the cluster at `url` and creates the product index
    /// `index_name` unless it exists. Safe to run from several replicas at
    /// once: the index is created, and "already exists" counts as success.
    /// An existing index whose mapping reads cannot use (one the seed
    /// created, say) is [`StorageError::IncompatibleIndex`].
    pub async fn connect(url: &SecretUrl, index_name: &str) -> Result<Self, StorageError> {
        let store = Self::new(url, index_name)?;
        store.start().await?;
        Ok(store)
    }

    /// The cluster at `url` and the product index `index_name`, not yet
    /// contacted: only a malformed URL fails here.
    pub fn new(url: &SecretUrl, index_name: &str) -> Result<Self, StorageError> {
        Ok(Self {
            client: client(url)?,
            index: index_name.to_owned(),
        })
    }

    /// Creates the product index unless it exists, and checks that its
    /// mapping is one reads can use: what [`ElasticsearchProducts::connect`]
    /// does after connecting.
    pub async fn start(&self) -> Result<(), StorageError> {
        self.create_index_if_absent().await?;
        self.check_mapping().await
    }

    /// Whether the cluster answers, within `timeout`.
    pub(super) async fn check(&self, timeout: Duration) -> Result<(), StorageError> {
        let response = self.client.ping().request_timeout(timeout).send().await;
        let response = response
            .map_err(|e| StorageError::Unavailable(anyhow!(e).context("ping: no answer")))?;
        let status = response.status_code();
        if status.is_success() {
            Ok(())
        } else {
            Err(StorageError::Unavailable(anyhow!("ping: {status}")))
        }
    }

    pub fn index_name(&self) -> &str {
        &self.index
    }

    async fn create_index_if_absent(&self) -> Result<(), StorageError> {
        let response = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(&self.index))
            .body(product_mapping())
            .request_timeout(STARTUP_TIMEOUT)
            .send()
            .await;
        let (status, body) = read(response, "creating the product index").await?;
        let already_exists = body["error"]["type"] == "resource_already_exists_exception";
        if !status.is_success() && !already_exists {
            return Err(refused("creating the product index", status, &body));
        }
        // Another replica may have created the index a moment ago; wait
        // until its primary shard can take writes.
        let response = self
            .client
            .cluster()
            .health(ClusterHealthParts::Index(&[&self.index]))
            .wait_for_status(WaitForStatus::Yellow)
            .timeout("30s")
            .request_timeout(STARTUP_TIMEOUT)
            .send()
            .await;
        let (status, body) = read(response, "waiting for the product index").await?;
        if !status.is_success() || body["timed_out"] == true {
            return Err(StorageError::Unavailable(anyhow!(
                "the product index {} did not become ready: {status} {body}",
                self.index
            )));
        }
        Ok(())
    }

    /// Refuses an index whose mapping lacks a field reads need, or gives
    /// it another type: otherwise every read would fail later.
    async fn check_mapping(&self) -> Result<(), StorageError> {
        let response = self
            .client
            .indices()
            .get_mapping(IndicesGetMappingParts::Index(&[&self.index]))
            .request_timeout(STARTUP_TIMEOUT)
            .send()
            .await;
        let (status, body) = read(response, "reading the product index mapping").await?;
        if !status.is_success() {
            return Err(refused("reading the product index mapping", status, &body));
        }
        // Keyed by the concrete index, which differs when the name is an alias.
        let indices = body.as_object().filter(|indices| indices.len() == 1);
        let Some(properties) = indices
            .and_then(|indices| indices.values().next())
            .map(|index| &index["mappings"]["properties"])
        else {
            return Err(StorageError::IncompatibleIndex(format!(
                "{} does not name exactly one Elasticsearch index; set {} to the name of one index",
                self.index,
                marketplace_config::env::CATALOG_INDEX_NAME
            )));
        };
        let problems: Vec<String> = REQUIRED_FIELDS
            .iter()
            .filter_map(|(field, wanted)| match properties[field]["type"].as_str() {
                Some(found) if found == *wanted => None,
                Some(found) => Some(format!("{field} is a {found}, not a {wanted}")),
                None => Some(format!("{field} ({wanted}) is missing")),
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(StorageError::IncompatibleIndex(format!(
            "the Elasticsearch index {index} exists with a mapping the catalog cannot read \
             ({problems}); set {variable} to a new index name, which the catalog creates \
             with its own mapping, or reindex {index} into an index created with that mapping",
            index = self.index,
            problems = problems.join(", "),
            variable = marketplace_config::env::CATALOG_INDEX_NAME,
        )))
    }

    async fn hits(&self, body: Value, what: &str) -> Result<Vec<Product>, StorageError> {
        let response = self
            .client
            .search(SearchParts::Index(&[&self.index]))
            .body(body)
            .send()
            .await;
        let (status, body) = read(response, what).await?;
        if !status.is_success() {
            return Err(refused(what, status, &body));
        }
        let hits = body["hits"]["hits"]
            .as_array()
            .ok_or_else(|| StorageError::Unexpected(anyhow!("{what}: no hits in the answer")))?;
        hits.iter()
            .map(|hit| from_source(&hit["_source"]))
            .collect()
    }
}

impl ProductStore for ElasticsearchProducts {
    async fn create(&self, product: &Product) -> Result<(), StorageError> {
        let document = json!({
            "id": product.id.as_str(),
            "name": product.name.as_str(),
            "description": product.description.as_str(),
            "price": product.price.to_f64(),
            "price_minor_units": product.price.minor_units(),
            "created_at": product.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        });
        let response = self
            .client
            .index(IndexParts::IndexId(&self.index, product.id.as_str()))
            .op_type(OpType::Create)
            // Read-your-writes: a user who creates a product and then
            // searches for it finds it.
            .refresh(Refresh::WaitFor)
            .body(document)
            .send()
            .await;
        let (status, body) = read(response, "storing a product").await?;
        if !status.is_success() {
            return Err(refused("storing a product", status, &body));
        }
        Ok(())
    }

    async fn get(&self, id: &Id) -> Result<Option<Product>, StorageError> {
        let response = self
            .client
            .get(GetParts::IndexId(&self.index, id.as_str()))
            .send()
            .await;
        let (status, body) = read(response, "reading a product").await?;
        match body["found"].as_bool() {
            Some(true) => from_source(&body["_source"]).map(Some),
            // A 404 without `found` is a missing index, not a missing product.
            Some(false) if status == StatusCode::NOT_FOUND => Ok(None),
            _ => Err(refused("reading a product", status, &body)),
        }
    }

    async fn get_many(&self, ids: &[Id]) -> Result<Vec<Product>, StorageError> {
        let ids: Vec<&str> = distinct(ids).into_iter().map(Id::as_str).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let response = self
            .client
            .mget(MgetParts::Index(&self.index))
            .body(json!({ "ids": ids }))
            .send()
            .await;
        let (status, body) = read(response, "reading products").await?;
        if !status.is_success() {
            return Err(refused("reading products", status, &body));
        }
        let docs = body["docs"]
            .as_array()
            .ok_or_else(|| StorageError::Unexpected(anyhow!("reading products: no docs")))?;
        docs.iter()
            .filter_map(|doc| match doc["found"].as_bool() {
                Some(true) => Some(from_source(&doc["_source"])),
                Some(false) => None,
                None => Some(Err(refused("reading products", status, doc))),
            })
            .collect()
    }

    async fn list(&self, window: ResultWindow) -> Result<Vec<Product>, StorageError> {
        self.hits(list_body(window), "listing products").await
    }

    async fn search(
        &self,
        text: &SearchText,
        window: ResultWindow,
    ) -> Result<Vec<Product>, StorageError> {
        if text.is_blank() {
            return self.list(window).await;
        }
        self.hits(search_body(text, window), "searching products")
            .await
    }
}

/// A client for the node at `url`; a user and password in the URL become
/// basic authentication, and never part of the request URL.
fn client(url: &SecretUrl) -> Result<Elasticsearch, StorageError> {
    let invalid = || {
        StorageError::InvalidUrl(format!(
            "{} is not a valid Elasticsearch URL (expected http://host:9200)",
            marketplace_config::env::CATALOG_SEARCH_URL
        ))
    };
    let mut url = Url::parse(url.expose()).map_err(|_| invalid())?;
    let credentials = (!url.username().is_empty()).then(|| {
        Credentials::Basic(
            url.username().to_owned(),
            url.password().unwrap_or_default().to_owned(),
        )
    });
    url.set_username("").map_err(|()| invalid())?;
    url.set_password(None).map_err(|()| invalid())?;
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .timeout(REQUEST_TIMEOUT)
        .disable_proxy();
    if let Some(credentials) = credentials {
        builder = builder.auth(credentials);
    }
    let transport = builder
        .build()
        .map_err(|e| StorageError::Unexpected(anyhow!(e).context("building the client")))?;
    Ok(Elasticsearch::new(transport))
}

/// The status and JSON body of an answer. No answer at all (connection
/// refused, timeout, reset) means Elasticsearch is unavailable.
async fn read(
    response: Result<Response, elasticsearch::Error>,
    what: &str,
) -> Result<(StatusCode, Value), StorageError> {
    let response = response
        .map_err(|e| StorageError::Unavailable(anyhow!(e).context(format!("{what}: no answer"))))?;
    let status = response.status_code();
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    ) {
        return Err(StorageError::Unavailable(anyhow!("{what}: {status}")));
    }
    let body = response.json::<Value>().await.map_err(|e| {
        let not_json = e.is_json();
        let error = anyhow!(e).context(format!("{what}: reading the answer ({status})"));
        if not_json {
            StorageError::Unexpected(error)
        } else {
            StorageError::Unavailable(error)
        }
    })?;
    Ok((status, body))
}

/// An answer that refuses the request. The body goes to the log through
/// the error chain, never to a client.
fn refused(what: &str, status: StatusCode, body: &Value) -> StorageError {
    StorageError::Unexpected(anyhow!("{what}: Elasticsearch answered {status}: {body}"))
}

fn from_source(source: &Value) -> Result<Product, StorageError> {
    let field = |name: &str| {
        source[name].as_str().ok_or_else(|| {
            StorageError::Unexpected(anyhow!("a stored product has no text field {name:?}"))
        })
    };
    let price = source["price_minor_units"].as_i64().ok_or_else(|| {
        StorageError::Unexpected(anyhow!("a stored product has no price_minor_units"))
    })?;
    let created_at = DateTime::parse_from_rfc3339(field("created_at")?)
        .context("a stored product's created_at is not RFC 3339")
        .map_err(StorageError::Unexpected)?
        .with_timezone(&Utc);
    product_from_fields(
        field("id")?,
        field("name")?,
        field("description")?,
        price,
        created_at,
    )
}
