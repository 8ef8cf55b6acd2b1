//! Opaque bearer secrets (verification links, sessions): 256 bits from the operating system's CSPRNG, carried as
//! 43 base64url characters, and stored only as their SHA-256. A database that leaks holds nothing that opens
//! anything.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// Characters of a token: 32 bytes in base64url without padding.
const LEN: usize = 43;

/// A freshly generated or presented token. Never logged: its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A fresh token straight from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A token as presented by a client, if it has the shape of one; nothing else is ever looked up.
    pub fn parse(presented: &str) -> Option<Self> {
        shaped(presented).then(|| Self(presented.to_owned()))
    }

    /// What a database stores and looks up: SHA-256 of the token (a 256-bit random value needs no salt or key).
    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }

    /// The token itself, to hand to its holder (a link, a response body).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Whether `text` looks like a token we issue (43 base64url characters).
pub fn shaped(text: &str) -> bool {
    text.len() == LEN && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_256_bits_and_only_their_shape_is_accepted() {
        let token = Token::generate().unwrap();
        assert_eq!(token.expose().len(), 43);
        assert_eq!(Token::parse(token.expose()), Some(token.clone()));
        assert_ne!(Token::generate().unwrap().expose(), token.expose());
        assert_eq!(token.hash().len(), 32);
        assert!(Token::parse("short").is_none());
        assert!(Token::parse(&format!("{}=", &token.expose()[..42])).is_none());
        assert_eq!(format!("{token:?}"), "Token([redacted])");
    }
}
