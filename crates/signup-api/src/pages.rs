//! The few HTML pages a person sees when following the verification link. They load nothing from elsewhere,
//! run no script, and tell the browser not to cache them or leak the link through the Referer header.

use axum::{
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};

/// What the confirm page says after a password that is not the link's signup's.
pub(crate) const MISMATCH: &str = "This link and this password do not belong to the same signup. Enter the password \
     you chose when you signed up; after a few wrong tries the link stops working (signing up again sends a new one).";

/// The page behind the link in the mail: a form that asks for the password chosen at signup and POSTs it with the
/// token. Opening the link (as mail scanners do) changes nothing. After a wrong password it is shown again, with
/// `error` (a 400).
pub(crate) fn confirm(token: &str, error: Option<&str>) -> Response {
    let (status, notice) = match error {
        Some(error) => (StatusCode::BAD_REQUEST, format!("<p role=\"alert\"><strong>{}</strong></p>", escape(error))),
        None => (StatusCode::OK, String::new()),
    };
    let body = format!(
        "<h1>Confirm your email address</h1>{notice}\
         <p>Enter the password you chose when you signed up to finish. If you did not sign up, close this page: \
         nothing happens without that password.</p>\
         <form method=\"post\" action=\"confirm\">\
         <input type=\"hidden\" name=\"token\" value=\"{}\">\
         <p><label for=\"password\">Password</label><br>\
         <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required></p>\
         <button type=\"submit\">Confirm my email</button>\
         </form>",
        escape(token)
    );
    page(status, "Confirm your email address", &body)
}

/// After a successful confirm from the page.
pub(crate) fn verified() -> Response {
    page(StatusCode::OK, "Email verified", "<h1>Email verified</h1><p>Thank you: your email address is confirmed.</p>")
}

/// A link that is malformed, unknown, used or expired.
pub(crate) fn invalid_link() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Link not valid",
        "<h1>This link is not valid</h1><p>It may have been used already or have expired. Request a new \
         verification email and use the newest link.</p>",
    )
}

/// The page to ask for a password reset: a form that POSTs the address back here.
pub(crate) fn reset_request() -> Response {
    page(
        StatusCode::OK,
        "Reset your password",
        "<h1>Reset your password</h1><p>Enter the address of your account: if it has one, we mail it a link to          choose a new password.</p><form method=\"post\" action=\"password-resets\">\
         <p><label for=\"email\">Email</label><br><input type=\"email\" id=\"email\" name=\"email\" \
         autocomplete=\"email\" required></p><button type=\"submit\">Send me a link</button></form>",
    )
}

/// After a reset was asked for: the same whether or not an account has the address.
pub(crate) fn reset_requested() -> Response {
    page(
        StatusCode::ACCEPTED,
        "Check your mail",
        "<h1>Check your mail</h1><p>If an account has this address, a link to choose a new password is on its          way. It works once, for a limited time.</p>",
    )
}

/// The page behind a reset link: a form that POSTs a new password with the token. Opening it uses nothing.
pub(crate) fn reset_form(token: &str, error: Option<&str>) -> Response {
    let (status, notice) = match error {
        Some(error) => {
            (StatusCode::UNPROCESSABLE_ENTITY, format!("<p role=\"alert\"><strong>{}</strong></p>", escape(error)))
        }
        None => (StatusCode::OK, String::new()),
    };
    let body = format!(
        "<h1>Choose a new password</h1>{notice}<p>Setting it signs out every session of the account.</p>\
         <form method=\"post\" action=\"confirm\"><input type=\"hidden\" name=\"token\" value=\"{}\">\
         <p><label for=\"new_password\">New password</label><br><input type=\"password\" id=\"new_password\" \
         name=\"new_password\" autocomplete=\"new-password\" required></p>\
         <button type=\"submit\">Set my new password</button></form>",
        escape(token)
    );
    page(status, "Choose a new password", &body)
}

/// After a successful reset.
pub(crate) fn reset_done() -> Response {
    page(
        StatusCode::OK,
        "Password changed",
        "<h1>Password changed</h1><p>Your new password is set, and every session was signed out: sign in again          with it.</p>",
    )
}

/// A reset link that is malformed, unknown, used or expired.
pub(crate) fn invalid_reset_link() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Link not valid",
        "<h1>This link is not valid</h1><p>It may have been used already or have expired. Ask for a new one and use          the newest link.</p>",
    )
}

/// When the system cannot confirm right now.
pub(crate) fn unavailable(doing: &str) -> Response {
    let body = format!(
        "<h1>Please try again</h1><p>We could not {} just now. Your link still works: go back and press the button \
         again in a moment.</p>",
        escape(doing)
    );
    page(StatusCode::SERVICE_UNAVAILABLE, "Try again", &body)
}

/// The page of a problem type, which its `type` URI resolves to.
pub(crate) fn problem_type(kind: &crate::problem::ProblemType) -> Response {
    let body = format!(
        "<h1>{}</h1><p>HTTP {} &middot; <code>/problems/{}</code></p><p>{}</p>",
        escape(kind.title),
        kind.status.as_u16(),
        escape(kind.slug),
        escape(kind.about)
    );
    page(StatusCode::OK, kind.title, &body)
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
         <style>body{{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;max-width:32rem;\
         margin:4rem auto;padding:0 1rem;line-height:1.5;color:#1f2328}}button{{font-size:1rem;padding:.7rem \
         1.2rem;border:0;border-radius:6px;background:#1f6feb;color:#fff;cursor:pointer}}</style></head>\
         <body>{body}</body></html>"
    );
    let headers = [
        (header::CACHE_CONTROL, "no-store"),
        // The page's address (its token) is never a `Referer`, not even on the page's own form post, where the
        // ingress's access log would keep it: the origin at most. The post still carries its `Origin`, which
        // `no-referrer` would make `null` (and `cross_site` would refuse where no `Sec-Fetch-Site` is sent: plain
        // HTTP beyond localhost, older browsers).
        (header::REFERRER_POLICY, "strict-origin"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // `frame-ancestors 'none'` for browsers that predate it.
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, CSP),
    ];
    (status, headers, Html(html)).into_response()
}

/// Nothing but the page's own inline style, and its form posting back here.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Escapes text for an HTML attribute or element.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_cannot_break_out_of_its_attribute() {
        assert_eq!(escape(r#""><script>x</script>"#), "&quot;&gt;&lt;script&gt;x&lt;/script&gt;");
    }
}
