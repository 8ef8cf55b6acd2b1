//! The events user-metadata announces, built from a user row into outbox entries.

use chrono::{DateTime, Utc};
use platform::outbox::OutboxEvent;
use prost::Message as _;
use proto::{
    Event,
    events::v1::{EmailVerified, SignupAttemptedForExistingAccount, UserDeleted, UserSignedUp},
};
use uuid::Uuid;

use crate::store::User;

/// What a completed signup adds to the user row: the keyed hashes signup-api computed.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContactHashes {
    pub(crate) contacts: Vec<Vec<u8>>,
    pub(crate) email: Vec<u8>,
}

/// `UserSignedUp` for a new or still pending user, or `SignupAttemptedForExistingAccount` for a verified one.
pub(crate) fn signup(user: &User, existing: bool, hashes: &ContactHashes) -> OutboxEvent {
    let id = Uuid::now_v7();
    let occurred_at = Some(timestamp(Utc::now()));
    if existing {
        let event = SignupAttemptedForExistingAccount {
            event_id: id.to_string(),
            user_id: user.id.to_string(),
            email: user.email.clone(),
            locale: user.locale.clone(),
            occurred_at,
        };
        return outbox(id, Event::SIGNUP_ATTEMPTED_FOR_EXISTING_ACCOUNT, event.encode_to_vec());
    }
    let event = UserSignedUp {
        event_id: id.to_string(),
        user_id: user.id.to_string(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        locale: user.locale.clone(),
        contact_hashes: hashes.contacts.clone(),
        email_hash: hashes.email.clone(),
        discoverable: user.discoverable,
        occurred_at,
        signup_id: user.signup_id.to_string(),
    };
    outbox(id, Event::USER_SIGNED_UP, event.encode_to_vec())
}

/// `EmailVerified` for a user who just proved their email.
pub(crate) fn verified(user: &User) -> OutboxEvent {
    let id = Uuid::now_v7();
    let event = EmailVerified {
        event_id: id.to_string(),
        user_id: user.id.to_string(),
        verified_at: user.verified_at.map(timestamp),
        occurred_at: Some(timestamp(Utc::now())),
    };
    outbox(id, Event::EMAIL_VERIFIED, event.encode_to_vec())
}

/// `UserDeleted` for an account removed (archived): every service forgets the user.
pub(crate) fn deleted(user_id: Uuid) -> OutboxEvent {
    let id = Uuid::now_v7();
    let event = UserDeleted {
        event_id: id.to_string(),
        user_id: user_id.to_string(),
        occurred_at: Some(timestamp(Utc::now())),
    };
    outbox(id, Event::USER_DELETED, event.encode_to_vec())
}

/// A protobuf timestamp.
pub(crate) fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    platform::time::to_proto(at)
}

fn outbox(id: Uuid, kind: &str, payload: Vec<u8>) -> OutboxEvent {
    OutboxEvent { id, kind: kind.to_owned(), payload }
}
