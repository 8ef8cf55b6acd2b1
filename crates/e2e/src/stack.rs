//! The whole system as real processes: five binaries on free ports, each stateful one on a fresh database,
//! all on a broker exchange of their own, configured only through environment variables.

use std::time::Duration;

use crate::{
    database::TestDatabase,
    process::{Probe, ServiceProcess, free_port},
};

/// How long any process may take to become ready before a test gives up on it.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The drain bound the stack runs with (`SHUTDOWN_GRACE_PERIOD_SECS`).
pub const GRACE: Duration = Duration::from_secs(5);

/// The gRPC services, with the label of their database.
pub const GRPC_SERVICES: [&str; 4] = ["user-metadata", "password", "email-verification", "friend-discovery"];

/// One service of the stack: its process, its ports, and its environment.
#[derive(Debug)]
pub struct Member {
    /// The running binary.
    pub process: ServiceProcess,
    /// `PORT`.
    pub port: u16,
    /// `METRICS_PORT` for gRPC services, `PORT` for signup-api.
    pub ops_port: u16,
    /// Exactly the environment it was started with.
    pub env: Vec<(String, String)>,
    /// How exec-to-ready is measured.
    pub probe: Probe,
}

/// The five processes and what they own. Dropping it kills the processes and drops the databases.
#[derive(Debug)]
pub struct Stack {
    /// The four gRPC services, in [`GRPC_SERVICES`] order, then signup-api.
    pub members: Vec<Member>,
    /// The exchange this stack's events go to.
    pub exchange: String,
    databases: Vec<TestDatabase>,
}

impl Stack {
    /// Creates the databases and starts all five binaries with `MIGRATE_ON_START=true`. Does not wait for them.
    pub async fn start() -> anyhow::Result<Self> {
        let exchange = format!("e2e.{}", uuid::Uuid::now_v7().simple());
        let mut members = Vec::new();
        let mut databases = Vec::new();
        for name in GRPC_SERVICES {
            let database = TestDatabase::create(name).await?;
            let (port, ops_port) = (free_port()?, free_port()?);
            let mut env = common_env(port);
            env.extend([
                var("METRICS_PORT", ops_port),
                var("DATABASE_URL", database.url()),
                var("MIGRATE_ON_START", "true"),
                var("AMQP_URL", crate::backing::amqp_url()),
                var("EVENTS_EXCHANGE", &exchange),
            ]);
            let process = ServiceProcess::spawn(name, &["serve"], &env)?;
            members.push(Member { process, port, ops_port, env, probe: Probe::Grpc(port) });
            databases.push(database);
        }
        let port = free_port()?;
        let mut env = common_env(port);
        let url = |i: usize| format!("http://127.0.0.1:{}", members[i].port);
        env.extend([
            var("USER_METADATA_URL", url(0)),
            var("PASSWORD_URL", url(1)),
            var("EMAIL_VERIFICATION_URL", url(2)),
            var("FRIEND_DISCOVERY_URL", url(3)),
        ]);
        let process = ServiceProcess::spawn("signup-api", &["serve"], &env)?;
        members.push(Member { process, port, ops_port: port, env, probe: Probe::Http(port) });
        Ok(Self { members, exchange, databases })
    }

    /// Waits until every process is ready; returns each one's exec-to-ready time.
    pub async fn wait_ready(&mut self) -> anyhow::Result<Vec<(String, Duration)>> {
        let mut times = Vec::new();
        for member in &mut self.members {
            let took = member.process.wait_ready(member.probe, READY_TIMEOUT).await?;
            times.push((member.process.name().to_owned(), took));
        }
        Ok(times)
    }

    /// The member running `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.process.name() == name)
    }

    /// The database of the gRPC service `name`.
    pub fn database(&self, name: &str) -> Option<&TestDatabase> {
        GRPC_SERVICES.iter().position(|s| *s == name).and_then(|i| self.databases.get(i))
    }

    /// signup-api's base URL.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.members[GRPC_SERVICES.len()].port)
    }
}

fn common_env(port: u16) -> Vec<(String, String)> {
    vec![
        var("PORT", port),
        var("LOG_FORMAT", "json"),
        var("RUST_LOG", "info"),
        var("SHUTDOWN_GRACE_PERIOD_SECS", GRACE.as_secs()),
    ]
}

/// One environment variable.
pub fn var(name: &str, value: impl ToString) -> (String, String) {
    (name.to_owned(), value.to_string())
}
