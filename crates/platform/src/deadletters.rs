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

use crate::{
    events::{Subscription, text},
    settings::AmqpSettings,
};

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
    /// The body, for inspection.
    pub body: Vec<u8>,
}

/// The dead-letter part of every subscriber's `repair`: logs each dead letter (id, type, time, why, size), then
/// replays as asked (a dry run only says it would). Returns how many were listed and replayed.
pub async fn repair(
    amqp: &AmqpSettings,
    subscription: &Subscription,
    args: &RepairArgs,
    render: impl Fn(&str, &[u8]) -> String,
) -> anyhow::Result<(usize, usize)> {
    let letters = list(amqp, subscription).await?;
    for letter in &letters {
        tracing::info!(
            id = ?letter.id, kind = %letter.kind, time = %letter.time, reason = %letter.reason, bytes = letter.body.len(),
            queue = %subscription.dead_letter_queue(), "dead letter"
        );
        if args.inspect.is_some() && letter.id == args.inspect {
            tracing::info!(id = ?letter.id, kind = %letter.kind, content = %render(&letter.kind, &letter.body), "dead letter content");
        }
    }
    let replayed = match (args.replay_dead_letters, args.replay, args.dry_run) {
        (false, None, _) => 0,
        (_, _, true) => {
            tracing::info!(count = letters.len(), "would replay dead letters (dry run)");
            0
        }
        (all, only, false) => self::replay(amqp, subscription, only.filter(|_| !all)).await?.len(),
    };
    tracing::info!(dead_letters = letters.len(), replayed, dry_run = args.dry_run, queue = %subscription.dead_letter_queue(), "dead letters done");
    Ok((letters.len(), replayed))
}

/// Reads every message in the subscription's dead-letter queue, then returns them all to it.
pub async fn list(amqp: &AmqpSettings, subscription: &Subscription) -> anyhow::Result<Vec<DeadLetter>> {
    let connection = crate::amqp::connect_once(amqp).await?;
    let channel = connection.create_channel().await?;
    let queue = subscription.dead_letter_queue();
    let mut letters = Vec::new();
    while let Some(message) = next(&channel, &queue).await? {
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
    let connection = crate::amqp::connect_once(amqp).await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(Default::default()).await?;
    let queue = subscription.dead_letter_queue();
    // Only what is there now: a replayed message that is still poison comes back to this queue, and must not be
    // replayed again in the same run.
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let present = channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await?.message_count();
    let mut replayed = Vec::new();
    for _ in 0..present {
        let Some(message) = next(&channel, &queue).await? else { break };
        let letter = describe(&message.delivery.properties, &message.delivery.data);
        if only.is_some() && letter.id != only {
            continue;
        }
        requeue(&channel, &subscription.queue, &message.delivery).await?;
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

/// Publishes a dead letter into `queue` as it was first delivered, with a publisher confirm, and only then
/// removes it from the dead-letter queue.
async fn requeue(channel: &lapin::Channel, queue: &str, delivery: &lapin::message::Delivery) -> anyhow::Result<()> {
    let properties = without_death_headers(delivery.properties.clone());
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = channel.basic_publish("".into(), queue.into(), options, &delivery.data, properties).await?.await?;
    anyhow::ensure!(confirm.is_ack() && confirm.take_message().is_none(), "the broker did not take the replay");
    channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default()).await?;
    Ok(())
}

/// Messages in `queue` now, or `None` if it does not exist.
pub async fn depth(amqp: &AmqpSettings, queue: &str) -> anyhow::Result<Option<u32>> {
    let connection = crate::amqp::connect_once(amqp).await?;
    let channel = connection.create_channel().await?;
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let depth =
        channel.queue_declare(queue.into(), passive, FieldTable::default()).await.ok().map(|q| q.message_count());
    let _ = connection.close(200, "done".into()).await;
    Ok(depth)
}

/// The next message of `queue`, unacknowledged.
async fn next(channel: &lapin::Channel, queue: &str) -> anyhow::Result<Option<lapin::message::BasicGetMessage>> {
    channel.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await.context("reading dead letters")
}

fn describe(properties: &BasicProperties, body: &[u8]) -> DeadLetter {
    let headers = properties.headers().clone().unwrap_or_default();
    let header = |key: &str| text(headers.inner().get(key)).unwrap_or_default();
    // The broker's account of the latest death: a table in the `x-death` array.
    let reason = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(deaths)) => match deaths.as_slice().first() {
            Some(AMQPValue::FieldTable(death)) => text(death.inner().get("reason")),
            _ => None,
        },
        _ => None,
    };
    DeadLetter {
        id: header("cloudEvents_id").parse().ok(),
        kind: header("cloudEvents_type"),
        time: header("cloudEvents_time"),
        reason: reason.unwrap_or_default(),
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
