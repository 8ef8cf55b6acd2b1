//! The transactional outbox. A service inserts its events into its own `outbox` table in the same transaction
//! as the change they describe; the relay publishes them to the events exchange with publisher confirms and
//! marks them published only after the broker confirmed. A crash anywhere leaves rows unpublished, and the
//! next relay (of this or another replica) picks them up: every committed event is published at least once.
//! Published rows are kept for `OUTBOX_RETENTION_HOURS` (to look at what went out), then the relay deletes them:
//! nothing else reads them, and an outbox kept forever only grows.
//!
//! The table (created by each service's own migration):
//! `outbox(id uuid pk, event_type text, payload bytea, traceparent text, tracestate text, user_id uuid, created_at,
//! attempts int, next_attempt_at timestamptz, published_at timestamptz)`, with a trigger that notifies channel `outbox` on insert
//! (so the relay wakes at commit without a statement of the writer's own).

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use lapin::{
    Confirmation, PublisherConfirm,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use sqlx::{PgPool, Postgres, Transaction, postgres::PgListener};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{amqp::Broker, backoff::Backoff, events::Envelope, propagation::TraceContext};

/// How long the broker may take to confirm a batch. Past it the transaction rolls back and the rows are
/// published again later (consumers are idempotent), rather than holding row locks on a silent broker.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Publish as mandatory: a message no queue takes comes back instead of vanishing, and is retried until a
/// subscriber's queue exists (subscribers' `migrate` declares them, so normally it always does).
const MANDATORY: BasicPublishOptions = BasicPublishOptions { mandatory: true, immediate: false };

/// How often the lag gauges are refreshed and events past the retention forgotten: often enough for alerts,
/// rarely enough to cost nothing.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Published events deleted per upkeep at most: a backlog (an outbox from before the retention) drains at this
/// many per second without holding the relay up for long.
const FORGET_BATCH: i64 = 1000;

/// Restarting the relay, and retrying an event the broker did not take: 0.1 s doubling to 30 s, with full jitter.
const RETRY: Backoff = Backoff::jittered(Duration::from_millis(100), Duration::from_secs(30));

/// The channel `enqueue` notifies so the relay wakes as soon as the transaction commits.
const CHANNEL: &str = "outbox";

/// An event to publish: its protobuf body and full type name.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// The event id (also the CloudEvents id).
    pub id: Uuid,
    /// The protobuf message's full name.
    pub kind: String,
    /// The protobuf body.
    pub payload: Vec<u8>,
    /// The user the event is about, so the row can be removed with the account's data (`None`: about no one).
    pub user_id: Option<Uuid>,
}

/// The head of the statement that writes an event into the outbox: `INSERT INTO outbox (<columns>)`, to be followed
/// by six values: the five [`bind_event`] binds, in its order, then the user id. A change that must be one statement
/// with its event (a CTE) writes it with this; [`enqueue`] is the same statement on its own.
#[macro_export]
macro_rules! outbox_insert {
    () => {
        "INSERT INTO outbox (id, event_type, payload, traceparent, tracestate, user_id)"
    };
}

/// Binds `event`'s id, type and body and the current trace context, the first five values of
/// [`outbox_insert!`](crate::outbox_insert).
pub fn bind_event<'q, O>(
    query: sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>,
    event: &'q OutboxEvent,
) -> sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
    let trace = TraceContext::current();
    query.bind(event.id).bind(&event.kind).bind(&event.payload).bind(trace.traceparent).bind(trace.tracestate)
}

/// Writes `event` into the outbox inside `tx`, with the current trace context; the table's trigger wakes the relay
/// when `tx` commits. Nothing is published unless it does.
pub async fn enqueue(tx: &mut Transaction<'_, Postgres>, event: &OutboxEvent) -> sqlx::Result<()> {
    let query = sqlx::query_as::<_, ()>(concat!(outbox_insert!(), " VALUES ($1, $2, $3, $4, $5, $6)"));
    bind_event(query, event).bind(event.user_id).fetch_optional(&mut **tx).await.map(drop)
}

/// An event still unpublished long after it was written.
#[derive(Debug)]
pub struct Stuck {
    /// The event id.
    pub id: Uuid,
    /// Its type.
    pub event_type: String,
    /// Failed publishing attempts so far.
    pub attempts: i32,
}

crate::from_row!(Stuck { id, event_type, attempts });

