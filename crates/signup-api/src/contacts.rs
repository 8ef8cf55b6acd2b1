//! Keyed hashes (HMAC-SHA256 under a secret key). Under `CONTACT_HASH_KEY` they are the only form in which contacts
//! and the account's own email leave signup-api: without the key, a hash cannot be linked back to an address by
//! guessing. Under `IDEMPOTENCY_FINGERPRINT_KEY` they fingerprint a request, so a retry with another body is
//! recognised without storing the body.

use hmac::{Hmac, KeyInit as _, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;

use crate::domain::email::Email;

/// HMAC-SHA256 under one secret key (which `Debug` shows redacted).
#[derive(Debug, Clone)]
pub struct KeyedHasher {
    key: SecretString,
}

impl KeyedHasher {
    /// A hasher under `key`.
    pub fn new(key: SecretString) -> Self {
        Self { key }
    }

    /// HMAC-SHA256 of the normalised address (no label: this is the contact hash every service compares).
    pub fn hash(&self, email: &Email) -> Vec<u8> {
        self.mac(b"", email.as_str().as_bytes())
    }

    /// HMAC-SHA256 of `message` in a separate domain (`label`), for fingerprints that must never collide with
    /// contact hashes.
    pub fn mac(&self, label: &[u8], message: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256>>::new_from_slice(self.key.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(label);
        mac.update(message);
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_address_hashes_the_same_and_the_key_matters() {
        let a = KeyedHasher::new(SecretString::from("k".repeat(32)));
        let b = KeyedHasher::new(SecretString::from("j".repeat(32)));
        let email = Email::parse("Friend@Example.com").unwrap();

        assert_eq!(a.hash(&email), a.hash(&Email::parse("friend@example.com").unwrap()));
        assert_ne!(a.hash(&email), b.hash(&email));
        assert_eq!(a.hash(&email).len(), 32);
        assert_ne!(a.hash(&email), a.mac(b"fingerprint\0", email.as_str().as_bytes()));
    }
}
