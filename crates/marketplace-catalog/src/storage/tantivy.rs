//! Products in an embedded tantivy index in a directory on disk.
//!
//! Search text is never given to tantivy's `QueryParser`, which would read
//! `name:x OR 1` or `*` as query syntax: it is split into words by each
//! field's own tokenizer, and each word becomes a term query.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::anyhow;
use chrono::DateTime;
use marketplace_domain::Id;
use tantivy::collector::TopDocs;
use tantivy::collector::sort_key::{SortBySimilarityScore, SortByStaticFastValue, SortByString};
use tantivy::directory::MmapDirectory;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, DisjunctionMaxQuery, Occur, Query, TermQuery, TermSetQuery,
};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, STRING, Schema, TEXT, TantivyDocument, Value as _,
};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Searcher, Term};

use super::{ProductStore, StorageError, distinct, product_from_fields};
use crate::domain::{Product, ResultWindow, SearchText};

/// Memory the single indexing thread may use before it flushes a segment.
const WRITER_MEMORY_BYTES: usize = 50_000_000;

/// A name match counts double, as in the Elasticsearch backend.
const NAME_BOOST: f32 = 2.0;

/// The product index in one directory. Clones share the index; one process
/// may open a directory once, since tantivy locks it for its one writer.
#[derive(Clone)]
pub struct TantivyProducts {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    name: Field,
    description: Field,
    price_minor_units: Field,
    /// Microseconds since the Unix epoch.
    created_at: Field,
}

const CREATED_AT: &str = "created_at";
const ID: &str = "id";

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let fields = Fields {
        // FAST too, as the tie-breaker when sorting newest first.
        id: builder.add_text_field(ID, STRING | STORED | FAST),
        name: builder.add_text_field("name", TEXT | STORED),
        description: builder.add_text_field("description", TEXT | STORED),
        price_minor_units: builder.add_i64_field("price_minor_units", STORED | FAST),
        created_at: builder.add_i64_field(CREATED_AT, STORED | FAST),
    };
    (builder.build(), fields)
}

impl fmt::Debug for TantivyProducts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TantivyProducts")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl TantivyProducts {
    /// Opens the index in directory `path`, creating the directory and the
    /// index when absent.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let path = path.as_ref().to_owned();
        let inner = tokio::task::spawn_blocking(move || Inner::open(path))
            .await
            .map_err(|e| StorageError::Unexpected(anyhow!(e)))??;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Runs `work` on a thread where blocking is allowed: tantivy reads
    /// and writes files synchronously.
    async fn blocking<T, F>(&self, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StorageError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| StorageError::Unexpected(anyhow!(e)))?
    }
}

impl ProductStore for TantivyProducts {
    async fn create(&self, product: &Product) -> Result<(), StorageError> {
        let product = product.clone();
        self.blocking(move |inner| inner.create(&product)).await
    }

    async fn get(&self, id: &Id) -> Result<Option<Product>, StorageError> {
        let id = id.clone();
        self.blocking(move |inner| Ok(inner.get_many(&[&id])?.pop()))
            .await
    }

    async fn get_many(&self, ids: &[Id]) -> Result<Vec<Product>, StorageError> {
        let ids: Vec<Id> = distinct(ids).into_iter().cloned().collect();
        self.blocking(move |inner| inner.get_many(&ids.iter().collect::<Vec<_>>()))
            .await
    }

    async fn list(&self, window: ResultWindow) -> Result<Vec<Product>, StorageError> {
        self.blocking(move |inner| inner.newest_first(&AllQuery, window))
            .await
    }

    async fn search(
        &self,
        text: &SearchText,
        window: ResultWindow,
    ) -> Result<Vec<Product>, StorageError> {
        if text.is_blank() {
            return self.list(window).await;
        }
        let text = text.clone();
        self.blocking(move |inner| inner.search(&text, window))
            .await
    }
}

impl Inner {
    fn open(path: PathBuf) -> Result<Self, StorageError> {
        std::fs::create_dir_all(&path).map_err(|e| {
            StorageError::Unexpected(anyhow!(e).context(format!("creating {}", path.display())))
        })?;
        let directory = MmapDirectory::open(&path).map_err(|e| {
            StorageError::Unexpected(anyhow!(e).context(format!("opening {}", path.display())))
        })?;
        let (schema, fields) = schema();
        let index =
            Index::open_or_create(directory, schema).map_err(failed("opening the index"))?;
        let writer = index
            .writer_with_num_threads(1, WRITER_MEMORY_BYTES)
            .map_err(failed("locking the index for writing"))?;
        // Reloaded by hand after each commit, so a product is visible as
        // soon as `create` returns.
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(failed("opening the index for reading"))?;
        Ok(Self {
            path,
            index,
            reader,
            writer: Mutex::new(writer),
            fields,
        })
    }

