//! What every marketplace gRPC service shares.
//!
//! - [`Listener`]: bind first (port 0 in tests), report the port, then
//!   [`Listener::serve`] the service next to `grpc.health.v1` and server
//!   reflection until a shutdown signal, draining in-flight calls.
//! - [`channel`]: a lazily connecting client channel with a connect timeout
//!   and a per-call deadline, so a service starts while its downstreams are
//!   still down and a call to a down downstream fails with `UNAVAILABLE`.
//! - [`internal`] and [`unavailable`]: the only ways backend errors become a
//!   [`Status`]: the cause goes to the log, the client gets a fixed message.
//! - [`observe`]: spans, request ids and metrics for every call served
//!   and made, as tower layers.
//! - [`verdict`] and [`failure_status`]: how a call's [`Status`] counts for
//!   retries and circuit breakers ([`marketplace_resilience`]), and how a
//!   guarded call's failure becomes one.

pub mod observe;

use std::error::Error;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use marketplace_resilience::{Failure, Verdict};
use marketplace_telemetry::{Metrics, Readiness};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tonic_health::ServingStatus;

/// A bound gRPC listener that has not started serving yet.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Listener {
    /// Binds `addr`; port 0 picks a free port (see [`Listener::local_addr`]).
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `routes` (the service named `serving.service_name`, e.g.
    /// `marketplace.account.v1.AccountService`) together with
    /// `grpc.health.v1` and server reflection (v1 and v1alpha) until
    /// `shutdown` completes; calls in flight then finish before this returns.
    ///
    /// The health service answers SERVING while every flag in
    /// `serving.readiness` is up, and NOT_SERVING from the moment shutdown
    /// begins. Every call is traced, logged and counted
    /// ([`observe::ServerLayer`]).
    pub async fn serve(
        self,
        serving: Serving,
        routes: Routes,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let Serving {
            service_name,
            component,
            metrics,
            readiness,
        } = serving;
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection_v1 = reflection(service_name).build_v1();
        let reflection_v1alpha = reflection(service_name).build_v1alpha();
        let routes = match (reflection_v1, reflection_v1alpha) {
            (Ok(v1), Ok(v1alpha)) => routes.add_service(v1).add_service(v1alpha),
            (Err(error), _) | (_, Err(error)) => {
                // The descriptor set is compiled into the binary; this is a
                // build defect, and the service itself still works.
                tracing::error!(%error, "server reflection is unavailable");
                routes
            }
        };
        let reporter = tokio::spawn(report_health(
            health.clone(),
            service_name,
            readiness.clone(),
        ));
        tracing::info!(address = %self.local_addr, service = service_name, "serving gRPC");
        // Small responses go out at once instead of waiting for Nagle's
        // algorithm to coalesce them with data that is not coming.
        let incoming = TcpListenerStream::new(self.listener).map(|connection| {
            connection.and_then(|stream| {
                stream.set_nodelay(true)?;
                Ok(stream)
            })
        });
        let shutdown = async move {
            shutdown.await;
            reporter.abort();
            for name in [service_name, ""] {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        };
        Server::builder()
            .layer(observe::ServerLayer::new(component, metrics))
            .add_routes(routes.add_service(health_service))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }
}

/// What every part of a process shares: one metrics registry, and the
/// retry and breaker settings.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    pub metrics: Metrics,
    pub resilience: marketplace_config::ResilienceConfig,
}

/// What [`Listener::serve`] serves, and for whom.
#[derive(Debug, Clone)]
pub struct Serving {
    /// The gRPC service's full name (`marketplace.order.v1.OrderService`).
    pub service_name: &'static str,
    /// The part of the marketplace it is (`order`), for logs and metrics.
    pub component: &'static str,
    pub metrics: Metrics,
    /// What must be up for the service to report SERVING (its store).
    pub readiness: Vec<Readiness>,
}

/// Keeps the health service's answer in step with the readiness flags.
async fn report_health(
    health: tonic_health::server::HealthReporter,
    service_name: &'static str,
    readiness: Vec<Readiness>,
) {
    let mut changes: Vec<_> = readiness.iter().map(Readiness::subscribe).collect();
    loop {
        let status = if readiness.iter().all(Readiness::is_ready) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in [service_name, ""] {
            health.set_service_status(name, status).await;
        }
        if changes.is_empty() {
            return;
        }
        let next = any_changed(&mut changes).await;
        if next.is_err() {
            return;
        }
    }
}

/// Waits until any of the flags changes; `Err` once a sender is gone.
async fn any_changed(
    changes: &mut [tokio::sync::watch::Receiver<bool>],
) -> Result<(), tokio::sync::watch::error::RecvError> {
    let waits = changes
        .iter_mut()
        .map(|receiver| Box::pin(receiver.changed()));
    futures::future::select_all(waits).await.0
}

