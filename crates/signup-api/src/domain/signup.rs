//! A signup request, parsed once from its JSON body into domain values, with every field's problem reported
//! together so a client can fix them all in one round trip.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::{
    email::{Email, EmailError},
    password::{Context, Password, PasswordPolicy},
    profile::{DisplayName, Locale},
};

const FIELDS: [&str; 6] = ["email", "password", "display_name", "contacts", "locale", "discoverable"];

/// A valid signup.
#[derive(Debug, Clone)]
pub struct Signup {
    /// The account's email, normalised.
    pub email: Email,
    /// The password, NFKC-normalised.
    pub password: Password,
    /// The display name, trimmed.
    pub display_name: DisplayName,
    /// The uploaded contacts, normalised and de-duplicated (the account's own email removed).
    pub contacts: Vec<Email>,
    /// The preferred locale, if given.
    pub locale: Option<Locale>,
    /// Whether others may be shown this user in their suggestions (default true).
    pub discoverable: bool,
}

/// The limits a signup is checked against.
#[derive(Debug, Clone, Copy)]
pub struct SignupLimits {
    /// The password policy.
    pub password: PasswordPolicy,
    /// Longest display name in characters.
    pub display_name_max_chars: usize,
    /// Most contacts one signup may upload.
    pub max_contacts: usize,
}

/// One field's problem, as reported in the `errors` member of a 422 problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, e.g. `email` or `contacts[3]`.
    pub field: String,
    /// A stable machine-readable code, e.g. `password_too_short`.
    pub code: String,
    /// An explanation for people.
    pub detail: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, code: &str, detail: impl Into<String>) -> Self {
        Self { field: field.into(), code: code.to_owned(), detail: detail.into() }
    }
}

/// Parses a JSON object into a [`Signup`], or every problem found.
pub fn parse(body: &Map<String, Value>, limits: &SignupLimits) -> Result<Signup, Vec<FieldError>> {
    let mut errors = unknown_fields(body, &FIELDS, "is not a field of a signup");
    let email = required_email(body, "email", &mut errors);
    let display_name = required_string(body, "display_name", &mut errors).and_then(|raw| {
        DisplayName::parse(raw, limits.display_name_max_chars)
            .map_err(|(code, detail)| errors.push(FieldError::new("display_name", code, detail)))
            .ok()
    });
    let context = Context { email: email.as_ref(), display_name: display_name.as_ref().map(DisplayName::as_str) };
    let password = required_string(body, "password", &mut errors).and_then(|raw| {
        limits
            .password
            .check(raw, context)
            .map_err(|problems| {
                errors.extend(problems.iter().map(|p| FieldError::new("password", p.code(), p.detail())));
            })
            .ok()
    });
    let contacts = contacts(body.get("contacts"), limits.max_contacts, email.as_ref(), &mut errors);
    let locale = locale(body.get("locale"), &mut errors);
    let discoverable = optional_bool(body, "discoverable", &mut errors).unwrap_or(true);
    match (email, password, display_name) {
        (Some(email), Some(password), Some(display_name)) if errors.is_empty() => {
            Ok(Signup { email, password, display_name, contacts, locale, discoverable })
        }
        _ => Err(errors),
    }
}

/// A problem for each member of `body` that is not one of the `known` fields, explained by `detail`.
///
/// At most [`UNKNOWN_FIELDS_NAMED`] are named, each cut to [`FIELD_NAME_SHOWN`] characters, and one more entry
/// counts the rest: a body of thousands of made-up fields (or one very long name) gets a short answer, not its
/// own size back several times over.
pub fn unknown_fields(body: &Map<String, Value>, known: &[&str], detail: &str) -> Vec<FieldError> {
    unknown_keys(body.keys(), known, detail)
}

/// [`unknown_fields`] of any set of field names (a form's).
pub fn unknown_keys<'a>(keys: impl Iterator<Item = &'a String>, known: &[&str], detail: &str) -> Vec<FieldError> {
    let shown = |key: &str| match key.char_indices().nth(FIELD_NAME_SHOWN) {
        Some((end, _)) => format!("{}…", &key[..end]),
        None => key.to_owned(),
    };
    let unknown = keys.filter(|key| !known.contains(&key.as_str()));
    named_then_counted(
        unknown,
        |key| FieldError::new(shown(key), "unknown_field", detail),
        |rest| FieldError::new("…", "unknown_field", format!("and {rest} more fields: {detail}")),
    )
}

/// The first [`UNKNOWN_FIELDS_NAMED`] of `problems`, each `named`, and one more, worded by `rest`, that counts the
/// others (named by nobody): a short body (thousands of made-up fields, of contacts that are not addresses) cannot
/// ask for a long answer.
fn named_then_counted<T>(
    mut problems: impl Iterator<Item = T>,
    named: impl FnMut(T) -> FieldError,
    rest: impl FnOnce(usize) -> FieldError,
) -> Vec<FieldError> {
    let mut named: Vec<FieldError> = problems.by_ref().take(UNKNOWN_FIELDS_NAMED).map(named).collect();
    let more = problems.count();
    if more > 0 {
        named.push(rest(more));
    }
    named
}

/// How many unknown fields (or invalid contacts) a 422 names.
pub const UNKNOWN_FIELDS_NAMED: usize = 10;
/// How much of an unknown field's name a 422 repeats.
pub const FIELD_NAME_SHOWN: usize = 64;

/// The email address `field` of `body`, or its problem added to `errors`.
pub fn required_email(body: &Map<String, Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<Email> {
    let raw = required_string(body, field, errors)?;
    Email::parse(raw).map_err(|error| errors.push(FieldError::new(field, email_code(error), error.to_string()))).ok()
}

/// The boolean `field` of `body` if it has one, or its problem added to `errors`.
pub fn optional_bool(body: &Map<String, Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<bool> {
    match body.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::Bool(value)) => Some(*value),
        Some(_) => {
            errors.push(FieldError::new(field, "invalid_type", "must be true or false"));
            None
        }
    }
}

