//! Alive is not ready: a process stays up through an outage of its backing services, reports not ready while
//! it lasts, and recovers by itself.

use std::time::Duration;

use e2e::{
    database::TestDatabase,
    poll::eventually,
    process::{Probe, ServiceProcess, Serving, free_port, is_ready},
    stack::{READY_TIMEOUT, var},
};
use serde_json::Value;

async fn readyz(ops_port: u16) -> anyhow::Result<(u16, Value)> {
    let response = reqwest::get(format!("http://127.0.0.1:{ops_port}/readyz")).await?;
    Ok((response.status().as_u16(), response.json().await?))
}

#[tokio::test]
async fn a_service_whose_broker_is_unreachable_stays_ready_and_reports_degraded() -> anyhow::Result<()> {
    let database = TestDatabase::create("user-metadata").await?;
    let closed = free_port()?;
    let env = vec![
        var("DATABASE_URL", database.url()),
        var("MIGRATE_ON_START", "true"),
        var("AMQP_URL", format!("amqp://guest:guest@127.0.0.1:{closed}/%2f")),
    ];
    let Serving { mut process, port, ops_port, env } = ServiceProcess::serve("user-metadata", &env).await?;

    let (status, body) = eventually(READY_TIMEOUT, || async {
        let (status, body) = readyz(ops_port).await?;
        anyhow::ensure!(body["checks"]["database"] == "ok", "database not checked yet: {body}");
        anyhow::ensure!(body["checks"]["broker"].is_string(), "broker not checked yet: {body}");
        Ok((status, body))
    })
    .await?;
    let livez = reqwest::get(format!("http://127.0.0.1:{ops_port}/livez")).await?.status();
    let grpc = is_ready(Probe::Grpc(port)).await;
    let healthcheck = ServiceProcess::run("user-metadata", &["healthcheck"], &env).await?;

    // Signups must keep being accepted into the outbox while the broker is away: degraded, not unready.
    assert_eq!(livez, 200);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_ne!(body["checks"]["broker"], "ok", "{body}");
    assert!(grpc.is_ok(), "gRPC health must stay SERVING without a broker: {grpc:?}");
    assert_eq!(healthcheck.status.code(), Some(0));
    process.sigterm()?;
    assert!(process.wait(Duration::from_secs(10)).await?.success());
    Ok(())
}

#[tokio::test]
async fn readiness_follows_the_database_going_away_and_coming_back() -> anyhow::Result<()> {
    let database = TestDatabase::create("password").await?;
    let env = vec![
        var("DATABASE_URL", database.url()),
        var("MIGRATE_ON_START", "true"),
        var("DATABASE_CONNECT_TIMEOUT_SECS", 1),
    ];
    let Serving { mut process, port, ops_port, env } = ServiceProcess::serve("password", &env).await?;
    process.wait_ready(Probe::Grpc(port), READY_TIMEOUT).await?;

    database.cut_off().await?;
    let down = eventually(READY_TIMEOUT, || async {
        let (status, body) = readyz(ops_port).await?;
        anyhow::ensure!(status == 503, "still ready: {body}");
        Ok(body)
    })
    .await;
    let live_while_down = ServiceProcess::run("password", &["healthcheck", "--live"], &env).await?;
    let ready_while_down = ServiceProcess::run("password", &["healthcheck"], &env).await?;
    database.restore().await?;
    let back = eventually(READY_TIMEOUT, || is_ready(Probe::Grpc(port))).await;

    let down = down?;
    assert_ne!(down["checks"]["database"], "ok", "{down}");
    assert!(live_while_down.status.success(), "a database outage must not fail liveness");
    assert_eq!(ready_while_down.status.code(), Some(1), "readiness must follow the database");
    back?;
    process.sigterm()?;
    assert!(process.wait(Duration::from_secs(10)).await?.success());
    Ok(())
}
