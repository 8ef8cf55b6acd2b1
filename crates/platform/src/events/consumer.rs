//! The consumer loop. Deliveries already prefetched are applied together: one transaction records every event of
//! the batch as processed (in its first statement) and applies their effects, and one multiple-ack settles the
//! batch after the commit. Nothing is acked before its effect is committed, and a redelivered event finds its
//! record and changes nothing. When a batch fails, its events are applied one at a time, so one event's failure is
//! that event's alone: a poison event is dead-lettered, a transient failure is retried in place with backoff,
//! holding the message.
//!
//! Records are kept for the subscription's dedup window (and an hour for the clocks), then forgotten: an event
//! older than the window that finds no record of itself is dead-lettered instead of applied (a redelivery that
//! still finds its record is acknowledged as a duplicate), so an event whose record may be gone is never applied
//! twice.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions},
    types::FieldTable,
};
use proto::Event;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use super::{Envelope, Subscription, idempotency::forget_processed, record_once, transient};
use crate::{amqp::Broker, backoff::Backoff};

/// What a handler says about an event it could not apply.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying (a database outage): the consumer retries it with backoff, holding the message.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Can never succeed (an undecodable body, a value the schema refuses): dead-lettered at once.
    #[error("poison: {0:#}")]
    Poison(anyhow::Error),
    /// Older than the dedup window and not recorded (the loop's own verdict, not a handler's): dead-lettered, never
    /// applied.
    #[error("older than the dedup window: it may have been applied and its record forgotten")]
    Expired,
}

/// Applies events of the types it acts on to one database. The loop records each event as processed in the same
/// transaction as its effect, commits, and only then acks: a handler only says what an event does.
pub trait Handler: Send + Sync + 'static {
    /// Applies one event in `tx`, the transaction that also records it.
    fn apply(
        &self,
        tx: &mut PgConnection,
        envelope: &Envelope,
        event: Event,
    ) -> impl Future<Output = Result<(), HandleError>> + Send;

    /// The user `event` is about: the loop takes the user's lock in the statement that records the event
    /// ([`record_once`]), before [`Self::apply`], so what `apply` reads after it sees a deletion of the user that
    /// committed while it was awaited, and two replicas apply one user's events in turn.
    fn user(&self, event: &Event) -> Option<Uuid> {
        event.user_id().and_then(|id| id.parse().ok())
    }

    /// Whether applying `event` again does nothing more: such an event is applied even when it is older than the
    /// dedup window, where its record may be forgotten, instead of being dead-lettered. A deletion that waited out
    /// the window (a subscriber down for a month, a dead letter replayed late) must still delete; a deletion
    /// deletes what is there and remembers it was deleted, so the second time finds nothing more to do.
    fn applies_twice_harmlessly(&self, event: &Event) -> bool {
        matches!(event, Event::UserDeleted(_))
    }
}

/// Restarting after the broker channel failed: 1 s doubling to 30 s, jittered.
const RESTART: Backoff = Backoff::jittered(Duration::from_secs(1), Duration::from_secs(30));

/// Retries of one event in hand before it goes back to the queue, where the delivery limit takes over (about
/// seven minutes of pauses).
const MAX_IN_PLACE_RETRIES: u32 = 20;

/// The pause before retrying an event after a transient failure: 0.2 s doubling to 30 s, jittered so replicas
/// retrying the same outage spread out.
const IN_PLACE_RETRY: Backoff = Backoff::jittered(Duration::from_millis(200), Duration::from_secs(30));

/// How often a consumer forgets the records of events older than its window, the first time when it starts.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// How much longer than the window a record is kept: the producer's clock (an event's time), the consumer's (the
/// check on arrival) and its database's (the record's) may differ by this much without an event being applied twice.
const CLOCK_MARGIN: Duration = Duration::from_secs(3600);

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

/// Consumes `subscription` with `handler`, applying events to `pool`, until `cancel` fires, reconnecting whenever
/// the broker goes away; beside it, forgets the records of events older than the window. One batch is handled at
/// a time per consumer; scale by running more replicas.
pub async fn consume<H: Handler>(
    broker: Broker,
    subscription: Subscription,
    handler: Arc<H>,
    pool: PgPool,
    status: ConsumerStatus,
    cancel: CancellationToken,
) {
    let what = format!("consumer of {}", subscription.queue);
    let consuming = RESTART.restart(&what, &cancel, || async {
        let Some(connection) = broker.connection_until(&cancel).await else { return Ok(()) };
        let applier = Applier { handler: handler.as_ref(), pool: &pool, subscription: &subscription, cancel: &cancel };
        let consumed = consume_on(&connection, &subscription, &applier, &status).await;
        status.set(false);
        consumed
    });
    tokio::join!(consuming, forget_old_records(&pool, &subscription, &cancel));
}

