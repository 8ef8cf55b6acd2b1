//! RFC 9457 problem details: the one shape of every HTTP error signup-api returns. Every problem type is in one
//! catalogue ([`types`]); its `type` URI `/problems/{slug}` resolves to a short page about it ([`page`]), and
//! each problem carries the `instance` it occurred at ([`with_instance`]). Building a response has no side
//! effects; logging happens where the error is turned into a response.

use axum::{
    Json,
    body::Body,
    extract::{Path, Request},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::domain::signup::FieldError;

/// One kind of problem: what `type` names, and what its page says.
#[derive(Debug)]
pub struct ProblemType {
    /// The last segment of the type URI `/problems/{slug}`.
    pub slug: &'static str,
    /// The `title` of every problem of this type.
    pub title: &'static str,
    /// The HTTP status it is answered with.
    pub status: StatusCode,
    /// What it means and what to do, for its page.
    pub about: &'static str,
}

/// The catalogue of problem types: every `type` signup-api answers with is one of [`types::ALL`].
pub mod types {
    use axum::http::StatusCode;

    use super::ProblemType;

    const fn kind(status: StatusCode, slug: &'static str, title: &'static str, about: &'static str) -> ProblemType {
        ProblemType { slug, title, status, about }
    }

    /// 400: not JSON, not an object, or a malformed query parameter.
    pub const MALFORMED_REQUEST: ProblemType = kind(
        StatusCode::BAD_REQUEST,
        "malformed-request",
        "Malformed Request",
        "The body is not JSON or not a JSON object, or a query parameter is malformed. `detail` says which; fix the request before sending it again.",
    );
    /// 415.
    pub const UNSUPPORTED_MEDIA_TYPE: ProblemType = kind(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported Media Type",
        "The body must be sent as `application/json` (the confirm endpoint also takes a form).",
    );
    /// 413.
    pub const PAYLOAD_TOO_LARGE: ProblemType = kind(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "Payload Too Large",
        "The body is larger than this API accepts (`MAX_BODY_BYTES`, 128 KiB by default).",
    );
    /// 408.
    pub const REQUEST_TIMEOUT: ProblemType = kind(
        StatusCode::REQUEST_TIMEOUT,
        "request-timeout",
        "Request Timeout",
        "The body did not arrive within `REQUEST_BODY_TIMEOUT_MS` (10 s by default) of the request's head. Nothing was done: send the request again.",
    );
    /// 422, with `errors`.
    pub const VALIDATION_FAILED: ProblemType = kind(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation-failed",
        "Validation Failed",
        "One or more fields are invalid. The `errors` member lists each: `field`, a stable `code` (for example `password_too_guessable`) and a `detail` for people. Every problem of the request is reported at once.",
    );
    /// 400.
    pub const BAD_IDEMPOTENCY_KEY: ProblemType = kind(
        StatusCode::BAD_REQUEST,
        "bad-idempotency-key",
        "Bad Idempotency Key",
        "The `Idempotency-Key` header must be 1 to 255 visible ASCII characters.",
    );
    /// 422.
    pub const IDEMPOTENCY_KEY_REUSED: ProblemType = kind(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        "Idempotency Key Reused",
        "This `Idempotency-Key` was used before for this email with another body (a key is scoped to its email and your network). Use a new key for a new request; send the same body to retry.",
    );
    /// 400.
    pub const INVALID_TOKEN: ProblemType = kind(
        StatusCode::BAD_REQUEST,
        "invalid-token",
        "Invalid Token",
        "The link (a verification or a password-reset link) is unknown, already used, expired, or ended by too many wrong passwords (one answer for all). Ask for a new email (`POST /v1/email-verifications` with the `signup_id` your signup's answer named, or `POST /v1/password-resets`) and use its link, or sign up again.",
    );
    /// 400.
    pub const LINK_PASSWORD_MISMATCH: ProblemType = kind(
        StatusCode::BAD_REQUEST,
        "link-password-mismatch",
        "Link And Password Do Not Match",
        "This link and this password do not belong to the same signup. Enter the password chosen at the signup this link was mailed for. A few wrong tries end the link; signing up again sends a new one.",
    );
    /// 401.
    pub const INVALID_CREDENTIALS: ProblemType = kind(
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
        "Invalid Credentials",
        "The email or the password is wrong, or the email is not verified yet (confirm it with the link from the verification email first): one answer for all, so it says nothing about whether an account exists.",
    );
    /// 429.
    pub const TOO_MANY_SIGN_IN_ATTEMPTS: ProblemType = kind(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-sign-in-attempts",
        "Too Many Sign-In Attempts",
        "Too many failed sign-ins: for this email from this client, for this email from every client but the devices its account signed in on lately (send the `device_token` your last sign-in answered), or for other emails from this client. Wait for `Retry-After` seconds; a successful sign-in resets this client's count for this email.",
    );
    /// 401.
    pub const UNAUTHORIZED: ProblemType = kind(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        "No session, or one that is unknown, revoked or expired. Sign in with `POST /v1/sessions` and send the token as `Authorization: Bearer <token>`.",
    );
    /// 403.
    pub const EMAIL_NOT_VERIFIED: ProblemType = kind(
        StatusCode::FORBIDDEN,
        "email-not-verified",
        "Email Not Verified",
        "This needs a verified account: confirm the email address with the link from the verification email first.",
    );
    /// 403.
    pub const CROSS_SITE_REQUEST: ProblemType = kind(
        StatusCode::FORBIDDEN,
        "cross-site-request",
        "Cross-Site Request",
        "A browser sent this request on behalf of another site (its `Sec-Fetch-Site` or `Origin` says so), and this API does not act on another site's forms. Post from the API's own pages, or from a client that is not a browser.",
    );
    /// 429.
    pub const SUGGESTION_BUDGET_USED: ProblemType = kind(
        StatusCode::TOO_MANY_REQUESTS,
        "suggestion-budget-used",
        "Suggestion Budget Used",
        "Today's friend suggestions for this account are used up; more after `Retry-After` seconds (the next UTC day).",
    );
    /// 429.
    pub const RATE_LIMITED: ProblemType = kind(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too Many Requests",
        "This client (or, for an IPv6 client, its /48, whose /64s share a budget: the policy `<kind>-ipv6-48`) has used its budget for this kind of request. `RateLimit-Policy` and `RateLimit` say how much and for how long; retry after `Retry-After` seconds.",
    );
    /// 503.
    pub const SERVICE_UNAVAILABLE: ProblemType = kind(
        StatusCode::SERVICE_UNAVAILABLE,
        "service-unavailable",
        "Service Unavailable",
        "A service behind the API is down or at capacity; nothing was done. Retry after `Retry-After` seconds.",
    );
    /// 404.
    pub const NOT_FOUND: ProblemType = kind(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not Found",
        "There is no such resource. `/openapi.json` (browsable at `/docs`) lists every route.",
    );
    /// 405.
    pub const METHOD_NOT_ALLOWED: ProblemType = kind(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method Not Allowed",
        "The route exists but not with this method; `Allow` lists the methods it takes.",
    );
    /// 500.
    pub const INTERNAL: ProblemType = kind(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal Server Error",
        "Something failed that should not have. It has been logged with the trace of the request; `instance` and the time help find it.",
    );

    /// Every type, for the pages.
    pub const ALL: [&ProblemType; 20] = [
        &MALFORMED_REQUEST,
        &UNSUPPORTED_MEDIA_TYPE,
        &PAYLOAD_TOO_LARGE,
        &REQUEST_TIMEOUT,
        &VALIDATION_FAILED,
        &BAD_IDEMPOTENCY_KEY,
        &IDEMPOTENCY_KEY_REUSED,
        &INVALID_TOKEN,
        &LINK_PASSWORD_MISMATCH,
        &INVALID_CREDENTIALS,
        &TOO_MANY_SIGN_IN_ATTEMPTS,
        &UNAUTHORIZED,
        &EMAIL_NOT_VERIFIED,
        &CROSS_SITE_REQUEST,
        &SUGGESTION_BUDGET_USED,
        &RATE_LIMITED,
        &SERVICE_UNAVAILABLE,
        &NOT_FOUND,
        &METHOD_NOT_ALLOWED,
        &INTERNAL,
    ];
}

/// `application/problem+json`, as RFC 9457 names it.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// One problem: a stable type URI (which resolves to a page about it), a short title, the status, a
/// human-readable detail, and where it occurred.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// The path of the request it occurred at (never its query, which may hold a token).
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    /// Per-field problems of a 422 (an RFC 9457 extension member).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
    #[serde(skip)]
    retry_after_secs: Option<u64>,
}

