//! The `healthcheck` subcommand: probes this process's own server on loopback, so minimal images with no shell
//! or curl can still be health-checked by compose and ECS. Ready means exit 0; anything else exits 1.

use std::time::Duration;

use anyhow::{Context as _, bail};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

const TIMEOUT: Duration = Duration::from_secs(3);

/// Asks the gRPC server on `port` for the overall `grpc.health.v1` status; succeeds only when SERVING.
pub async fn grpc(port: u16) -> anyhow::Result<()> {
    let probe = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect_timeout(TIMEOUT)
            .connect()
            .await
            .with_context(|| format!("cannot connect to 127.0.0.1:{port}"))?;
        let response = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await?;
        match response.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            status => bail!("server reports {}", status.as_str_name()),
        }
    };
    tokio::time::timeout(TIMEOUT, probe).await.context("health check timed out")?
}

/// GETs `path` from the HTTP server on `port`; succeeds only on a 200.
pub async fn http(port: u16, path: &str) -> anyhow::Result<()> {
    let probe = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("cannot connect to 127.0.0.1:{port}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = http::Request::get(path).header(http::header::HOST, "localhost").body(Empty::<Bytes>::new())?;
        let status = sender.send_request(request).await?.status();
        if status != http::StatusCode::OK {
            bail!("{path} answered {status}");
        }
        Ok(())
    };
    tokio::time::timeout(TIMEOUT, probe).await.context("health check timed out")?
}

/// The `healthcheck` of an HTTP service whose probes live on `METRICS_PORT` (default `defaults.ops`): `/readyz`,
/// or `/livez` when `live`.
pub async fn http_ready(defaults: crate::settings::Ports, live: bool) -> anyhow::Result<()> {
    let port = crate::settings::ServerSettings::load(defaults)?.metrics_port;
    http(port, if live { "/livez" } else { "/readyz" }).await
}