/// The string `field` of `body`, or its problem added to `errors`.
pub fn required_string<'a>(body: &'a Map<String, Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<&'a str> {
    match body.get(field) {
        Some(Value::String(value)) => Some(value),
        None | Some(Value::Null) => {
            errors.push(FieldError::new(field, "required", "is required"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(field, "invalid_type", "must be a string"));
            None
        }
    }
}

fn contacts(value: Option<&Value>, max: usize, own: Option<&Email>, errors: &mut Vec<FieldError>) -> Vec<Email> {
    let items = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(FieldError::new("contacts", "invalid_type", "must be an array of email addresses"));
            return Vec::new();
        }
    };
    if items.len() > max {
        errors.push(FieldError::new("contacts", "too_many_contacts", format!("must hold at most {max} addresses")));
        return Vec::new();
    }
    let mut contacts = Vec::with_capacity(items.len());
    let invalid = items.iter().enumerate().filter_map(|(i, item)| match item.as_str().map(Email::parse) {
        Some(Ok(email)) => {
            contacts.push(email);
            None
        }
        Some(Err(error)) => Some((i, Some(error))),
        None => Some((i, None)),
    });
    errors.extend(named_then_counted(
        invalid,
        |(i, error)| match error {
            Some(error) => FieldError::new(format!("contacts[{i}]"), email_code(error), format!("{error}")),
            None => FieldError::new(format!("contacts[{i}]"), "invalid_type", "must be a string"),
        },
        |rest| FieldError::new("contacts", "invalid_contacts", format!("and {rest} more contacts are invalid")),
    ));
    contacts.sort();
    contacts.dedup();
    contacts.retain(|contact| Some(contact) != own);
    contacts
}

fn locale(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<Locale> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(raw)) => {
            let locale = Locale::parse(raw);
            if locale.is_none() {
                errors.push(FieldError::new(
                    "locale",
                    "invalid_locale",
                    "must be a BCP 47 language tag such as en or pt-BR",
                ));
            }
            locale
        }
        Some(_) => {
            errors.push(FieldError::new("locale", "invalid_type", "must be a string"));
            None
        }
    }
}

/// The stable code of an email's problem.
fn email_code(error: EmailError) -> &'static str {
    match error {
        EmailError::Empty => "required",
        EmailError::TooLong => "email_too_long",
        EmailError::Syntax | EmailError::Domain => "invalid_email",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LIMITS: SignupLimits = SignupLimits {
        password: PasswordPolicy { min_chars: 15, max_chars: 128, min_score: 3 },
        display_name_max_chars: 100,
        max_contacts: 3,
    };

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn a_valid_body_becomes_a_signup() {
        let body = object(json!({
            "email": "Ada@Example.com", "password": "correct horse battery staple", "display_name": " Ada ",
            "contacts": ["b@example.com", "B@example.com", "ada@example.com"], "locale": "en-GB", "discoverable": false
        }));

        let signup = parse(&body, &LIMITS).unwrap();

        assert_eq!(signup.email.as_str(), "ada@example.com");
        assert_eq!(signup.display_name.as_str(), "Ada");
        assert_eq!(signup.contacts.iter().map(Email::as_str).collect::<Vec<_>>(), ["b@example.com"]);
        assert_eq!(signup.locale.unwrap().as_str(), "en-GB");
        assert!(!signup.discoverable);
    }

    #[test]
    fn every_field_problem_is_reported_at_once() {
        let body = object(json!({
            "email": "not-an-email", "password": "short", "display_name": "",
            "contacts": ["ok@example.com", 7, "bad"], "locale": "english", "discoverable": "yes", "extra": 1
        }));

        let errors = parse(&body, &LIMITS).unwrap_err();

        let fields: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.code.as_str())).collect();
        for expected in [
            ("extra", "unknown_field"),
            ("email", "invalid_email"),
            ("password", "password_too_short"),
            ("display_name", "display_name_empty"),
            ("contacts[1]", "invalid_type"),
            ("contacts[2]", "invalid_email"),
            ("locale", "invalid_locale"),
            ("discoverable", "invalid_type"),
        ] {
            assert!(fields.contains(&expected), "{expected:?} missing from {fields:?}");
        }
    }

    #[test]
    fn a_long_made_up_field_is_named_cut_short_and_many_are_counted() {
        let mut body = Map::new();
        body.insert("x".repeat(1000), Value::Null);
        let errors = unknown_fields(&body, &FIELDS, "is not a field");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field.chars().count(), FIELD_NAME_SHOWN + 1, "{}", errors[0].field);
        assert!(errors[0].field.ends_with('…'));

        let many: Map<String, Value> = (0..25).map(|i| (format!("k{i:02}"), Value::Null)).collect();
        let errors = unknown_fields(&many, &FIELDS, "is not a field");
        assert_eq!(errors.len(), UNKNOWN_FIELDS_NAMED + 1);
        assert_eq!(errors[UNKNOWN_FIELDS_NAMED].detail, "and 15 more fields: is not a field");
    }

    #[test]
    fn missing_fields_and_too_many_contacts_are_reported() {
        let body = object(json!({ "contacts": ["a@example.com", "b@example.com", "c@example.com", "d@example.com"] }));

        let errors = parse(&body, &LIMITS).unwrap_err();

        let fields: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.code.as_str())).collect();
        assert!(fields.contains(&("email", "required")));
        assert!(fields.contains(&("password", "required")));
        assert!(fields.contains(&("display_name", "required")));
        assert!(fields.contains(&("contacts", "too_many_contacts")));
    }
}
