//! Forgot password: asking for a reset (`POST /v1/password-resets`, the same `202` whether or not an account has
//! the address), the page behind the mailed link (a GET uses nothing), and the reset itself
//! (`POST /v1/password-resets/confirm`, JSON or the page's form): the link's token, which sets one password, and a
//! new password the signup policy accepts; every session of the account ends, and `PasswordChanged` tells the owner.

use std::collections::HashMap;

use axum::{
    Form, Json,
    extract::{FromRequest as _, Query, Request, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use proto::{
    email_verification::v1::{BeginPasswordResetRequest, ConsumePasswordResetRequest, RequestPasswordResetRequest},
    password::v1::ResetPasswordRequest,
};
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::{
    domain::{
        email::Email,
        signup::{FieldError, required_email, required_string, unknown_fields, unknown_keys},
    },
    error::ApiError,
    extract::{JsonObject, form_error, is_form, wants_html},
    pages,
    startup::AppState,
};

/// The body of a reset request (documentation; the handler parses it field by field).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the request body for the OpenAPI document")]
pub(crate) struct ResetRequest {
    /// The account's email.
    #[schema(example = "ada@example.com")]
    email: String,
}

/// The body of a reset: JSON, or the form of the page behind the link.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the request body for the OpenAPI document")]
pub(crate) struct ResetConfirm {
    /// The token from the reset link.
    #[schema(example = "3q2-7wX9kZ0bY1vUu8sTt5rQq4pOo3nNm2lLk1jJi0h")]
    token: String,
    /// The new password: the signup policy applies.
    #[schema(example = "a quite different battery staple horse")]
    new_password: String,
}

/// The answer to every well-formed reset request, and to a reset.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ResetAnswer {
    /// `accepted` (a request) or `password_changed` (a reset).
    #[schema(example = "accepted")]
    status: &'static str,
}

/// The query of the page behind the link.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ResetQuery {
    /// The token from the reset link.
    token: Option<String>,
}

/// A page to ask for a reset, with a form.
#[utoipa::path(get, path = "/v1/password-resets", tag = "password reset",
    responses((status = 200, description = "A page with a form that asks for a reset", content_type = "text/html")))]
pub(crate) async fn request_page() -> Response {
    pages::reset_request()
}

/// Mails a reset link if a verified account has this email (a "sign up again" notice if a pending one has), within
/// the address's mail budget. The answer is the same `202` in every case.
#[utoipa::path(
    post,
    path = "/v1/password-resets",
    tag = "password reset",
    request_body(content(
        (ResetRequest = "application/json"),
        (ResetRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 202, description = "If a verified account has this email and its mail budget allows, a reset link is on its way", body = ResetAnswer),
        (status = 400, description = "Malformed JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body neither JSON nor a form", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "A browser posted this from another site", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an email address", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "This client's budget is used; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn request(
    State(state): State<AppState>,
    client: crate::ratelimit::Client,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let browser = wants_html(&headers);
    match (ask(&state, &client, request).await, browser) {
        (Ok(()), true) => pages::reset_requested(),
        (Ok(()), false) => (StatusCode::ACCEPTED, Json(ResetAnswer { status: "accepted" })).into_response(),
        (Err(error), _) => error.into_response(),
    }
}

/// Asks email-verification for the reset mail of the request's address.
async fn ask(state: &AppState, client: &crate::ratelimit::Client, request: Request) -> Result<(), ApiError> {
    let fields = fields(request, &["email"]).await?;
    let body: serde_json::Map<String, serde_json::Value> =
        fields.into_iter().map(|(name, value)| (name, value.into())).collect();
    let mut errors = Vec::new();
    let email = required_email(&body, "email", &mut errors);
    let email = email.filter(|_| errors.is_empty()).ok_or(ApiError::Invalid(errors))?;
    let ask = RequestPasswordResetRequest { email: email.as_str().to_owned(), client_hash: client.hash(&state.hasher) };
    let asked = state.upstreams.verifications.clone().request_password_reset(ask).await;
    asked.map_err(|status| ApiError::from_status("email-verification", &status)).map(drop)
}

/// The page behind the reset link: a form for the new password. Opening it (as mail scanners do) uses nothing.
#[utoipa::path(
    get,
    path = "/v1/password-resets/confirm",
    tag = "password reset",
    params(ResetQuery),
    responses(
        (status = 200, description = "A page with a form that sets a new password", content_type = "text/html"),
        (status = 400, description = "The link is malformed", content_type = "text/html"),
    )
)]
pub(crate) async fn confirm_page(query: Result<Query<ResetQuery>, QueryRejection>) -> Response {
    match query {
        Ok(Query(ResetQuery { token: Some(token) })) if platform::token::shaped(&token) => {
            pages::reset_form(&token, None)
        }
        _ => pages::invalid_reset_link(),
    }
}

