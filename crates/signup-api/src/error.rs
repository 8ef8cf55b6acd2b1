//! The errors of the API and their one mapping to RFC 9457 problem responses. Turning an error into a response
//! has no side effects: it attaches what the log should say ([`Logged`]), and one middleware ([`log_errors`]),
//! inside the request's span, writes it once. Expected overload (a saturated or unreachable dependency) is a WARN
//! at most once a minute per cause, with a metric, so a spike leaves the log readable.

use axum::{
    http::header,
    response::{IntoResponse, Response},
};
use tonic::Code;

use crate::{
    domain::signup::FieldError,
    problem::{Problem, ProblemType, types},
};

/// Everything a request can fail with, as a client should see it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The body is not JSON, or not an object.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The body is not `application/json`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The body is larger than the configured limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// The body did not arrive within `REQUEST_BODY_TIMEOUT_MS`.
    #[error("request body timed out")]
    RequestTimeout,
    /// Fields failed validation.
    #[error("{} invalid field(s)", .0.len())]
    Invalid(Vec<FieldError>),
    /// The `Idempotency-Key` header is malformed.
    #[error("malformed Idempotency-Key")]
    BadIdempotencyKey,
    /// The `Idempotency-Key` was used before for this email with another request.
    #[error("Idempotency-Key reused with a different request")]
    IdempotencyKeyReused,
    /// A verification token that is unknown, used, dead or expired: one answer for all.
    #[error("invalid verification token")]
    InvalidToken,
    /// A live verification link confirmed with a password that is not its signup's.
    #[error("the link and the password belong to different signups")]
    LinkPasswordMismatch,
    /// A sign-in with an unknown email, a wrong password or an email not verified yet: one answer for all.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many consecutive failed sign-ins for this email; try again after the given seconds.
    #[error("sign-in throttled")]
    SignInThrottled { retry_after_secs: u64 },
    /// No session, or one that is unknown, revoked or expired.
    #[error("unauthorized")]
    Unauthorized,
    /// Today's suggestions for this account are used up.
    #[error("suggestion budget used up")]
    SuggestionBudgetUsed { retry_after_secs: u64 },
    /// The account's email is not verified, and the endpoint needs it to be.
    #[error("email not verified")]
    NotVerified,
    /// A dependency is down or saturated; retry after the given seconds.
    #[error("service unavailable: {reason}")]
    Unavailable { reason: String, retry_after_secs: u64 },
    /// Anything we did not expect.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

impl ApiError {
    /// Maps a status from a gRPC dependency named `service`. A dependency that is saturated, down, slow, or whose
    /// connection broke mid-call (a transport error: the process died) is a `503` the client may retry; anything
    /// else it answered is ours to fix.
    pub(crate) fn from_status(service: &str, status: &tonic::Status) -> Self {
        match status.code() {
            Code::ResourceExhausted => {
                Self::Unavailable { reason: format!("{service} is at capacity"), retry_after_secs: 1 }
            }
            _ if platform::grpc::is_unavailable(status) => {
                Self::Unavailable { reason: format!("{service} is unavailable"), retry_after_secs: 2 }
            }
            // A replica of an older release, during a rolling deploy: the call works once it is replaced.
            Code::Unimplemented => Self::Unavailable {
                reason: format!("{service} does not know this call yet (an older release)"),
                retry_after_secs: 5,
            },
            _ => Self::Internal(anyhow::anyhow!("{service} answered {:?}: {}", status.code(), status.message())),
        }
    }

    /// What the log should say about this error, at the level it deserves: client mistakes are not the server's
    /// problem, and expected overload is a warning, not an error.
    fn logged(&self) -> Logged {
        match self {
            Self::Internal(error) => Logged { level: Level::Error, cause: "internal", message: format!("{error:#}") },
            Self::Unavailable { reason, .. } => {
                Logged { level: Level::Overload, cause: "unavailable", message: reason.clone() }
            }
            other => Logged { level: Level::Info, cause: "rejected", message: other.to_string() },
        }
    }

    /// `response` (the problem document when `None`), carrying what the log should say about this error.
    pub(crate) fn logged_with(self, response: Option<Response>) -> Response {
        let logged = self.logged();
        let mut response = response.unwrap_or_else(|| self.problem());
        response.extensions_mut().insert(logged);
        response
    }

