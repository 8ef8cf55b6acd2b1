//! Leaving: `DELETE /v1/me` with a session and the account's password. The account stops working at once (the
//! user removed, so no session authenticates and no sign-in finds it; then every session ended), `UserDeleted` goes out through user-metadata's outbox
//! and every service forgets the user within seconds; the email can sign up again; a last mail says it happened.

use axum::{Json, extract::State, http::HeaderMap, http::StatusCode, response::Response};
use proto::{
    email_verification::v1::SendAccountDeletedNoticeRequest,
    password::v1::{CheckPasswordRequest, EndAccountSessionsRequest},
    user_metadata::v1::DeleteUserRequest,
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    domain::{
        password::Password,
        signup::{FieldError, required_string, unknown_fields},
    },
    error::ApiError,
    extract::JsonObject,
    startup::AppState,
};

/// The body of a deletion (documentation; the handler parses it field by field).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the request body for the OpenAPI document")]
pub(crate) struct LeaveRequest {
    /// The account's password: a session alone cannot delete an account.
    #[schema(example = "correct horse battery staple")]
    password: String,
}

/// The answer to a deletion.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Leaving {
    /// Always `deleted`: the account no longer works; every service forgets it within seconds.
    #[schema(example = "deleted")]
    status: &'static str,
}

/// Deletes the signed-in account, with its password.
#[utoipa::path(
    delete,
    path = "/v1/me",
    tag = "account",
    security(("bearer" = [])),
    request_body(content = LeaveRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Deleted: every session ended and sign-ins refused now; every service forgets the account within seconds; the email can sign up again; a last mail tells its owner", body = Leaving),
        (status = 400, description = "Malformed JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No session, or the password is wrong (`/problems/invalid-credentials`)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "No password field, or an unknown one", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed passwords from this session, or this client's budget is used; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down; nothing was deleted (or, once the sessions ended, retry after signing in again)", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let password = parse(&body).map_err(ApiError::Invalid)?;
    let (session, user) = crate::auth::user(&state, &headers).await?;
    let email = crate::auth::email(&user);
    check_password(&state, &session, &email, &password).await?;
    let user_id = session.user_id;
    // Deleted first: from then on no session authenticates (the user is gone) and no sign-in finds the account.
    let deleted = state.upstreams.users.clone().delete_user(DeleteUserRequest { user_id: user_id.clone() }).await;
    deleted.map_err(|status| ApiError::from_status("user-metadata", &status))?;
    // Then the sessions end at once, and a sign-in under way opens none; were password unreachable now,
    // UserDeleted ends them within seconds. This replica forgets them after, so no check in between remembers one.
    let sessions = EndAccountSessionsRequest { user_id: user_id.clone() };
    if let Err(status) = state.upstreams.passwords.clone().end_account_sessions(sessions).await {
        tracing::warn!(code = ?status.code(), "sessions not ended at once; UserDeleted will end them");
    }
    state.sessions.forget_account(&user_id);
    // The last mail is a courtesy: the account is gone whether or not it can be queued now.
    let notice = SendAccountDeletedNoticeRequest { email: user.email, locale: user.locale };
    if let Err(status) = state.upstreams.verifications.clone().send_account_deleted_notice(notice).await {
        tracing::warn!(code = ?status.code(), "the account-deleted mail was not queued");
    }
    metrics::counter!("accounts_deleted_total").increment(1);
    Ok(crate::me::private((StatusCode::ACCEPTED, Json(Leaving { status: "deleted" }))))
}

/// Checks the account's password for the signed-in owner, opening nothing. Its failures count against the session,
/// not the network: strangers who locked the email out do not keep its signed-in owner from leaving.
async fn check_password(
    state: &AppState,
    session: &crate::auth::Session,
    email: &crate::domain::email::Email,
    password: &Password,
) -> Result<(), ApiError> {
    if !password.could_be_anyones() {
        return Err(ApiError::InvalidCredentials);
    }
    let request = CheckPasswordRequest {
        user_id: session.user_id.clone(),
        password: password.expose().to_owned(),
        session_token: session.token.clone(),
        email_hash: state.hasher.hash(email),
    };
    let checked = state.upstreams.passwords.clone().check_password(request).await;
    let checked = checked.map_err(|status| ApiError::from_status("password", &status))?.into_inner();
    match (checked.valid, checked.retry_after_seconds) {
        (true, _) => Ok(()),
        (false, 0) => Err(ApiError::InvalidCredentials),
        (false, retry_after) => Err(ApiError::SignInThrottled { retry_after_secs: u64::from(retry_after) }),
    }
}

/// The password of a deletion, or every field's problem.
fn parse(body: &Map<String, Value>) -> Result<Password, Vec<FieldError>> {
    let mut errors = unknown_fields(body, &["password"], "is not a field of this request");
    let password = required_string(body, "password", &mut errors).map(Password::presented);
    match password {
        Some(password) if errors.is_empty() => Ok(password),
        _ => Err(errors),
    }
}
