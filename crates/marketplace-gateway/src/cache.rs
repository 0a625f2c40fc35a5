//! The gateway's optional read cache of the catalog: products by id (what
//! `products(id:)` and `Order.products` read) and pages of product
//! listings and searches, each kept for a short time. Products never
//! change once created, so a cached product is never stale; a cached page
//! may miss products created since, for at most the time to live (pages
//! are dropped at once when this gateway creates a product). Orders and
//! accounts are never cached.

use std::sync::Arc;
use std::time::Duration;

use marketplace_telemetry::Metrics;
use marketplace_telemetry::metrics::CacheMetrics;
use moka::future::Cache;

use crate::types::Product;

/// How often the entry gauges are brought up to date: the cache counts
/// its entries (and drops expired ones) in the background, not on every
/// insert.
const ENTRY_REFRESH: Duration = Duration::from_secs(1);

/// A page of `products`: the search words (`None` for the plain listing,
/// newest first), skip and take.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub query: Option<String>,
    pub skip: u32,
    pub take: u32,
}

/// The read cache, or nothing when it is turned off. Cheap to clone:
/// clones share the entries.
#[derive(Debug, Clone, Default)]
pub struct ProductCache(Option<Arc<Caches>>);

#[derive(Debug)]
struct Caches {
    products: Cache<String, Product>,
    pages: Cache<PageKey, Arc<[Product]>>,
    product_metrics: CacheMetrics,
    page_metrics: CacheMetrics,
}

impl ProductCache {
    /// A cache that holds nothing.
    pub const OFF: Self = Self(None);

    /// A cache keeping entries for `ttl`, at most `capacity` of them split
    /// evenly between products and pages; `ttl` zero turns it off.
    pub fn new(ttl: Duration, capacity: u64, metrics: &Metrics) -> Self {
        if ttl.is_zero() {
            return Self::OFF;
        }
        let pages = (capacity / 2).max(1);
        let products = capacity.saturating_sub(pages).max(1);
        let caches = Caches {
            products: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(products)
                .build(),
            pages: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(pages)
                .build(),
            product_metrics: metrics.cache("product"),
            page_metrics: metrics.cache("product_page"),
        };
        caches.product_metrics.set_entries(0);
        caches.page_metrics.set_entries(0);
        let caches = Arc::new(caches);
        refresh_entries_periodically(&caches);
        Self(Some(caches))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The product with `id`, if cached; counted as a hit or a miss.
    pub async fn product(&self, id: &str) -> Option<Product> {
        let caches = self.0.as_ref()?;
        let found = caches.products.get(id).await;
        count(&caches.product_metrics, found.is_some());
        found
    }

    /// Keeps `product` for later reads by id.
    pub async fn insert_product(&self, product: &Product) {
        if let Some(caches) = &self.0 {
            caches
                .products
                .insert(product.id.clone(), product.clone())
                .await;
        }
    }

    /// The page `key`, if cached; counted as a hit or a miss.
    pub async fn page(&self, key: &PageKey) -> Option<Vec<Product>> {
        let caches = self.0.as_ref()?;
        let found = caches.pages.get(key).await;
        count(&caches.page_metrics, found.is_some());
        found.map(|page| page.to_vec())
    }

    /// Keeps the page `key`.
    pub async fn insert_page(&self, key: PageKey, products: &[Product]) {
        if let Some(caches) = &self.0 {
            caches.pages.insert(key, Arc::from(products)).await;
        }
    }

    /// Drops every cached page, after a product was created: this
    /// gateway's clients then see their new product in the next listing.
    pub fn forget_pages(&self) {
        if let Some(caches) = &self.0 {
            caches.pages.invalidate_all();
        }
    }
}

impl Caches {
    /// Finishes the cache's pending work (counting inserts, dropping
    /// expired entries) and reports how many entries each holds.
    async fn refresh_entries(&self) {
        self.products.run_pending_tasks().await;
        self.pages.run_pending_tasks().await;
        self.product_metrics
            .set_entries(self.products.entry_count());
        self.page_metrics.set_entries(self.pages.entry_count());
    }
}

/// Keeps the entry gauges of `caches` up to date for as long as they
/// exist.
fn refresh_entries_periodically(caches: &Arc<Caches>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let caches = Arc::downgrade(caches);
    runtime.spawn(async move {
        let mut interval = tokio::time::interval(ENTRY_REFRESH);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            let Some(caches) = caches.upgrade() else {
                return;
            };
            caches.refresh_entries().await;
        }
    });
}

fn count(metrics: &CacheMetrics, hit: bool) {
    if hit {
        metrics.hit();
    } else {
        metrics.miss();
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use marketplace_domain::Money;

    use super::*;
    use crate::types::Time;

    fn product(id: &str) -> Product {
        Product {
            id: id.to_owned(),
            name: "Lamp".to_owned(),
            description: "bright".to_owned(),
            price: Money::from_minor_units(1999).unwrap(),
            created_at: Time(Utc::now()),
        }
    }

    fn key(query: Option<&str>) -> PageKey {
        PageKey {
            query: query.map(str::to_owned),
            skip: 0,
            take: 10,
        }
    }

    #[tokio::test]
    async fn a_cached_product_and_page_are_hits_and_everything_else_a_miss() {
        let metrics = Metrics::new();
        let cache = ProductCache::new(Duration::from_secs(30), 100, &metrics);

        assert!(cache.product("p1").await.is_none());
        cache.insert_product(&product("p1")).await;
        assert_eq!(
            cache.product("p1").await.map(|p| p.id).as_deref(),
            Some("p1")
        );
        assert!(cache.page(&key(None)).await.is_none());
        cache.insert_page(key(None), &[product("p1")]).await;
        assert_eq!(cache.page(&key(None)).await.map(|p| p.len()), Some(1));
        assert!(cache.page(&key(Some("lamp"))).await.is_none());
        if let Some(caches) = &cache.0 {
            caches.refresh_entries().await;
        }

        let text = metrics.render();
        for (cache, result, count) in [
            ("product", "hit", 1),
            ("product", "miss", 1),
            ("product_page", "hit", 1),
            ("product_page", "miss", 2),
        ] {
            let line = format!(
                r#"marketplace_cache_requests_total{{cache="{cache}",result="{result}"}} {count}"#
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        for cache in ["product", "product_page"] {
            let line = format!(r#"marketplace_cache_entries{{cache="{cache}"}} 1"#);
            assert!(text.contains(&line), "{line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn creating_a_product_drops_the_cached_pages_but_not_the_products() {
        let cache = ProductCache::new(Duration::from_secs(30), 100, &Metrics::new());
        cache.insert_product(&product("p1")).await;
        cache.insert_page(key(None), &[product("p1")]).await;

        cache.forget_pages();

        assert!(cache.page(&key(None)).await.is_none());
        assert!(cache.product("p1").await.is_some());
    }

    #[tokio::test]
    async fn a_zero_time_to_live_turns_the_cache_off_and_counts_nothing() {
        let metrics = Metrics::new();
        let cache = ProductCache::new(Duration::ZERO, 100, &metrics);

        cache.insert_product(&product("p1")).await;

        assert!(!cache.is_on());
        assert!(cache.product("p1").await.is_none());
        assert!(
            !metrics
                .render()
                .contains("marketplace_cache_requests_total{"),
            "{}",
            metrics.render()
        );
    }
}
