//! The gRPC transport: requests are parsed into domain values here (bad
//! input is `INVALID_ARGUMENT`), answers converted back, and every
//! [`ServiceError`] becomes a status in one place.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use marketplace_domain::{Id, Money};
use marketplace_proto::common::v1 as common;
use marketplace_proto::order::v1 as proto;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::domain::{
    MAX_LINES, Order, OrderRequest, OrderRequestError, PricingError, Quantity, RequestedLine,
    TakePerAccount,
};
use crate::downstream::{Downstream, DownstreamError, GrpcDownstream};
use crate::service::{OrderService, ServiceError};
use crate::storage::{OrderStore, StorageError};

pub use marketplace_proto::order::v1::order_service_server::{OrderServiceServer, SERVICE_NAME};

/// Most accounts one `ListOrdersForAccounts` call may ask about.
pub use crate::domain::MAX_ACCOUNTS_PER_LIST;

/// `marketplace.order.v1.OrderService` over a store and the account and
/// catalog services.
#[derive(Debug)]
pub struct OrderGrpc<S, D = GrpcDownstream> {
    service: Arc<OrderService<S, D>>,
    stopping: watch::Receiver<bool>,
    stop: Arc<watch::Sender<bool>>,
}

impl<S: OrderStore, D: Downstream> OrderGrpc<S, D> {
    pub fn new(store: S, downstream: D) -> Self {
        let (stop, stopping) = watch::channel(false);
        Self {
            service: Arc::new(OrderService::new(store, downstream)),
            stopping,
            stop: Arc::new(stop),
        }
    }

    /// Ends every open `WatchAccountOrders` stream when called, so that a
    /// graceful shutdown is not held up by watchers that never leave.
    pub fn watch_stopper(&self) -> WatchStopper {
        WatchStopper(Arc::clone(&self.stop))
    }
}

/// See [`OrderGrpc::watch_stopper`].
#[derive(Debug, Clone)]
pub struct WatchStopper(Arc<watch::Sender<bool>>);

