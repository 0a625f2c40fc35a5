//! The admin HTTP server of a process running gRPC services:
//! `/metrics` (Prometheus text), `/healthz` (200 while the process serves
//! at all) and `/readyz` (200 while every [`Readiness`] flag is up, else
//! 503 naming the ones that are down).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Metrics;

/// Whether one part of a process can serve: its store is reachable, it is
/// not shutting down. Starts down. Cheap to clone; clones share the flag.
#[derive(Debug, Clone)]
pub struct Readiness {
    name: Arc<str>,
    state: Arc<watch::Sender<bool>>,
}

impl Readiness {
    /// A flag for `name` (`the account database`), down until set.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            state: Arc::new(watch::channel(false).0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn set(&self, ready: bool) {
        self.state.send_if_modified(|state| {
            let changed = *state != ready;
            *state = ready;
            changed
        });
    }

    pub fn is_ready(&self) -> bool {
        *self.state.borrow()
    }

    /// A receiver that sees every change of the flag.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.state.subscribe()
    }
}

/// The admin server, bound and not yet serving.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    local_addr: SocketAddr,
}

#[derive(Debug, Clone)]
struct AdminState {
    metrics: Metrics,
    readiness: Arc<[Readiness]>,
}

impl AdminServer {
    /// Binds `addr`; port 0 picks a free port.
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

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        metrics: Metrics,
        readiness: Vec<Readiness>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let router = Router::new()
            .route("/metrics", get(render_metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready))
            .with_state(AdminState {
                metrics,
                readiness: readiness.into(),
            });
        tracing::info!(address = %self.local_addr, "serving /metrics, /healthz and /readyz");
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, String) {
    let down: Vec<&str> = state
        .readiness
        .iter()
        .filter(|r| !r.is_ready())
        .map(Readiness::name)
        .collect();
    if down.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", down.join(", ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_starts_down_and_tells_its_subscribers_of_changes() {
        let readiness = Readiness::new("the account database");
        let mut changes = readiness.subscribe();
        assert!(!readiness.is_ready());

        readiness.set(true);

        assert!(readiness.is_ready());
        assert!(changes.has_changed().unwrap());
        assert!(*changes.borrow_and_update());
        readiness.set(true);
        assert!(!changes.has_changed().unwrap());
    }
}
