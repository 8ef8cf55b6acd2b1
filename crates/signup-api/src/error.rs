//! The errors of the API and their one mapping to RFC 9457 problem responses. Turning an error into a response
//! has no side effects; handlers log it once, where it happens, with [`ApiError::log`].

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use tonic::Code;

use crate::{domain::signup::FieldError, problem::Problem};

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
    /// Fields failed validation.
    #[error("{} invalid field(s)", .0.len())]
    Invalid(Vec<FieldError>),
    /// The `Idempotency-Key` header is malformed.
    #[error("malformed Idempotency-Key")]
    BadIdempotencyKey,
    /// The `Idempotency-Key` was used before with another email or another request.
    #[error("Idempotency-Key reused with a different request")]
    IdempotencyKeyReused,
    /// A verification token that is unknown, used, dead or expired: one answer for all.
    #[error("invalid verification token")]
    InvalidToken,
    /// A live verification link confirmed with a password that is not its signup's.
    #[error("the link and the password belong to different signups")]
    LinkPasswordMismatch,
    /// A sign-in with an unknown email or a wrong password: one answer for both.
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
    /// Maps a status from a gRPC dependency named `service`.
    pub(crate) fn from_status(service: &str, status: &tonic::Status) -> Self {
        match status.code() {
            Code::ResourceExhausted => {
                Self::Unavailable { reason: format!("{service} is at capacity"), retry_after_secs: 1 }
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                Self::Unavailable { reason: format!("{service} is unavailable"), retry_after_secs: 2 }
            }
            _ => Self::Internal(anyhow::anyhow!("{service} answered {:?}: {}", status.code(), status.message())),
        }
    }

    /// Logs the error once, at the level it deserves: client mistakes are not the server's problem.
    pub(crate) fn log(&self) {
        match self {
            Self::Internal(error) => tracing::error!(error = format!("{error:#}"), "request failed"),
            Self::Unavailable { reason, .. } => tracing::warn!(%reason, "request refused: dependency unavailable"),
            other => tracing::info!(error = %other, "request rejected"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::Malformed(detail) => {
                Problem::new(StatusCode::BAD_REQUEST, "malformed-request", "Malformed Request").with_detail(detail)
            }
            Self::UnsupportedMediaType => {
                Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported Media Type")
                    .with_detail("send the body as application/json")
            }
            Self::PayloadTooLarge => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload Too Large")
                    .with_detail("the body is larger than this endpoint accepts")
            }
            Self::Invalid(errors) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation-failed", "Validation Failed")
                    .with_detail("one or more fields are invalid; see errors")
                    .with_errors(errors)
            }
            Self::BadIdempotencyKey => {
                Problem::new(StatusCode::BAD_REQUEST, "bad-idempotency-key", "Bad Idempotency Key")
                    .with_detail("Idempotency-Key must be 1 to 255 visible ASCII characters")
            }
            Self::IdempotencyKeyReused => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused", "Idempotency Key Reused")
                    .with_detail("this Idempotency-Key was used with a different request body")
            }
            Self::InvalidToken => Problem::new(StatusCode::BAD_REQUEST, "invalid-token", "Invalid Token")
                .with_detail("this verification link is invalid, already used or expired; request a new email"),
            Self::LinkPasswordMismatch => {
                Problem::new(StatusCode::BAD_REQUEST, "link-password-mismatch", "Link And Password Do Not Match")
                    .with_detail(
                        "this link and this password do not belong to the same signup: enter the password you chose \
                         when you signed up for this link (a few wrong tries end the link; signing up again sends a \
                         new one)",
                    )
            }
            Self::InvalidCredentials => {
                Problem::new(StatusCode::UNAUTHORIZED, "invalid-credentials", "Invalid Credentials")
                    .with_detail("the email or the password is wrong")
            }
            Self::SignInThrottled { retry_after_secs } => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "too-many-sign-in-attempts", "Too Many Sign-In Attempts")
                    .with_detail("too many failed sign-ins for this email; wait before trying again")
                    .with_retry_after(retry_after_secs)
            }
            Self::Unauthorized => {
                let problem = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
                    .with_detail("sign in with POST /v1/sessions and send the token as Authorization: Bearer");
                let mut response = problem.into_response();
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static(r#"Bearer realm="signup""#),
                );
                return response;
            }
            Self::SuggestionBudgetUsed { retry_after_secs } => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "suggestion-budget-used", "Suggestion Budget Used")
                    .with_detail("today's friend suggestions for this account are used up; more tomorrow (UTC)")
                    .with_retry_after(retry_after_secs)
            }
            Self::NotVerified => Problem::new(StatusCode::FORBIDDEN, "email-not-verified", "Email Not Verified")
                .with_detail("confirm your email address first; the link is in the verification email"),
            Self::Unavailable { retry_after_secs, .. } => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "service-unavailable", "Service Unavailable")
                    .with_detail("a dependency is unavailable or busy; retry later")
                    .with_retry_after(retry_after_secs)
            }
            Self::Internal(_) => Problem::internal(),
        };
        problem.into_response()
    }
}
