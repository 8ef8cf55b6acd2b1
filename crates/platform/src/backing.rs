//! A stateful service's backing services, attached by URL: its own Postgres database (migrated or checked at
//! start) and, when it publishes or consumes events, the broker. Closed last, after the servers drained.

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    amqp::Broker,
    health::{Readiness, ReadinessBuilder},
    settings::{AmqpSettings, DatabaseSettings},
};

/// The open pool and, if any, the broker connection of one service.
#[derive(Debug)]
pub struct Backing {
    /// The service's own database.
    pub pool: PgPool,
    /// The broker connection, for services that publish or consume events.
    pub broker: Option<Broker>,
    broker_task: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Backing {
    /// Connects to the database (failing fast on a bad `DATABASE_URL`), checks or applies the migrations, and
    /// starts connecting to the broker in the background when `amqp` is given.
    pub async fn attach(
        database: &DatabaseSettings,
        migrations: &[crate::db::MigrationFile],
        amqp: Option<(&AmqpSettings, &'static str)>,
    ) -> anyhow::Result<Self> {
        let pool = crate::db::connect(database).await?;
        crate::db::ensure_migrated(&pool, migrations, database.migrate_on_start).await?;
        let (broker, broker_task) = match amqp {
            Some((settings, name)) => {
                let cancel = CancellationToken::new();
                let (broker, task) = Broker::spawn(settings, name, cancel.clone())?;
                (Some(broker), Some((cancel, task)))
            }
            None => (None, None),
        };
        Ok(Self { pool, broker, broker_task })
    }

    /// A readiness builder that already checks the database (critical) and, if attached, the broker
    /// (informational: without it the service still serves, and the outbox or the queue absorbs the outage).
    pub fn readiness(&self) -> ReadinessBuilder {
        let pool = self.pool.clone();
        let builder = Readiness::builder().check("database", move || {
            let pool = pool.clone();
            async move { sqlx::query("SELECT 1").execute(&pool).await.map(drop).map_err(|e| e.to_string()) }
        });
        match &self.broker {
            Some(broker) => builder.inform("broker", broker.readiness_check()),
            None => builder,
        }
    }

    /// Closes the broker connection, then the pool. Call it after every server and worker has drained.
    pub async fn close(self) {
        if let Some((cancel, task)) = self.broker_task {
            cancel.cancel();
            let _ = task.await;
        }
        self.pool.close().await;
    }
}
