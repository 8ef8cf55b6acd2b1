//! Dead letters: the events a subscriber gave up on (undecodable, or over the delivery limit), in its
//! `<queue>.dlq`. The `repair` admin process lists and inspects them, and replays them into the subscriber's queue
//! once the cause is fixed. Listing changes nothing: every message read is returned to the queue.

use anyhow::Context as _;
use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions},
    types::{AMQPValue, FieldTable},
};
use uuid::Uuid;

use crate::{events::Subscription, settings::AmqpSettings};

/// One dead-lettered message, as much as can be read of it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The CloudEvents id, if the headers carry one.
    pub id: Option<Uuid>,
    /// The CloudEvents type.
    pub kind: String,
    /// When the event happened.
    pub time: String,
    /// Why the broker dead-lettered it (`rejected`: the consumer found it poison; `delivery_limit`: it failed too
    /// often).
    pub reason: String,
    /// Body size in bytes.
    pub size: usize,
    /// The body, for inspection.
    pub body: Vec<u8>,
}

/// What `repair` does with dead letters beyond listing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// List only.
    None,
    /// Replay every dead letter.
    All,
    /// Replay the one with this event id.
    One(Uuid),
}

impl Replay {
    /// From the `--replay-dead-letters` and `--replay <event id>` flags.
    pub fn from_flags(all: bool, one: Option<Uuid>) -> Self {
        match (all, one) {
            (true, _) => Self::All,
            (false, Some(id)) => Self::One(id),
            (false, None) => Self::None,
        }
    }
}

/// The dead-letter part of every subscriber's `repair`: logs each dead letter (id, type, time, why, size), then
/// replays as asked (a dry run only says it would). Returns how many were listed and replayed.
pub async fn repair(
    amqp: &AmqpSettings,
    subscription: &Subscription,
    args: &RepairArgs,
    render: impl Fn(&str, &[u8]) -> String,
) -> anyhow::Result<(usize, usize)> {
    let (replay, dry_run) = (args.replay(), args.dry_run);
    let letters = list(amqp, subscription).await?;
    for letter in &letters {
        tracing::info!(
            id = ?letter.id, kind = %letter.kind, time = %letter.time, reason = %letter.reason, bytes = letter.size,
            queue = %subscription.dead_letter_queue(), "dead letter"
        );
        if args.inspect.is_some() && letter.id == args.inspect {
            tracing::info!(id = ?letter.id, kind = %letter.kind, content = %render(&letter.kind, &letter.body), "dead letter content");
        }
    }
    let replayed = match (replay, dry_run) {
        (Replay::None, _) => 0,
        (_, true) => {
            tracing::info!(count = letters.len(), "would replay dead letters (dry run)");
            0
        }
        (Replay::All, false) => self::replay(amqp, subscription, None).await?.len(),
        (Replay::One(id), false) => self::replay(amqp, subscription, Some(id)).await?.len(),
    };
    tracing::info!(dead_letters = letters.len(), replayed, dry_run, queue = %subscription.dead_letter_queue(), "dead letters done");
    Ok((letters.len(), replayed))
}

/// Reads every message in the subscription's dead-letter queue, then returns them all to it.
pub async fn list(amqp: &AmqpSettings, subscription: &Subscription) -> anyhow::Result<Vec<DeadLetter>> {
    let connection = connect(amqp).await?;
    let channel = connection.create_channel().await?;
    let queue = subscription.dead_letter_queue();
    let mut letters = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .context("reading dead letters")?
    {
        letters.push(describe(&message.delivery.properties, &message.delivery.data));
    }
    // Closing the channel returns every unacknowledged message to the queue, in order.
    let _ = channel.close(200, "listed".into()).await;
    let _ = connection.close(200, "done".into()).await;
    Ok(letters)
}

