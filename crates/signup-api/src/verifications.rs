//! Email verification over HTTP: the page behind the link in the mail, the confirm itself, and asking for the
//! mail again. The token is consumed only by a POST, so mail scanners that open links do no harm.

use axum::{
    Form, Json,
    extract::{FromRequest as _, Query, Request, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use proto::email_verification::v1::{ConfirmEmailRequest, ResendVerificationRequest};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tonic::Code;

use crate::{
    domain::{
        email::Email,
        signup::{FieldError, email_code, required_string},
    },
    error::ApiError,
    extract::JsonObject,
    pages,
    startup::AppState,
};

/// The query of the link in the mail.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct ConfirmQuery {
    /// The token from the verification email.
    token: Option<String>,
}

/// The body of a confirm: JSON, or the form of the confirm page.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct ConfirmRequest {
    /// The token from the verification email.
    #[schema(example = "3q2-7wX9kZ0bY1vUu8sTt5rQq4pOo3nNm2lLk1jJi0h")]
    token: String,
}

/// The answer to a successful confirm.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Verified {
    /// Always `verified`.
    #[schema(example = "verified")]
    status: &'static str,
}

/// The body of a resend request.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the request body for the OpenAPI document")]
pub(crate) struct ResendRequest {
    /// The email the account was registered with.
    #[schema(example = "ada@example.com")]
    email: String,
}

/// The answer to every well-formed resend request, whatever the account's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ResendAccepted {
    /// Always `accepted`: if a pending account has this email, a new verification email is on its way.
    #[schema(example = "accepted")]
    status: &'static str,
}

/// The page behind the link in the verification email: a button that POSTs the token. It consumes nothing.
#[utoipa::path(
    get,
    path = "/v1/email-verifications/confirm",
    tag = "email verification",
    params(ConfirmQuery),
    responses(
        (status = 200, description = "A page with a button that confirms", content_type = "text/html"),
        (status = 400, description = "The link is malformed", content_type = "text/html"),
    )
)]
pub(crate) async fn confirm_page(query: Result<Query<ConfirmQuery>, QueryRejection>) -> Response {
    match query {
        Ok(Query(ConfirmQuery { token: Some(token) })) if token_shaped(&token) => pages::confirm(&token),
        _ => pages::invalid_link(),
    }
}

/// Consumes a verification token and marks the account verified. Browsers (that accept `text/html`) get a page;
/// everyone else JSON.
#[utoipa::path(
    post,
    path = "/v1/email-verifications/confirm",
    tag = "email verification",
    request_body(content(
        (ConfirmRequest = "application/json"),
        (ConfirmRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The email is verified", body = Verified),
        (status = 400, description = "The token is unknown, used or expired (one answer for all three), or the body is malformed", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body neither JSON nor a form", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "No token field", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down; the token was not used, retry", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn confirm(State(state): State<AppState>, headers: HeaderMap, request: Request) -> Response {
    let browser = wants_html(&headers);
    let result = async {
        let token = token_from(request).await?;
        confirm_token(&state, token).await
    }
    .await;
    let outcome = match &result {
        Ok(()) => "verified",
        Err(ApiError::InvalidToken) => "invalid_token",
        Err(ApiError::Unavailable { .. }) => "unavailable",
        Err(_) => "failed",
    };
    metrics::counter!("email_confirmations_total", "outcome" => outcome).increment(1);
    if let Err(error) = &result {
        error.log();
    }
    match (result, browser) {
        (Ok(()), true) => pages::verified(),
        (Ok(()), false) => (StatusCode::OK, Json(Verified { status: "verified" })).into_response(),
        (Err(ApiError::InvalidToken), true) => pages::invalid_link(),
        (Err(ApiError::Unavailable { .. }), true) => pages::unavailable(),
        (Err(error), _) => error.into_response(),
    }
}

/// Sends a new verification email if a pending account has this email, at most a few times per hour. The answer
/// is the same `202` whether or not such an account exists.
#[utoipa::path(
    post,
    path = "/v1/email-verifications",
    tag = "email verification",
    request_body(content = ResendRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "If a pending account has this email, a new verification email is on its way; its link supersedes the earlier ones", body = ResendAccepted),
        (status = 400, description = "Malformed JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an email address", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn resend(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<ResendAccepted>), ApiError> {
    let result = async {
        let email = parse_email(&body).map_err(ApiError::Invalid)?;
        let mut verifications = state.upstreams.verifications.clone();
        verifications
            .resend_verification(ResendVerificationRequest { email: email.as_str().to_owned() })
            .await
            .map_err(|status| ApiError::from_status("email-verification", &status))?;
        Ok((StatusCode::ACCEPTED, Json(ResendAccepted { status: "accepted" })))
    }
    .await;
    result.inspect_err(ApiError::log)
}

async fn confirm_token(state: &AppState, token: String) -> Result<(), ApiError> {
    if !token_shaped(&token) {
        return Err(ApiError::InvalidToken);
    }
    let mut verifications = state.upstreams.verifications.clone();
    match verifications.confirm_email(ConfirmEmailRequest { token }).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == Code::FailedPrecondition => Err(ApiError::InvalidToken),
        Err(status) => Err(ApiError::from_status("email-verification", &status)),
    }
}

/// The token from a form or a JSON body.
async fn token_from(request: Request) -> Result<String, ApiError> {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let Form(form) = Form::<ConfirmRequest>::from_request(request, &()).await.map_err(|_| {
            ApiError::Invalid(vec![FieldError::new("token", "required", "the form must have a token field")])
        })?;
        return Ok(form.token);
    }
    let JsonObject(body) = JsonObject::from_request(request, &()).await?;
    let mut errors = unknown_fields(&body, &["token"]);
    let token = required_string(&body, "token", &mut errors).map(str::to_owned);
    match token {
        Some(token) if errors.is_empty() => Ok(token),
        _ => Err(ApiError::Invalid(errors)),
    }
}

fn parse_email(body: &Map<String, Value>) -> Result<Email, Vec<FieldError>> {
    let mut errors = unknown_fields(body, &["email"]);
    let email = required_string(body, "email", &mut errors).and_then(|raw| match Email::parse(raw) {
        Ok(email) => Some(email),
        Err(error) => {
            errors.push(FieldError::new("email", email_code(error), error.to_string()));
            None
        }
    });
    match email {
        Some(email) if errors.is_empty() => Ok(email),
        _ => Err(errors),
    }
}

fn unknown_fields(body: &Map<String, Value>, known: &[&str]) -> Vec<FieldError> {
    body.keys()
        .filter(|key| !known.contains(&key.as_str()))
        .map(|key| FieldError::new(key.as_str(), "unknown_field", "is not a field of this request"))
        .collect()
}

/// Whether `token` looks like one we issue (43 base64url characters); anything else is not looked up.
fn token_shaped(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether the client is a browser that wants a page rather than JSON.
fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/html"))
}
