//! Batched loading: every `Account.orders` and `Order.products` of one
//! request is collected and fetched in as few service calls as the services
//! allow (100 accounts per `ListOrdersForAccounts`, 1000 products per
//! `GetProducts`), never one call per account or per line. Products come
//! from the read cache when it has them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use marketplace_proto::catalog::v1::GetProductsRequest;
use marketplace_proto::order::v1::ListOrdersForAccountsRequest;
use marketplace_telemetry::RequestContext;
use tracing::Instrument as _;

use crate::cache::ProductCache;
use crate::downstream::{Downstream, Idempotent, Service};
use crate::types::{Order, Product};

/// Most account ids per `ListOrdersForAccounts` (the order service's limit).
const ACCOUNTS_PER_CALL: usize = 100;
/// Most product ids per `GetProducts` (the catalog's limit).
const PRODUCTS_PER_CALL: usize = 1000;

/// The loaders of one GraphQL request: their batches live as long as it.
#[derive(Clone)]
pub struct Loaders {
    pub orders: Arc<DataLoader<OrdersLoader>>,
    pub products: Arc<DataLoader<ProductsLoader>>,
}

impl std::fmt::Debug for Loaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaders").finish_non_exhaustive()
    }
}

impl Loaders {
    pub fn new(downstream: &Downstream, cache: &ProductCache) -> Self {
        Self {
            orders: Arc::new(
                DataLoader::new(OrdersLoader(downstream.clone()), spawn_batch)
                    .max_batch_size(ACCOUNTS_PER_CALL),
            ),
            products: Arc::new(
                DataLoader::new(
                    ProductsLoader {
                        downstream: downstream.clone(),
                        cache: cache.clone(),
                    },
                    spawn_batch,
                )
                .max_batch_size(PRODUCTS_PER_CALL),
            ),
        }
    }
}

/// How many times a batch lets the request's resolvers run before it
/// starts its short wait for more keys.
const RESOLVER_TURNS: usize = 16;

/// Starts a loader's batch (its 1 ms wait, then the call) only after the
/// request's task has had several turns. A list of more than 30 items is
/// resolved through `FuturesUnordered`, which yields after every 32 items
/// polled; on a busy machine polling 32 items can outlast the 1 ms wait,
/// and the batch would leave without the rest. Each turn lets the request
/// register 32 more keys, so a batch takes the whole list whatever the
/// load.
///
/// The batch runs as part of the request that started it (its request id
/// and span), so its calls carry that request's `x-request-id` and
/// `traceparent`.
fn spawn_batch(batch: futures::future::BoxFuture<'static, ()>) {
    let batch = async move {
        for _ in 0..RESOLVER_TURNS {
            tokio::task::yield_now().await;
        }
        batch.await;
    };
    tokio::spawn(RequestContext::carry(batch).in_current_span());
}

/// The newest orders of an account: the key is the account id and how many
/// orders to return.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountOrders {
    pub account_id: String,
    pub take: u32,
}

#[derive(Debug)]
pub struct OrdersLoader(Downstream);

impl Loader<AccountOrders> for OrdersLoader {
    type Value = Vec<Order>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[AccountOrders],
    ) -> Result<HashMap<AccountOrders, Vec<Order>>, Self::Error> {
        // One call per distinct page size (in practice one), each for up to
        // the batch's 100 accounts.
        let mut by_take: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for key in keys {
            by_take
                .entry(key.take)
                .or_default()
                .push(key.account_id.clone());
        }
        let calls = by_take.into_iter().flat_map(|(take, ids)| {
            ids.chunks(ACCOUNTS_PER_CALL)
                .map(|chunk| (take, chunk.to_vec()))
                .collect::<Vec<_>>()
        });
        let answers = futures::future::try_join_all(calls.map(|(take, account_ids)| async move {
            let request = ListOrdersForAccountsRequest {
                account_ids: account_ids.clone(),
                take_per_account: take,
            };
            let answer =
                self.0
                    .call(
                        Service::Order,
                        Idempotent::Yes,
                        &self.0.order,
                        request,
                        |mut client, request| async move {
                            client.list_orders_for_accounts(request).await
                        },
                    )
                    .await?;
            Ok::<_, async_graphql::Error>((take, account_ids, answer.orders))
        }))
        .await?;
        let mut loaded = HashMap::new();
        for (take, account_ids, orders) in answers {
            let mut grouped: HashMap<String, Vec<Order>> = HashMap::new();
            for order in orders {
                let order = Order::try_from(order)?;
                grouped
                    .entry(order.account_id.clone())
                    .or_default()
                    .push(order);
            }
            for account_id in account_ids {
                let orders = grouped.remove(&account_id).unwrap_or_default();
                loaded.insert(AccountOrders { account_id, take }, orders);
            }
        }
        Ok(loaded)
    }
}

/// Products by id, as order lines name them: from the read cache when it
/// has them, the rest in one call.
#[derive(Debug)]
pub struct ProductsLoader {
    downstream: Downstream,
    cache: ProductCache,
}

impl Loader<String> for ProductsLoader {
    type Value = Product;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Product>, Self::Error> {
        let mut loaded = HashMap::with_capacity(keys.len());
        let mut missing = Vec::new();
        for key in keys {
            match self.cache.product(key).await {
                Some(product) => {
                    loaded.insert(key.clone(), product);
                }
                None => missing.push(key.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(loaded);
        }
        let answer = self
            .downstream
            .call(
                Service::Catalog,
                Idempotent::Yes,
                &self.downstream.catalog,
                GetProductsRequest { ids: missing },
                |mut client, request| async move { client.get_products(request).await },
            )
            .await?;
        for product in answer.products {
            let product = Product::try_from(product)?;
            self.cache.insert_product(&product).await;
            loaded.insert(product.id.clone(), product);
        }
        Ok(loaded)
    }
}