impl WatchStopper {
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

fn invalid(error: OrderRequestError) -> Status {
    Status::invalid_argument(error.to_string())
}

fn parse_id(field: &str, text: &str) -> Result<Id, Status> {
    Id::parse(text).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

impl TryFrom<proto::CreateOrderRequest> for OrderRequest {
    type Error = Status;

    fn try_from(request: proto::CreateOrderRequest) -> Result<Self, Status> {
        let account_id = parse_id("account_id", &request.account_id)?;
        // Counted before anything else about the lines, so that a huge
        // request is refused without parsing it.
        if request.lines.is_empty() {
            return Err(invalid(OrderRequestError::NoLines));
        }
        if request.lines.len() > MAX_LINES {
            return Err(invalid(OrderRequestError::TooManyLines(
                request.lines.len(),
            )));
        }
        let lines = request
            .lines
            .into_iter()
            .enumerate()
            .map(|(i, line)| {
                let product_id = parse_id(&format!("lines[{i}].product_id"), &line.product_id)?;
                let quantity = Quantity::new(line.quantity).map_err(|_| {
                    Status::invalid_argument(format!(
                        "lines[{i}]: the quantity of product {product_id} must be between 1 and {}, not {}",
                        Quantity::MAX,
                        line.quantity
                    ))
                })?;
                Ok(RequestedLine {
                    product_id,
                    quantity,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        OrderRequest::new(account_id, lines).map_err(invalid)
    }
}

fn account_ids(request: proto::ListOrdersForAccountsRequest) -> Result<Vec<Id>, Status> {
    if request.account_ids.len() > MAX_ACCOUNTS_PER_LIST {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_ACCOUNTS_PER_LIST} account ids per call; this one has {}, so split it",
            request.account_ids.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut ids = Vec::with_capacity(request.account_ids.len());
    for (i, text) in request.account_ids.iter().enumerate() {
        let id = parse_id(&format!("account_ids[{i}]"), text)?;
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

fn money(amount: Money) -> common::Money {
    common::Money {
        minor_units: amount.minor_units(),
    }
}

impl From<&Order> for proto::Order {
    fn from(order: &Order) -> Self {
        Self {
            id: order.id.to_string(),
            account_id: order.account_id.to_string(),
            created_at: Some(prost_types::Timestamp {
                seconds: order.created_at.timestamp(),
                // Below one billion, so it fits.
                nanos: i32::try_from(order.created_at.timestamp_subsec_nanos()).unwrap_or(0),
            }),
            total_price: Some(money(order.total_price)),
            lines: order
                .lines
                .iter()
                .map(|line| proto::OrderLine {
                    product_id: line.product_id.to_string(),
                    quantity: line.quantity.get(),
                    unit_price: Some(money(line.unit_price)),
                })
                .collect(),
        }
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::AccountNotFound(_)
            | ServiceError::OrderNotFound(_)
            | ServiceError::Pricing(PricingError::UnknownProducts(_)) => {
                Status::not_found(error.to_string())
            }
            ServiceError::Pricing(PricingError::TotalTooLarge) => {
                Status::invalid_argument(error.to_string())
            }
            ServiceError::Downstream(ref cause @ DownstreamError::Unavailable { service, .. }) => {
                marketplace_grpc::unavailable(service.name(), cause)
            }
            ServiceError::Downstream(ref cause @ DownstreamError::Unexpected { service, .. }) => {
                marketplace_grpc::internal(&format!("asking {}", service.name()), cause)
            }
            ServiceError::Storage(ref cause @ StorageError::Unavailable(_)) => {
                marketplace_grpc::unavailable("the order database", cause)
            }
            ServiceError::Storage(ref cause @ StorageError::NotReady(_)) => {
                marketplace_grpc::not_ready("the order database", cause)
            }
            ServiceError::Storage(ref cause) => {
                marketplace_grpc::internal("reading or writing orders", cause)
            }
        }
    }
}

type OrderStream = Pin<Box<dyn Stream<Item = Result<proto::Order, Status>> + Send>>;

#[tonic::async_trait]
impl<S: OrderStore, D: Downstream> proto::order_service_server::OrderService for OrderGrpc<S, D> {
    async fn create_order(
        &self,
        request: Request<proto::CreateOrderRequest>,
    ) -> Result<Response<proto::CreateOrderResponse>, Status> {
        let request = OrderRequest::try_from(request.into_inner())?;
        let order = self.service.place(request).await?;
        Ok(Response::new(proto::CreateOrderResponse {
            order: Some((&order).into()),
        }))
    }

    async fn get_order(
        &self,
        request: Request<proto::GetOrderRequest>,
    ) -> Result<Response<proto::GetOrderResponse>, Status> {
        let id = parse_id("id", &request.into_inner().id)?;
        let order = self.service.get(id).await?;
        Ok(Response::new(proto::GetOrderResponse {
            order: Some((&order).into()),
        }))
    }

    async fn list_orders_for_accounts(
        &self,
        request: Request<proto::ListOrdersForAccountsRequest>,
    ) -> Result<Response<proto::ListOrdersForAccountsResponse>, Status> {
        let request = request.into_inner();
        let take = TakePerAccount::new(request.take_per_account);
        let ids = account_ids(request)?;
        let orders = self.service.list_for_accounts(&ids, take).await?;
        Ok(Response::new(proto::ListOrdersForAccountsResponse {
            orders: orders.iter().map(Into::into).collect(),
        }))
    }

    type WatchAccountOrdersStream = OrderStream;

    async fn watch_account_orders(
        &self,
        request: Request<proto::WatchAccountOrdersRequest>,
    ) -> Result<Response<Self::WatchAccountOrdersStream>, Status> {
        let account_id = parse_id("account_id", &request.into_inner().account_id)?;
        // Subscribed before the response goes out: every order placed after
        // the client sees the response is delivered.
        let orders = self.service.watch(account_id);
        let stopping = self.stopping.clone();
        let stream = futures::stream::unfold(Some((orders, stopping)), |state| async move {
            let (mut orders, mut stopping) = state?;
            let next = {
                let stopped = async {
                    // An error means the sender is gone: stopping as well.
                    let _ = stopping.wait_for(|stop| *stop).await;
                };
                tokio::select! {
                    next = orders.next() => Some(next),
                    () = stopped => None,
                }
            };
            match next {
                Some(Some(Ok(order))) => {
                    Some((Ok(order.as_ref().into()), Some((orders, stopping))))
                }
                Some(Some(Err(lagged))) => Some((
                    Err(Status::resource_exhausted(format!(
                        "{lagged} and its watch was ended so that no order is silently skipped; \
                         watch again and read missed orders with ListOrdersForAccounts"
                    ))),
                    None,
                )),
                // The store is gone.
                Some(None) => None,
                None => Some((
                    Err(Status::unavailable(
                        "the order service is shutting down; watch again",
                    )),
                    None,
                )),
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use futures::StreamExt;
    use tokio::sync::broadcast;
    use tonic::Code;

    use super::*;
    use crate::domain;
    use crate::downstream::Service;
    use crate::service::ServiceError;

    /// A store that only announces what the test sends.
    struct Announcer(broadcast::Sender<Arc<Order>>);

    impl OrderStore for Announcer {
        async fn create(&self, _: &Order) -> Result<(), StorageError> {
            Ok(())
        }

        async fn get(&self, _: &Id) -> Result<Option<Order>, StorageError> {
            Ok(None)
        }

        async fn list_for_accounts(
            &self,
            _: &[Id],
            _: TakePerAccount,
        ) -> Result<Vec<Order>, StorageError> {
            Ok(Vec::new())
        }

        fn subscribe(&self) -> broadcast::Receiver<Arc<Order>> {
            self.0.subscribe()
        }
    }

    struct NoDownstream;

    impl Downstream for NoDownstream {
        async fn account_exists(&self, _: &Id) -> Result<bool, DownstreamError> {
            Ok(false)
        }

        async fn prices(&self, _: &[Id]) -> Result<HashMap<Id, Money>, DownstreamError> {
            Ok(HashMap::new())
        }
    }

    fn order(account_id: &Id) -> Arc<Order> {
        Arc::new(Order {
            id: Id::generate(),
            account_id: account_id.clone(),
            created_at: domain::now(),
            total_price: Money::ZERO,
            lines: Vec::new(),
        })
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_is_ended_with_resource_exhausted_instead_of_a_gap() {
        let (sender, _) = broadcast::channel(2);
        let grpc = OrderGrpc::new(Announcer(sender.clone()), NoDownstream);
        let account = Id::generate();
        let response = proto::order_service_server::OrderService::watch_account_orders(
            &grpc,
            Request::new(proto::WatchAccountOrdersRequest {
                account_id: account.to_string(),
            }),
        )
        .await
        .unwrap();

        for _ in 0..3 {
            sender.send(order(&account)).unwrap();
        }
        let mut stream = response.into_inner();

        let ended = stream.next().await.unwrap().unwrap_err();
        assert_eq!(ended.code(), Code::ResourceExhausted);
        assert!(
            ended.message().contains("ListOrdersForAccounts"),
            "{ended:?}"
        );
        assert!(stream.next().await.is_none());
    }

    #[test]
    fn downstream_failures_become_unavailable_or_an_opaque_internal() {
        let down = Status::from(ServiceError::Downstream(DownstreamError::Unavailable {
            service: Service::Account,
            status: Status::unavailable("tcp connect error: Connection refused"),
        }));
        let broken = Status::from(ServiceError::Downstream(DownstreamError::Unexpected {
            service: Service::Catalog,
            status: Status::internal("index corrupted at segment 7"),
        }));

        assert_eq!(down.code(), Code::Unavailable);
        assert_eq!(
            down.message(),
            "the account service is unavailable; try again later"
        );
        assert_eq!(broken.code(), Code::Internal);
        assert!(!broken.message().contains("segment"), "{broken:?}");
    }

    #[test]
    fn an_overflowing_total_is_an_invalid_argument() {
        let status = Status::from(ServiceError::Pricing(PricingError::TotalTooLarge));

        assert_eq!(status.code(), Code::InvalidArgument);
    }
}