/// Events unpublished for longer than `age`, oldest first: what `repair` looks at.
pub async fn stuck(pool: &PgPool, age: Duration) -> sqlx::Result<Vec<Stuck>> {
    sqlx::query_as(
        "SELECT id, event_type, attempts FROM outbox \
         WHERE published_at IS NULL AND created_at < now() - make_interval(secs => $1) ORDER BY created_at",
    )
    .bind(age.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Makes an unpublished event due now, whatever its backoff, and wakes the relay.
pub async fn make_due(pool: &PgPool, id: Uuid) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE outbox SET next_attempt_at = now() WHERE id = $1 AND published_at IS NULL")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(&mut *tx).await?;
    tx.commit().await
}

/// The relay's variables, for every service with an outbox: `OUTBOX_BATCH_SIZE` (100, at most 10000: events
/// published per transaction), `OUTBOX_POLL_INTERVAL_MS` (1000: how often due events are looked for when no
/// notification arrives), `OUTBOX_LINGER_MS` (50, at most 1000: how long after one batch the next waits, gathering
/// what arrives meanwhile; 0 never waits) and `OUTBOX_RETENTION_HOURS` (168: how long a published event is kept).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(default)]
pub struct OutboxSettings {
    outbox_batch_size: std::num::NonZeroUsize,
    outbox_poll_interval_ms: std::num::NonZeroU64,
    outbox_linger_ms: u64,
    outbox_retention_hours: u32,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            outbox_batch_size: std::num::NonZeroUsize::new(100).unwrap_or(std::num::NonZeroUsize::MIN),
            outbox_poll_interval_ms: std::num::NonZeroU64::new(1000).unwrap_or(std::num::NonZeroU64::MIN),
            outbox_linger_ms: 50,
            outbox_retention_hours: 7 * 24,
        }
    }
}

impl crate::settings::Load for OutboxSettings {
    fn load() -> Result<Self, crate::settings::SettingsError> {
        let settings: Self = crate::settings::load()?;
        if settings.outbox_batch_size.get() > 10_000 {
            return Err(crate::settings::SettingsError::invalid("OUTBOX_BATCH_SIZE", "must be at most 10000"));
        }
        if settings.outbox_linger_ms > 1000 {
            return Err(crate::settings::SettingsError::invalid("OUTBOX_LINGER_MS", "must be at most 1000"));
        }
        Ok(settings)
    }
}

impl OutboxSettings {
    /// How the relay of service `name` publishes to `exchange`.
    pub fn relay(&self, exchange: &str, name: &str) -> RelaySettings {
        RelaySettings {
            exchange: exchange.to_owned(),
            source: format!("/{name}"),
            batch_size: i64::try_from(self.outbox_batch_size.get()).unwrap_or(i64::MAX),
            poll_interval: Duration::from_millis(self.outbox_poll_interval_ms.get()),
            linger: Duration::from_millis(self.outbox_linger_ms),
            retention: Duration::from_secs(u64::from(self.outbox_retention_hours) * 3600),
        }
    }
}

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The events exchange.
    pub exchange: String,
    /// The CloudEvents `source` of this service, e.g. `/user-metadata`.
    pub source: String,
    /// Rows published per transaction.
    pub batch_size: i64,
    /// How often to look for due rows when no notification arrives (retries, missed notifications).
    pub poll_interval: Duration,
    /// How long after a batch the next one waits, gathering the events written meanwhile (see [`relay_on`]).
    pub linger: Duration,
    /// How long a published row is kept before the relay deletes it.
    pub retention: Duration,
}

/// Publishes the outbox until `cancel` fires. Reconnects to the broker and the database as needed.
pub async fn relay(pool: PgPool, broker: Broker, settings: RelaySettings, cancel: CancellationToken) {
    RETRY
        .restart("outbox relay", &cancel, || async {
            let Some(connection) = broker.connection_until(&cancel).await else { return Ok(()) };
            relay_on(&pool, &connection, &settings, &cancel).await
        })
        .await;
}

