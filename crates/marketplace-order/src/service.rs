//! Placing and reading orders: the steps between a validated request and
//! storage, independent of the transport.

use std::sync::Arc;

use marketplace_domain::Id;
use tokio::sync::broadcast;

use crate::domain::{self, Order, OrderRequest, PricingError, TakePerAccount};
use crate::downstream::{Downstream, DownstreamError};
use crate::storage::{OrderStore, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("account {0} does not exist")]
    AccountNotFound(Id),
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error("order {0} does not exist")]
    OrderNotFound(Id),
    #[error(transparent)]
    Downstream(#[from] DownstreamError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The order service's operations over a store and its downstreams.
#[derive(Debug)]
pub struct OrderService<S, D> {
    store: S,
    downstream: D,
}

impl<S: OrderStore, D: Downstream> OrderService<S, D> {
    pub fn new(store: S, downstream: D) -> Self {
        Self { store, downstream }
    }

    /// Checks the account and prices every line with one call to each
    /// downstream, made at the same time, then stores the order in one
    /// transaction.
    pub async fn place(&self, request: OrderRequest) -> Result<Order, ServiceError> {
        let product_ids = request.product_ids();
        let (account_exists, prices) = tokio::join!(
            self.downstream.account_exists(request.account_id()),
            self.downstream.prices(&product_ids),
        );
        // The account is checked first so that the answer does not depend on
        // which call finished first.
        if !account_exists? {
            return Err(ServiceError::AccountNotFound(request.account_id().clone()));
        }
        let order = domain::price_order(Id::generate(), domain::now(), &request, &prices?)?;
        self.store.create(&order).await?;
        Ok(order)
    }

    pub async fn get(&self, id: Id) -> Result<Order, ServiceError> {
        self.store
            .get(&id)
            .await?
            .ok_or(ServiceError::OrderNotFound(id))
    }

    pub async fn list_for_accounts(
        &self,
        account_ids: &[Id],
        take: TakePerAccount,
    ) -> Result<Vec<Order>, ServiceError> {
        Ok(self.store.list_for_accounts(account_ids, take).await?)
    }

    /// The orders `account_id` places from now on.
    pub fn watch(&self, account_id: Id) -> AccountOrders {
        AccountOrders {
            account_id,
            announcements: self.store.subscribe(),
        }
    }
}

/// The new orders of one account, as they are placed.
#[derive(Debug)]
pub struct AccountOrders {
    account_id: Id,
    announcements: broadcast::Receiver<Arc<Order>>,
}

/// The watcher fell behind and orders were dropped for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the watcher fell {0} orders behind")]
pub struct Lagged(pub u64);

impl AccountOrders {
    /// The next order of the account; `None` when the store is gone.
    pub async fn next(&mut self) -> Option<Result<Arc<Order>, Lagged>> {
        loop {
            match self.announcements.recv().await {
                Ok(order) if order.account_id == self.account_id => return Some(Ok(order)),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(account_id = %self.account_id, missed, "an order watcher lagged behind; ending its watch");
                    return Some(Err(Lagged(missed)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use marketplace_domain::Money;
    use tokio::sync::Barrier;

    use super::*;
    use crate::domain::{Quantity, RequestedLine};
    use crate::downstream::Service;

    /// Answers from fixed data; each call waits at a barrier for the other,
    /// so calls made one after the other never finish.
    struct FakeDownstream {
        accounts: Vec<Id>,
        prices: HashMap<Id, Money>,
        account_calls: AtomicUsize,
        catalog_calls: AtomicUsize,
        both_called: Barrier,
        catalog_down: bool,
    }

    impl FakeDownstream {
        fn new(accounts: Vec<Id>, prices: HashMap<Id, Money>) -> Self {
            Self {
                accounts,
                prices,
                account_calls: AtomicUsize::new(0),
                catalog_calls: AtomicUsize::new(0),
                both_called: Barrier::new(2),
                catalog_down: false,
            }
        }
    }

    impl Downstream for FakeDownstream {
        async fn account_exists(&self, id: &Id) -> Result<bool, DownstreamError> {
            self.account_calls.fetch_add(1, Ordering::SeqCst);
            self.both_called.wait().await;
            Ok(self.accounts.contains(id))
        }

        async fn prices(&self, ids: &[Id]) -> Result<HashMap<Id, Money>, DownstreamError> {
            self.catalog_calls.fetch_add(1, Ordering::SeqCst);
            self.both_called.wait().await;
            if self.catalog_down {
                return Err(DownstreamError::Unavailable {
                    service: Service::Catalog,
                    status: tonic::Status::unavailable("connection refused"),
                });
            }
            Ok(ids
                .iter()
                .filter_map(|id| self.prices.get(id).map(|p| (id.clone(), *p)))
                .collect())
        }
    }

    #[derive(Default)]
    struct MemoryStore {
        orders: Mutex<Vec<Order>>,
        announcements: Option<broadcast::Sender<Arc<Order>>>,
    }

    impl OrderStore for MemoryStore {
        async fn create(&self, order: &Order) -> Result<(), StorageError> {
            self.orders.lock().unwrap().push(order.clone());
            Ok(())
        }

        async fn get(&self, id: &Id) -> Result<Option<Order>, StorageError> {
            Ok(self
                .orders
                .lock()
                .unwrap()
                .iter()
                .find(|o| &o.id == id)
                .cloned())
        }

        async fn list_for_accounts(
            &self,
            ids: &[Id],
            _: TakePerAccount,
        ) -> Result<Vec<Order>, StorageError> {
            let orders = self.orders.lock().unwrap();
            Ok(orders
                .iter()
                .filter(|o| ids.contains(&o.account_id))
                .cloned()
                .collect())
        }

        fn subscribe(&self) -> broadcast::Receiver<Arc<Order>> {
            self.announcements.as_ref().unwrap().subscribe()
        }
    }

    fn money(text: &str) -> Money {
        Money::parse_decimal(text).unwrap()
    }

    fn request(account: &Id, lines: &[(&Id, u32)]) -> OrderRequest {
        let lines = lines
            .iter()
            .map(|(id, q)| RequestedLine {
                product_id: (*id).clone(),
                quantity: Quantity::new(*q).unwrap(),
            })
            .collect();
        OrderRequest::new(account.clone(), lines).unwrap()
    }

    async fn place(
        service: &OrderService<MemoryStore, FakeDownstream>,
        request: OrderRequest,
    ) -> Result<Order, ServiceError> {
        tokio::time::timeout(Duration::from_secs(5), service.place(request))
            .await
            .expect("the account and catalog calls run at the same time")
    }

    #[tokio::test]
    async fn an_order_asks_each_downstream_once_at_the_same_time_and_is_stored() {
        let account = Id::generate();
        let products: Vec<Id> = (0..3).map(|_| Id::generate()).collect();
        let prices = HashMap::from([
            (products[0].clone(), money("0.10")),
            (products[1].clone(), money("0.20")),
            (products[2].clone(), money("0.70")),
        ]);
        let service = OrderService::new(
            MemoryStore::default(),
            FakeDownstream::new(vec![account.clone()], prices),
        );

        let order = place(
            &service,
            request(
                &account,
                &[(&products[0], 3), (&products[1], 3), (&products[2], 1)],
            ),
        )
        .await
        .unwrap();

        assert_eq!(order.total_price.minor_units(), 160);
        assert_eq!(service.downstream.account_calls.load(Ordering::SeqCst), 1);
        assert_eq!(service.downstream.catalog_calls.load(Ordering::SeqCst), 1);
        assert_eq!(service.get(order.id.clone()).await.unwrap(), order);
    }

    #[tokio::test]
    async fn an_unknown_account_is_reported_before_unknown_products() {
        let account = Id::generate();
        let product = Id::generate();
        let service = OrderService::new(
            MemoryStore::default(),
            FakeDownstream::new(vec![], HashMap::new()),
        );

        let error = place(&service, request(&account, &[(&product, 1)]))
            .await
            .unwrap_err();

        assert!(matches!(error, ServiceError::AccountNotFound(ref id) if *id == account));
        assert!(service.store.orders.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn unknown_products_are_all_named_and_nothing_is_stored() {
        let account = Id::generate();
        let (known, unknown_a, unknown_b) = (Id::generate(), Id::generate(), Id::generate());
        let service = OrderService::new(
            MemoryStore::default(),
            FakeDownstream::new(
                vec![account.clone()],
                HashMap::from([(known.clone(), money("1"))]),
            ),
        );

        let error = place(
            &service,
            request(&account, &[(&unknown_a, 1), (&known, 1), (&unknown_b, 1)]),
        )
        .await
        .unwrap_err();

        assert!(matches!(
            error,
            ServiceError::Pricing(PricingError::UnknownProducts(ref ids)) if *ids == vec![unknown_a.clone(), unknown_b.clone()]
        ));
        assert!(service.store.orders.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_catalog_outage_is_reported_as_such() {
        let account = Id::generate();
        let product = Id::generate();
        let mut downstream = FakeDownstream::new(vec![account.clone()], HashMap::new());
        downstream.catalog_down = true;
        let service = OrderService::new(MemoryStore::default(), downstream);

        let error = place(&service, request(&account, &[(&product, 1)]))
            .await
            .unwrap_err();

        assert!(matches!(
            error,
            ServiceError::Downstream(DownstreamError::Unavailable {
                service: Service::Catalog,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_watch_sees_only_its_accounts_orders_and_reports_lagging() {
        let (sender, _) = broadcast::channel(2);
        let store = MemoryStore {
            announcements: Some(sender.clone()),
            ..MemoryStore::default()
        };
        let service = OrderService::new(store, FakeDownstream::new(vec![], HashMap::new()));
        let (mine, theirs) = (Id::generate(), Id::generate());
        let order = |account: &Id| {
            Arc::new(Order {
                id: Id::generate(),
                account_id: account.clone(),
                created_at: domain::now(),
                total_price: Money::ZERO,
                lines: vec![],
            })
        };
        let mut watch = service.watch(mine.clone());

        let expected = order(&mine);
        sender.send(order(&theirs)).unwrap();
        sender.send(expected.clone()).unwrap();
        assert_eq!(watch.next().await, Some(Ok(expected)));

        for _ in 0..3 {
            sender.send(order(&mine)).unwrap();
        }
        assert_eq!(watch.next().await, Some(Err(Lagged(1))));
    }
}
