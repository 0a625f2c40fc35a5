//! What the order service's integration tests share: an order database on
//! either backend, the real account and catalog services, and the order
//! service itself, each on 127.0.0.1:0 and stopped when dropped.

// Each test binary uses a different part of this module.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use marketplace_config::{AccountConfig, CatalogConfig, OrderConfig, SecretUrl};
use marketplace_proto::account::v1::CreateAccountRequest;
use marketplace_proto::account::v1::account_service_client::AccountServiceClient;
use marketplace_proto::account::v1::account_service_server::AccountServiceServer;
use marketplace_proto::catalog::v1::CreateProductRequest;
use marketplace_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use marketplace_proto::catalog::v1::catalog_service_server::CatalogServiceServer;
use marketplace_proto::common::v1::Money;
use marketplace_proto::order::v1::order_service_client::OrderServiceClient;
use marketplace_proto::order::v1::{CreateOrderRequest, OrderLineRequest};
use marketplace_testkit::postgres::{self, TestDatabase};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// An order database of its own, on one backend.
pub enum OrderDatabase {
    Postgres(TestDatabase),
    Sqlite(TempDir),
}

impl OrderDatabase {
    /// `None` when PostgreSQL is not configured (the test then skips).
    pub async fn postgres() -> Option<Self> {
        postgres::database().await.map(Self::Postgres)
    }

    pub fn sqlite() -> Self {
        Self::Sqlite(TempDir::new().unwrap())
    }

    pub fn url(&self) -> SecretUrl {
        match self {
            Self::Postgres(db) => SecretUrl::new(db.url()),
            Self::Sqlite(dir) => SecretUrl::new(format!(
                "sqlite://{}",
                dir.path().join("orders.db").display()
            )),
        }
    }
}

/// A server task that stops when this is dropped.
pub struct Running {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

fn stop_signal() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    (stop, async move {
        // Sent or dropped: either way, stop.
        let _ = stopped.await;
    })
}

/// A URL where nothing listens: a port that was bound, then released.
pub async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// The real account and catalog services, on embedded storage.
pub struct Downstreams {
    pub account: Running,
    pub catalog: Running,
    /// Calls each service received, when served behind counters.
    pub account_calls: Arc<AtomicUsize>,
    pub catalog_calls: Arc<AtomicUsize>,
    _dirs: (TempDir, TempDir),
}

impl Downstreams {
    /// Both services as their `Application`s.
    pub async fn start() -> Self {
        let dirs = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let account = marketplace_account::Application::build(
            AccountConfig {
                listen_addr: "127.0.0.1:0".parse().unwrap(),
                database_url: Some(sqlite_url(&dirs.0)),
                database_pool_size: 4,
            },
            &marketplace_grpc::Shared::default(),
        )
        .await
        .unwrap();
        let catalog = marketplace_catalog::Application::build(
            CatalogConfig {
                listen_addr: "127.0.0.1:0".parse().unwrap(),
                search_url: Some(SecretUrl::new(format!(
                    "tantivy://{}",
                    dirs.1.path().display()
                ))),
                index_name: "products".to_owned(),
            },
            &marketplace_grpc::Shared::default(),
        )
        .await
        .unwrap();
        let (account_stop, account_stopped) = stop_signal();
        let (catalog_stop, catalog_stopped) = stop_signal();
        let account = Running {
            addr: account.local_addr(),
            _stop: {
                tokio::spawn(account.run_until_stopped(account_stopped));
                account_stop
            },
        };
        let catalog = Running {
            addr: catalog.local_addr(),
            _stop: {
                tokio::spawn(catalog.run_until_stopped(catalog_stopped));
                catalog_stop
            },
        };
        Self {
            account,
            catalog,
            account_calls: Arc::default(),
            catalog_calls: Arc::default(),
            _dirs: dirs,
        }
    }

    /// Both services' gRPC implementations on their real stores, each
    /// behind an interceptor that counts the calls it receives.
    pub async fn start_counted() -> Self {
        let dirs = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let accounts = marketplace_account::storage::Accounts::connect(&sqlite_url(&dirs.0), 4)
            .await
            .unwrap();
        let products = marketplace_catalog::storage::Products::connect(
            &SecretUrl::new(format!("tantivy://{}", dirs.1.path().display())),
            "products",
        )
        .await
        .unwrap();
        let account_calls = Arc::new(AtomicUsize::new(0));
        let catalog_calls = Arc::new(AtomicUsize::new(0));
        let account_server = AccountServiceServer::with_interceptor(
            marketplace_account::grpc::AccountGrpc::new(accounts),
            counter(&account_calls),
        );
        let catalog_server = CatalogServiceServer::with_interceptor(
            marketplace_catalog::grpc::CatalogGrpc::new(products),
            counter(&catalog_calls),
        );
        let account = serve(Server::builder().add_service(account_server)).await;
        let catalog = serve(Server::builder().add_service(catalog_server)).await;
        Self {
            account,
            catalog,
            account_calls,
            catalog_calls,
            _dirs: dirs,
        }
    }

    pub async fn account_client(&self) -> AccountServiceClient<Channel> {
        AccountServiceClient::connect(self.account.url())
            .await
            .unwrap()
    }

