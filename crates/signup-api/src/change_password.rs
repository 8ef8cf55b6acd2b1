//! Changing the password: `PUT /v1/me/password` with a session, the current password and a new one that passes the
//! signup policy. The current one is checked as a sign-in checks it (throttled per email and client); the change ends every
//! other session of the account and announces `PasswordChanged`, which mails its owner a notice.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use proto::{
    password::v1::{ChangePasswordRequest, ChangePasswordResponse, SessionOutcome},
    user_metadata::v1::UserStatus,
};
use serde_json::{Map, Value};

use crate::{
    domain::{
        email::Email,
        password::{Context, Password},
        signup::{FieldError, required_string, unknown_fields},
    },
    error::ApiError,
    extract::JsonObject,
    startup::AppState,
};

/// The body of a password change (documentation; the handler parses it field by field).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the request body for the OpenAPI document")]
pub(crate) struct PasswordChange {
    /// The password in use now.
    #[schema(example = "correct horse battery staple")]
    current_password: String,
    /// The new password: the signup policy applies (length, not common or breached, not close to the email, not
    /// guessable).
    #[schema(example = "a quite different horse battery staple")]
    new_password: String,
}

/// Changes the signed-in account's password.
#[utoipa::path(
    put,
    path = "/v1/me/password",
    tag = "account",
    security(("bearer" = [])),
    request_body(content = PasswordChange, content_type = "application/json"),
    responses(
        (status = 204, description = "Changed: every other session of the account ended; a notice is mailed"),
        (status = 400, description = "Malformed JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No session, or the current password is wrong (`/problems/invalid-credentials`)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The email is not verified yet", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing fields, or the new password fails the policy (listed in `errors`)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed passwords from this session, or this client's budget is used; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down or saturated; nothing changed; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id))]
pub(crate) async fn put(
    State(state): State<AppState>,
    client: crate::ratelimit::Client,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<StatusCode, ApiError> {
    let (current, new) = parse_fields(&body).map_err(ApiError::Invalid)?;
    let (session, user) = crate::auth::user(&state, &headers).await?;
    if user.status() != UserStatus::Verified {
        return Err(ApiError::NotVerified);
    }
    let email = crate::auth::email(&user);
    let new = new_password(&state, new, &email, Some(&user.display_name)).await?;
    let current = Password::presented(current);
    if !current.could_be_anyones() {
        return Err(ApiError::InvalidCredentials);
    }
    let request = ChangePasswordRequest {
        user_id: session.user_id.clone(),
        email_hash: state.hasher.hash(&email),
        current_password: current.expose().to_owned(),
        new_password: new.expose().to_owned(),
        keep_session_token: session.token,
        client_hash: client.hash(&state.hasher),
    };
    let response = state.upstreams.passwords.clone().change_password(request).await;
    let response = response.map_err(|status| ApiError::from_status("password", &status))?.into_inner();
    answer(&state, &session.user_id, &response)
}

/// The answer to password's outcome. A change ended every other session of the account: none may be remembered
/// here either.
fn answer(state: &AppState, user_id: &str, response: &ChangePasswordResponse) -> Result<StatusCode, ApiError> {
    match response.outcome() {
        SessionOutcome::Created => {
            state.sessions.forget_account(user_id);
            Ok(StatusCode::NO_CONTENT)
        }
        SessionOutcome::Throttled => {
            Err(ApiError::SignInThrottled { retry_after_secs: u64::from(response.retry_after_seconds.max(1)) })
        }
        SessionOutcome::InvalidCredentials | SessionOutcome::Unspecified => Err(ApiError::InvalidCredentials),
    }
}

/// The current and the new password, raw, or every field's problem.
fn parse_fields(body: &Map<String, Value>) -> Result<(&str, &str), Vec<FieldError>> {
    let mut errors = unknown_fields(body, &["current_password", "new_password"], "is not a field of this request");
    let current = required_string(body, "current_password", &mut errors);
    let new = required_string(body, "new_password", &mut errors);
    match (current, new) {
        (Some(current), Some(new)) if errors.is_empty() => Ok((current, new)),
        _ => Err(errors),
    }
}

/// `raw` as an account's new password (`new_password` of a change or a reset), checked against the signup policy
/// off the runtime's workers (its strength estimate is CPU-bound), or its problems as a 422.
pub(crate) async fn new_password(
    state: &AppState,
    raw: &str,
    email: &Email,
    display_name: Option<&str>,
) -> Result<Password, ApiError> {
    let (policy, raw, email, name) =
        (state.limits.password, raw.to_owned(), email.clone(), display_name.map(str::to_owned));
    let checked = crate::cpu::off_runtime(move || {
        policy.check(&raw, Context { email: Some(&email), display_name: name.as_deref() })
    });
    checked.await?.map_err(|problems| {
        ApiError::Invalid(problems.iter().map(|p| FieldError::new("new_password", p.code(), p.detail())).collect())
    })
}