/// Sets a new password with a reset link's token, which sets one password; every session of the account ends.
#[utoipa::path(
    post,
    path = "/v1/password-resets/confirm",
    tag = "password reset",
    request_body(content(
        (ResetConfirm = "application/json"),
        (ResetConfirm = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The new password is set; every session of the account ended", body = ResetAnswer),
        (status = 400, description = "`/problems/invalid-token`: the token is unknown, used, ended or expired (one answer for all); or the body is malformed", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body neither JSON nor a form", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "A browser posted this from another site", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing fields, or the new password fails the policy (listed in `errors`)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "This client's budget is used; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down; see Retry-After. The link still works: retry with it", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id))]
pub(crate) async fn confirm(State(state): State<AppState>, headers: HeaderMap, request: Request) -> Response {
    let browser = wants_html(&headers);
    let (token, result) = match fields(request, &["token", "new_password"]).await {
        Ok(fields) => (fields.get("token").cloned(), reset(&state, &fields["token"], &fields["new_password"]).await),
        Err(error) => (None, Err(error)),
    };
    metrics::counter!("password_reset_confirms_total", "outcome" => if result.is_ok() { "reset" } else { "refused" })
        .increment(1);
    match (result, browser) {
        (Ok(()), true) => pages::reset_done(),
        (Ok(()), false) => (StatusCode::OK, Json(ResetAnswer { status: "password_changed" })).into_response(),
        (Err(ApiError::InvalidToken), true) => ApiError::InvalidToken.logged_with(Some(pages::invalid_reset_link())),
        (Err(ApiError::Invalid(errors)), true) if token.is_some() => {
            let detail = errors.iter().map(|e| e.detail.as_str()).collect::<Vec<_>>().join("; ");
            let page =
                pages::reset_form(token.as_deref().unwrap_or_default(), Some(&format!("The new password {detail}.")));
            ApiError::Invalid(errors).logged_with(Some(page))
        }
        // Nothing was set, or the retry will say so: the link still works.
        (Err(error @ ApiError::Unavailable { .. }), true) => {
            error.logged_with(Some(pages::unavailable("set your new password")))
        }
        (Err(error), _) => error.into_response(),
    }
}

/// The reset: the token must be live, the new password must pass the policy, then the token is used and the
/// password set, every session ended, unless it was set since the link was asked for (so a link sets one password,
/// and a reset that failed here, a `503`, may be retried with it).
async fn reset(state: &AppState, token: &str, new_password: &str) -> Result<(), ApiError> {
    if !platform::token::shaped(token) {
        return Err(ApiError::InvalidToken);
    }
    let invalid_token = |status: tonic::Status| match status.code() {
        Code::FailedPrecondition => ApiError::InvalidToken,
        _ => ApiError::from_status("email-verification", &status),
    };
    let begin = BeginPasswordResetRequest { token: token.to_owned() };
    let begun = state.upstreams.verifications.clone().begin_password_reset(begin).await.map_err(invalid_token)?;
    let email = Email::stored(begun.into_inner().email);
    let new = crate::change_password::new_password(state, new_password, &email, None).await?;
    let consume = ConsumePasswordResetRequest { token: token.to_owned() };
    let consumed =
        state.upstreams.verifications.clone().consume_password_reset(consume).await.map_err(invalid_token)?;
    let consumed = consumed.into_inner();
    let user_id = consumed.user_id;
    tracing::Span::current().record("user_id", user_id.as_str());
    let email_hash = state.hasher.hash(&email);
    let (new_password, asked_at) = (new.expose().to_owned(), consumed.asked_at);
    let link_digest = platform::token::Token::parse(token).map(|token| token.hash()).unwrap_or_default();
    let request = ResetPasswordRequest { user_id: user_id.clone(), new_password, email_hash, asked_at, link_digest };
    state.upstreams.passwords.clone().reset_password(request).await.map_err(|status| match status.code() {
        Code::FailedPrecondition => ApiError::InvalidToken,
        _ => ApiError::from_status("password", &status),
    })?;
    // The reset ended every session of the account; none may be remembered here either.
    state.sessions.forget_account(&user_id);
    Ok(())
}

/// The named fields of a JSON object or a form, each a string; unknown and missing ones are field problems.
async fn fields(request: Request, names: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    if is_form(&request) {
        let Form(form) = Form::<HashMap<String, String>>::from_request(request, &())
            .await
            .map_err(|rejection| form_error(rejection, ApiError::Malformed("the form does not parse".to_owned())))?;
        let unknown = unknown_keys(form.keys(), names, "is not a field of this request");
        let missing = names.iter().filter(|name| !form.contains_key(**name));
        let missing = missing.map(|name| FieldError::new(*name, "required", "is required"));
        let problems: Vec<FieldError> = unknown.into_iter().chain(missing).collect();
        return if problems.is_empty() { Ok(form) } else { Err(ApiError::Invalid(problems)) };
    }
    let JsonObject(body) = JsonObject::from_request(request, &()).await?;
    let mut errors = unknown_fields(&body, names, "is not a field of this request");
    let values: Vec<Option<String>> =
        names.iter().map(|name| required_string(&body, name, &mut errors).map(str::to_owned)).collect();
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    Ok(names.iter().zip(values).filter_map(|(name, value)| value.map(|v| ((*name).to_owned(), v))).collect())
}