    pub async fn catalog_client(&self) -> CatalogServiceClient<Channel> {
        CatalogServiceClient::connect(self.catalog.url())
            .await
            .unwrap()
    }

    /// A new account's id.
    pub async fn account(&self) -> String {
        self.account_client()
            .await
            .create_account(CreateAccountRequest {
                name: "Ada Lovelace".to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap()
            .id
    }

    /// A new product's id, priced `minor_units`.
    pub async fn product(&self, minor_units: i64) -> String {
        self.catalog_client()
            .await
            .create_product(CreateProductRequest {
                name: format!("Widget at {minor_units}"),
                description: "A widget for testing orders".to_owned(),
                price: Some(Money { minor_units }),
            })
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap()
            .id
    }

    /// (account calls, catalog calls) so far.
    pub fn calls(&self) -> (usize, usize) {
        (
            self.account_calls.load(Ordering::SeqCst),
            self.catalog_calls.load(Ordering::SeqCst),
        )
    }
}

fn sqlite_url(dir: &TempDir) -> SecretUrl {
    SecretUrl::new(format!(
        "sqlite://{}",
        dir.path().join("db.sqlite").display()
    ))
}

fn counter(
    calls: &Arc<AtomicUsize>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone + use<> {
    let calls = Arc::clone(calls);
    move |request| {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(request)
    }
}

async fn serve(router: tonic::transport::server::Router) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = stop_signal();
    tokio::spawn(router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped));
    Running { addr, _stop: stop }
}

/// The order service's `Application` on `database`, calling the given
/// account and catalog URLs, once it reports SERVING.
pub async fn start_order_service(
    database: &OrderDatabase,
    account_url: String,
    catalog_url: String,
    downstream_timeout: Duration,
) -> Running {
    let service = starting_order_service(
        database.url(),
        account_url,
        catalog_url,
        downstream_timeout,
        &marketplace_grpc::Shared::default(),
    )
    .await;
    wait_until(&service, ServingStatus::Serving).await;
    service
}

/// The order service's `Application` on the database at `url`, with the
/// metrics and resilience settings of `shared`, serving and perhaps not
/// ready yet.
pub async fn starting_order_service(
    url: SecretUrl,
    account_url: String,
    catalog_url: String,
    downstream_timeout: Duration,
    shared: &marketplace_grpc::Shared,
) -> Running {
    let app = marketplace_order::Application::build(
        OrderConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            database_url: Some(url),
            database_pool_size: 4,
            account_url,
            catalog_url,
            downstream_timeout,
        },
        shared,
    )
    .await
    .unwrap();
    let addr = app.local_addr();
    let (stop, stopped) = stop_signal();
    tokio::spawn(app.run_until_stopped(stopped));
    Running { addr, _stop: stop }
}

/// What the health service says of the order service.
pub async fn health(service: &Running) -> ServingStatus {
    HealthClient::new(service.channel().await)
        .check(HealthCheckRequest {
            service: "marketplace.order.v1.OrderService".to_owned(),
        })
        .await
        .map_or(ServingStatus::Unknown, |response| {
            response.into_inner().status()
        })
}

/// Returns once the health service says `status`.
pub async fn wait_until(service: &Running, status: ServingStatus) {
    marketplace_testkit::eventually(
        &format!("the order service reports {status:?}"),
        Duration::from_secs(30),
        || async move { (health(service).await == status).then_some(()) },
    )
    .await;
}

pub async fn order_client(service: &Running) -> OrderServiceClient<Channel> {
    OrderServiceClient::connect(service.url()).await.unwrap()
}

/// Everything an order needs: downstreams, a database and the service.
pub struct World {
    pub downstreams: Downstreams,
    pub database: OrderDatabase,
    pub service: Running,
    pub orders: OrderServiceClient<Channel>,
}

impl World {
    pub async fn on(database: OrderDatabase) -> Self {
        Self::with(Downstreams::start().await, database).await
    }

    pub async fn with(downstreams: Downstreams, database: OrderDatabase) -> Self {
        let service = start_order_service(
            &database,
            downstreams.account.url(),
            downstreams.catalog.url(),
            Duration::from_secs(5),
        )
        .await;
        let orders = order_client(&service).await;
        Self {
            downstreams,
            database,
            service,
            orders,
        }
    }
}

/// A CreateOrder request for `account` with `(product, quantity)` lines.
pub fn order_request(account: &str, lines: &[(&str, u32)]) -> CreateOrderRequest {
    CreateOrderRequest {
        account_id: account.to_owned(),
        lines: lines
            .iter()
            .map(|(product_id, quantity)| OrderLineRequest {
                product_id: (*product_id).to_owned(),
                quantity: *quantity,
            })
            .collect(),
    }
}

/// A port in front of `target` that accepts connections and closes them
/// at once until it is opened, then forwards them: a service that is down,
/// then back.
pub struct Gate {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    pub async fn closed(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(false));
        let is_open = Arc::clone(&open);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, open, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The value of the series `series` (name and labels, exactly as rendered,
/// labels in alphabetical order) in the metrics text `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}
