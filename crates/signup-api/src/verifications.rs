//! Email verification over HTTP: the page behind the link in the mail, the confirm itself, and asking for the
//! mail again. The token is consumed only by a POST, so mail scanners that open links do no harm.
//!
//! A confirm proves two things: the token proves control of the mailbox, and the password proves the person who
//! started the signup the link belongs to. Only both together verify the account, with that signup's password: so
//! nobody can pre-register someone else's address with a password of their own and have the owner verify it.

use axum::{
    Form, Json,
    extract::{FromRequest as _, Query, Request, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use proto::{
    email_verification::v1::{
        BeginConfirmationRequest, BeginConfirmationResponse, ConfirmEmailRequest, ReleaseConfirmationRequest,
        ResendVerificationRequest,
    },
    password::v1::{PromoteAttemptRequest, VerifyAttemptPasswordRequest},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tonic::Code;

use crate::{
    domain::{
        email::Email,
        password::Password,
        signup::{FieldError, required_email, required_string, unknown_fields},
    },
    error::ApiError,
    extract::{JsonObject, form_error, is_form, wants_html},
    pages,
    startup::AppState,
};

/// The query of the link in the mail.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ConfirmQuery {
    /// The token from the verification email.
    token: Option<String>,
}

/// The body of a confirm: JSON, or the form of the confirm page. Its `Debug` shows neither field.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct ConfirmRequest {
    /// The token from the verification email.
    #[schema(example = "3q2-7wX9kZ0bY1vUu8sTt5rQq4pOo3nNm2lLk1jJi0h")]
    token: String,
    /// The password chosen at the signup this link belongs to.
    #[schema(example = "correct horse battery staple")]
    password: String,
}

impl std::fmt::Debug for ConfirmRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfirmRequest([redacted])")
    }
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
    /// The `signup_id` the signup's `202` named: that attempt's link is mailed again, never another's.
    #[schema(example = "0193a5c4-6b1e-7d2a-9f00-1c2d3e4f5a6b")]
    signup_id: uuid::Uuid,
}

/// The answer to every well-formed resend request, whatever the account's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ResendAccepted {
    /// Always `accepted`: if a pending account has this email and that signup, a new verification email is on its
    /// way.
    #[schema(example = "accepted")]
    status: &'static str,
}

/// The page behind the link in the verification email: a form that asks for the signup's password and POSTs it
/// with the token. It consumes nothing.
#[utoipa::path(
    get,
    path = "/v1/email-verifications/confirm",
    tag = "email verification",
    params(ConfirmQuery),
    responses(
        (status = 200, description = "A page with a form that confirms", content_type = "text/html"),
        (status = 400, description = "The link is malformed", content_type = "text/html"),
    )
)]
pub(crate) async fn confirm_page(query: Result<Query<ConfirmQuery>, QueryRejection>) -> Response {
    match query {
        Ok(Query(ConfirmQuery { token: Some(token) })) if platform::token::shaped(&token) => {
            pages::confirm(&token, None)
        }
        _ => pages::invalid_link(),
    }
}