/// Every [`FORGET_EVERY`] until `cancel` fires, forgets the records of events processed more than the window (and
/// the clock margin) ago; a failure waits for the next round.
async fn forget_old_records(pool: &PgPool, subscription: &Subscription, cancel: &CancellationToken) {
    let keep = subscription.dedup_window + CLOCK_MARGIN;
    loop {
        match forget_processed(pool, keep).await {
            Ok(0) => {}
            Ok(forgotten) => {
                tracing::info!(forgotten, queue = %subscription.queue, "forgot the records of events past the window");
                metrics::counter!("events_records_forgotten_total", "queue" => subscription.queue.clone())
                    .increment(forgotten);
            }
            Err(error) => tracing::warn!(error = %error, "could not forget old event records; trying next round"),
        }
        if !crate::backoff::pause(FORGET_EVERY, cancel).await {
            return;
        }
    }
}

/// Returns `Ok` when cancelled, `Err` when the channel failed.
async fn consume_on<H: Handler>(
    connection: &lapin::Connection,
    subscription: &Subscription,
    applier: &Applier<'_, H>,
    status: &ConsumerStatus,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    subscription.declare(&channel).await.context("declaring the subscription")?;
    channel.basic_qos(subscription.prefetch, BasicQosOptions::default()).await?;
    let tag = format!("{}-{}", subscription.queue, Uuid::now_v7().simple());
    let options = BasicConsumeOptions::default();
    let queue = subscription.queue.as_str().into();
    let mut deliveries = channel.basic_consume(queue, tag.as_str().into(), options, FieldTable::default()).await?;
    tracing::info!(queue = %subscription.queue, "consuming");
    status.set(true);
    loop {
        let first = tokio::select! {
            delivery = deliveries.next() => delivery,
            () = applier.cancel.cancelled() => {
                // Unacked prefetched messages return to the queue when the channel closes.
                let _ = channel.close(200, "shutting down".into()).await;
                return Ok(());
            }
        };
        let mut batch = vec![first.context("the consumer was cancelled by the broker")??];
        // What arrives within the linger joins the batch (with none, what the broker has already sent): the events
        // a relay published together arrive a little apart. At most a second, so a shutdown waits no longer for it.
        let until = tokio::time::Instant::now() + subscription.batch_linger;
        while batch.len() < usize::from(subscription.prefetch) {
            match tokio::time::timeout_at(until, deliveries.next()).await {
                Ok(Some(delivery)) => batch.push(delivery?),
                Ok(None) | Err(_) => break,
            }
        }
        applier.process_batch(batch).await?;
    }
}

/// One delivery that will be applied: its envelope and decoded event.
struct Work {
    delivery: Delivery,
    envelope: Envelope,
    event: Event,
}

/// A delivery, sorted.
#[expect(clippy::large_enum_variant, reason = "moved once, into the batch, which holds `Work` unboxed anyway")]
enum Sorted {
    /// Already settled (dead-lettered).
    Settled,
    /// Of a type this subscriber does not act on: acked with the batch.
    Ignored(Delivery),
    /// To apply.
    Work(Work),
}

/// Back to the queue, for this or another consumer.
const REQUEUE: BasicNackOptions = BasicNackOptions { multiple: false, requeue: true };

/// Applies the events of one consumer to its database, until cancelled.
struct Applier<'a, H> {
    handler: &'a H,
    pool: &'a PgPool,
    subscription: &'a Subscription,
    cancel: &'a CancellationToken,
}

