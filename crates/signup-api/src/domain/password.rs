//! The password policy (NIST SP 800-63B style): length counted in Unicode characters, as sent and after NFKC,
//! no common or breached password, nothing close to the account's own email, and a strength estimate (zxcvbn)
//! that knows repeats, sequences, keyboard walks, dictionary words and the user's own context. No composition
//! rules.

use std::{collections::HashSet, sync::OnceLock};

use secrecy::{ExposeSecret as _, SecretString};
use unicode_normalization::UnicodeNormalization as _;

use crate::domain::email::Email;

/// The common-password list shipped with the service (see `data/README.md` for sources and licences).
const COMMON_PASSWORDS: &str = include_str!("../../data/common-passwords.txt");

/// Similarity to the email above which a password counts as derived from it.
const MAX_SIMILARITY: f64 = 0.7;

/// What the strength estimate is told about this service, so its name is guessable too.
const SERVICE_WORDS: [&str; 2] = ["signup", "sign up"];

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

    /// Whether a presented password could be anyone's: not empty, and no longer than any policy allows. One that
    /// could not is refused before any work (and before any call that would refuse it as an invalid argument).
    pub fn could_be_anyones(&self) -> bool {
        let chars = self.expose().chars().count();
        (1..=PRESENTED_MAX_CHARS).contains(&chars)
    }
}

/// The longest password any policy allows (`PASSWORD_MAX_LENGTH` is at most this).
pub const PRESENTED_MAX_CHARS: usize = 1024;

/// The configured bounds of the policy.
#[derive(Debug, Clone, Copy)]
pub struct PasswordPolicy {
    /// Fewest characters (as sent and after NFKC).
    pub min_chars: usize,
    /// Most characters (as sent and after NFKC).
    pub max_chars: usize,
    /// The lowest zxcvbn score (0 to 4) accepted; 3 means "safely unguessable: moderate protection from an
    /// offline slow-hash scenario".
    pub min_score: u8,
}

/// What the strength estimate is told about the account, so a password built from it scores low.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The account's email, if it was valid.
    pub email: Option<&'a Email>,
    /// The display name, if it was given.
    pub display_name: Option<&'a str>,
}

/// One way a password fails the policy; a password may fail several at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordProblem {
    /// Shorter than the minimum.
    TooShort(usize),
    /// Longer than the maximum.
    TooLong(usize),
    /// In the list of common and breached passwords.
    Common,
    /// Contains, or closely resembles, the email address.
    TooCloseToEmail,
    /// Guessable by the patterns attackers try first; the strength estimate's feedback says why.
    TooGuessable(String),
}

impl PasswordProblem {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooShort(_) => "password_too_short",
            Self::TooLong(_) => "password_too_long",
            Self::Common => "password_common",
            Self::TooCloseToEmail => "password_too_close_to_email",
            Self::TooGuessable(_) => "password_too_guessable",
        }
    }

    /// An explanation for people.
    pub fn detail(&self) -> String {
        match self {
            Self::TooShort(min) => format!("must be at least {min} characters"),
            Self::TooLong(max) => format!("must be at most {max} characters"),
            Self::Common => "is too common: it appears in lists of breached passwords".to_owned(),
            Self::TooCloseToEmail => "is too close to the email address".to_owned(),
            Self::TooGuessable(feedback) => format!("is too easy to guess: {feedback}"),
        }
    }
}

impl PasswordPolicy {
    /// Checks `raw` for the account described by `context`.
    pub fn check(&self, raw: &str, context: Context<'_>) -> Result<Password, Vec<PasswordProblem>> {
        let normalised: String = raw.nfkc().collect();
        // Both as sent (what the OpenAPI document's minLength and maxLength count) and after NFKC (what is
        // hashed): `¼` is one character typed and three normalised, `e` + U+0301 two typed and one normalised.
        let (typed, chars) = (raw.chars().count(), normalised.chars().count());
        let mut problems = Vec::new();
        if typed.min(chars) < self.min_chars {
            problems.push(PasswordProblem::TooShort(self.min_chars));
        }
        if typed.max(chars) > self.max_chars {
            problems.push(PasswordProblem::TooLong(self.max_chars));
        } else {
            let lower = normalised.to_lowercase();
            if is_common(&lower) {
                problems.push(PasswordProblem::Common);
            }
            if context.email.is_some_and(|email| resembles(&lower, email)) {
                problems.push(PasswordProblem::TooCloseToEmail);
            }
            if problems.is_empty()
                && let Some(feedback) = too_guessable(&normalised, context, self.min_score)
            {
                problems.push(PasswordProblem::TooGuessable(feedback));
            }
        }
        if problems.is_empty() { Ok(Password(SecretString::from(normalised))) } else { Err(problems) }
    }
}

fn is_common(lower: &str) -> bool {
    static LIST: OnceLock<HashSet<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| COMMON_PASSWORDS.lines().filter(|line| !line.is_empty()).collect()).contains(lower)
}