/// Returns `Ok` when cancelled, `Err` when the broker or database failed.
///
/// A batch follows the one before by at least `linger` (an event written after a quiet spell goes out at once):
/// under load each batch carries what arrived meanwhile, and so does what follows it downstream (each consumer
/// applies the deliveries it holds in one transaction with one ack, the mail sender claims them in one statement).
/// One transaction and one confirm wait per event, in every service, would cost more CPU than the event's own work.
async fn relay_on(
    pool: &PgPool,
    connection: &lapin::Connection,
    settings: &RelaySettings,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    crate::events::declare_exchange(&channel, &settings.exchange).await?;
    let mut listener = PgListener::connect_with(pool).await.context("listening for outbox notifications")?;
    listener.listen(CHANNEL).await?;
    tracing::info!(exchange = %settings.exchange, "outbox relay running");
    let mut upkept: Option<tokio::time::Instant> = None;
    loop {
        let began = tokio::time::Instant::now();
        let published = publish_due(pool, &channel, settings).await?;
        if upkept.is_none_or(|at| at.elapsed() >= UPKEEP_INTERVAL) {
            record_lag(pool).await;
            forget_published(pool, settings.retention).await;
            upkept = Some(tokio::time::Instant::now());
        }
        if published == settings.batch_size as usize {
            continue;
        }
        let linger = if published > 0 { settings.linger.saturating_sub(began.elapsed()) } else { Duration::ZERO };
        if !next_batch(&mut listener, settings.poll_interval, linger, cancel).await? {
            let _ = channel.close(200, "shutting down".into()).await;
            return Ok(());
        }
    }
}

/// Waits for the next batch: a notification or the next poll, then `linger`; false when cancelled. The next batch
/// takes every event announced by then, so the notifications already received are dropped: they would only wake the
/// relay again to find nothing.
async fn next_batch(
    listener: &mut PgListener,
    poll_interval: Duration,
    linger: Duration,
    cancel: &CancellationToken,
) -> anyhow::Result<bool> {
    tokio::select! {
        notification = listener.recv() => { notification.context("outbox notifications")?; }
        () = tokio::time::sleep(poll_interval) => {}
        () = cancel.cancelled() => return Ok(false),
    }
    if !crate::backoff::pause(linger, cancel).await {
        return Ok(false);
    }
    while let Some(notification) = listener.try_recv().now_or_never() {
        if notification.context("outbox notifications")?.is_none() {
            break;
        }
    }
    Ok(true)
}

struct Row {
    id: Uuid,
    event_type: String,
    payload: Vec<u8>,
    trace: TraceContext,
    created_at: DateTime<Utc>,
    attempts: i32,
}

crate::from_row!(Row { id, event_type, payload, created_at, attempts; flatten trace });

/// Publishes one batch of due rows and marks the confirmed ones. Rows are locked with `SKIP LOCKED`, so
/// replicas share the work without publishing the same row at the same time.
async fn publish_due(pool: &PgPool, channel: &lapin::Channel, settings: &RelaySettings) -> anyhow::Result<usize> {
    // Marking events published need not wait for the disk: if a crash loses the mark, the events are published
    // again, and every consumer is idempotent. (The rows themselves were committed durably with their change.)
    // Said with the BEGIN, in the same round trip.
    let mut tx = pool.begin_with("BEGIN; SET LOCAL synchronous_commit = off").await?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, event_type, payload, traceparent, tracestate, created_at, attempts FROM outbox \
         WHERE published_at IS NULL AND next_attempt_at <= now() \
         ORDER BY created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(settings.batch_size)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let confirmed = publish(channel, settings, &rows).await?;
    confirmed.record(&mut tx).await?;
    tx.commit().await?;
    metrics::counter!("outbox_published_total").increment(confirmed.published.len() as u64);
    match confirmed.broken {
        Some(error) => Err(error).context("publishing to the broker"),
        None => Ok(rows.len()),
    }
}

/// Publishes `rows`, each in its publish span, and waits for the broker's confirms (bounded by
/// [`CONFIRM_TIMEOUT`]); each span ends at its confirm.
async fn publish(channel: &lapin::Channel, settings: &RelaySettings, rows: &[Row]) -> anyhow::Result<Confirmed> {
    let (mut confirms, mut spans) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
    let start = tokio::time::Instant::now();
    for row in rows {
        let span = publish_span(row, settings);
        let properties = row.envelope(&settings.source, TraceContext::of(&span)).properties();
        let exchange = settings.exchange.as_str().into();
        confirms.push(channel.basic_publish(exchange, "".into(), MANDATORY, &row.payload, properties).await);
        spans.push(span);
    }
    let confirmed = tokio::time::timeout(CONFIRM_TIMEOUT, Confirmed::wait(rows, confirms))
        .await
        .map_err(|_| anyhow::anyhow!("the broker did not confirm {} events within {CONFIRM_TIMEOUT:?}", rows.len()))?;
    // From the first publish to the last confirm: how long the broker takes to make a batch durable.
    metrics::histogram!("outbox_publish_duration_seconds").record(start.elapsed().as_secs_f64());
    for (row, span) in rows.iter().zip(spans) {
        if confirmed.failed.iter().any(|(id, ..)| *id == row.id) {
            span.record("otel.status_code", "ERROR");
        }
    }
    Ok(confirmed)
}

