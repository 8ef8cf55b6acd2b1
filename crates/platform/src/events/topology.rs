//! The topology of the event broadcast: the durable fanout exchange, and each subscriber's durable quorum queue
//! with a delivery limit, whose dead letters go to `<queue>.dlq` through `<queue>.dlx`. A queue is fed through
//! `<queue>.types`, a headers exchange bound to the fanout that routes only the types its subscriber acts on (by
//! the `cloudEvents_type` header): the broker stores and delivers nothing a subscriber would only acknowledge.

use anyhow::Context as _;
use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use serde::Deserialize;

use crate::settings::{AmqpSettings, SettingsError};

/// Declares the durable fanout exchange events are broadcast on. Idempotent.
pub async fn declare_exchange(channel: &Channel, exchange: &str) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(exchange.into(), ExchangeKind::Fanout, options, FieldTable::default()).await
}

/// A subscriber's queue: durable and quorum, receiving the events of `types` from the events exchange,
/// dead-lettering a message to `<queue>.dlq` once it has been delivered `delivery_limit` times without an ack.
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
    /// How long a batch, once its first delivery is in, waits for more (up to `prefetch`): the events a relay
    /// published together reach a consumer a little apart, and a batch applies them in one transaction.
    pub batch_linger: std::time::Duration,
    /// The event types (`cloudEvents_type`) the subscriber acts on: the only ones routed to its queue.
    pub types: &'static [&'static str],
    /// How long the subscriber remembers that it applied an event: a redelivery within it changes nothing, an event
    /// older than it is dead-lettered instead of applied, since its record may be forgotten.
    pub dedup_window: std::time::Duration,
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

    /// The headers exchange between the events exchange and the queue, routing only `types`.
    pub fn type_exchange(&self) -> String {
        format!("{}.types", self.queue)
    }

    /// Declares the exchanges, the dead-letter queue, the queue and its bindings. Idempotent. Bindings are only
    /// added: a type a later release no longer acts on still arrives and is acknowledged untouched, until its
    /// binding is removed by hand.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        let (dlx, dlq) = (self.dead_letter_exchange(), self.dead_letter_queue());
        declare_exchange(channel, &self.exchange).await?;
        declare_exchange(channel, &dlx).await?;
        // Listing dead letters returns them to the queue, and a quorum queue counts that as a delivery; newer
        // brokers default to a delivery limit of 20, past which the message would be dropped. A dead letter must
        // stay until someone replays or purges it.
        channel.queue_declare(dlq.as_str().into(), durable, quorum(i32::MAX)).await?;
        bind(channel, &dlq, &dlx).await?;
        let mut arguments = quorum(i32::try_from(self.delivery_limit).unwrap_or(i32::MAX));
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dlx.as_str().into()));
        channel.queue_declare(self.queue.as_str().into(), durable, arguments).await?;
        self.declare_type_filter(channel).await
    }

    /// Routes the events exchange to the queue through `<queue>.types`, one binding per type, then removes the
    /// queue's direct binding to the fanout (a queue declared before the filter had one; removing an absent
    /// binding is a no-op). In that order, the queue is never without a route for the types it acts on.
    async fn declare_type_filter(&self, channel: &Channel) -> lapin::Result<()> {
        let filter = self.type_exchange();
        let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel.exchange_declare(filter.as_str().into(), ExchangeKind::Headers, options, FieldTable::default()).await?;
        for kind in self.types {
            let mut arguments = FieldTable::default();
            arguments.insert("x-match".into(), AMQPValue::LongString("all".into()));
            arguments.insert("cloudEvents_type".into(), AMQPValue::LongString((*kind).into()));
            let options = QueueBindOptions::default();
            channel
                .queue_bind(self.queue.as_str().into(), filter.as_str().into(), "".into(), options, arguments)
                .await?;
        }
        let (source, options) = (self.exchange.as_str().into(), ExchangeBindOptions::default());
        channel.exchange_bind(filter.as_str().into(), source, "".into(), options, FieldTable::default()).await?;
        let (queue, source) = (self.queue.as_str().into(), self.exchange.as_str().into());
        channel.queue_unbind(queue, source, "".into(), FieldTable::default()).await
    }
}

async fn bind(channel: &Channel, queue: &str, exchange: &str) -> lapin::Result<()> {
    let (options, arguments) = (QueueBindOptions::default(), FieldTable::default());
    channel.queue_bind(queue.into(), exchange.into(), "".into(), options, arguments).await
}

/// The arguments of a quorum queue that dead-letters a message after `delivery_limit` deliveries.
fn quorum(delivery_limit: i32) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    arguments.insert("x-delivery-limit".into(), AMQPValue::LongInt(delivery_limit));
    arguments
}

/// Connects to the broker once and declares `subscription`: what a subscriber's `migrate` (and a serve with
/// `MIGRATE_ON_START`) does, so that its queue exists before anything is published.
pub async fn declare_subscription(settings: &AmqpSettings, subscription: &Subscription) -> anyhow::Result<()> {
    let connection = crate::amqp::connect_once(settings).await?;
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

/// The longest dedup window: ten years.
const MAX_DEDUP_WINDOW_HOURS: u32 = 87_600;

/// How a subscriber consumes: `EVENTS_QUEUE` (default `<service>.signup-events`), `EVENTS_DELIVERY_LIMIT`
/// (10 deliveries before dead-lettering), `EVENTS_PREFETCH` (16 unacked messages in flight),
/// `EVENTS_BATCH_LINGER_MS` (5, at most 1000: how long a batch waits for more deliveries after its first; 0 takes
/// only those already in) and `EVENTS_DEDUP_WINDOW_HOURS` (720: 30 days).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
struct RawSubscription {
    events_queue: Option<String>,
    events_delivery_limit: std::num::NonZeroU32,
    events_prefetch: std::num::NonZeroU16,
    events_batch_linger_ms: u64,
    events_dedup_window_hours: std::num::NonZeroU32,
}

impl Default for RawSubscription {
    fn default() -> Self {
        Self {
            events_queue: None,
            events_delivery_limit: std::num::NonZeroU32::MIN.saturating_add(9),
            events_prefetch: std::num::NonZeroU16::MIN.saturating_add(15),
            events_batch_linger_ms: 5,
            events_dedup_window_hours: std::num::NonZeroU32::MIN.saturating_add(719),
        }
    }
}

impl Subscription {
    /// The subscription of `service` to `types` on `amqp`'s exchange: its queue is `<service>.signup-events`
    /// unless `EVENTS_QUEUE` says otherwise.
    pub fn load(amqp: &AmqpSettings, service: &str, types: &'static [&'static str]) -> Result<Self, SettingsError> {
        let raw: RawSubscription = crate::settings::load()?;
        if raw.events_dedup_window_hours.get() > MAX_DEDUP_WINDOW_HOURS {
            return Err(SettingsError::invalid("EVENTS_DEDUP_WINDOW_HOURS", "at most 87600 (ten years)"));
        }
        if raw.events_batch_linger_ms > 1000 {
            return Err(SettingsError::invalid("EVENTS_BATCH_LINGER_MS", "at most 1000"));
        }
        Ok(Self {
            exchange: amqp.events_exchange.clone(),
            queue: raw.events_queue.unwrap_or_else(|| format!("{service}.signup-events")),
            delivery_limit: raw.events_delivery_limit.get(),
            prefetch: raw.events_prefetch.get(),
            batch_linger: std::time::Duration::from_millis(raw.events_batch_linger_ms),
            types,
            dedup_window: std::time::Duration::from_secs(u64::from(raw.events_dedup_window_hours.get()) * 3600),
        })
    }
}