impl<H: Handler> Applier<'_, H> {
    /// Sorts a batch out (malformed and poison messages are dead-lettered, other types acked untouched), applies the
    /// rest in one transaction and settles the batch with one ack; falls back to one event at a time if that fails.
    async fn process_batch(&self, batch: Vec<Delivery>) -> anyhow::Result<()> {
        let (mut ignored, mut work) = (Vec::new(), Vec::new());
        for delivery in batch {
            match self.sort(delivery).await? {
                Sorted::Settled => {}
                Sorted::Ignored(delivery) => ignored.push(delivery),
                Sorted::Work(item) => work.push(item),
            }
        }
        if !work.is_empty()
            && let Err(error) = self.apply_together(&work).await
        {
            tracing::warn!(error = format!("{error:#}"), events = work.len(), "batch not applied; one event at a time");
            for delivery in ignored {
                delivery.ack(BasicAckOptions::default()).await?;
            }
            for item in work {
                self.process_one(item).await?;
            }
            return Ok(());
        }
        // One ack settles the batch: the events just committed and the ones ignored.
        let last = work.iter().map(|w| &w.delivery).chain(&ignored).max_by_key(|d| d.delivery_tag);
        if let Some(last) = last {
            last.ack(BasicAckOptions { multiple: true }).await?;
        }
        Ok(())
    }

    /// Applies every event of `work` in one transaction, which records them all as processed in its first statement.
    async fn apply_together(&self, work: &[Work]) -> anyhow::Result<()> {
        let (start, mut tx) = (Instant::now(), self.pool.begin().await?);
        let events: Vec<_> = work.iter().map(|item| (&item.envelope, self.handler.user(&item.event))).collect();
        let new = record_once(&mut tx, &events).await?;
        for (item, &new) in work.iter().zip(&new) {
            let span = event_span(&item.envelope, &item.delivery);
            self.apply_if_new(&mut tx, item, new).instrument(span).await?;
        }
        tx.commit().await?;
        for (item, new) in work.iter().zip(new) {
            self.count(&item.envelope.kind, if new { "applied" } else { "duplicate" });
            self.observe(&item.envelope, start);
        }
        metrics::histogram!("events_batch_size").record(work.len() as f64);
        Ok(())
    }

    /// Counts one event of type `kind` handled with `outcome`.
    fn count(&self, kind: &str, outcome: &'static str) {
        let labels = [
            ("queue", self.subscription.queue.clone()),
            ("event_type", kind.to_owned()),
            ("outcome", outcome.to_owned()),
        ];
        metrics::counter!("events_consumed_total", &labels).increment(1);
    }

    /// Records how long applying `envelope` took since `start`, and how old the event was once applied.
    fn observe(&self, envelope: &Envelope, start: Instant) {
        let labels = [("queue", self.subscription.queue.clone()), ("event_type", envelope.kind.clone())];
        metrics::histogram!("event_processing_duration_seconds", &labels).record(start.elapsed().as_secs_f64());
        metrics::histogram!("event_age_seconds", &labels).record(envelope.age().as_secs_f64());
    }

    /// Applies the event in `tx`, which recorded it, if it is `new`.
    async fn apply_if_new(&self, tx: &mut PgConnection, item: &Work, new: bool) -> Result<(), HandleError> {
        if !new {
            tracing::info!("event already applied; acknowledging the redelivery");
            return Ok(());
        }
        // Not recorded, and older than the window: it may have been applied and its record forgotten. Checked here,
        // in the transaction that would record it, so no retry in place can carry it past the window unseen.
        if self.expired(&item.envelope) && !self.handler.applies_twice_harmlessly(&item.event) {
            return Err(HandleError::Expired);
        }
        self.handler.apply(tx, &item.envelope, item.event.clone()).await?;
        tracing::info!("event applied");
        Ok(())
    }

    /// One event on its own, in its own transaction: acked after the commit, dead-lettered if it can never be applied,
    /// retried in place with backoff on a transient failure (holding the message: a requeue would count toward the
    /// delivery limit, and an outage of our own database must not dead-letter good events).
    async fn process_one(&self, item: Work) -> anyhow::Result<()> {
        let span = event_span(&item.envelope, &item.delivery);
        async {
            for attempt in 1.. {
                let error = match self.apply_alone(&item).await {
                    Ok(()) => {
                        item.delivery.ack(BasicAckOptions::default()).await?;
                        return Ok(());
                    }
                    Err(HandleError::Poison(error)) => {
                        tracing::error!(error = format!("{error:#}"), "event can never be applied; dead-lettering it");
                        return self.reject(item, "poison").await;
                    }
                    Err(HandleError::Expired) => {
                        let window_hours = self.subscription.dedup_window.as_secs() / 3600;
                        tracing::error!(window_hours, "event older than the dedup window; dead-lettering it");
                        return self.reject(item, "expired").await;
                    }
                    Err(HandleError::Transient(error)) => error,
                };
                if attempt > MAX_IN_PLACE_RETRIES {
                    tracing::error!(error = format!("{error:#}"), "event still failing; returning it to the queue");
                    break;
                }
                let pause = IN_PLACE_RETRY.delay(attempt);
                let retry_in_ms = pause.as_millis() as u64;
                tracing::warn!(error = format!("{error:#}"), attempt, retry_in_ms, "event not applied yet");
                self.count(&item.envelope.kind, "retried");
                if !crate::backoff::pause(pause, self.cancel).await {
                    break;
                }
            }
            item.delivery.nack(REQUEUE).await?;
            anyhow::Ok(())
        }
        .instrument(span)
        .await
    }

    async fn apply_alone(&self, item: &Work) -> Result<(), HandleError> {
        let (start, mut tx) = (Instant::now(), self.pool.begin().await.map_err(transient)?);
        let recorded = record_once(&mut tx, &[(&item.envelope, self.handler.user(&item.event))]).await;
        let new = recorded.map_err(transient)?.first().copied().unwrap_or(false);
        self.apply_if_new(&mut tx, item, new).await?;
        tx.commit().await.map_err(transient)?;
        self.count(&item.envelope.kind, if new { "applied" } else { "duplicate" });
        self.observe(&item.envelope, start);
        Ok(())
    }

    /// Dead-letters a malformed or undecodable delivery, sets aside one of a type this subscriber ignores,
    /// and decodes the rest.
    async fn sort(&self, delivery: Delivery) -> anyhow::Result<Sorted> {
        let envelope = match Envelope::from_delivery(&delivery) {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "malformed event; dead-lettering it");
                return self.dead_letter(delivery, "unknown", "malformed").await;
            }
        };
        // Only the types it acts on are routed to the queue; another arrives through a binding an earlier release
        // declared (bindings are only added), and is acknowledged untouched: no decoding, no transaction.
        if !self.subscription.types.contains(&envelope.kind.as_str()) {
            tracing::debug!(event.id = %envelope.id, event.kind = %envelope.kind, "not an event this service acts on");
            self.count(&envelope.kind, "ignored");
            return Ok(Sorted::Ignored(delivery));
        }
        match Event::decode(&envelope.kind, &envelope.data) {
            Ok(event) => Ok(Sorted::Work(Work { delivery, envelope, event })),
            Err(error) => {
                let span = event_span(&envelope, &delivery);
                tracing::error!(parent: &span, error = format!("{error:#}"), "event does not decode; dead-lettering it");
                self.dead_letter(delivery, &envelope.kind, "poison").await
            }
        }
    }

    /// Whether `envelope` happened longer ago than the window: a record of it may be forgotten, so it might have
    /// been applied already.
    fn expired(&self, envelope: &Envelope) -> bool {
        envelope.age() > self.subscription.dedup_window
    }

    /// Rejects `item` to the dead-letter queue, counting it under `outcome`.
    async fn reject(&self, item: Work, outcome: &'static str) -> anyhow::Result<()> {
        self.dead_letter(item.delivery, &item.envelope.kind, outcome).await.map(drop)
    }

    /// Rejects `delivery` to the dead-letter queue, counting it under `outcome`.
    async fn dead_letter(&self, delivery: Delivery, kind: &str, outcome: &'static str) -> anyhow::Result<Sorted> {
        self.count(kind, outcome);
        delivery.reject(BasicRejectOptions { requeue: false }).await?;
        Ok(Sorted::Settled)
    }
}

/// The span of one event's processing (the messaging conventions' `process` span): a child of the publication that
/// carried it, and linked to it, so the trace of the request that produced the event continues here.
fn event_span(envelope: &Envelope, delivery: &Delivery) -> tracing::Span {
    let span = tracing::info_span!(
        "event.process",
        otel.name = format!("process {}", delivery.exchange),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.destination.name = %delivery.exchange,
        messaging.message.id = %envelope.id,
        messaging.rabbitmq.message.delivery_tag = delivery.delivery_tag,
        cloudevents.event_id = %envelope.id,
        cloudevents.event_type = %envelope.kind,
        cloudevents.event_source = %envelope.source,
        cloudevents.event_spec_version = "1.0",
        redelivered = delivery.redelivered,
    );
    envelope.trace.continue_in(&span);
    span
}
