//! A fresh Elasticsearch index name per test, deleted when the fixture is.
//!
//! The index is not created up front: the code under test usually creates
//! its index with its own mapping. [`TestIndex::create`] creates it when the
//! test wants that.

use elasticsearch::Elasticsearch;
use elasticsearch::http::transport::Transport;
use elasticsearch::indices::{IndicesCreateParts, IndicesDeleteParts, IndicesRefreshParts};
use serde_json::Value;

use crate::Backend;

/// An index name of this test's own, on the run's Elasticsearch node.
#[derive(Debug)]
pub struct TestIndex {
    name: String,
    url: String,
    client: Elasticsearch,
}

/// Reserves an index name; `None` when Elasticsearch is not configured.
pub async fn index() -> Option<TestIndex> {
    let url = Backend::Elasticsearch.locate()?;
    let name = crate::unique_name("test-");
    Some(TestIndex {
        client: client_for(&url),
        name,
        url,
    })
}

fn client_for(url: &str) -> Elasticsearch {
    let transport = Transport::single_node(url)
        .unwrap_or_else(|e| panic!("MARKETPLACE_TEST_ELASTICSEARCH_URL={url} is unusable: {e}"));
    Elasticsearch::new(transport)
}

impl TestIndex {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's base URL, as a service would be given.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn client(&self) -> &Elasticsearch {
        &self.client
    }

    /// Creates the index with `body` (settings and mappings).
    ///
    /// # Panics
    ///
    /// When Elasticsearch refuses.
    pub async fn create(&self, body: Value) {
        let response = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(&self.name))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating index {}: {e}", self.name));
        let status = response.status_code();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            panic!("creating index {}: {status}: {text}", self.name);
        }
    }

    /// Makes everything indexed so far visible to search.
    pub async fn refresh(&self) {
        let response = self
            .client
            .indices()
            .refresh(IndicesRefreshParts::Index(&[&self.name]))
            .send()
            .await
            .unwrap_or_else(|e| panic!("refreshing index {}: {e}", self.name));
        assert!(
            response.status_code().is_success(),
            "refreshing index {}: {}",
            self.name,
            response.status_code()
        );
    }
}

impl Drop for TestIndex {
    fn drop(&mut self) {
        let (name, url) = (self.name.clone(), self.url.clone());
        crate::block_on_cleanup(format!("index {name}"), async move {
            let client = client_for(&url);
            // Also whatever the code under test derived from the name
            // (versioned indices behind an alias, for example).
            let derived = format!("{name}-*");
            let response = client
                .indices()
                .delete(IndicesDeleteParts::Index(&[&name, &derived]))
                .ignore_unavailable(true)
                .allow_no_indices(true)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status_code();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("DELETE {name}: {status}"))
            }
        });
    }
}