/// Reflection over the services this server really serves: the descriptor
/// set holds every marketplace service, but each process serves one.
fn reflection(service_name: &str) -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(marketplace_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service_name)
        .with_service_name("grpc.health.v1.Health")
}

/// How a client reaches a downstream service.
#[derive(Debug, Clone, Copy)]
pub struct ChannelSettings {
    /// Longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// Deadline of every call.
    pub call_timeout: Duration,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
        }
    }
}

/// A client channel to `url` (`http://host:port`) that connects on first
/// use and reconnects after failures.
pub fn channel(url: &str, settings: ChannelSettings) -> Result<Channel, InvalidUrl> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|_| InvalidUrl(url.to_owned()))?
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.call_timeout)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// Like [`channel`], with every call traced, carrying the request id and
/// counted as made by `component` ([`observe::ObservedChannel`]).
pub fn observed_channel(
    url: &str,
    settings: ChannelSettings,
    component: &'static str,
    metrics: &Metrics,
) -> Result<observe::ObservedChannel, InvalidUrl> {
    Ok(observe::ObservedChannel::new(
        channel(url, settings)?,
        component,
        metrics.clone(),
    ))
}

/// A client channel to `url` for long-lived server streams (watches): like
/// [`channel`], but without a per-call deadline, which would cut the
/// stream, and with HTTP/2 keepalive pings so that a dead peer is noticed
/// while the stream is idle.
pub fn streaming_channel(url: &str, connect_timeout: Duration) -> Result<Channel, InvalidUrl> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|_| InvalidUrl(url.to_owned()))?
        .connect_timeout(connect_timeout)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// A downstream URL that is not a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUrl(pub String);

impl std::fmt::Display for InvalidUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} is not a valid gRPC URL (expected http://host:port)",
            self.0
        )
    }
}

impl Error for InvalidUrl {}

/// An unexpected failure: logged with its cause chain, answered with
/// `INTERNAL` and a message that reveals nothing of the backend.
pub fn internal(what: &str, error: &(dyn Error + 'static)) -> Status {
    tracing::error!(error = %chain(error), "{what} failed");
    Status::internal(format!("{what} failed; the error is logged on the server"))
}

/// A backend that cannot be reached: logged with its cause chain, answered
/// with `UNAVAILABLE` naming only the kind of backend.
pub fn unavailable(backend: &str, error: &(dyn Error + 'static)) -> Status {
    tracing::warn!(error = %chain(error), "{backend} is unavailable");
    Status::unavailable(format!("{backend} is unavailable; try again later"))
}

/// How a call's result counts for retries and the circuit breaker: the
/// codes that mean the service did not answer (down, overloaded, out of
/// time) are failures; every other answer, errors included, shows the
/// service working.
pub fn verdict<T>(result: &Result<T, Status>) -> Verdict {
    match result {
        Ok(_) => Verdict::Ok,
        Err(status) => match status.code() {
            // A channel's own deadline surfaces as CANCELLED ("Timeout
            // expired").
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted => Verdict::Failed,
            _ => Verdict::Rejected,
        },
    }
}

/// The status a guarded call to `dependency` ends with.
pub fn failure_status(dependency: &str, failure: Failure<Status>) -> Status {
    match failure {
        Failure::Failed(status) => status,
        Failure::Open => Status::unavailable(format!(
            "{dependency} is unavailable (circuit breaker open); try again later"
        )),
        Failure::TimedOut => {
            Status::deadline_exceeded(format!("{dependency} did not answer within the deadline"))
        }
    }
}

/// A store that has not been reached yet since start-up: the cause (why
/// the last attempt failed) goes to the debug log, since start-up already
/// warns of each failed attempt; the client gets `UNAVAILABLE` naming only
/// the kind of backend.
pub fn not_ready(backend: &str, error: &(dyn Error + 'static)) -> Status {
    tracing::debug!(error = %chain(error), "{backend} is not ready yet; call refused");
    Status::unavailable(format!("{backend} is not ready; try again later"))
}

/// `error: cause: cause`, for one log field.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Completes on SIGTERM or Ctrl-C, for [`Listener::serve`]'s shutdown.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing calls in flight");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn backend_text_goes_to_the_log_not_the_status() {
        let error = Outer(io::Error::other(
            "password authentication failed for user app",
        ));

        let status = internal("storing the account", &error);

        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            !status.message().contains("password"),
            "{}",
            status.message()
        );
        assert_eq!(
            chain(&error),
            "outer: password authentication failed for user app"
        );
        let status = unavailable("the account database", &error);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!status.message().contains("password"));
    }

    #[tokio::test]
    async fn malformed_downstream_urls_are_refused() {
        assert!(channel("not a url", ChannelSettings::default()).is_err());
        assert!(channel("http://127.0.0.1:1", ChannelSettings::default()).is_ok());
    }
}
