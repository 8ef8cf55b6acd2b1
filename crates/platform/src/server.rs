//! A gRPC service process as the platform sees it: the RPC listener, the operational HTTP listener
//! (`/livez`, `/readyz`, `/metrics`), the readiness monitor, and one shutdown sequence for all of them.

use std::{net::SocketAddr, time::Duration};

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

    /// Serves until `cancel` fires; then reports not ready, stops accepting, and drains in-flight calls within
    /// `grace`. Returns once both servers have stopped.
    pub async fn run(self, routes: Routes, cancel: CancellationToken, grace: Duration) {
        let addr = self.local_addr();
        let ops_addr = self.ops_addr();
        let monitor = tokio::spawn(self.readiness.clone().monitor(cancel.clone()));
        let ops = tokio::spawn(crate::http::serve(
            self.ops,
            crate::http::operational_router(self.readiness.clone()),
            cancel.clone(),
            grace,
        ));
        let grpc = tokio::spawn(crate::grpc::serve(self.grpc, routes, cancel.clone(), grace));
        tracing::info!(grpc = %addr, ops = %ops_addr, "serving");

        cancel.cancelled().await;
        self.readiness.start_draining();
        tracing::info!(grace_secs = grace.as_secs(), "draining");
        let _ = tokio::join!(monitor, ops, grpc);
    }
}

/// Binds `0.0.0.0:port`; the error names the variable the port came from.
pub async fn bind(port: u16, variable: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
        .await
        .with_context(|| format!("cannot listen on {variable}={port}"))
}
