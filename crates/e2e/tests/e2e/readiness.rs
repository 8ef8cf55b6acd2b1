//! Alive is not ready: a process stays up through an outage of its backing services, reports not ready while
//! it lasts, and recovers by itself.

use std::time::Duration;

use e2e::{
    database::TestDatabase,
    poll::eventually,
    process::{Probe, ServiceProcess, free_port, is_ready},
    stack::{READY_TIMEOUT, var},
};
use serde_json::Value;

async fn readyz(ops_port: u16) -> anyhow::Result<(u16, Value)> {
    let response = reqwest::get(format!("http://127.0.0.1:{ops_port}/readyz")).await?;
    Ok((response.status().as_u16(), response.json().await?))
}

#[tokio::test]
async fn a_service_whose_broker_is_unreachable_is_alive_but_not_ready() -> anyhow::Result<()> {
    let database = TestDatabase::create("user-metadata").await?;
    let (port, ops_port, closed) = (free_port()?, free_port()?, free_port()?);
    let env = vec![
        var("PORT", port),
        var("METRICS_PORT", ops_port),
        var("DATABASE_URL", database.url()),
        var("MIGRATE_ON_START", "true"),
        var("AMQP_URL", format!("amqp://guest:guest@127.0.0.1:{closed}/%2f")),
    ];
    let mut process = ServiceProcess::spawn("user-metadata", &["serve"], &env)?;

    let (status, body) = eventually(READY_TIMEOUT, || async {
        let (status, body) = readyz(ops_port).await?;
        anyhow::ensure!(body["checks"]["database"] == "ok", "database not checked yet: {body}");
        Ok((status, body))
    })
    .await?;
    let livez = reqwest::get(format!("http://127.0.0.1:{ops_port}/livez")).await?.status();
    let grpc = is_ready(Probe::Grpc(port)).await;
    let healthcheck = ServiceProcess::run("user-metadata", &["healthcheck"], &env).await?;

    assert_eq!(livez, 200);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_ne!(body["checks"]["broker"], "ok", "{body}");
    assert!(grpc.is_err(), "gRPC health says SERVING without a broker");
    assert_eq!(healthcheck.status.code(), Some(1));
    process.sigterm()?;
    assert!(process.wait(Duration::from_secs(10)).await?.success());
    Ok(())
}

#[tokio::test]
async fn readiness_follows_the_database_going_away_and_coming_back() -> anyhow::Result<()> {
    let database = TestDatabase::create("password").await?;
    let (port, ops_port) = (free_port()?, free_port()?);
    let env = vec![
        var("PORT", port),
        var("METRICS_PORT", ops_port),
        var("DATABASE_URL", database.url()),
        var("MIGRATE_ON_START", "true"),
        var("DATABASE_CONNECT_TIMEOUT_SECS", 1),
    ];
    let mut process = ServiceProcess::spawn("password", &["serve"], &env)?;
    process.wait_ready(Probe::Grpc(port), READY_TIMEOUT).await?;

    database.cut_off().await?;
    let down = eventually(READY_TIMEOUT, || async {
        let (status, body) = readyz(ops_port).await?;
        anyhow::ensure!(status == 503, "still ready: {body}");
        Ok(body)
    })
    .await;
    database.restore().await?;
    let back = eventually(READY_TIMEOUT, || is_ready(Probe::Grpc(port))).await;

    let down = down?;
    assert_ne!(down["checks"]["database"], "ok", "{down}");
    back?;
    process.sigterm()?;
    assert!(process.wait(Duration::from_secs(10)).await?.success());
    Ok(())
}
