//! The skeleton every gRPC service shares, so that a service crate shows only what makes it itself.
//!
//! A service declares its name, its default ports, its settings, how it migrates and serves, and its admin
//! subcommands ([`Service`]). This module provides the rest: the command line (`serve`, `migrate`, `healthcheck`
//! and the service's own subcommands), telemetry started before a command and flushed after it, and [`Host`]:
//! the backing services attached, the two listeners bound, health, reflection and the service's API served, the
//! background workers run, and everything drained on one clock at shutdown.

use std::{future::Future, process::ExitCode, time::Duration};

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{
    amqp::Broker,
    backing::Backing,
    events::{ConsumerStatus, Handler},
    server::GrpcServer,
    settings::{Common, Load, Ports, ServerSettings, SettingsError},
};

/// What makes a gRPC service itself. Everything else is [`main`] and [`Host`].
pub trait Service {
    /// The binary's, the service's and the default database's name (with `-` as `_` for the database).
    const NAME: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    /// The default ports.
    const PORTS: Ports;
    /// The event types the service acts on: its queue receives these and no others. None: it has no queue.
    const EVENTS: &'static [&'static str];
    /// The embedded schema migrations of the service's database: [`migrations!`](crate::migrations).
    const MIGRATIONS: &'static [crate::db::MigrationFile];
    /// What the service reads from the environment beyond the [`Common`] part every service reads.
    type Settings: Load + Send + 'static;
    /// The service's admin subcommands (`repair`, `archive`, ...).
    type Admin: Subcommand + Send + 'static;

    /// Checks what only serving needs, before anything is connected or bound.
    fn check_serve(_settings: &Self::Settings) -> Result<(), SettingsError> {
        Ok(())
    }
    /// Serves the service's API and runs its workers on `host` (built: database checked, broker connecting,
    /// listeners bound) until `shutdown` is cancelled, then drains within the grace period: [`Host::run`].
    fn serve(
        host: Host,
        settings: Self::Settings,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Runs one admin subcommand to completion.
    fn admin(
        common: Common,
        settings: Self::Settings,
        command: Self::Admin,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

#[derive(Parser)]
#[command(version)]
struct Cli<A: Subcommand> {
    #[command(subcommand)]
    command: Option<Command<A>>,
}

#[derive(Subcommand)]
enum Command<A: Subcommand> {
    /// Serve gRPC on PORT (the default command).
    Serve,
    /// Create the database if it is missing, apply pending migrations, declare the event queue, and exit.
    Migrate,
    /// Probe the running server: exit 0 when it is ready (gRPC health on PORT; `/readyz` on METRICS_PORT with
    /// mutual TLS, whose gRPC port takes no caller without a service's certificate).
    Healthcheck {
        /// Probe liveness instead (`/livez` on METRICS_PORT): for platforms that restart unhealthy tasks.
        #[arg(long)]
        live: bool,
    },
    #[command(flatten)]
    Admin(A),
}

/// The whole `main` of a service binary: parses the command line, runs the command, and turns its outcome into the
/// exit code (printing a failure with its cause chain).
pub async fn main<S: Service>() -> ExitCode {
    let matches = Cli::<S::Admin>::command().name(S::NAME).about(S::ABOUT).get_matches();
    let command = match Cli::<S::Admin>::from_arg_matches(&matches) {
        Ok(cli) => cli.command.unwrap_or(Command::Serve),
        Err(error) => error.exit(),
    };
    crate::cli::exit(run::<S>(command).await)
}

async fn run<S: Service>(command: Command<S::Admin>) -> anyhow::Result<()> {
    crate::tls::init_mutual_tls()?;
    if let Command::Healthcheck { live } = command {
        let ports = ServerSettings::load(S::PORTS)?;
        // With mutual TLS the gRPC port takes only the services' certificates: readiness is asked where it is
        // the same answer, `/readyz` on the operational port.
        return match (live, crate::tls::mutual_tls().is_some()) {
            (true, _) => crate::healthcheck::http(ports.metrics_port, "/livez").await,
            (false, true) => crate::healthcheck::http(ports.metrics_port, "/readyz").await,
            (false, false) => crate::healthcheck::grpc(ports.port).await,
        };
    }
    let (common, settings) = (Common::load(S::NAME, S::PORTS, S::EVENTS)?, S::Settings::load()?);
    let telemetry = crate::telemetry::init(S::NAME, &common.telemetry)?;
    let result = match command {
        Command::Serve => serve::<S>(common, settings).await,
        Command::Migrate => migrate(&common, S::MIGRATIONS).await,
        Command::Admin(admin) => S::admin(common, settings, admin).await,
        Command::Healthcheck { .. } => Ok(()),
    };
    telemetry.shutdown();
    result
}

async fn serve<S: Service>(common: Common, settings: S::Settings) -> anyhow::Result<()> {
    S::check_serve(&settings)?;
    let host = Host::build(S::NAME, common, S::MIGRATIONS).await?;
    S::serve(host, settings, crate::shutdown::token_from(crate::shutdown::signal())).await
}

/// The `migrate` subcommand: creates the database if missing and applies pending migrations, then declares the
/// service's queue on the broker if it subscribes, so no event published from now on can miss it.
pub async fn migrate(common: &Common, migrations: &[crate::db::MigrationFile]) -> anyhow::Result<()> {
    crate::db::migrate_command(&common.database, migrations).await?;
    match &common.subscription {
        Some(subscription) => crate::events::declare_subscription(&common.amqp, subscription).await,
        None => Ok(()),
    }
}

/// A background task of a service (an event consumer, the outbox relay, the mail sender, a janitor): it must end
/// when the shutdown token it was given is cancelled, and is given until the end of the grace period to do so.
/// It starts when [`Host::run`] first reports ready (so it never competes with the start for a connection), or
/// when [`Worker::start`] is called.
pub struct Worker {
    name: &'static str,
    work: Option<futures_util::future::BoxFuture<'static, ()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).field("started", &self.task.is_some()).finish()
    }
}

impl Worker {
    /// `work`, to run in the background under `name` once started.
    pub fn new(name: &'static str, work: impl Future<Output = ()> + Send + 'static) -> Self {
        Self { name, work: Some(Box::pin(work)), task: None }
    }

    /// Starts the work, if it has not started yet.
    pub fn start(&mut self) {
        if let Some(work) = self.work.take() {
            self.task = Some(tokio::spawn(work));
        }
    }

    /// Waits for the worker to end until `deadline`, then aborts it. A worker never started has nothing to drain.
    pub async fn drain(self, deadline: tokio::time::Instant) {
        if let Some(task) = self.task {
            crate::shutdown::drain(self.name, task, deadline).await;
        }
    }

    /// Runs `chore` every `every` interval, the first time one interval after start, until `cancel` fires (a
    /// janitor: what it removes is also checked wherever it is read, so a failure only waits for the next round).
    pub fn every<F, Fut>(name: &'static str, every: Duration, cancel: CancellationToken, mut chore: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        Self::new(name, async move {
            while crate::backoff::pause(every, &cancel).await {
                chore().await;
            }
        })
    }
}

