//! The broker connection, kept alive in the background: it reconnects with capped exponential backoff after
//! any failure, and publishes the current connection so consumers and relays can (re)start on it. The process
//! keeps serving while the broker is away; readiness says so.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use lapin::{Connection, ConnectionProperties, Event};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    backoff::{Backoff, pause},
    settings::AmqpSettings,
};

/// Reconnecting: 0.2 s doubling to 10 s, with full jitter so the replicas a broker restart disconnected do not
/// all come back at the same moment.
const RECONNECT: Backoff = Backoff::jittered(Duration::from_millis(200), Duration::from_secs(10));
/// How often a live connection is looked at, in case it died without telling us.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// A handle on the current broker connection, if any. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    current: watch::Receiver<Option<Arc<Connection>>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("connected", &self.is_connected()).finish()
    }
}

impl Broker {
    /// Starts connecting in the background under `name` (shown in the broker's UI). The task closes the
    /// connection and ends when `cancel` fires.
    pub fn spawn(
        settings: &AmqpSettings,
        name: &'static str,
        cancel: CancellationToken,
    ) -> anyhow::Result<(Self, tokio::task::JoinHandle<()>)> {
        let uri = settings.uri()?;
        let where_ = settings.redacted();
        let (sender, current) = watch::channel(None);
        let task = tokio::spawn(supervise(uri, where_, name, sender, cancel));
        Ok((Self { current }, task))
    }

    /// True while a connection is open.
    pub fn is_connected(&self) -> bool {
        self.current.borrow().as_ref().is_some_and(|c| c.status().connected())
    }

    /// Waits for an open connection; `None` once the broker handle has shut down.
    pub async fn connection(&self) -> Option<Arc<Connection>> {
        let mut current = self.current.clone();
        let result = current.wait_for(|c| c.as_ref().is_some_and(|c| c.status().connected())).await;
        result.ok().and_then(|c| c.clone())
    }

    /// Waits for an open connection; `None` once the broker handle has shut down or `cancel` fired.
    pub async fn connection_until(&self, cancel: &CancellationToken) -> Option<Arc<Connection>> {
        cancel.run_until_cancelled(self.connection()).await.flatten()
    }

    /// A readiness check for this connection.
    pub fn readiness_check(&self) -> impl Fn() -> std::future::Ready<Result<(), String>> + Send + Sync + 'static {
        let broker = self.clone();
        move || std::future::ready(if broker.is_connected() { Ok(()) } else { Err("not connected".to_owned()) })
    }
}

/// One connection for a one-off task (`migrate`, `repair`), bounded in time, with an error that says where.
pub async fn connect_once(settings: &AmqpSettings) -> anyhow::Result<Connection> {
    let connect = Connection::connect_uri(settings.uri()?, ConnectionProperties::default());
    tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .with_context(|| format!("connecting to the broker at AMQP_URL ({}) timed out", settings.redacted()))?
        .with_context(|| format!("cannot connect to the broker at AMQP_URL ({})", settings.redacted()))
}

async fn supervise(
    uri: lapin::uri::AMQPUri,
    where_: String,
    name: &'static str,
    current: watch::Sender<Option<Arc<Connection>>>,
    cancel: CancellationToken,
) {
    let mut attempt = 0u32;
    loop {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connect = Connection::connect_uri(uri.clone(), properties);
        let Some(connected) = cancel.run_until_cancelled(connect).await else { return };
        match connected {
            Ok(connection) => {
                let connection = Arc::new(connection);
                tracing::info!(broker = %where_, "connected to the broker");
                attempt = 0;
                current.send_replace(Some(connection.clone()));
                let lost = watch_connection(&connection, &cancel).await;
                current.send_replace(None);
                if !lost {
                    close(&connection).await;
                    return;
                }
            }
            Err(error) => tracing::warn!(broker = %where_, %error, "cannot connect to the broker"),
        }
        attempt += 1;
        if !pause(RECONNECT.delay(attempt), &cancel).await {
            return;
        }
    }
}

/// Returns true when the connection was lost, false when shutdown was requested.
async fn watch_connection(connection: &Connection, cancel: &CancellationToken) -> bool {
    let mut events = connection.events_listener();
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return false,
            event = events.next() => match event {
                Some(Event::Error(error)) => {
                    tracing::warn!(%error, "broker connection lost");
                    return true;
                }
                Some(Event::ConnectionBlocked(reason)) => tracing::warn!(%reason, "broker blocked the connection"),
                Some(_) => {}
                None => return true,
            },
            _ = tick.tick() => if !connection.status().connected() {
                tracing::warn!("broker connection lost");
                return true;
            },
        }
    }
}

async fn close(connection: &Connection) {
    if let Err(error) = connection.close(200, "shutting down".into()).await {
        tracing::debug!(%error, "closing the broker connection");
    }
}
