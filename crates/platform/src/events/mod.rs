//! Events on the broker: the envelope every event travels in, the topology every subscriber declares, the consumer
//! loop that acks only after the handler's transaction has committed, and the idempotency every consumer relies on.

mod consumer;
mod envelope;
mod idempotency;
mod topology;

pub use consumer::{ConsumerStatus, HandleError, Handler, consume};
pub(crate) use envelope::text;
pub use envelope::{CONTENT_TYPE, Envelope};
pub use idempotency::{record_once, remember_deleted, transient, uuid_field, was_deleted};
pub use topology::{Subscription, declare_exchange, declare_subscription};
