//! The profile fields of a signup: display name and locale.

use icu_properties::{CodePointSetData, props::DefaultIgnorableCodePoint};
use unicode_normalization::UnicodeNormalization as _;

/// A trimmed, non-empty display name: no control characters, and nothing that would let a requester put a link, an
/// address or reordered text in front of other people (it is shown to friends; it is never put in mail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// Parses `raw`; the error is a (code, detail) pair.
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, (&'static str, String)> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(("display_name_empty", "must not be empty".to_owned()));
        }
        // Counted as sent, as the OpenAPI document's maxLength counts.
        if raw.chars().count() > max_chars {
            return Err(("display_name_too_long", format!("must be at most {max_chars} characters")));
        }
        // Checked as readers see it: compatibility forms (fullwidth `＠`, `ｃｏｍ`, `：／／`) as their plain letters,
        // the ideographic full stops that browsers take for dots in domain names as dots, and without what renders
        // as nothing (`evil.\u{FE0F}com` reads `evil.com`; an emoji's variation selector is welcome in the name).
        let seen: String = trimmed
            .nfkc()
            .filter(|c| !is_ignorable(*c))
            .map(|c| if matches!(c, '\u{3002}' | '\u{FF61}') { '.' } else { c })
            .collect();
        if trimmed.chars().chain(seen.chars()).any(is_hidden) {
            return Err((
                "display_name_invalid",
                "must not contain control, bidirectional-override or zero-width characters".to_owned(),
            ));
        }
        if seen.contains('@') || looks_like_a_link(&seen) {
            return Err(("display_name_invalid", "must not contain a link, a domain name or an @".to_owned()));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Characters that do not show what they are: controls (line breaks included), explicit bidirectional formatting
/// (it reorders what readers see), and characters that take no space or look like a blank (they hide what a name or
/// an address really is).
pub(crate) fn is_hidden(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || is_invisible(c)
}

/// What renders as nothing unless a font or a script gives it a use: Unicode's Default_Ignorable_Code_Point
/// (zero-width and format characters, variation selectors, fillers, tags; new ones are assigned in its ranges).
pub(crate) fn is_ignorable(c: char) -> bool {
    CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
}

/// Explicit bidirectional formatting (embeddings, overrides, isolates, marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Zero-width and format characters, fillers that render as blanks, line and paragraph separators, interlinear
/// annotation, tag characters and private use.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{E000}'..='\u{F8FF}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}'
            | '\u{F0000}'..
    )
}

/// A scheme (`x://`), `www.`, or a domain name: a dot between a letter or digit and two or more letters, as in
/// `example.com` (a name like `J. R. R. Tolkien`, with spaces after its dots, is not one).
fn looks_like_a_link(name: &str) -> bool {
    let lower = name.to_lowercase();
    if lower.contains("://") || lower.contains("www.") {
        return true;
    }
    let chars: Vec<char> = lower.chars().collect();
    chars.iter().enumerate().any(|(i, c)| {
        *c == '.'
            && i > 0
            && chars[i - 1].is_alphanumeric()
            && chars.get(i + 1..i + 3).is_some_and(|next| next.iter().all(|c| c.is_alphabetic()))
    })
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
        assert_eq!(DisplayName::parse(&format!(" {} ", "x".repeat(99)), 100).unwrap_err().0, "display_name_too_long");
        assert_eq!(DisplayName::parse("bell\u{7}", 100).unwrap_err().0, "display_name_invalid");
    }

    #[test]
    fn names_that_carry_links_addresses_or_hidden_characters_are_refused() {
        for bad in [
            "Visit https://evil.example",
            "cheap-pills.com",
            "www.example",
            "Ada ada@example.com",
            "@ada",
            "Ada\u{202E}ecalevol",
            "Ad\u{200B}a",
            "A\u{2066}da",
            "Mr.Smith",
            "Ada\u{3164}",
            "\u{2800}",
            "Ada\u{2028}Lovelace",
            "Ada\u{E0041}",
            "ｃｈｅａｐ－ｐｉｌｌｓ．ｃｏｍ",
            "evil。com",
            "evil｡com",
            "Ada ＠home",
            "Ada ﹫home",
            "ｈｔｔｐｓ：／／x",
            "Ad\u{180B}a",
            "Ada\u{1D173}",
        ] {
            assert_eq!(DisplayName::parse(bad, 100).map_err(|e| e.0), Err("display_name_invalid"), "{bad}");
        }
        for good in ["J. R. R. Tolkien", "Ada Lovelace", "Zoë Ō'Brien-Smith", "李小龍", "Dr. Who", "v1.2", "ｱｲｳ"]
        {
            assert!(DisplayName::parse(good, 100).is_ok(), "{good}");
        }
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
