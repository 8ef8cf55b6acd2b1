//! The test's view of RabbitMQ: a tap on a stack's exchange to see exactly what was broadcast, publishing a
//! message by hand (to redeliver one), and deleting the test's queues and exchange afterwards.
//!
//! A test that is killed (a timeout, Ctrl-C) cannot delete its queues, and a broker restarting with hundreds of
//! leftover quorum queues spends minutes recovering them before it opens its listener (seen on a long-lived test
//! machine). So every test's topology is written down first, one file per exchange in the temp directory, and the
//! file goes once the topology is deleted; the first test of a process that cleans up also deletes the topologies
//! whose file is over two hours old (no test runs that long), as the databases are swept.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    message::Delivery,
    options::{
        BasicConsumeOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::FieldTable,
};

/// A message as the tap saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The AMQP properties, CloudEvents headers included.
    pub properties: BasicProperties,
    /// The body.
    pub data: Vec<u8>,
}

impl Seen {
    /// A header's string value.
    pub fn header(&self, key: &str) -> Option<String> {
        let headers = self.properties.headers().as_ref()?;
        match headers.inner().get(key)? {
            lapin::types::AMQPValue::LongString(value) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            _ => None,
        }
    }
}

/// An exclusive queue bound to an exchange, collecting everything broadcast on it.
#[derive(Debug)]
pub struct Tap {
    connection: Connection,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

impl Tap {
    /// Binds a fresh exclusive queue to `exchange` (declaring it, durable fanout, if needed).
    pub async fn attach(exchange: &str) -> anyhow::Result<Self> {
        let connection = connect().await?;
        let channel = connection.create_channel().await?;
        let options = lapin::options::ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel.exchange_declare(exchange.into(), lapin::ExchangeKind::Fanout, options, FieldTable::default()).await?;
        let exclusive = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let queue = channel.queue_declare("".into(), exclusive, FieldTable::default()).await?;
        let name = queue.name().clone();
        channel
            .queue_bind(name.clone(), exchange.into(), "".into(), QueueBindOptions::default(), FieldTable::default())
            .await?;
        let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
        let mut consumer = channel.basic_consume(name, "tap".into(), no_ack, FieldTable::default()).await?;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let Delivery { properties, data, .. } = delivery;
                if let Ok(mut seen) = sink.lock() {
                    seen.push(Seen { properties, data });
                }
            }
        });
        Ok(Self { connection, seen })
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Messages of one CloudEvents type seen so far.
    pub fn of_type(&self, kind: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|m| m.header("cloudEvents_type").as_deref() == Some(kind)).collect()
    }

    /// Closes the tap's connection (its queue goes with it).
    pub async fn close(self) {
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// Publishes `data` with `properties` to `exchange`, as a producer (or a redelivery) would.
pub async fn publish(exchange: &str, properties: BasicProperties, data: &[u8]) -> anyhow::Result<()> {
    let connection = connect().await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    channel.basic_publish(exchange.into(), "".into(), BasicPublishOptions::default(), data, properties).await?.await?;
    connection.close(200, "done".into()).await?;
    Ok(())
}

/// Deletes queues (with their `.dlq`, `.dlx` and `.types` companions) and the exchange a test used. Best effort.
pub async fn delete_topology(exchange: &str, queues: &[String]) -> anyhow::Result<()> {
    let connection = connect().await?;
    let channel = connection.create_channel().await?;
    for queue in queues {
        for name in [queue.clone(), format!("{queue}.dlq")] {
            let _ = channel.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await;
        }
        for exchange in [format!("{queue}.dlx"), format!("{queue}.types")] {
            let _ = channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
        }
    }
    let _ = channel.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// No test runs this long: a topology written down longer ago belongs to a test that was killed.
const ABANDONED_AFTER: Duration = Duration::from_secs(2 * 60 * 60);

/// Where topologies are written down, one file per exchange holding its queues' names, one per line.
fn ledger() -> PathBuf {
    std::env::temp_dir().join("signup-e2e-topologies")
}

/// Writes down `exchange` and its `queues` (again, with all of them, when one is added). Best effort.
pub(crate) fn write_down(exchange: &str, queues: &[String]) {
    let dir = ledger();
    if let Err(error) =
        std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(exchange), queues.join("\n")))
    {
        eprintln!("could not write down the topology of {exchange}: {error}");
    }
}

