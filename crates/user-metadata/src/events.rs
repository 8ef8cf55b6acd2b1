//! The events user-metadata announces, built from a user row into outbox entries.

use chrono::{DateTime, Utc};
use platform::outbox::OutboxEvent;
use prost::Message as _;
use proto::{
    Event,
    events::v1::{DiscoverabilityChanged, EmailVerified, SignupAttemptedForExistingAccount, UserDeleted, UserSignedUp},
};
use uuid::Uuid;

use crate::store::{Profile, User};

/// What an attempt carries besides its profile: its id and the keyed hashes signup-api computed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attempt {
    pub(crate) signup_id: Uuid,
    pub(crate) contacts: Vec<Vec<u8>>,
    pub(crate) email_hash: Vec<u8>,
}

/// `UserSignedUp` for an attempt on a new or still pending user, with the attempt's own profile, or
/// `SignupAttemptedForExistingAccount` for a verified one.
pub(crate) fn signup(user: &User, profile: &Profile, existing: bool, attempt: &Attempt) -> OutboxEvent {
    let id = Uuid::now_v7();
    let occurred_at = Some(timestamp(Utc::now()));
    if existing {
        let event = SignupAttemptedForExistingAccount {
            event_id: id.to_string(),
            user_id: user.id.to_string(),
            email: user.email.clone(),
            // The notice goes to the account's owner: in the account's language, not the attempt's.
            locale: user.locale.clone(),
            occurred_at,
        };
        return outbox(id, Event::SIGNUP_ATTEMPTED_FOR_EXISTING_ACCOUNT, event.encode_to_vec());
    }
    let event = UserSignedUp {
        event_id: id.to_string(),
        user_id: user.id.to_string(),
        email: user.email.clone(),
        display_name: profile.display_name.clone(),
        locale: profile.locale.clone(),
        contact_hashes: attempt.contacts.clone(),
        email_hash: attempt.email_hash.clone(),
        discoverable: profile.discoverable,
        occurred_at,
        signup_id: attempt.signup_id.to_string(),
    };
    outbox(id, Event::USER_SIGNED_UP, event.encode_to_vec())
}

/// `EmailVerified` for a user who just proved their email through the attempt `user.signup_id`.
pub(crate) fn verified(user: &User) -> OutboxEvent {
    let id = Uuid::now_v7();
    let event = EmailVerified {
        event_id: id.to_string(),
        user_id: user.id.to_string(),
        verified_at: user.verified_at.map(timestamp),
        occurred_at: Some(timestamp(Utc::now())),
        signup_id: user.signup_id.to_string(),
    };
    outbox(id, Event::EMAIL_VERIFIED, event.encode_to_vec())
}

/// `DiscoverabilityChanged` for a member who changed whether others may be suggested them.
pub(crate) fn discoverability(user: &User) -> OutboxEvent {
    let id = Uuid::now_v7();
    let event = DiscoverabilityChanged {
        event_id: id.to_string(),
        user_id: user.id.to_string(),
        discoverable: user.discoverable,
        occurred_at: Some(timestamp(Utc::now())),
    };
    outbox(id, Event::DISCOVERABILITY_CHANGED, event.encode_to_vec())
}

/// `UserDeleted` for an account removed (archived): every service forgets the user and its `signup_ids`.
pub(crate) fn deleted(user_id: Uuid, signup_ids: &[Uuid]) -> OutboxEvent {
    let id = Uuid::now_v7();
    let event = UserDeleted {
        event_id: id.to_string(),
        user_id: user_id.to_string(),
        occurred_at: Some(timestamp(Utc::now())),
        signup_ids: signup_ids.iter().map(Uuid::to_string).collect(),
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
