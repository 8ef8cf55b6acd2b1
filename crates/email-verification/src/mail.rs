//! Mail: the templates the project ships, rendered in the reader's language, and the transport that delivers
//! them (SMTP, or files under `MAIL_DIR` for local development).

use std::path::PathBuf;

use anyhow::Context as _;
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
};
use secrecy::ExposeSecret as _;
use uuid::Uuid;

use crate::settings::MailSettings;

/// The mails this service sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// "Confirm your email address", with a single-use link.
    Verification,
    /// "Someone tried to sign up with your email address".
    ExistingAccountNotice,
    /// "Your account was deleted": the last mail to an account its owner deleted.
    AccountDeleted,
    /// "Your password was changed".
    PasswordChanged,
    /// "Reset your password", with a single-use link.
    PasswordReset,
    /// "You asked to reset a password, but your account is not verified yet: sign up again".
    ResetNotVerified,
}

impl Kind {
    /// Every kind.
    pub(crate) const ALL: [Self; 6] = [
        Self::Verification,
        Self::ExistingAccountNotice,
        Self::AccountDeleted,
        Self::PasswordChanged,
        Self::PasswordReset,
        Self::ResetNotVerified,
    ];

    /// The name stored in `mails.kind` and used in template file names.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Verification => "verification",
            Self::ExistingAccountNotice => "existing_account_notice",
            Self::AccountDeleted => "account_deleted",
            Self::PasswordChanged => "password_changed",
            Self::PasswordReset => "password_reset",
            Self::ResetNotVerified => "reset_not_verified",
        }
    }

    /// The kind a stored name stands for.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// Every template, embedded at build time from `templates/`, so the binary needs no files at run time.
const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../templates/layout.html")),
    ("en/verification.subject.txt", include_str!("../templates/en/verification.subject.txt")),
    ("en/verification.txt", include_str!("../templates/en/verification.txt")),
    ("en/verification.html", include_str!("../templates/en/verification.html")),
    ("en/existing_account_notice.subject.txt", include_str!("../templates/en/existing_account_notice.subject.txt")),
    ("en/existing_account_notice.txt", include_str!("../templates/en/existing_account_notice.txt")),
    ("en/existing_account_notice.html", include_str!("../templates/en/existing_account_notice.html")),
    ("en/account_deleted.subject.txt", include_str!("../templates/en/account_deleted.subject.txt")),
    ("en/account_deleted.txt", include_str!("../templates/en/account_deleted.txt")),
    ("en/account_deleted.html", include_str!("../templates/en/account_deleted.html")),
    ("en/password_changed.subject.txt", include_str!("../templates/en/password_changed.subject.txt")),
    ("en/password_changed.txt", include_str!("../templates/en/password_changed.txt")),
    ("en/password_changed.html", include_str!("../templates/en/password_changed.html")),
    ("en/password_reset.subject.txt", include_str!("../templates/en/password_reset.subject.txt")),
    ("en/password_reset.txt", include_str!("../templates/en/password_reset.txt")),
    ("en/password_reset.html", include_str!("../templates/en/password_reset.html")),
    ("en/reset_not_verified.subject.txt", include_str!("../templates/en/reset_not_verified.subject.txt")),
    ("en/reset_not_verified.txt", include_str!("../templates/en/reset_not_verified.txt")),
    ("en/reset_not_verified.html", include_str!("../templates/en/reset_not_verified.html")),
    ("fr/verification.subject.txt", include_str!("../templates/fr/verification.subject.txt")),
    ("fr/verification.txt", include_str!("../templates/fr/verification.txt")),
    ("fr/verification.html", include_str!("../templates/fr/verification.html")),
    ("fr/existing_account_notice.subject.txt", include_str!("../templates/fr/existing_account_notice.subject.txt")),
    ("fr/existing_account_notice.txt", include_str!("../templates/fr/existing_account_notice.txt")),
    ("fr/existing_account_notice.html", include_str!("../templates/fr/existing_account_notice.html")),
    ("fr/account_deleted.subject.txt", include_str!("../templates/fr/account_deleted.subject.txt")),
    ("fr/account_deleted.txt", include_str!("../templates/fr/account_deleted.txt")),
    ("fr/account_deleted.html", include_str!("../templates/fr/account_deleted.html")),
    ("fr/password_changed.subject.txt", include_str!("../templates/fr/password_changed.subject.txt")),
    ("fr/password_changed.txt", include_str!("../templates/fr/password_changed.txt")),
    ("fr/password_changed.html", include_str!("../templates/fr/password_changed.html")),
    ("fr/password_reset.subject.txt", include_str!("../templates/fr/password_reset.subject.txt")),
    ("fr/password_reset.txt", include_str!("../templates/fr/password_reset.txt")),
    ("fr/password_reset.html", include_str!("../templates/fr/password_reset.html")),
    ("fr/reset_not_verified.subject.txt", include_str!("../templates/fr/reset_not_verified.subject.txt")),
    ("fr/reset_not_verified.txt", include_str!("../templates/fr/reset_not_verified.txt")),
    ("fr/reset_not_verified.html", include_str!("../templates/fr/reset_not_verified.html")),
];