    /// The problem response, without what the log says.
    fn problem(self) -> Response {
        let problem = Problem::of(self.kind()).with_detail(self.detail());
        match self {
            Self::Invalid(errors) => problem.with_errors(errors).into_response(),
            Self::SignInThrottled { retry_after_secs }
            | Self::SuggestionBudgetUsed { retry_after_secs }
            | Self::Unavailable { retry_after_secs, .. } => problem.with_retry_after(retry_after_secs).into_response(),
            Self::Unauthorized => ([(header::WWW_AUTHENTICATE, r#"Bearer realm="signup""#)], problem).into_response(),
            _ => problem.into_response(),
        }
    }

    /// The problem type of this error.
    fn kind(&self) -> &'static ProblemType {
        match self {
            Self::Malformed(_) => &types::MALFORMED_REQUEST,
            Self::UnsupportedMediaType => &types::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => &types::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => &types::REQUEST_TIMEOUT,
            Self::Invalid(_) => &types::VALIDATION_FAILED,
            Self::BadIdempotencyKey => &types::BAD_IDEMPOTENCY_KEY,
            Self::IdempotencyKeyReused => &types::IDEMPOTENCY_KEY_REUSED,
            Self::InvalidToken => &types::INVALID_TOKEN,
            Self::LinkPasswordMismatch => &types::LINK_PASSWORD_MISMATCH,
            Self::InvalidCredentials => &types::INVALID_CREDENTIALS,
            Self::SignInThrottled { .. } => &types::TOO_MANY_SIGN_IN_ATTEMPTS,
            Self::Unauthorized => &types::UNAUTHORIZED,
            Self::NotVerified => &types::EMAIL_NOT_VERIFIED,
            Self::SuggestionBudgetUsed { .. } => &types::SUGGESTION_BUDGET_USED,
            Self::Unavailable { .. } => &types::SERVICE_UNAVAILABLE,
            Self::Internal(_) => &types::INTERNAL,
        }
    }

    /// What the problem tells people. Never a secret, never an internal detail.
    fn detail(&self) -> String {
        match self {
            Self::Malformed(detail) => detail.clone(),
            Self::UnsupportedMediaType => "send the body as application/json".to_owned(),
            Self::PayloadTooLarge => "the body is larger than this endpoint accepts".to_owned(),
            Self::RequestTimeout => "the body did not arrive in time; send the request again".to_owned(),
            Self::Invalid(_) => "one or more fields are invalid; see errors".to_owned(),
            Self::BadIdempotencyKey => "Idempotency-Key must be 1 to 255 visible ASCII characters".to_owned(),
            Self::IdempotencyKeyReused => {
                "this Idempotency-Key was used for this email with a different request body".to_owned()
            }
            Self::InvalidToken => "this link is invalid, already used or expired; ask for a new email".to_owned(),
            Self::LinkPasswordMismatch => "this link and this password do not belong to the same signup: enter the \
                password you chose when you signed up for this link (a few wrong tries end the link; signing up again \
                sends a new one)"
                .to_owned(),
            Self::InvalidCredentials => {
                "the email or the password is wrong, or the email is not verified yet".to_owned()
            }
            Self::SignInThrottled { .. } => {
                "too many failed sign-ins for this email; wait before trying again".to_owned()
            }
            Self::Unauthorized => {
                "sign in with POST /v1/sessions and send the token as Authorization: Bearer".to_owned()
            }
            Self::NotVerified => "confirm your email address first; the link is in the verification email".to_owned(),
            Self::SuggestionBudgetUsed { .. } => {
                "today's friend suggestions for this account are used up; more tomorrow (UTC)".to_owned()
            }
            Self::Unavailable { .. } => "a dependency is unavailable or busy; retry later".to_owned(),
            Self::Internal(_) => "an unexpected error occurred; it has been logged".to_owned(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.logged_with(None)
    }
}

/// What the log says about an error response.
#[derive(Debug, Clone)]
pub(crate) struct Logged {
    level: Level,
    cause: &'static str,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Info,
    /// Expected overload: a WARN at most once a minute per message.
    Overload,
    Error,
}

/// Writes the log line an error response carries, once, inside the request's span.
pub(crate) async fn log_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    if let Some(logged) = response.extensions().get::<Logged>() {
        let (cause, message) = (logged.cause, logged.message.as_str());
        match logged.level {
            Level::Error => tracing::error!(cause, error = message, "request failed"),
            Level::Info => tracing::info!(cause, error = message, "request rejected"),
            Level::Overload => {
                metrics::counter!("requests_shed_total", "reason" => message.to_owned()).increment(1);
                if once_a_minute(message) {
                    tracing::warn!(cause, reason = message, "requests refused: a dependency is unavailable or busy");
                }
            }
        }
    }
    response
}

/// True at most once a minute for each `key`.
fn once_a_minute(key: &str) -> bool {
    use std::{collections::HashMap, sync::Mutex, time::Instant};
    static LAST: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);
    let Ok(mut last) = LAST.lock() else { return true };
    let last = last.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    match last.get(key) {
        Some(at) if now.duration_since(*at) < std::time::Duration::from_secs(60) => false,
        _ => {
            last.insert(key.to_owned(), now);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_that_cannot_answer_now_is_a_503_and_one_that_fails_is_a_500() {
        let unavailable =
            |status: tonic::Status| matches!(ApiError::from_status("password", &status), ApiError::Unavailable { .. });
        // An older replica during a rolling deploy does not know a newer call yet.
        assert!(unavailable(tonic::Status::unimplemented("unknown method CheckPassword")));
        assert!(unavailable(tonic::Status::resource_exhausted("hashing is at capacity")));
        assert!(unavailable(tonic::Status::unavailable("connection refused")));
        let internal = ApiError::from_status("password", &tonic::Status::internal("a bug"));
        assert!(matches!(internal, ApiError::Internal(_)), "{internal:?}");
    }
}
