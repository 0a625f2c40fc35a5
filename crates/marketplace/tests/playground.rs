//! The GraphQL playground in a real browser: headless Chromium opens the
//! page a user is sent to, runs what is typed into its editor, and shows
//! the answer, or the errors with their codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Graphql, Served, embedded};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use marketplace_testkit::browser::{self, WebDriver};
use serde_json::{Value, json};

const TITLE: &str = "Marketplace GraphQL playground";
/// How long the page may take to show an answer after Run.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A marketplace on embedded storage, and a browser session that has
/// opened its root URL.
struct Playground {
    // Fields drop in this order: the session ends before its chromedriver,
    // and the marketplace stops before its data directory goes.
    client: Client,
    _webdriver: WebDriver,
    _served: Served,
    _data: tempfile::TempDir,
}

impl Playground {
    /// `None` under plain `cargo test` without a browser (the fixture says
    /// why); `seed` runs against the GraphQL API before the page is opened.
    async fn open(seed: impl FnOnce(&Graphql)) -> Option<Self> {
        let webdriver = browser::webdriver().await?;
        let data = tempfile::tempdir().unwrap();
        let served = embedded(&data.path().join("data"), &[]);
        let graphql = Graphql::new(&served.address);
        seed(&graphql);

        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(webdriver.capabilities());
        let client = builder
            .connect(&webdriver.url())
            .await
            .unwrap_or_else(|e| panic!("starting a Chromium session: {e}"));
        client.goto(&format!("{}/", graphql.base)).await.unwrap();
        Some(Self {
            client,
            _webdriver: webdriver,
            _served: served,
            _data: data,
        })
    }

    /// Replaces the query in the editor with `query`, typed, and presses Run.
    async fn run(&self, query: &str) {
        let editor = self.client.find(Locator::Id("query")).await.unwrap();
        editor.clear().await.unwrap();
        editor.send_keys(query).await.unwrap();
        let typed = editor.prop("value").await.unwrap();
        assert_eq!(
            typed.as_deref(),
            Some(query),
            "the editor holds what was typed"
        );
        let run = self.client.find(Locator::Id("run")).await.unwrap();
        run.click().await.unwrap();
    }

    /// The text the page shows in the element with this id.
    async fn text(&self, id: &str) -> String {
        let element = self.client.find(Locator::Id(id)).await.unwrap();
        element.text().await.unwrap()
    }

    /// Saves what the browser shows under the target directory.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
        path
    }

    /// Ends the browser session; the rest stops when the fields drop.
    async fn close(self) {
        let Self { client, .. } = self;
        client.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_query_run_in_the_playground_shows_its_answer_on_the_page() {
    let mut created = Value::Null;
    let Some(playground) = Playground::open(|graphql| {
        created = graphql.data(
            "mutation($product: ProductInput!) { createProduct(product: $product) { id name price } }",
            json!({ "product": {
                "name": "Analytical engine",
                "description": "A general-purpose mechanical computer",
                "price": 1843.99,
            }}),
        )["createProduct"]
            .clone();
    })
    .await
    else {
        return;
    };
    let url = playground.client.current_url().await.unwrap();
    assert_eq!(
        url.path(),
        "/playground",
        "the root URL leads to the playground"
    );
    assert_eq!(playground.client.title().await.unwrap(), TITLE);
    let heading = playground.client.find(Locator::Css("header h1")).await;
    assert_eq!(heading.unwrap().text().await.unwrap(), TITLE);

    playground
        .run(r#"{ products(query: "engine") { id name price } }"#)
        .await;

    let page = &playground;
    let answer = marketplace_testkit::eventually(
        "the answer as JSON in #result",
        ANSWER_TIMEOUT,
        || async move {
            let answer: Value = serde_json::from_str(&page.text("result").await).ok()?;
            answer["data"]["products"].is_array().then_some(answer)
        },
    )
    .await;
    assert_eq!(
        answer,
        json!({ "data": { "products": [{
            "id": created["id"],
            "name": "Analytical engine",
            "price": 1843.99,
        }]}}),
    );
    let status = playground.text("status").await;
    assert!(status.starts_with("HTTP 200"), "{status}");
    let errors = playground.client.find(Locator::Id("errors")).await.unwrap();
    assert!(!errors.is_displayed().await.unwrap(), "no errors are shown");
    let screenshot = playground.screenshot("playground.png").await;
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 0);
    playground.close().await;
}

#[tokio::test]
async fn a_bad_argument_run_in_the_playground_shows_its_error_code_on_the_page() {
    let Some(playground) = Playground::open(|_| {}).await else {
        return;
    };

    playground
        .run("{ products(pagination: {take: 1000}) { id } }")
        .await;

    let badge = playground
        .client
        .wait()
        .at_most(ANSWER_TIMEOUT)
        .for_element(Locator::Css("#errors li .badge"))
        .await
        .unwrap_or_else(|e| panic!("no error appeared in #errors: {e}"));
    assert_eq!(badge.text().await.unwrap(), "BAD_USER_INPUT");
    let errors = playground.client.find(Locator::Id("errors")).await.unwrap();
    assert!(errors.is_displayed().await.unwrap(), "the errors are shown");
    let message = playground.text("errors").await;
    assert!(message.contains("take"), "{message}");
    let answer: Value = serde_json::from_str(&playground.text("result").await).unwrap();
    assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let status = playground.text("status").await;
    assert!(status.contains("1 error"), "{status}");
    playground.screenshot("playground-error.png").await;
    playground.close().await;
}