impl Problem {
    /// A problem of type `kind`.
    pub fn of(kind: &ProblemType) -> Self {
        Self {
            kind: format!("/problems/{}", kind.slug),
            title: kind.title,
            status: kind.status.as_u16(),
            detail: None,
            instance: None,
            errors: Vec::new(),
            retry_after_secs: None,
        }
    }

    /// Adds a detail for people. It must hold no secret and no internal detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds the per-field problems of a validation failure.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// Adds `Retry-After`, for 503s that will pass.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// 404 for a route that does not exist.
    pub fn not_found() -> Self {
        Self::of(&types::NOT_FOUND).with_detail("no such resource")
    }

    /// 405 for a route that exists, called with a method it does not take.
    pub fn method_not_allowed() -> Self {
        Self::of(&types::METHOD_NOT_ALLOWED).with_detail("this route does not take this method; see Allow")
    }

    /// 500 for what we did not expect; the detail never says what happened inside.
    pub fn internal() -> Self {
        Self::of(&types::INTERNAL).with_detail("an unexpected error occurred; it has been logged")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after_secs;
        // Kept beside the body, so [`with_instance`] can say where it occurred.
        let mut response = (status, axum::Extension(self.clone()), Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Middleware: gives every problem the `instance` it occurred at, the request's path, keeping its status and
/// headers.
pub async fn with_instance(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let Some(mut problem) = response.extensions_mut().remove::<Problem>() else { return response };
    problem.instance = Some(path);
    let Ok(body) = serde_json::to_vec(&problem) else { return response };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// `GET /problems/{slug}`: what a problem type means and what to do about it.
pub async fn page(Path(slug): Path<String>) -> Response {
    match types::ALL.iter().find(|kind| kind.slug == slug) {
        Some(kind) => crate::pages::problem_type(kind),
        None => Problem::not_found().with_detail("no such problem type").into_response(),
    }
}
