//! The event catalogue of `signup.events.v1`: the CloudEvents `type` of each message and decoding by it.

use prost::Message as _;

use crate::events::v1::{
    DiscoverabilityChanged, EmailVerified, PasswordChanged, SignupAttemptedForExistingAccount, UserDeleted,
    UserSignedUp,
};

/// One event of `signup.events.v1`, decoded according to its CloudEvents `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A signup completed for a new or pending account.
    UserSignedUp(UserSignedUp),
    /// Someone tried to sign up with a verified account's email.
    SignupAttemptedForExistingAccount(SignupAttemptedForExistingAccount),
    /// An account's email was proven.
    EmailVerified(EmailVerified),
    /// A member changed whether others may be suggested them.
    DiscoverabilityChanged(DiscoverabilityChanged),
    /// An account was removed.
    UserDeleted(UserDeleted),
    /// An account's password changed.
    PasswordChanged(PasswordChanged),
    /// A type this build does not know (a newer producer); consumers skip it.
    Unknown(String),
}

impl Event {
    /// `type` of [`UserSignedUp`].
    pub const USER_SIGNED_UP: &'static str = "signup.events.v1.UserSignedUp";
    /// `type` of [`SignupAttemptedForExistingAccount`].
    pub const SIGNUP_ATTEMPTED_FOR_EXISTING_ACCOUNT: &'static str =
        "signup.events.v1.SignupAttemptedForExistingAccount";
    /// `type` of [`EmailVerified`].
    pub const EMAIL_VERIFIED: &'static str = "signup.events.v1.EmailVerified";
    /// `type` of [`DiscoverabilityChanged`].
    pub const DISCOVERABILITY_CHANGED: &'static str = "signup.events.v1.DiscoverabilityChanged";
    /// `type` of [`UserDeleted`].
    pub const USER_DELETED: &'static str = "signup.events.v1.UserDeleted";
    /// `type` of [`PasswordChanged`].
    pub const PASSWORD_CHANGED: &'static str = "signup.events.v1.PasswordChanged";

    /// Decodes `data` as the message `kind` names. An error means the body can never be processed.
    pub fn decode(kind: &str, data: &[u8]) -> Result<Self, prost::DecodeError> {
        Ok(match kind {
            Self::USER_SIGNED_UP => Self::UserSignedUp(UserSignedUp::decode(data)?),
            Self::SIGNUP_ATTEMPTED_FOR_EXISTING_ACCOUNT => {
                Self::SignupAttemptedForExistingAccount(SignupAttemptedForExistingAccount::decode(data)?)
            }
            Self::EMAIL_VERIFIED => Self::EmailVerified(EmailVerified::decode(data)?),
            Self::DISCOVERABILITY_CHANGED => Self::DiscoverabilityChanged(DiscoverabilityChanged::decode(data)?),
            Self::USER_DELETED => Self::UserDeleted(UserDeleted::decode(data)?),
            Self::PASSWORD_CHANGED => Self::PasswordChanged(PasswordChanged::decode(data)?),
            other => Self::Unknown(other.to_owned()),
        })
    }

    /// The `user_id` of the user the event is about, as it was sent (`None` for a type this build does not know).
    pub fn user_id(&self) -> Option<&str> {
        Some(match self {
            Self::UserSignedUp(event) => &event.user_id,
            Self::SignupAttemptedForExistingAccount(event) => &event.user_id,
            Self::EmailVerified(event) => &event.user_id,
            Self::DiscoverabilityChanged(event) => &event.user_id,
            Self::UserDeleted(event) => &event.user_id,
            Self::PasswordChanged(event) => &event.user_id,
            Self::Unknown(_) => return None,
        })
    }
}

impl Event {
    /// Every type this build knows, in the order the catalogue lists them.
    pub const TYPES: [&'static str; 6] = [
        Self::USER_SIGNED_UP,
        Self::SIGNUP_ATTEMPTED_FOR_EXISTING_ACCOUNT,
        Self::EMAIL_VERIFIED,
        Self::DISCOVERABILITY_CHANGED,
        Self::USER_DELETED,
        Self::PASSWORD_CHANGED,
    ];

    /// A message body as people read it, for inspecting dead letters: the decoded event without what identifies a
    /// person (the address and name written `<redacted>`, the keyed hashes dropped, the contacts counted), or why
    /// it does not decode. What is printed goes to the logs, which an account's deletion never reaches; the ids,
    /// types and times are what deciding on a replay needs.
    pub fn render(kind: &str, data: &[u8]) -> String {
        const REDACTED: &str = "<redacted>";
        match Self::decode(kind, data) {
            Ok(Self::UserSignedUp(mut event)) => {
                let contacts = event.contact_hashes.len();
                (event.email, event.display_name) = (REDACTED.to_owned(), REDACTED.to_owned());
                (event.contact_hashes, event.email_hash, event.client_hash) = (Vec::new(), Vec::new(), Vec::new());
                format!("{:?} with {contacts} contacts", Self::UserSignedUp(event))
            }
            Ok(Self::SignupAttemptedForExistingAccount(mut event)) => {
                (event.email, event.client_hash) = (REDACTED.to_owned(), Vec::new());
                format!("{:?}", Self::SignupAttemptedForExistingAccount(event))
            }
            Ok(event) => format!("{event:?}"),
            Err(error) => format!("does not decode as {kind}: {error} ({} bytes)", data.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_decode_by_their_type_and_garbage_does_not() {
        let event = UserSignedUp { user_id: "u".into(), ..Default::default() };

        let decoded = Event::decode(Event::USER_SIGNED_UP, &event.encode_to_vec()).unwrap();

        assert_eq!(decoded, Event::UserSignedUp(event));
        assert!(Event::decode(Event::USER_SIGNED_UP, b"\xff\xff\xff").is_err());
        assert_eq!(Event::decode("x.Future", b"").unwrap(), Event::Unknown("x.Future".into()));
    }
}