/// Moves dead letters back into the subscription's queue (all of them, or only `only`): each is published with
/// its original properties and a publisher confirm, and only then removed from the dead-letter queue. Returns
/// what was replayed.
pub async fn replay(
    amqp: &AmqpSettings,
    subscription: &Subscription,
    only: Option<Uuid>,
) -> anyhow::Result<Vec<DeadLetter>> {
    let connection = connect(amqp).await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    let queue = subscription.dead_letter_queue();
    // Only what is there now: a replayed message that is still poison comes back to this queue, and must not be
    // replayed again in the same run.
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let present = channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await?.message_count();
    let mut replayed = Vec::new();
    for _ in 0..present {
        let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .context("reading dead letters")?
        else {
            break;
        };
        let delivery = message.delivery;
        let letter = describe(&delivery.properties, &delivery.data);
        if only.is_some() && letter.id != only {
            continue;
        }
        let properties = without_death_headers(delivery.properties.clone());
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let confirm = channel
            .basic_publish("".into(), subscription.queue.as_str().into(), options, &delivery.data, properties)
            .await?
            .await?;
        anyhow::ensure!(confirm.is_ack() && confirm.take_message().is_none(), "the broker did not take the replay");
        channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default()).await?;
        tracing::info!(id = ?letter.id, kind = %letter.kind, queue = %subscription.queue, "dead letter replayed");
        replayed.push(letter);
        if only.is_some() {
            break;
        }
    }
    if let (Some(id), true) = (only, replayed.is_empty()) {
        anyhow::bail!("no dead letter with event id {id} in {queue}");
    }
    let _ = channel.close(200, "replayed".into()).await;
    let _ = connection.close(200, "done".into()).await;
    Ok(replayed)
}

/// Messages in `queue` now, or `None` if it does not exist.
pub async fn depth(amqp: &AmqpSettings, queue: &str) -> anyhow::Result<Option<u32>> {
    let connection = connect(amqp).await?;
    let channel = connection.create_channel().await?;
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let depth =
        channel.queue_declare(queue.into(), passive, FieldTable::default()).await.ok().map(|q| q.message_count());
    let _ = connection.close(200, "done".into()).await;
    Ok(depth)
}

async fn connect(amqp: &AmqpSettings) -> anyhow::Result<lapin::Connection> {
    let uri = amqp.uri()?;
    lapin::Connection::connect_uri(uri, lapin::ConnectionProperties::default())
        .await
        .with_context(|| format!("cannot connect to the broker at AMQP_URL ({})", amqp.redacted()))
}

fn describe(properties: &BasicProperties, body: &[u8]) -> DeadLetter {
    let headers = properties.headers().clone().unwrap_or_default();
    let text = |key: &str| match headers.inner().get(key) {
        Some(AMQPValue::LongString(value)) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(value)) => value.as_str().to_owned(),
        _ => String::new(),
    };
    let reason = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(deaths)) => deaths
            .as_slice()
            .first()
            .and_then(|death| match death {
                AMQPValue::FieldTable(table) => match table.inner().get("reason") {
                    Some(AMQPValue::LongString(reason)) => {
                        Some(String::from_utf8_lossy(reason.as_bytes()).into_owned())
                    }
                    _ => None,
                },
                _ => None,
            })
            .unwrap_or_default(),
        _ => String::new(),
    };
    DeadLetter {
        id: text("cloudEvents_id").parse().ok(),
        kind: text("cloudEvents_type"),
        time: text("cloudEvents_time"),
        reason,
        size: body.len(),
        body: body.to_vec(),
    }
}

/// The original properties without the broker's `x-*` bookkeeping, so a replayed message starts afresh.
fn without_death_headers(properties: BasicProperties) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(original) = properties.headers() {
        for (key, value) in original.inner() {
            if !key.as_str().starts_with("x-") {
                headers.insert(key.clone(), value.clone());
            }
        }
    }
    properties.with_headers(headers)
}

/// The `repair` of a subscriber whose data needs no repair: lists its dead letters and replays them as asked.
pub async fn repair_subscriber(
    common: &crate::settings::Common,
    args: &RepairArgs,
    render: impl Fn(&str, &[u8]) -> String,
) -> anyhow::Result<()> {
    let subscription =
        common.subscription.as_ref().ok_or_else(|| anyhow::anyhow!("this service subscribes to nothing"))?;
    repair(&common.amqp, subscription, args, render).await.map(drop)
}

/// The dead-letter flags of every subscriber's `repair` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct RepairArgs {
    /// Log what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replay every dead letter into the queue (once the cause is fixed).
    #[arg(long, conflicts_with = "replay")]
    pub replay_dead_letters: bool,
    /// Replay only the dead letter with this event id.
    #[arg(long, value_name = "EVENT_ID")]
    pub replay: Option<uuid::Uuid>,
    /// Also log the decoded content of the dead letter with this event id.
    #[arg(long, value_name = "EVENT_ID")]
    pub inspect: Option<uuid::Uuid>,
}

impl RepairArgs {
    /// What to do with dead letters beyond listing them.
    pub fn replay(&self) -> Replay {
        Replay::from_flags(self.replay_dead_letters, self.replay)
    }
}