/// The languages with a translation; the first is the fallback.
const LANGUAGES: &[&str] = &["en", "fr"];

/// A rendered mail, ready to be addressed.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub(crate) subject: String,
    pub(crate) text: String,
    pub(crate) html: String,
}

/// The template set. HTML templates escape what they interpolate; text templates do not.
#[derive(Debug)]
pub(crate) struct Templates {
    env: minijinja::Environment<'static>,
}

impl Templates {
    /// Loads and compiles every template; fails if one does not parse.
    pub(crate) fn load() -> anyhow::Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source).with_context(|| format!("template {name}"))?;
        }
        Ok(Self { env })
    }

    /// The translation to use for a BCP 47 `locale`: the tag's language if translated, else English.
    pub(crate) fn language(locale: &str) -> &'static str {
        let language = locale.split(['-', '_']).next().unwrap_or_default().to_ascii_lowercase();
        LANGUAGES.iter().find(|l| **l == language).copied().unwrap_or(LANGUAGES[0])
    }

    /// Renders `kind` in the language for `locale` with `context`.
    pub(crate) fn render(&self, kind: Kind, locale: &str, context: minijinja::Value) -> anyhow::Result<Rendered> {
        let lang = Self::language(locale);
        let context = minijinja::context! { lang => lang, ..context };
        let render = |part: &str| -> anyhow::Result<String> {
            let name = format!("{lang}/{}.{part}", kind.as_str());
            Ok(self.env.get_template(&name)?.render(&context)?)
        };
        Ok(Rendered { subject: render("subject.txt")?.trim().to_owned(), text: render("txt")?, html: render("html")? })
    }
}

/// Why a delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// Worth another attempt later: a 4xx reply, a refused or dropped connection, a timeout.
    #[error("temporary: {0}")]
    Temporary(String),
    /// Will never succeed: a 5xx reply, or an address no server would take.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl SendError {
    /// The same failure, with the address it was sent to written `recipient`: servers name it in their answers
    /// (`550 5.1.1 <ada@example.com>: User unknown`), and neither the log nor the queue's `last_error` repeats it.
    pub(crate) fn naming_no_address(self, recipient: &str) -> Self {
        match self {
            Self::Temporary(answer) => Self::Temporary(without(&answer, recipient)),
            Self::Permanent(answer) => Self::Permanent(without(&answer, recipient)),
        }
    }
}

/// `text` with each mention of `address`, in any letter case, replaced by the word `recipient`.
fn without(text: &str, address: &str) -> String {
    if address.is_empty() {
        return text.to_owned();
    }
    // ASCII case folding keeps every byte offset (and so every char boundary) of the original.
    let (folded, address) = (text.to_ascii_lowercase(), address.to_ascii_lowercase());
    let (mut kept, mut from) = (String::with_capacity(text.len()), 0);
    for (at, _) in folded.match_indices(&address) {
        kept.push_str(&text[from..at]);
        kept.push_str("recipient");
        from = at + address.len();
    }
    kept.push_str(&text[from..]);
    kept
}

