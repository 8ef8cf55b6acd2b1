//! The profile fields of a signup: display name and locale.

/// A trimmed, non-empty display name without control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// Parses `raw`; the error is a (code, detail) pair.
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, (&'static str, String)> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(("display_name_empty", "must not be empty".to_owned()));
        }
        if trimmed.chars().count() > max_chars {
            return Err(("display_name_too_long", format!("must be at most {max_chars} characters")));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(("display_name_invalid", "must not contain control characters".to_owned()));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A BCP 47 language tag, checked for shape (`en`, `pt-BR`, `zh-Hant-TW`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locale(String);

impl Locale {
    /// Parses `raw`, returning `None` when it is not a well-formed tag.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut subtags = raw.split('-');
        let language = subtags.next()?;
        let language_ok = (2..=3).contains(&language.len()) && language.chars().all(|c| c.is_ascii_alphabetic());
        let rest_ok = subtags.all(|s| (1..=8).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric()));
        (language_ok && rest_ok && raw.len() <= 35).then(|| Self(raw.to_owned()))
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(DisplayName::parse("  Grace Hopper ", 100).unwrap().as_str(), "Grace Hopper");
        assert_eq!(DisplayName::parse("   ", 100).unwrap_err().0, "display_name_empty");
        assert_eq!(DisplayName::parse(&"x".repeat(101), 100).unwrap_err().0, "display_name_too_long");
        assert_eq!(DisplayName::parse("bell\u{7}", 100).unwrap_err().0, "display_name_invalid");
    }

    #[test]
    fn locales_must_look_like_language_tags() {
        for ok in ["en", "pt-BR", "zh-Hant-TW", "gsw"] {
            assert!(Locale::parse(ok).is_some(), "{ok}");
        }
        for bad in ["", "e", "english", "en_US", "en-", "en-toolongsubtag"] {
            assert!(Locale::parse(bad).is_none(), "{bad}");
        }
    }
}