/// The span of one event's publication, from the first publish to the broker's confirm: a producer span in the
/// trace of the change that wrote the row (and linked to it); consumers continue from it.
fn publish_span(row: &Row, settings: &RelaySettings) -> tracing::Span {
    let span = tracing::info_span!(
        "outbox.publish",
        otel.name = format!("publish {}", settings.exchange),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = %settings.exchange,
        messaging.message.id = %row.id,
        cloudevents.event_id = %row.id,
        cloudevents.event_type = %row.event_type,
        cloudevents.event_source = %settings.source,
        outbox.attempts = row.attempts,
        otel.status_code = tracing::field::Empty,
    );
    row.trace.continue_in(&span);
    span
}

impl Row {
    /// The row's envelope, for its properties: the body is published from the row as it is, not copied.
    fn envelope(&self, source: &str, trace: TraceContext) -> Envelope {
        Envelope {
            id: self.id,
            kind: self.event_type.clone(),
            source: source.to_owned(),
            time: self.created_at,
            data: Vec::new(),
            trace,
        }
    }
}

/// What the broker said about a batch: the events it took, those it did not (with why), and the channel error
/// that ended the batch, if one did.
#[derive(Default)]
struct Confirmed {
    published: Vec<Uuid>,
    failed: Vec<(Uuid, i32, String)>,
    broken: Option<lapin::Error>,
}

impl Confirmed {
    async fn wait(rows: &[Row], confirms: Vec<lapin::Result<PublisherConfirm>>) -> Self {
        let mut confirmed = Self::default();
        for (row, confirm) in rows.iter().zip(confirms) {
            let confirmation = match confirm {
                Ok(confirm) => confirm.await,
                Err(error) => Err(error),
            };
            let reason = match confirmation {
                Ok(Confirmation::Ack(None)) => {
                    confirmed.published.push(row.id);
                    continue;
                }
                Ok(Confirmation::Ack(Some(_))) => "unroutable: no queue is bound to the exchange".to_owned(),
                Ok(other) => format!("broker answered {other:?}"),
                Err(error) => confirmed.broken.insert(error).to_string(),
            };
            confirmed.failed.push((row.id, row.attempts, reason));
        }
        confirmed
    }

    /// Marks the published events, and backs off the others.
    async fn record(&self, tx: &mut Transaction<'_, Postgres>) -> sqlx::Result<()> {
        let published = "UPDATE outbox SET published_at = now() WHERE id = ANY($1)";
        sqlx::query(published).bind(&self.published).execute(&mut **tx).await?;
        for (id, attempts, reason) in &self.failed {
            tracing::warn!(event.id = %id, %reason, "event not confirmed; will retry");
            let retry_in = RETRY.delay(u32::try_from(*attempts).unwrap_or(0) + 1);
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = now() + $2 * interval '1 millisecond' \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX))
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

/// Deletes up to [`FORGET_BATCH`] events published more than `retention` ago (replicas skip each other's rows).
/// A failure only waits for the next upkeep.
async fn forget_published(pool: &PgPool, retention: Duration) {
    let forgotten = sqlx::query(
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at < now() - make_interval(secs => $1) \
         ORDER BY published_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(retention.as_secs_f64())
    .bind(FORGET_BATCH)
    .execute(pool)
    .await;
    match forgotten {
        Ok(done) => metrics::counter!("outbox_forgotten_total").increment(done.rows_affected()),
        Err(error) => tracing::warn!(%error, "could not delete published events past the retention"),
    }
}

/// Exports how far behind the relay is: unpublished rows and the age of the oldest.
async fn record_lag(pool: &PgPool) {
    let lag: sqlx::Result<(i64, Option<f64>)> = sqlx::query_as(
        "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM outbox WHERE published_at IS NULL",
    )
    .fetch_one(pool)
    .await;
    if let Ok((pending, oldest)) = lag {
        metrics::gauge!("outbox_pending_events").set(pending as f64);
        metrics::gauge!("outbox_oldest_pending_age_seconds").set(oldest.unwrap_or(0.0));
    }
}
