//! Email addresses: RFC 5321/5322 syntax, internationalised domains accepted and stored in their ASCII
//! (punycode) form, the whole address lower-cased (and the local part in Unicode NFC) so one mailbox has one
//! spelling.
//!
//! Quoted local parts (`"ada"@…`, `"a\da"@…`) are refused, though RFC 5322 allows them: they spell one mailbox in
//! many ways, each of which would be an account and a mail budget of its own, and no mail provider hands them out.
//! So are characters that do not show what they are (controls, bidirectional marks, zero-width characters).

use std::fmt;

use email_address::{EmailAddress, Options};
use unicode_normalization::UnicodeNormalization as _;

/// Longest address SMTP can carry (RFC 5321 path limit less the angle brackets).
const MAX_LEN: usize = 254;
/// Longest local part (RFC 5321).
const MAX_LOCAL: usize = 64;

/// A valid, normalised email address.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

/// Why a string is not an email address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Nothing was given.
    #[error("is empty")]
    Empty,
    /// Longer than SMTP allows.
    #[error("is longer than {MAX_LEN} characters")]
    TooLong,
    /// Not an addr-spec.
    #[error("is not a valid email address")]
    Syntax,
    /// The domain is not a valid (internationalised) domain name.
    #[error("has an invalid domain")]
    Domain,
}

impl Email {
    /// Parses and normalises `raw` (surrounding whitespace is ignored, but counts towards the length bound).
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        // Counted as sent, as the OpenAPI document's maxLength counts.
        if raw.chars().count() > MAX_LEN {
            return Err(EmailError::TooLong);
        }
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(EmailError::Empty);
        }
        let (local, domain) = raw.rsplit_once('@').ok_or(EmailError::Syntax)?;
        if local.contains(['"', '\\']) || local.chars().any(|c| c.is_whitespace() || is_hidden(c)) {
            return Err(EmailError::Syntax);
        }
        // Bounded as it is stored: lower-casing can lengthen a local part (`İ` becomes two characters).
        let local: String = local.to_lowercase().nfc().collect();
        if local.is_empty() || local.len() > MAX_LOCAL {
            return Err(EmailError::Syntax);
        }
        let domain = idna::domain_to_ascii_strict(domain).map_err(|_| EmailError::Domain)?;
        let address = format!("{local}@{domain}");
        let options = Options {
            minimum_sub_domains: 2,
            allow_domain_literal: false,
            allow_display_text: false,
            allow_long_local_parts: false,
        };
        EmailAddress::parse_with_options(&address, options).map_err(|_| EmailError::Syntax)?;
        if address.len() > MAX_LEN {
            return Err(EmailError::TooLong);
        }
        Ok(Self(address))
    }

    /// An address an account holds, taken as stored: an earlier release may have accepted a spelling today's rules
    /// refuse, and it is still that account's (its owner must be able to reset, change and delete).
    pub fn stored(address: String) -> Self {
        Self(address)
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or(self.0.as_str(), |(local, _)| local)
    }
}

/// What a local part must not hold: what a display name must not ([`super::profile::is_hidden`]), and anything that
/// renders as nothing (variation selectors among them), which only makes another spelling that reads the same.
fn is_hidden(c: char) -> bool {
    super::profile::is_hidden(c) || super::profile::is_ignorable(c)
}

/// Addresses are personal data: debug output shows only the domain.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = self.0.rsplit_once('@').map_or("", |(_, domain)| domain);
        write!(f, "Email(***@{domain})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lower_cased() {
        assert_eq!(Email::parse("  Ada.Lovelace@Example.COM ").unwrap().as_str(), "ada.lovelace@example.com");
    }

    #[test]
    fn internationalised_domains_become_punycode() {
        assert_eq!(Email::parse("anna@bücher.example").unwrap().as_str(), "anna@xn--bcher-kva.example");
    }

    #[test]
    fn plus_addressing_and_rare_atext_are_valid() {
        for ok in ["a+tag@example.com", "o'brien@example.ie", "x_y-z@sub.example.org"] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn malformed_addresses_are_refused_with_a_reason() {
        assert_eq!(Email::parse(""), Err(EmailError::Empty));
        assert_eq!(Email::parse("no-at-sign"), Err(EmailError::Syntax));
        assert_eq!(Email::parse("@example.com"), Err(EmailError::Syntax));
        assert_eq!(Email::parse("two@@example.com"), Err(EmailError::Syntax));
        assert_eq!(Email::parse("dot.@example.com"), Err(EmailError::Syntax));
        assert_eq!(Email::parse("a@localhost"), Err(EmailError::Syntax));
        assert_eq!(Email::parse("a@exa mple.com"), Err(EmailError::Domain));
        assert_eq!(Email::parse(&format!("{}@example.com", "a".repeat(65))), Err(EmailError::Syntax));
        assert_eq!(Email::parse(&format!("a@{}.com", "b".repeat(260))), Err(EmailError::TooLong));
        assert_eq!(Email::parse(&format!("{}a@example.com", " ".repeat(250))), Err(EmailError::TooLong));
    }

    #[test]
    fn quoted_local_parts_and_hidden_characters_are_refused() {
        for spelling in [
            "\"ada\"@example.com",
            "\"a\\da\"@example.com",
            "\"a da\"@example.com",
            "ada\u{200B}@example.com",
            "a\u{202E}da@example.com",
            "ada\u{85}@example.com",
            "ada\u{2028}@example.com",
            "ad\u{E0061}a@example.com",
            "ada\u{FE0F}@example.com",
            "ada\u{E0100}@example.com",
        ] {
            assert_eq!(Email::parse(spelling), Err(EmailError::Syntax), "{spelling:?}");
        }
        assert!(Email::parse("zoë@example.com").is_ok() && Email::parse("李小龍@example.com").is_ok());
    }

    #[test]
    fn one_mailbox_has_one_spelling_whatever_its_unicode_form() {
        let composed = Email::parse("Zo\u{00CB}@example.com").unwrap();
        let decomposed = Email::parse("zoe\u{0308}@example.com").unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(composed.as_str(), "zo\u{00EB}@example.com");
        // 32 `İ` are 64 bytes as sent and 96 once lower-cased: over the local part's limit as stored.
        assert_eq!(Email::parse(&format!("{}@example.com", "İ".repeat(32))), Err(EmailError::Syntax));
    }

    #[test]
    fn debug_output_hides_the_mailbox() {
        assert_eq!(format!("{:?}", Email::parse("secret@example.com").unwrap()), "Email(***@example.com)");
    }
}
