//! Events on the broker: the CloudEvents AMQP binding in binary mode (attributes as `cloudEvents_*` headers,
//! the protobuf body as the message body, the content type in the AMQP `content-type`), the topology every
//! subscriber declares, and the consumer loop that acks only after the handler has committed.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use lapin::{
    BasicProperties, Channel, ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
        ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use crate::amqp::Broker;

/// The content type of every event body.
pub const CONTENT_TYPE: &str = "application/protobuf";

/// One event as it travels: its CloudEvents attributes and its protobuf body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `id`: unique per event; consumers deduplicate on it.
    pub id: Uuid,
    /// `type`: the protobuf message's full name, e.g. `signup.events.v1.UserSignedUp`.
    pub kind: String,
    /// `source`: the producing service, e.g. `/user-metadata`.
    pub source: String,
    /// `time`: when it happened.
    pub time: DateTime<Utc>,
    /// The protobuf body.
    pub data: Vec<u8>,
    /// The W3C `traceparent` of the work that produced it, so the trace continues in every consumer.
    pub traceparent: Option<String>,
}

impl Envelope {
    /// The AMQP properties of the CloudEvents binary mode: persistent, typed, with `cloudEvents_*` headers.
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        let mut put = |key: &str, value: &str| {
            headers.insert(ShortString::from(key), AMQPValue::LongString(LongString::from(value)));
        };
        put("cloudEvents_specversion", "1.0");
        put("cloudEvents_id", &self.id.to_string());
        put("cloudEvents_type", &self.kind);
        put("cloudEvents_source", &self.source);
        put("cloudEvents_time", &self.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        if let Some(traceparent) = &self.traceparent {
            put("traceparent", traceparent);
        }
        BasicProperties::default()
            .with_content_type(ShortString::from(CONTENT_TYPE))
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(self.id.to_string()))
            .with_type(ShortString::from(self.kind.as_str()))
            .with_timestamp(u64::try_from(self.time.timestamp()).unwrap_or_default())
            .with_headers(headers)
    }

    /// Reads an envelope back from a delivery; an error means the message can never be processed.
    pub fn from_delivery(delivery: &Delivery) -> anyhow::Result<Self> {
        let headers = delivery.properties.headers().as_ref().context("no headers")?;
        let header = |key: &str| -> anyhow::Result<String> {
            match headers.inner().get(&ShortString::from(key)) {
                Some(AMQPValue::LongString(value)) => Ok(String::from_utf8_lossy(value.as_bytes()).into_owned()),
                Some(AMQPValue::ShortString(value)) => Ok(value.as_str().to_owned()),
                _ => anyhow::bail!("header {key} missing or not a string"),
            }
        };
        Ok(Self {
            id: header("cloudEvents_id")?.parse().context("cloudEvents_id is not a UUID")?,
            kind: header("cloudEvents_type")?,
            source: header("cloudEvents_source")?,
            time: DateTime::parse_from_rfc3339(&header("cloudEvents_time")?)
                .context("cloudEvents_time is not RFC 3339")?
                .with_timezone(&Utc),
            data: delivery.data.clone(),
            traceparent: header("traceparent").ok(),
        })
    }
}

/// Declares the durable fanout exchange events are broadcast on. Idempotent.
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(exchange.into(), ExchangeKind::Fanout, options, FieldTable::default()).await
}

/// A subscriber's queue: durable and quorum, bound to the events exchange, dead-lettering a message to
/// `<queue>.dlq` once it has been delivered `delivery_limit` times without an ack.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The events exchange.
    pub exchange: String,
    /// The subscriber's own queue, e.g. `email-verification.signup-events`.
    pub queue: String,
    /// Deliveries before a message is dead-lettered.
    pub delivery_limit: u32,
    /// Unacked messages in flight to one consumer.
    pub prefetch: u16,
}

impl Subscription {
    /// The exchange dead letters go through.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.queue)
    }

    /// The queue dead letters end up in.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.queue)
    }

    /// Declares the exchanges, the dead-letter queue, the queue and its binding. Idempotent.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        declare_exchange(channel, &self.exchange).await?;
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        let dlx = self.dead_letter_exchange();
        let dlx_options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel.exchange_declare(dlx.as_str().into(), ExchangeKind::Fanout, dlx_options, FieldTable::default()).await?;
        let dlq = self.dead_letter_queue();
        // Listing dead letters returns them to the queue, and a quorum queue counts that as a delivery; newer
        // brokers default to a delivery limit of 20, past which the message would be dropped. A dead letter must
        // stay until someone replays or purges it.
        let mut dlq_arguments = FieldTable::default();
        dlq_arguments.insert("x-delivery-limit".into(), AMQPValue::LongInt(i32::MAX));
        channel.queue_declare(dlq.as_str().into(), durable, quorum(dlq_arguments)).await?;
        channel
            .queue_bind(
                dlq.as_str().into(),
                dlx.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(self.delivery_limit).unwrap_or(i32::MAX)),
        );
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dlx.as_str().into()));
        channel.queue_declare(self.queue.as_str().into(), durable, quorum(arguments)).await?;
        channel
            .queue_bind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }
}

