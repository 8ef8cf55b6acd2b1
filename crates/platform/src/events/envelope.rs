//! One event as it travels: the CloudEvents AMQP binding in binary mode (attributes as `cloudEvents_*` headers,
//! the protobuf body as the message body, the content type in the AMQP `content-type`).

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use lapin::{
    BasicProperties,
    message::Delivery,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use uuid::Uuid;

use crate::propagation::TraceContext;

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
    /// The trace context of its publication (`cloudEvents_traceparent`, `cloudEvents_tracestate`), so the trace
    /// continues in every consumer.
    pub trace: TraceContext,
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
        if let Some(traceparent) = &self.trace.traceparent {
            put("cloudEvents_traceparent", traceparent);
        }
        if let Some(tracestate) = &self.trace.tracestate {
            put("cloudEvents_tracestate", tracestate);
        }
        BasicProperties::default()
            .with_content_type(ShortString::from(CONTENT_TYPE))
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(self.id.to_string()))
            .with_type(ShortString::from(self.kind.as_str()))
            .with_timestamp(u64::try_from(self.time.timestamp()).unwrap_or_default())
            .with_headers(headers)
    }

    /// How long ago it happened (zero if its time is ahead of this clock).
    pub fn age(&self) -> std::time::Duration {
        (Utc::now() - self.time).to_std().unwrap_or_default()
    }

    /// Reads an envelope back from a delivery; an error means the message can never be processed.
    pub fn from_delivery(delivery: &Delivery) -> anyhow::Result<Self> {
        let headers = delivery.properties.headers().as_ref().context("no headers")?;
        let header = |key: &str| {
            text(headers.inner().get(&ShortString::from(key)))
                .with_context(|| format!("header {key} missing or not a string"))
        };
        Ok(Self {
            id: header("cloudEvents_id")?.parse().context("cloudEvents_id is not a UUID")?,
            kind: header("cloudEvents_type")?,
            source: header("cloudEvents_source")?,
            time: DateTime::parse_from_rfc3339(&header("cloudEvents_time")?)
                .context("cloudEvents_time is not RFC 3339")?
                .with_timezone(&Utc),
            data: delivery.data.clone(),
            // The CloudEvents AMQP binding's names, or the plain W3C ones of a producer that uses those.
            trace: TraceContext {
                traceparent: header("cloudEvents_traceparent").or_else(|_| header("traceparent")).ok(),
                tracestate: header("cloudEvents_tracestate").or_else(|_| header("tracestate")).ok(),
            },
        })
    }
}

/// An AMQP header or table value as text, if it is a string.
pub(crate) fn text(value: Option<&AMQPValue>) -> Option<String> {
    match value? {
        AMQPValue::LongString(value) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        AMQPValue::ShortString(value) => Some(value.as_str().to_owned()),
        _ => None,
    }
}