/// Where mail goes.
#[derive(Debug, Clone)]
pub(crate) enum Transport {
    /// An SMTP server, one connection per attempt: an attempt cut off by its timeout takes its connection with it,
    /// where a pool would hand a half-used connection to the next mail.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a folder: development without an SMTP server.
    Files(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

impl Transport {
    /// The transport `settings` ask for. Does no network I/O; creates `MAIL_DIR` in file mode.
    pub(crate) fn from_settings(settings: &MailSettings) -> anyhow::Result<Self> {
        match settings.smtp()? {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .map_err(|_| anyhow::anyhow!("SMTP_URL is not a valid SMTP URL"))?
                    .timeout(Some(settings.smtp_timeout))
                    .build();
                Ok(Self::Smtp(transport))
            }
            None => {
                std::fs::create_dir_all(&settings.mail_dir)
                    .with_context(|| format!("creating MAIL_DIR {}", settings.mail_dir.display()))?;
                let dir = std::path::absolute(&settings.mail_dir).unwrap_or_else(|_| settings.mail_dir.clone());
                tracing::warn!(mail_dir = %dir.display(), "SMTP_URL is not set: mail is written to files, not sent");
                Ok(Self::Files(AsyncFileTransport::new(&dir), dir))
            }
        }
    }

    /// Delivers one message; in file mode returns the file it was written to.
    pub(crate) async fn send(&self, message: Message) -> Result<Option<PathBuf>, SendError> {
        match self {
            Self::Smtp(smtp) => match smtp.send(message).await {
                Ok(_) => Ok(None),
                Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
                Err(e) => Err(SendError::Temporary(e.to_string())),
            },
            Self::Files(files, dir) => match files.send(message).await {
                Ok(id) => Ok(Some(dir.join(format!("{id}.eml")))),
                Err(e) => Err(SendError::Temporary(e.to_string())),
            },
        }
    }

    /// Whether mail only goes to files (so the link may be logged for the developer).
    pub(crate) fn is_files(&self) -> bool {
        matches!(self, Self::Files(..))
    }
}

/// Addresses a rendered mail. Its Message-ID is derived from the mail's id (the id of the event that caused it),
/// so every attempt to deliver the same mail carries the same Message-ID.
/// The recipient is addressed by address alone: no text a requester chose reaches a mailbox that has not proven
/// it is theirs.
pub(crate) fn compose(id: Uuid, from: &Mailbox, recipient: &str, rendered: Rendered) -> Result<Message, SendError> {
    let address = recipient.parse().map_err(|e| SendError::Permanent(format!("recipient address: {e}")))?;
    Message::builder()
        .message_id(Some(message_id(id, from)))
        .from(from.clone())
        .to(Mailbox::new(None, address))
        .subject(rendered.subject)
        .multipart(MultiPart::alternative_plain_html(rendered.text, rendered.html))
        .map_err(|e| SendError::Permanent(format!("building the message: {e}")))
}

/// `<{id}@{domain of MAIL_FROM}>`.
pub(crate) fn message_id(id: Uuid, from: &Mailbox) -> String {
    format!("<{id}@{}>", from.email.domain())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_answer_keeps_no_address() {
        let answer =
            "550 5.1.1 <Ada.Lovelace@Example.com>: Recipient address rejected; ada.lovelace@example.com unknown";
        let SendError::Permanent(kept) =
            SendError::Permanent(answer.to_owned()).naming_no_address("ada.lovelace@example.com")
        else {
            panic!("the kind changed");
        };
        assert_eq!(kept, "550 5.1.1 <recipient>: Recipient address rejected; recipient unknown");
        let answer = "451 4.3.0 try again later (Grüße)";
        let SendError::Temporary(kept) = SendError::Temporary(answer.to_owned()).naming_no_address("ada@example.com")
        else {
            panic!("the kind changed");
        };
        assert_eq!(kept, answer);
    }

    fn context() -> minijinja::Value {
        minijinja::context! {
            link => "https://signup.example/v1/email-verifications/confirm?token=abc&x=<b>",
            reset_page => "https://signup.example/v1/password-resets",
            expires_in_hours => 24,
            expires_in_minutes => 60,
        }
    }

    #[test]
    fn every_kind_renders_in_every_language() {
        let templates = Templates::load().unwrap();
        for lang in LANGUAGES {
            for kind in Kind::ALL {
                let rendered = templates.render(kind, lang, context()).unwrap();
                assert!(!rendered.subject.is_empty() && !rendered.subject.contains('\n'), "{lang} {kind:?}");
                assert!(rendered.html.contains(&format!("<html lang=\"{lang}\">")), "{lang} {kind:?}");
            }
        }
    }

    #[test]
    fn the_verification_mail_greets_generically_carries_the_link_and_says_what_to_do_if_unasked() {
        let rendered = Templates::load().unwrap().render(Kind::Verification, "en-GB", context()).unwrap();
        assert!(rendered.text.starts_with("Hello,\n"), "{}", rendered.text);
        assert!(rendered.text.contains("https://signup.example/v1/email-verifications/confirm?token=abc"));
        assert!(rendered.text.contains("If you did not sign up, ignore this email"), "{}", rendered.text);
        assert!(rendered.html.contains("<p>Hello,</p>"));
        assert!(rendered.html.contains("&amp;x=&lt;b&gt;"), "HTML escapes what it interpolates");
    }

    #[test]
    fn the_language_follows_the_locale_and_falls_back_to_english() {
        assert_eq!(Templates::language("fr-CA"), "fr");
        assert_eq!(Templates::language("FR"), "fr");
        assert_eq!(Templates::language("de-DE"), "en");
        assert_eq!(Templates::language(""), "en");
        let rendered = Templates::load().unwrap().render(Kind::Verification, "fr-CA", context()).unwrap();
        assert_eq!(rendered.subject, "Confirmez votre adresse e-mail");
    }
}
