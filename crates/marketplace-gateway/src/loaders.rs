//! Batched loading: every `Account.orders` and `Order.products` of one
//! request is collected and fetched in as few service calls as the services
//! allow (100 accounts per `ListOrdersForAccounts`, 1000 products per
//! `GetProducts`), never one call per account or per line.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use marketplace_proto::catalog::v1::GetProductsRequest;
use marketplace_proto::order::v1::ListOrdersForAccountsRequest;

use crate::downstream::{Downstream, Service};
use crate::types::{Order, Product};

/// Most account ids per `ListOrdersForAccounts` (the order service's limit).
const ACCOUNTS_PER_CALL: usize = 100;
/// Most product ids per `GetProducts` (the catalog's limit).
const PRODUCTS_PER_CALL: usize = 1000;

/// The loaders of one GraphQL request: their caches live as long as it.
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
    pub fn new(downstream: &Downstream) -> Self {
        Self {
            orders: Arc::new(
                DataLoader::new(OrdersLoader(downstream.clone()), spawn_batch)
                    .max_batch_size(ACCOUNTS_PER_CALL),
            ),
            products: Arc::new(
                DataLoader::new(ProductsLoader(downstream.clone()), spawn_batch)
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
fn spawn_batch(batch: futures::future::BoxFuture<'static, ()>) {
    tokio::spawn(async move {
        for _ in 0..RESOLVER_TURNS {
            tokio::task::yield_now().await;
        }
        batch.await;
    });
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
        let answers = futures::future::try_join_all(calls.map(|(take, account_ids)| {
            let mut client = self.0.order.clone();
            async move {
                let request = ListOrdersForAccountsRequest {
                    account_ids: account_ids.clone(),
                    take_per_account: take,
                };
                let answer = self
                    .0
                    .call(
                        Service::Order,
                        "ListOrdersForAccounts",
                        client.list_orders_for_accounts(request),
                    )
                    .await?;
                Ok::<_, async_graphql::Error>((take, account_ids, answer.orders))
            }
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

/// Products by id, as order lines name them.
#[derive(Debug)]
pub struct ProductsLoader(Downstream);

impl Loader<String> for ProductsLoader {
    type Value = Product;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Product>, Self::Error> {
        let mut client = self.0.catalog.clone();
        let answer = self
            .0
            .call(
                Service::Catalog,
                "GetProducts",
                client.get_products(GetProductsRequest { ids: keys.to_vec() }),
            )
            .await?;
        answer
            .products
            .into_iter()
            .map(|product| {
                let product = Product::try_from(product)?;
                Ok((product.id.clone(), product))
            })
            .collect()
    }
}
