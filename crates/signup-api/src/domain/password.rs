//! The password policy (NIST SP 800-63B style): length counted in Unicode characters after NFKC normalisation,
//! no common or breached password, nothing close to the account's own email. No composition rules.

use std::{collections::HashSet, sync::OnceLock};

use secrecy::{ExposeSecret as _, SecretString};
use unicode_normalization::UnicodeNormalization as _;

use crate::domain::email::Email;

/// The common-password list shipped with the service (see `data/README.md` for sources and licences).
const COMMON_PASSWORDS: &str = include_str!("../../data/common-passwords.txt");

/// Similarity to the email above which a password counts as derived from it.
const MAX_SIMILARITY: f64 = 0.7;

/// A password that meets the policy, NFKC-normalised. Never printed, never logged.
#[derive(Debug, Clone)]
pub struct Password(SecretString);

impl Password {
    /// The normalised password, for the one call that hashes it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// A password presented to sign in: normalised as at signup, but not checked against today's policy (an
    /// account may predate it).
    pub fn presented(raw: &str) -> Self {
        Self(SecretString::from(raw.nfkc().collect::<String>()))
    }
}

/// The configured bounds of the policy.
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy {
    /// Fewest characters (after NFKC).
    pub min_chars: usize,
    /// Most characters (after NFKC).
    pub max_chars: usize,
}

/// One way a password fails the policy; a password may fail several at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordProblem {
    /// Shorter than the minimum.
    TooShort(usize),
    /// Longer than the maximum.
    TooLong(usize),
    /// In the list of common and breached passwords.
    Common,
    /// Contains, or closely resembles, the email address.
    TooCloseToEmail,
}

impl PasswordProblem {
    /// A stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::TooShort(_) => "password_too_short",
            Self::TooLong(_) => "password_too_long",
            Self::Common => "password_common",
            Self::TooCloseToEmail => "password_too_close_to_email",
        }
    }

    /// An explanation for people.
    pub fn detail(self) -> String {
        match self {
            Self::TooShort(min) => format!("must be at least {min} characters"),
            Self::TooLong(max) => format!("must be at most {max} characters"),
            Self::Common => "is too common: it appears in lists of breached passwords".to_owned(),
            Self::TooCloseToEmail => "is too close to the email address".to_owned(),
        }
    }
}

impl PasswordPolicy {
    /// Checks `raw` for the account `email` (when the email itself was valid).
    pub fn check(&self, raw: &str, email: Option<&Email>) -> Result<Password, Vec<PasswordProblem>> {
        let normalised: String = raw.nfkc().collect();
        let chars = normalised.chars().count();
        let mut problems = Vec::new();
        if chars < self.min_chars {
            problems.push(PasswordProblem::TooShort(self.min_chars));
        }
        if chars > self.max_chars {
            problems.push(PasswordProblem::TooLong(self.max_chars));
        } else {
            let lower = normalised.to_lowercase();
            if is_common(&lower) {
                problems.push(PasswordProblem::Common);
            }
            if email.is_some_and(|email| resembles(&lower, email)) {
                problems.push(PasswordProblem::TooCloseToEmail);
            }
        }
        if problems.is_empty() { Ok(Password(SecretString::from(normalised))) } else { Err(problems) }
    }
}

fn is_common(lower: &str) -> bool {
    static LIST: OnceLock<HashSet<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| COMMON_PASSWORDS.lines().filter(|line| !line.is_empty()).collect()).contains(lower)
}

/// Number of entries in the common-password list.
pub fn common_password_count() -> usize {
    COMMON_PASSWORDS.lines().filter(|line| !line.is_empty()).count()
}

fn resembles(password: &str, email: &Email) -> bool {
    let local = email.local_part();
    let whole = email.as_str();
    let contains = |part: &str| part.chars().count() >= 4 && password.contains(part);
    let contained = password.chars().count() >= 4 && whole.contains(password);
    contains(local)
        || contains(whole)
        || contained
        || strsim::normalized_levenshtein(password, local) >= MAX_SIMILARITY
        || strsim::normalized_levenshtein(password, whole) >= MAX_SIMILARITY
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: PasswordPolicy = PasswordPolicy { min_chars: 15, max_chars: 128 };

    fn email() -> Email {
        Email::parse("margaret.hamilton@example.com").unwrap()
    }

    #[test]
    fn a_long_uncommon_password_passes() {
        assert!(POLICY.check("correct horse battery staple", Some(&email())).is_ok());
    }

    #[test]
    fn length_counts_characters_after_nfkc() {
        // Fifteen full-width letters normalise to fifteen ASCII letters: long enough, however many bytes.
        assert!(POLICY.check("ｑｗｅｒｔｙｕｉｏｐａｓｄｆｇｈ", None).is_ok());
        assert_eq!(POLICY.check("ünïcödé", None).unwrap_err(), vec![PasswordProblem::TooShort(15)]);
        assert!(POLICY.check(&"é".repeat(15), None).is_ok());
    }

    #[test]
    fn too_long_is_refused() {
        assert_eq!(POLICY.check(&"x".repeat(129), None).unwrap_err(), vec![PasswordProblem::TooLong(128)]);
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        let policy = PasswordPolicy { min_chars: 8, max_chars: 128 };
        assert_eq!(policy.check("PASSWORD1", None).unwrap_err(), vec![PasswordProblem::Common]);
        assert!(common_password_count() >= 20_000, "{}", common_password_count());
    }

    #[test]
    fn passwords_built_from_the_email_are_refused() {
        for close in ["margaret.hamilton2024!", "Margaret.Hamilton@example.com", "margaret.hamiltonn"] {
            let problems = POLICY.check(close, Some(&email())).unwrap_err();
            assert!(problems.contains(&PasswordProblem::TooCloseToEmail), "{close}: {problems:?}");
        }
    }

    #[test]
    fn several_problems_are_reported_together() {
        let problems = POLICY.check("margaret", Some(&email())).unwrap_err();
        assert!(problems.contains(&PasswordProblem::TooShort(15)));
        assert!(problems.contains(&PasswordProblem::TooCloseToEmail));
    }
}
