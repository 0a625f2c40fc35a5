//! What the account service's integration tests share: stores on both
//! backends, a running Application with a client, and a TCP proxy that
//! plays a database going down.

// Each test binary uses a different part of this module.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use marketplace_account::Application;
use marketplace_account::storage::{PostgresAccounts, SqliteAccounts};
use marketplace_config::{AccountConfig, SecretUrl};
use marketplace_domain::{Text, TextRule};
use marketplace_proto::account::v1::account_service_client::AccountServiceClient;
use marketplace_testkit::postgres::{self, TestDatabase};
use tempfile::TempDir;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub const POOL_SIZE: u32 = 4;

pub fn name(text: &str) -> Text {
    Text::parse(text, TextRule::ACCOUNT_NAME).unwrap()
}

/// `sqlite://` URL of a file (not yet created) in `dir`.
pub fn sqlite_url(dir: &TempDir) -> SecretUrl {
    SecretUrl::new(format!(
        "sqlite://{}",
        dir.path().join("accounts.db").display()
    ))
}

/// Whatever keeps a test's database alive.
#[derive(Debug)]
pub enum Keep {
    Postgres(TestDatabase),
    Sqlite(TempDir),
    Nothing,
}

pub async fn postgres_store() -> Option<(PostgresAccounts, TestDatabase)> {
    let db = postgres::database().await?;
    let store = PostgresAccounts::connect(&SecretUrl::new(db.url()), POOL_SIZE)
        .await
        .unwrap();
    Some((store, db))
}

pub async fn sqlite_store() -> (SqliteAccounts, TempDir) {
    let dir = TempDir::new().unwrap();
    let store = SqliteAccounts::connect(&sqlite_url(&dir), POOL_SIZE)
        .await
        .unwrap();
    (store, dir)
}

pub fn config(url: Option<SecretUrl>) -> AccountConfig {
    AccountConfig {
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        database_url: url,
        database_pool_size: POOL_SIZE,
    }
}

/// An Application serving on 127.0.0.1:0, and a client for it.
#[derive(Debug)]
pub struct Running {
    pub client: AccountServiceClient<Channel>,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    _server: JoinHandle<anyhow::Result<()>>,
    _keep: Keep,
}

impl Running {
    /// The service on `url`, once it reports SERVING.
    pub async fn start(url: SecretUrl, keep: Keep) -> Self {
        let running = Self::starting(url, keep).await;
        running.wait_until(ServingStatus::Serving).await;
        running
    }

    /// The service on `url`, serving and perhaps not ready yet.
    pub async fn starting(url: SecretUrl, keep: Keep) -> Self {
        let application =
            Application::build(config(Some(url)), &marketplace_grpc::Shared::default())
                .await
                .unwrap();
        let addr = application.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        // The listener is bound already, so the client can connect at once.
        let server = tokio::spawn(application.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let client = AccountServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        Self {
            client,
            addr,
            stop: Some(stop),
            _server: server,
            _keep: keep,
        }
    }

    pub async fn sqlite() -> Self {
        let dir = TempDir::new().unwrap();
        Self::start(sqlite_url(&dir), Keep::Sqlite(dir)).await
    }

    pub async fn postgres() -> Option<Self> {
        let db = postgres::database().await?;
        Some(Self::start(SecretUrl::new(db.url()), Keep::Postgres(db)).await)
    }

    /// What the health service says of the account service.
    pub async fn health(&self) -> ServingStatus {
        HealthClient::new(self.channel().await)
            .check(HealthCheckRequest {
                service: "marketplace.account.v1.AccountService".to_owned(),
            })
            .await
            .map_or(ServingStatus::Unknown, |response| {
                response.into_inner().status()
            })
    }

    /// Returns once the health service says `status`.
    pub async fn wait_until(&self, status: ServingStatus) {
        marketplace_testkit::eventually(
            &format!("the account service reports {status:?}"),
            Duration::from_secs(30),
            || async move { (self.health().await == status).then_some(()) },
        )
        .await;
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A TCP proxy in front of a server; stopping it closes its port and every
/// connection through it, as a database going down would.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        connections.spawn(async move {
                            if let Ok(mut outbound) = TcpStream::connect(target).await {
                                let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                }
            }
            // Aborts every forwarding task and waits until each has dropped
            // its sockets; the listener is dropped on return.
            connections.shutdown().await;
        });
        Self { addr, stop, task }
    }

    /// Returns once the port and every connection through it are closed.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// `url` with its host and port replaced by `addr`.
pub fn through(url: &str, addr: SocketAddr) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_host(Some(&addr.ip().to_string())).unwrap();
    url.set_port(Some(addr.port())).unwrap();
    url.into()
}

/// The address a `postgres://` URL points at.
pub async fn server_addr(url: &str) -> SocketAddr {
    let url = url::Url::parse(url).unwrap();
    let host = url.host_str().unwrap().to_owned();
    let port = url.port().unwrap_or(5432);
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap()
}