/// Connects to the broker once and declares `subscription`: what a subscriber's `migrate` (and a serve with
/// `MIGRATE_ON_START`) does, so that its queue exists before anything is published.
pub async fn declare_subscription(
    settings: &crate::settings::AmqpSettings,
    subscription: &Subscription,
) -> anyhow::Result<()> {
    let uri = settings.uri()?;
    let connect = lapin::Connection::connect_uri(uri, lapin::ConnectionProperties::default());
    let connection = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .with_context(|| format!("connecting to the broker at AMQP_URL ({}) timed out", settings.redacted()))?
        .with_context(|| format!("cannot connect to the broker at AMQP_URL ({})", settings.redacted()))?;
    let channel = connection.create_channel().await?;
    subscription.declare(&channel).await.with_context(|| {
        format!(
            "declaring queue {} (if it exists with other arguments, change EVENTS_DELIVERY_LIMIT through a broker \
             policy or delete the queue)",
            subscription.queue
        )
    })?;
    tracing::info!(queue = %subscription.queue, exchange = %subscription.exchange, "subscription declared");
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

fn quorum(mut arguments: FieldTable) -> FieldTable {
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    arguments
}

/// What a handler says about an event it could not process.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying (a database outage): the consumer retries it with backoff, holding the message.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Can never succeed (an undecodable body): the message is dead-lettered at once.
    #[error("poison: {0:#}")]
    Poison(anyhow::Error),
}

/// Applies one event. Must be idempotent on `envelope.id`: it commits the effect together with the id, and
/// returns `Ok` for an id it has already applied.
pub trait Handler: Send + Sync + 'static {
    /// Whether this subscriber acts on events of type `kind`. Every type reaches every queue (the exchange is a
    /// fanout); the others are acknowledged untouched: no decoding, no transaction, nothing recorded.
    fn acts_on(&self, kind: &str) -> bool;

    /// Applies the event; the message is acked only after this returns `Ok`.
    fn handle(&self, envelope: Envelope) -> impl std::future::Future<Output = Result<(), HandleError>> + Send;
}

/// How long the consumer waits after its broker channel failed before starting again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Retries of one event in hand before it goes back to the queue, where the delivery limit takes over (about
/// seven minutes of pauses).
const MAX_IN_PLACE_RETRIES: u32 = 20;

/// The pause before retrying an event after a transient failure: 0.2 s doubling to 30 s.
fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis(200).saturating_mul(1 << attempt.min(8)).min(Duration::from_secs(30))
}

/// Whether a consumer is attached to its queue right now: reported (informationally) on `/readyz`, so a
/// consumer stuck outside its queue (say, redeclaring it with other arguments fails) is visible.
#[derive(Debug, Clone, Default)]
pub struct ConsumerStatus(Arc<std::sync::atomic::AtomicBool>);

impl ConsumerStatus {
    fn set(&self, consuming: bool) {
        self.0.store(consuming, std::sync::atomic::Ordering::Relaxed);
    }

    /// A readiness check that passes while consuming.
    pub fn readiness_check(&self) -> impl Fn() -> std::future::Ready<Result<(), String>> + Send + Sync + 'static {
        let status = self.clone();
        move || {
            let consuming = status.0.load(std::sync::atomic::Ordering::Relaxed);
            std::future::ready(if consuming { Ok(()) } else { Err("not consuming".to_owned()) })
        }
    }
}

/// Consumes `subscription` with `handler` until `cancel` fires, reconnecting whenever the broker goes away.
/// One message is handled at a time per consumer; scale by running more replicas.
pub async fn consume<H: Handler>(
    broker: Broker,
    subscription: Subscription,
    handler: Arc<H>,
    status: ConsumerStatus,
    cancel: CancellationToken,
) {
    loop {
        let connection = tokio::select! {
            connection = broker.connection() => match connection { Some(c) => c, None => return },
            () = cancel.cancelled() => return,
        };
        let consumed = consume_on(&connection, &subscription, handler.as_ref(), &status, &cancel).await;
        status.set(false);
        match consumed {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), queue = %subscription.queue, "consumer stopped; restarting")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY_PAUSE) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// Returns `Ok` when cancelled, `Err` when the channel failed.