/// Whether this process has deleted the topologies of killed tests.
static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Deletes a test's topology and crosses it out; the first call of a process also deletes abandoned ones.
pub(crate) async fn clean_up(exchange: &str, queues: &[String]) {
    if delete_topology(exchange, queues).await.is_ok() {
        let _ = std::fs::remove_file(ledger().join(exchange));
    }
    SWEPT.get_or_init(delete_abandoned).await;
}

/// Deletes the topologies written down over [`ABANDONED_AFTER`] ago. Best effort.
async fn delete_abandoned() {
    let Ok(entries) = std::fs::read_dir(ledger()) else { return };
    for entry in entries.flatten() {
        let age =
            entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| SystemTime::now().duration_since(t).ok());
        let (Some(age), Some(exchange)) = (age, entry.file_name().to_str().map(str::to_owned)) else { continue };
        if age <= ABANDONED_AFTER {
            continue;
        }
        let queues = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let queues: Vec<String> = queues.lines().map(str::to_owned).collect();
        match delete_topology(&exchange, &queues).await {
            Ok(()) => drop(std::fs::remove_file(entry.path())),
            Err(error) => eprintln!("could not delete the abandoned topology of {exchange}: {error:#}"),
        }
    }
}

/// Binds `queue` to `exchange` with no arguments (as a fanout binding is).
pub async fn bind_queue(queue: &str, exchange: &str) -> anyhow::Result<()> {
    let connection = connect().await?;
    let channel = connection.create_channel().await?;
    let options = lapin::options::QueueBindOptions::default();
    channel.queue_bind(queue.into(), exchange.into(), "".into(), options, FieldTable::default()).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// Cuts `queue` off from the events published to `exchange`: removes the binding of its type filter (`<queue>.types`)
/// to the exchange, as if its subscriber's events were held up on the way. Nothing is lost that was already queued.
pub async fn cut_off(queue: &str, exchange: &str) -> anyhow::Result<()> {
    let connection = connect().await?;
    let channel = connection.create_channel().await?;
    let filter = format!("{queue}.types");
    let options = lapin::options::ExchangeUnbindOptions::default();
    channel.exchange_unbind(filter.as_str().into(), exchange.into(), "".into(), options, FieldTable::default()).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// Messages waiting in `queue`, or an error if it does not exist.
pub async fn queue_depth(queue: &str) -> anyhow::Result<u32> {
    let connection = connect().await?;
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let declared = channel.queue_declare(queue.into(), passive, FieldTable::default()).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(declared.message_count())
}

async fn connect() -> anyhow::Result<Connection> {
    let url = crate::backing::amqp_url();
    tokio::time::timeout(Duration::from_secs(10), Connection::connect(&url, ConnectionProperties::default()))
        .await
        .context("connecting to RabbitMQ timed out")?
        .context("connect to RabbitMQ (TEST_AMQP_URL)")
}

/// Broker names of one test (its own exchange and a queue per service), deleted when dropped.
#[derive(Debug)]
pub struct TestTopology {
    exchange: String,
    queues: std::sync::Mutex<Vec<String>>,
}

impl TestTopology {
    /// Fresh names.
    pub fn new() -> Self {
        Self { exchange: format!("e2e.{}", uuid::Uuid::now_v7().simple()), queues: std::sync::Mutex::new(Vec::new()) }
    }

    /// `EVENTS_EXCHANGE` and `EVENTS_QUEUE` for `service`.
    pub fn env(&self, service: &str) -> Vec<(String, String)> {
        let queue = format!("{}.{service}", self.exchange);
        if let Ok(mut queues) = self.queues.lock() {
            queues.push(queue.clone());
            write_down(&self.exchange, &queues);
        }
        vec![("EVENTS_EXCHANGE".to_owned(), self.exchange.clone()), ("EVENTS_QUEUE".to_owned(), queue)]
    }

    /// The queue `env` named for `service`.
    pub fn queue(&self, service: &str) -> String {
        format!("{}.{service}", self.exchange)
    }
}

impl Default for TestTopology {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestTopology {
    fn drop(&mut self) {
        let exchange = self.exchange.clone();
        let queues = self.queues.lock().map(|q| q.clone()).unwrap_or_default();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(clean_up(&exchange, &queues));
            anyhow::Ok(())
        });
        let _ = cleanup.join();
    }
}

/// Publishes `data` straight into `queue` (through the default exchange), as the broker's dead-lettering would.
pub async fn publish_to_queue(queue: &str, properties: BasicProperties, data: &[u8]) -> anyhow::Result<()> {
    let connection = connect().await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    channel.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), data, properties).await?.await?;
    connection.close(200, "done".into()).await?;
    Ok(())
}
