//! A gRPC service process as the platform sees it: the RPC listener, the operational HTTP listener
//! (`/livez`, `/readyz`, `/metrics`), the readiness monitor, and one shutdown sequence for all of them.

use std::{net::SocketAddr, time::Duration};

use tokio::time::Instant;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{health::Readiness, settings::ServerSettings};

/// Both listeners of a gRPC service, bound (port 0 allowed) so tests and callers can learn the real ports.
#[derive(Debug)]
pub struct GrpcServer {
    grpc: TcpListener,
    ops: TcpListener,
    readiness: Readiness,
}

impl GrpcServer {
    /// Binds `PORT` and `METRICS_PORT` on all interfaces.
    pub async fn bind(settings: &ServerSettings, readiness: Readiness) -> anyhow::Result<Self> {
        crate::metrics::handle();
        Ok(Self {
            grpc: bind(settings.port, "PORT").await?,
            ops: bind(settings.metrics_port, "METRICS_PORT").await?,
            readiness,
        })
    }

    /// The readiness this server reports.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Where gRPC is served.
    pub fn local_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Where `/livez`, `/readyz` and `/metrics` are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `cancel` fires; then reports not ready, stops accepting, and lets in-flight calls finish until
    /// `grace` after that moment. Returns the moment draining began, the start of the one clock every later
    /// drain step of the shutdown is bounded by.
    pub async fn run(self, routes: Routes, cancel: CancellationToken, grace: Duration) -> Instant {
        let (addr, ops_addr) = (self.local_addr(), self.ops_addr());
        let monitor = tokio::spawn(self.readiness.clone().monitor(cancel.clone()));
        let router = crate::http::operational_router(self.readiness.clone());
        let ops = tokio::spawn(crate::http::serve(self.ops, router, cancel.clone()));
        let grpc = tokio::spawn(crate::grpc::serve(self.grpc, routes, cancel.clone()));
        tracing::info!(grpc = %addr, ops = %ops_addr, "{SERVING}");

        cancel.cancelled().await;
        let began = Instant::now();
        self.readiness.start_draining();
        tracing::info!(grace_secs = grace.as_secs(), "draining");
        crate::shutdown::drain("gRPC server", grpc, began + grace).await;
        crate::shutdown::drain("operational HTTP server", ops, began + grace).await;
        let _ = monitor.await;
        began
    }
}

/// The message of the line every server logs once it listens, with one field per listener (`grpc`, `http`,
/// `ops`) holding its address. It is an interface, not just a log line: test harnesses and people learn a
/// process's ports from it when they ask for port 0. Its message and field names do not change.
pub const SERVING: &str = "serving";

/// Binds `0.0.0.0:port`; the error names the variable the port came from.
pub async fn bind(port: u16, variable: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
        .await
        .with_context(|| format!("cannot listen on {variable}={port}"))
}
