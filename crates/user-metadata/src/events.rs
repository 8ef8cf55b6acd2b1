//! The events user-metadata announces, built from a user row into outbox entries.

use chrono::Utc;
use platform::{outbox::OutboxEvent, time::to_proto};
use prost_types::Timestamp;
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
    /// The requesting client's keyed hash, or empty: its verification mail is charged to it.
    pub(crate) client_hash: Vec<u8>,
}

/// `UserSignedUp` for an attempt on a new or still pending user, with the attempt's own profile, or
/// `SignupAttemptedForExistingAccount` for a verified one.
pub(crate) fn signup(user: &User, profile: &Profile, existing: bool, attempt: &Attempt) -> OutboxEvent {
    if existing {
        return outbox(Event::SIGNUP_ATTEMPTED_FOR_EXISTING_ACCOUNT, Some(user.id), |event_id, occurred_at| {
            SignupAttemptedForExistingAccount {
                event_id,
                user_id: user.id.to_string(),
                email: user.email.clone(),
                // The notice goes to the account's owner: in the account's language, not the attempt's.
                locale: user.locale.clone(),
                occurred_at,
                signup_id: attempt.signup_id.to_string(),
                client_hash: attempt.client_hash.clone(),
            }
        });
    }
    outbox(Event::USER_SIGNED_UP, Some(user.id), |event_id, occurred_at| UserSignedUp {
        event_id,
        user_id: user.id.to_string(),
        email: user.email.clone(),
        display_name: profile.display_name.clone(),
        locale: profile.locale.clone(),
        contact_hashes: attempt.contacts.clone(),
        email_hash: attempt.email_hash.clone(),
        discoverable: profile.discoverable,
        occurred_at,
        signup_id: attempt.signup_id.to_string(),
        client_hash: attempt.client_hash.clone(),
    })
}

/// `EmailVerified` for a user who just proved their email through the attempt `user.signup_id`.
pub(crate) fn verified(user: &User) -> OutboxEvent {
    outbox(Event::EMAIL_VERIFIED, Some(user.id), |event_id, occurred_at| EmailVerified {
        event_id,
        user_id: user.id.to_string(),
        verified_at: user.verified_at.map(to_proto),
        occurred_at,
        signup_id: user.signup_id.to_string(),
    })
}

/// `DiscoverabilityChanged` for a member who changed whether others may be suggested them.
pub(crate) fn discoverability(user: &User) -> OutboxEvent {
    outbox(Event::DISCOVERABILITY_CHANGED, Some(user.id), |event_id, occurred_at| DiscoverabilityChanged {
        event_id,
        user_id: user.id.to_string(),
        discoverable: user.discoverable,
        occurred_at,
    })
}

/// `UserDeleted` for an account removed (archived, or by its owner): every service forgets the user and its
/// `signup_ids`.
pub(crate) fn deleted(user_id: Uuid, signup_ids: &[Uuid]) -> OutboxEvent {
    outbox(Event::USER_DELETED, None, |event_id, occurred_at| UserDeleted {
        event_id,
        user_id: user_id.to_string(),
        occurred_at,
        signup_ids: signup_ids.iter().map(Uuid::to_string).collect(),
    })
}

/// An outbox entry of type `kind` about `user_id` (removed with the account; `None` for `UserDeleted` itself, which
/// holds only ids), with a new event id and the current time given to `event`.
fn outbox<M: prost::Message>(
    kind: &str,
    user_id: Option<Uuid>,
    event: impl FnOnce(String, Option<Timestamp>) -> M,
) -> OutboxEvent {
    let id = Uuid::now_v7();
    let payload = event(id.to_string(), Some(to_proto(Utc::now()))).encode_to_vec();
    OutboxEvent { id, kind: kind.to_owned(), payload, user_id }
}