async fn consume_on<H: Handler>(
    connection: &lapin::Connection,
    subscription: &Subscription,
    handler: &H,
    status: &ConsumerStatus,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    subscription.declare(&channel).await.context("declaring the subscription")?;
    channel.basic_qos(subscription.prefetch, BasicQosOptions::default()).await?;
    let tag = format!("{}-{}", subscription.queue, Uuid::now_v7().simple());
    let mut deliveries = channel
        .basic_consume(
            subscription.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %subscription.queue, "consuming");
    status.set(true);
    loop {
        let delivery = tokio::select! {
            delivery = deliveries.next() => delivery,
            () = cancel.cancelled() => {
                // Unacked prefetched messages return to the queue when the channel closes.
                let _ = channel.close(200, "shutting down".into()).await;
                return Ok(());
            }
        };
        let delivery = delivery.context("the consumer was cancelled by the broker")??;
        process(delivery, handler, cancel).await?;
    }
}

async fn process<H: Handler>(delivery: Delivery, handler: &H, cancel: &CancellationToken) -> anyhow::Result<()> {
    let envelope = match Envelope::from_delivery(&delivery) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "malformed event; dead-lettering it");
            metrics::counter!("events_consumed_total", "outcome" => "malformed").increment(1);
            delivery.reject(BasicRejectOptions { requeue: false }).await?;
            return Ok(());
        }
    };
    if !handler.acts_on(&envelope.kind) {
        tracing::debug!(event.id = %envelope.id, event.kind = %envelope.kind, "not an event this service acts on");
        delivery.ack(BasicAckOptions::default()).await?;
        metrics::counter!("events_consumed_total", "outcome" => "ignored").increment(1);
        return Ok(());
    }
    let span = tracing::info_span!(
        "event.consume",
        otel.kind = "consumer",
        event.id = %envelope.id,
        event.kind = %envelope.kind,
        redelivered = delivery.redelivered,
    );
    if let Some(traceparent) = &envelope.traceparent {
        let mut headers = http::HeaderMap::new();
        if let Ok(value) = traceparent.parse() {
            headers.insert("traceparent", value);
        }
        let _ = span.set_parent(crate::propagation::extract(&headers));
    }
    async {
        let mut attempt = 0u32;
        loop {
            match handler.handle(envelope.clone()).await {
                Ok(()) => {
                    delivery.ack(BasicAckOptions::default()).await?;
                    metrics::counter!("events_consumed_total", "outcome" => "applied").increment(1);
                    tracing::info!("event applied");
                    return anyhow::Ok(());
                }
                Err(HandleError::Poison(error)) => {
                    tracing::error!(error = format!("{error:#}"), "event can never be applied; dead-lettering it");
                    metrics::counter!("events_consumed_total", "outcome" => "poison").increment(1);
                    delivery.reject(BasicRejectOptions { requeue: false }).await?;
                    return Ok(());
                }
                Err(HandleError::Transient(error)) => {
                    // Retried here, holding the message, rather than requeued: a requeue counts toward the
                    // delivery limit, and an outage of our own database must not dead-letter good events.
                    attempt += 1;
                    if attempt > MAX_IN_PLACE_RETRIES {
                        tracing::error!(error = format!("{error:#}"), "event still failing; returning it to the queue");
                        delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await?;
                        return Ok(());
                    }
                    let pause = retry_pause(attempt);
                    tracing::warn!(
                        error = format!("{error:#}"),
                        attempt,
                        retry_in_ms = pause.as_millis() as u64,
                        "event not applied yet"
                    );
                    metrics::counter!("events_consumed_total", "outcome" => "retried").increment(1);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = cancel.cancelled() => {
                            delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await?;
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Records `envelope` as processed inside `tx`. Returns false when it was processed before: the caller must
/// then apply nothing, and commit or roll back as it likes. The effect and this record commit together.
pub async fn record_once(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, envelope: &Envelope) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO processed_events (event_id, event_type) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(envelope.id)
    .bind(&envelope.kind)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Opens the transaction an event's effect goes in, with the event already recorded in it; `None` when the
/// event was applied before (a redelivery: the handler acks it and does nothing).
pub async fn begin_once(
    pool: &sqlx::PgPool,
    envelope: &Envelope,
) -> Result<Option<sqlx::Transaction<'static, sqlx::Postgres>>, HandleError> {
    let mut tx = pool.begin().await.map_err(transient)?;
    if !record_once(&mut tx, envelope).await.map_err(transient)? {
        tracing::info!("event already applied; acknowledging the redelivery");
        return Ok(None);
    }
    Ok(Some(tx))
}

/// A database error while handling an event: data exceptions and integrity violations (SQLSTATE classes 22
/// and 23) will fail the same way every time and make the message poison; anything else (a lost connection, a
/// timeout, a serialisation failure) is worth a retry.
pub fn transient(error: sqlx::Error) -> HandleError {
    let deterministic = error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23"));
    if deterministic { HandleError::Poison(error.into()) } else { HandleError::Transient(error.into()) }
}