    fn create(&self, product: &Product) -> Result<(), StorageError> {
        let f = self.fields;
        let mut document = TantivyDocument::new();
        document.add_text(f.id, product.id.as_str());
        document.add_text(f.name, product.name.as_str());
        document.add_text(f.description, product.description.as_str());
        document.add_i64(f.price_minor_units, product.price.minor_units());
        document.add_i64(f.created_at, product.created_at.timestamp_micros());

        let mut writer = self
            .writer
            .lock()
            .map_err(|_| StorageError::Unexpected(anyhow!("the index writer is poisoned")))?;
        // Refused like Elasticsearch's `op_type=create` (a 409 there): an id
        // names one product. Checked under the writer's lock, and the reader
        // is reloaded before the lock is released, so no create in between
        // can go unseen.
        if !self.get_many(&[&product.id])?.is_empty() {
            return Err(StorageError::Unexpected(anyhow!(
                "storing a product: a product with id {} already exists",
                product.id
            )));
        }
        let committed = writer.add_document(document).and_then(|_| writer.commit());
        if let Err(error) = committed {
            // Drop the half-written document rather than commit it with
            // the next product.
            if let Err(rollback) = writer.rollback() {
                tracing::error!(error = %rollback, "rolling back the product index failed");
            }
            return Err(failed("storing a product")(error));
        }
        let reloaded = self.reader.reload().map_err(failed("reloading the index"));
        drop(writer);
        reloaded
    }

    fn get_many(&self, ids: &[&Id]) -> Result<Vec<Product>, StorageError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let terms = ids
            .iter()
            .map(|id| Term::from_field_text(self.fields.id, id.as_str()));
        let searcher = self.reader.searcher();
        // Ids are unique in the index, so there are at most `ids.len()` hits.
        let hits = searcher
            .search(
                &TermSetQuery::new(terms),
                &TopDocs::with_limit(ids.len()).order_by_score(),
            )
            .map_err(failed("reading products"))?;
        hits.into_iter()
            .map(|(_, address)| self.product(&searcher, address))
            .collect()
    }

    fn newest_first(
        &self,
        query: &dyn Query,
        window: ResultWindow,
    ) -> Result<Vec<Product>, StorageError> {
        let searcher = self.reader.searcher();
        let collector = TopDocs::for_doc_range(window.skip() as usize..window.end() as usize)
            .order_by((
                (
                    SortByStaticFastValue::<i64>::for_field(CREATED_AT),
                    Order::Desc,
                ),
                (SortByString::for_field(ID), Order::Desc),
            ));
        let hits = searcher
            .search(query, &collector)
            .map_err(failed("listing products"))?;
        hits.into_iter()
            .map(|(_, address)| self.product(&searcher, address))
            .collect()
    }

    fn search(
        &self,
        text: &SearchText,
        window: ResultWindow,
    ) -> Result<Vec<Product>, StorageError> {
        let f = self.fields;
        let name = self.words(f.name, text)?;
        let description = self.words(f.description, text)?;
        if name.is_none() && description.is_none() {
            // Only punctuation: there is no word to look for.
            return Ok(Vec::new());
        }
        // Like Elasticsearch's `best_fields`: the better field ranks the
        // product, and a name match counts double.
        let mut fields: Vec<Box<dyn Query>> = Vec::new();
        if let Some(name) = name {
            fields.push(Box::new(BoostQuery::new(name, NAME_BOOST)));
        }
        if let Some(description) = description {
            fields.push(description);
        }
        let query = DisjunctionMaxQuery::new(fields);
        let searcher = self.reader.searcher();
        let collector = TopDocs::for_doc_range(window.skip() as usize..window.end() as usize)
            .order_by((
                (SortBySimilarityScore, Order::Desc),
                (
                    SortByStaticFastValue::<i64>::for_field(CREATED_AT),
                    Order::Desc,
                ),
                (SortByString::for_field(ID), Order::Desc),
            ));
        let hits = searcher
            .search(&query, &collector)
            .map_err(failed("searching products"))?;
        hits.into_iter()
            .map(|(_, address)| self.product(&searcher, address))
            .collect()
    }

    /// A query for any of the words of `text` in `field`, split by the
    /// field's tokenizer; `None` when the text has no words.
    fn words(
        &self,
        field: Field,
        text: &SearchText,
    ) -> Result<Option<Box<dyn Query>>, StorageError> {
        let mut analyzer = self
            .index
            .tokenizer_for_field(field)
            .map_err(failed("finding the tokenizer"))?;
        let mut words = BTreeSet::new();
        analyzer.token_stream(text.as_str()).process(&mut |token| {
            words.insert(token.text.clone());
        });
        if words.is_empty() {
            return Ok(None);
        }
        let clauses = words
            .into_iter()
            .map(|word| {
                let term = Term::from_field_text(field, &word);
                let query: Box<dyn Query> =
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                (Occur::Should, query)
            })
            .collect();
        Ok(Some(Box::new(BooleanQuery::new(clauses))))
    }

    fn product(&self, searcher: &Searcher, address: DocAddress) -> Result<Product, StorageError> {
        let f = self.fields;
        let document: TantivyDocument =
            searcher.doc(address).map_err(failed("reading a product"))?;
        let text = |field: Field| {
            document
                .get_first(field)
                .and_then(|v| v.as_str())
                .ok_or_else(|| {
                    StorageError::Unexpected(anyhow!("a stored product lacks a text field"))
                })
        };
        let number = |field: Field| {
            document
                .get_first(field)
                .and_then(|v| v.as_i64())
                .ok_or_else(|| {
                    StorageError::Unexpected(anyhow!("a stored product lacks a number field"))
                })
        };
        let micros = number(f.created_at)?;
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(|| {
            StorageError::Unexpected(anyhow!("a stored product's created_at is out of range"))
        })?;
        product_from_fields(
            text(f.id)?,
            text(f.name)?,
            text(f.description)?,
            number(f.price_minor_units)?,
            created_at,
        )
    }
}

fn failed(what: &'static str) -> impl Fn(tantivy::TantivyError) -> StorageError {
    move |error| StorageError::Unexpected(anyhow!(error).context(what))
}