/// zxcvbn's verdict when `password` scores below `min_score`: its feedback, or a generic one.
fn too_guessable(password: &str, context: Context<'_>, min_score: u8) -> Option<String> {
    let mut inputs: Vec<&str> = SERVICE_WORDS.to_vec();
    if let Some(email) = context.email {
        inputs.extend([email.as_str(), email.local_part()]);
        inputs.extend(email.local_part().split(['.', '_', '-', '+']).filter(|part| part.len() >= 3));
    }
    if let Some(name) = context.display_name {
        inputs.push(name);
        inputs.extend(name.split_whitespace().filter(|word| word.chars().count() >= 3));
    }
    let entropy = zxcvbn::zxcvbn(password, &inputs);
    if u8::from(entropy.score()) >= min_score {
        return None;
    }
    let feedback = entropy.feedback().map(ToString::to_string).map(|text| text.trim().to_owned());
    Some(feedback.filter(|text| !text.is_empty()).unwrap_or_else(|| "add more unpredictable words".to_owned()))
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

    const POLICY: PasswordPolicy = PasswordPolicy { min_chars: 15, max_chars: 128, min_score: 3 };

    fn email() -> Email {
        Email::parse("margaret.hamilton@example.com").unwrap()
    }

    fn for_email(email: &Email) -> Context<'_> {
        Context { email: Some(email), display_name: None }
    }

    #[test]
    fn a_long_uncommon_password_passes() {
        let email = email();
        let context = Context { email: Some(&email), display_name: Some("Margaret Hamilton") };
        assert!(POLICY.check("correct horse battery staple", context).is_ok());
        assert!(POLICY.check("tangerine fjord quietly orbits", context).is_ok());
    }

    #[test]
    fn repeats_sequences_keyboard_walks_and_words_are_too_guessable() {
        for weak in ["aaaaaaaaaaaaaaa", "123456789012345", "passwordpassword", "qwertyuiopasdfgh"] {
            let problems = POLICY.check(weak, Context::default()).unwrap_err();
            assert!(problems.iter().any(|p| p.code() == "password_too_guessable"), "{weak}: {problems:?}");
        }
    }

    #[test]
    fn a_password_built_from_the_users_own_context_is_too_guessable() {
        let email = Email::parse("o.q.1842@example.com").unwrap();
        let context = Context { email: Some(&email), display_name: Some("Ottoline Quarrendon") };
        let problems = POLICY.check("ottolinequarrendon", context).unwrap_err();
        assert_eq!(problems.iter().map(PasswordProblem::code).collect::<Vec<_>>(), ["password_too_guessable"]);
        assert!(problems[0].detail().starts_with("is too easy to guess: "), "{}", problems[0].detail());
        assert!(POLICY.check("ottolinequarrendon", Context::default()).is_ok(), "the context is what makes it weak");
    }

    #[test]
    fn length_counts_characters_after_nfkc() {
        // Fifteen full-width letters normalise to fifteen ASCII letters: long enough, however many bytes.
        let lenient = PasswordPolicy { min_score: 0, ..POLICY };
        assert!(lenient.check("ｑｗｅｒｔｙｕｉｏｐａｓｄｆｇｈ", Context::default()).is_ok());
        assert_eq!(lenient.check("ünïcödé", Context::default()).unwrap_err(), vec![PasswordProblem::TooShort(15)]);
        assert!(lenient.check(&"é".repeat(15), Context::default()).is_ok());
    }

    #[test]
    fn length_counts_characters_as_sent_too() {
        // What the OpenAPI document promises: a password shorter or longer than the bounds as sent is refused,
        // even when NFKC brings it within them (found by the contract test's fuzzing).
        let lenient = PasswordPolicy { min_score: 0, ..POLICY };
        let expands = format!("{}¼", "qwertzuiopasd"); // 14 characters sent, 16 after NFKC
        assert_eq!(lenient.check(&expands, Context::default()).unwrap_err(), vec![PasswordProblem::TooShort(15)]);
        let composes = "qe\u{301}".repeat(43); // 129 characters sent, 86 after NFKC
        assert_eq!(lenient.check(&composes, Context::default()).unwrap_err(), vec![PasswordProblem::TooLong(128)]);
    }

    #[test]
    fn too_long_is_refused() {
        assert_eq!(
            POLICY.check(&"x".repeat(129), Context::default()).unwrap_err(),
            vec![PasswordProblem::TooLong(128)]
        );
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        let policy = PasswordPolicy { min_chars: 8, max_chars: 128, min_score: 3 };
        assert_eq!(policy.check("PASSWORD1", Context::default()).unwrap_err(), vec![PasswordProblem::Common]);
        let common = COMMON_PASSWORDS.lines().filter(|line| !line.is_empty()).count();
        assert!(common >= 20_000, "{common}");
    }

    #[test]
    fn passwords_built_from_the_email_are_refused() {
        for close in ["margaret.hamilton2024!", "Margaret.Hamilton@example.com", "margaret.hamiltonn"] {
            let email = email();
            let problems = POLICY.check(close, for_email(&email)).unwrap_err();
            assert!(problems.contains(&PasswordProblem::TooCloseToEmail), "{close}: {problems:?}");
        }
    }

    #[test]
    fn several_problems_are_reported_together() {
        let email = email();
        let problems = POLICY.check("margaret", for_email(&email)).unwrap_err();
        assert!(problems.contains(&PasswordProblem::TooShort(15)));
        assert!(problems.contains(&PasswordProblem::TooCloseToEmail));
    }
}