/// Consumes a verification token with the password of its signup, and marks the account verified with that
/// password. Browsers (that accept `text/html`) get a page; everyone else JSON.
#[utoipa::path(
    post,
    path = "/v1/email-verifications/confirm",
    tag = "email verification",
    request_body(content(
        (ConfirmRequest = "application/json"),
        (ConfirmRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "The email is verified; the signup's password is the account's", body = Verified),
        (status = 400, description = "`/problems/invalid-token`: the token is unknown, used, expired or dead (one answer for all); `/problems/link-password-mismatch`: the link and the password belong to different signups (counts against the link: a few wrong tries end it); or the body is malformed", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body neither JSON nor a form", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "A browser posted this from another site", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "No token or password field", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "This client's budget is used; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down; the link was not used, retry", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn confirm(State(state): State<AppState>, headers: HeaderMap, request: Request) -> Response {
    let browser = wants_html(&headers);
    let (token, result) = match confirm_from(request).await {
        Ok(form) => (Some(form.token.clone()), confirm_with_password(&state, form).await),
        Err(error) => (None, Err(error)),
    };
    let outcome = match &result {
        Ok(()) => "verified",
        Err(ApiError::InvalidToken) => "invalid_token",
        Err(ApiError::LinkPasswordMismatch) => "password_mismatch",
        Err(ApiError::Unavailable { .. }) => "unavailable",
        Err(_) => "failed",
    };
    metrics::counter!("email_confirmations_total", "outcome" => outcome).increment(1);
    match (result, browser) {
        (Ok(()), true) => pages::verified(),
        (Ok(()), false) => (StatusCode::OK, Json(Verified { status: "verified" })).into_response(),
        (Err(error), true) => {
            let page = page_for(&error, token.as_deref());
            error.logged_with(page)
        }
        (Err(error), false) => error.into_response(),
    }
}

/// The page a browser sees instead of a problem document, if the error has one.
fn page_for(error: &ApiError, token: Option<&str>) -> Option<Response> {
    match (error, token) {
        (ApiError::InvalidToken, _) | (ApiError::LinkPasswordMismatch, None) => Some(pages::invalid_link()),
        (ApiError::LinkPasswordMismatch, Some(token)) => Some(pages::confirm(token, Some(pages::MISMATCH))),
        (ApiError::Unavailable { .. }, _) => Some(pages::unavailable("confirm your email")),
        _ => None,
    }
}

/// Sends a new verification email for the signup named, if a pending account has this email and that signup,
/// within the address's mail budget. The answer is the same `202` whether or not such an account or signup exists
/// or the budget is spent.
#[utoipa::path(
    post,
    path = "/v1/email-verifications",
    tag = "email verification",
    request_body(content = ResendRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "If a pending account has this email and this signup, and its mail budget allows, a new verification email for that signup is on its way; earlier links keep working", body = ResendAccepted),
        (status = 400, description = "Malformed JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not an email address, or no signup_id (a UUID)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "This client's budget is used; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn resend(
    State(state): State<AppState>,
    client: crate::ratelimit::Client,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<ResendAccepted>), ApiError> {
    let (email, signup_id) = parse_resend(&body).map_err(ApiError::Invalid)?;
    let mut verifications = state.upstreams.verifications.clone();
    let client_hash = client.hash(&state.hasher);
    let request = ResendVerificationRequest { email: email.as_str().to_owned(), client_hash, signup_id };
    verifications
        .resend_verification(request)
        .await
        .map_err(|status| ApiError::from_status("email-verification", &status))?;
    Ok((StatusCode::ACCEPTED, Json(ResendAccepted { status: "accepted" })))
}

/// The confirm: the token names its signup (and costs one of its tries), the password must be that signup's, and
/// only then is the token used and the account verified, with that signup's password made the account's.
async fn confirm_with_password(state: &AppState, form: ConfirmRequest) -> Result<(), ApiError> {
    if !platform::token::shaped(&form.token) {
        return Err(ApiError::InvalidToken);
    }
    let token = form.token;
    let begun = begin(state, &token).await?;
    let password = Password::presented(&form.password);
    let valid = match check_password(state, &begun, &password).await {
        Ok(valid) => valid,
        Err(error) => return Err(give_back(state, &token, error).await),
    };
    if !valid {
        return Err(ApiError::LinkPasswordMismatch);
    }
    let confirm = ConfirmEmailRequest { token: token.clone(), signup_id: begun.signup_id.clone() };
    match state.upstreams.verifications.clone().confirm_email(confirm).await {
        Ok(_) => {}
        Err(status) if status.code() == Code::FailedPrecondition => return Err(ApiError::InvalidToken),
        // The right password, and an outage after it: the try was no guess, and the link must outlive the outage.
        Err(status) => return Err(give_back(state, &token, ApiError::from_status("email-verification", &status)).await),
    }
    promote(state, begun).await;
    Ok(())
}

/// Gives back the try `begin` counted, when it ended in no verdict on the password (or in the right one): an
/// outage costs the link nothing. Returns `error`, the answer.
async fn give_back(state: &AppState, token: &str, error: ApiError) -> ApiError {
    let release = ReleaseConfirmationRequest { token: token.to_owned() };
    if let Err(status) = state.upstreams.verifications.clone().release_confirmation(release).await {
        tracing::warn!(code = ?status.code(), "could not give back a confirm try");
    }
    error
}

async fn begin(state: &AppState, token: &str) -> Result<BeginConfirmationResponse, ApiError> {
    let request = BeginConfirmationRequest { token: token.to_owned() };
    match state.upstreams.verifications.clone().begin_confirmation(request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) if status.code() == Code::FailedPrecondition => Err(ApiError::InvalidToken),
        Err(status) => Err(ApiError::from_status("email-verification", &status)),
    }
}

async fn check_password(
    state: &AppState,
    begun: &BeginConfirmationResponse,
    password: &Password,
) -> Result<bool, ApiError> {
    if !password.could_be_anyones() {
        return Ok(false);
    }
    let request = VerifyAttemptPasswordRequest {
        user_id: begun.user_id.clone(),
        signup_id: begun.signup_id.clone(),
        password: password.expose().to_owned(),
    };
    let response = state.upstreams.passwords.clone().verify_attempt_password(request).await;
    Ok(response.map_err(|status| ApiError::from_status("password", &status))?.into_inner().valid)
}

/// Makes the verified signup's password the account's right away, so the owner can sign in at once. The
/// `EmailVerified` event makes it certain if this call fails; it is idempotent either way.
async fn promote(state: &AppState, begun: BeginConfirmationResponse) {
    let request = PromoteAttemptRequest { user_id: begun.user_id, signup_id: begun.signup_id };
    if let Err(status) = state.upstreams.passwords.clone().promote_attempt(request).await {
        tracing::warn!(code = ?status.code(), "password not promoted yet; the EmailVerified event will do it");
    }
}

/// The token and password from a form or a JSON body.
async fn confirm_from(request: Request) -> Result<ConfirmRequest, ApiError> {
    if is_form(&request) {
        let missing = FieldError::new("token", "required", "the form must have token and password fields");
        let form = Form::<ConfirmRequest>::from_request(request, &()).await;
        return form
            .map(|Form(form)| form)
            .map_err(|rejection| form_error(rejection, ApiError::Invalid(vec![missing])));
    }
    let JsonObject(body) = JsonObject::from_request(request, &()).await?;
    let mut errors = unknown_fields(&body, &["token", "password"], "is not a field of this request");
    let token = required_string(&body, "token", &mut errors).map(str::to_owned);
    let password = required_string(&body, "password", &mut errors).map(str::to_owned);
    match (token, password) {
        (Some(token), Some(password)) if errors.is_empty() => Ok(ConfirmRequest { token, password }),
        _ => Err(ApiError::Invalid(errors)),
    }
}

/// A resend's email and the signup it names (a UUID, passed on in its canonical form).
fn parse_resend(body: &Map<String, Value>) -> Result<(Email, String), Vec<FieldError>> {
    let mut errors = unknown_fields(body, &["email", "signup_id"], "is not a field of this request");
    let email = required_email(body, "email", &mut errors);
    let signup_id = match required_string(body, "signup_id", &mut errors).map(uuid::Uuid::try_parse) {
        Some(Ok(signup_id)) => Some(signup_id),
        Some(Err(_)) => {
            errors.push(FieldError::new("signup_id", "invalid_signup_id", SIGNUP_ID_SHAPE));
            None
        }
        None => None,
    };
    match (email, signup_id) {
        (Some(email), Some(signup_id)) if errors.is_empty() => Ok((email, signup_id.to_string())),
        _ => Err(errors),
    }
}

const SIGNUP_ID_SHAPE: &str = "must be the signup_id the signup's answer named (a UUID)";

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::parse_resend;

    fn codes(body: Value) -> Vec<(String, String)> {
        let Value::Object(body) = body else { return Vec::new() };
        parse_resend(&body).err().unwrap_or_default().into_iter().map(|e| (e.field, e.code)).collect()
    }

    #[test]
    fn a_resend_names_an_email_and_a_signup_and_every_problem_is_reported_at_once() {
        let id = "0193A5C4-6B1E-7D2A-9F00-1C2D3E4F5A6B";
        let parsed = json!({ "email": "Ada@Example.com", "signup_id": id });
        let Value::Object(parsed) = parsed else { return };
        let (email, signup_id) = parse_resend(&parsed).unwrap_or_else(|errors| panic!("{errors:?}"));
        assert_eq!((email.as_str(), signup_id.as_str()), ("ada@example.com", id.to_lowercase().as_str()));

        let pair = |field: &str, code: &str| (field.to_owned(), code.to_owned());
        assert_eq!(codes(json!({ "email": "ada@example.com" })), [pair("signup_id", "required")]);
        let shapes = [json!("not-a-signup"), json!(""), json!(format!("{id}0"))];
        for shape in shapes {
            let body = json!({ "email": "ada@example.com", "signup_id": shape });
            assert_eq!(codes(body), [pair("signup_id", "invalid_signup_id")], "{shape}");
        }
        assert_eq!(codes(json!({ "email": "ada@example.com", "signup_id": 7 })), [pair("signup_id", "invalid_type")]);
        assert_eq!(
            codes(json!({ "email": "nope", "signup_id": id, "user_id": id })),
            [pair("user_id", "unknown_field"), pair("email", "invalid_email")]
        );
    }
}
