//! The events password announces, through its own outbox: `PasswordChanged`.

use chrono::Utc;
use platform::outbox::OutboxEvent;
use prost::Message as _;
use proto::{Event, events::v1::PasswordChanged};
use uuid::Uuid;

/// `PasswordChanged` for `user_id`, about it (removed with the account).
pub(crate) fn password_changed(user_id: Uuid) -> OutboxEvent {
    let id = Uuid::now_v7();
    let event = PasswordChanged {
        event_id: id.to_string(),
        user_id: user_id.to_string(),
        occurred_at: Some(platform::time::to_proto(Utc::now())),
    };
    OutboxEvent { id, kind: Event::PASSWORD_CHANGED.to_owned(), payload: event.encode_to_vec(), user_id: Some(user_id) }
}