/// A gRPC service's process: its backing services, its listeners and what it reports about itself.
#[derive(Debug)]
pub struct Host {
    server: GrpcServer,
    backing: Backing,
    consumer: ConsumerStatus,
    common: Common,
}

impl Host {
    /// Does the I/O setup every service needs: declares the service's queue first when it migrates on start,
    /// connects to the database (checking or applying its migrations), starts connecting to the broker, and binds
    /// `PORT` and `METRICS_PORT` (port 0 allowed).
    pub async fn build(
        name: &'static str,
        common: Common,
        migrations: &[crate::db::MigrationFile],
    ) -> anyhow::Result<Self> {
        if let (true, Some(subscription)) = (common.database.migrate_on_start, &common.subscription) {
            crate::events::declare_subscription(&common.amqp, subscription).await?;
        }
        let backing = Backing::attach(&common.database, migrations, Some((&common.amqp, name))).await?;
        let consumer = ConsumerStatus::default();
        let readiness = match common.subscription {
            Some(_) => backing.readiness().inform("consumer", consumer.readiness_check()),
            None => backing.readiness(),
        };
        let server = GrpcServer::bind(&common.server, readiness.build()).await?;
        Ok(Self { server, backing, consumer, common })
    }

    /// What every service reads: ports, database, broker, subscription, shutdown, telemetry.
    pub fn common(&self) -> &Common {
        &self.common
    }

    /// The service's own database.
    pub fn pool(&self) -> &PgPool {
        &self.backing.pool
    }

    /// The event consumer of the service's subscription, applying events with `handler` until `cancel` fires.
    /// `None` for a service that subscribes to nothing.
    pub fn consumer<H: Handler>(&self, handler: H, cancel: &CancellationToken) -> Option<Worker> {
        let subscription = self.common.subscription.clone()?;
        let (status, cancel) = (self.consumer.clone(), cancel.clone());
        self.broker_worker("event consumer", move |broker, pool| {
            crate::events::consume(broker, subscription, std::sync::Arc::new(handler), pool, status, cancel)
        })
    }

    /// A worker that needs the broker (and the pool), started once the broker handle exists.
    pub fn broker_worker<F, Fut>(&self, name: &'static str, work: F) -> Option<Worker>
    where
        F: FnOnce(Broker, PgPool) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let broker = self.backing.broker.clone()?;
        Some(Worker::new(name, work(broker, self.backing.pool.clone())))
    }

    /// Serves health, reflection and `service` until `cancel` fires, with `workers` running beside it. Then, on
    /// one clock that starts when draining begins: the servers stop accepting and finish their calls, the workers
    /// finish what they hold, and the broker and the pool close, all within `SHUTDOWN_GRACE_PERIOD_SECS`.
    pub async fn run<S>(self, service: S, mut workers: Vec<Worker>, cancel: CancellationToken) -> anyhow::Result<()>
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let grace = self.common.shutdown.grace_period();
        // `grpc.health.v1` following readiness (overall and for `S`), reflection over every contract, the service.
        let health = crate::grpc::health_service::<S>(self.server.readiness());
        let routes = Routes::new(health).add_service(crate::grpc::reflection_service()?).add_service(service);
        let mut reports = self.server.readiness().subscribe();
        let serving = self.server.run(routes, cancel, grace);
        tokio::pin!(serving);
        // The workers start once the process is first ready: until then the start has the pool to itself.
        let began = tokio::select! {
            began = &mut serving => began,
            () = async { drop(reports.wait_for(|report| report.ready).await) } => {
                workers.iter_mut().for_each(Worker::start);
                serving.await
            }
        };
        let deadline = began + grace;
        for worker in workers {
            worker.drain(deadline).await;
        }
        self.backing.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
