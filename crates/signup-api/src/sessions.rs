//! Signing in and out. `POST /v1/sessions` checks the password once (argon2id, in the password service) and
//! answers an opaque bearer token; every later request costs a keyed lookup of that token, not a hash. An unknown
//! email and a wrong password get the same `401` after the same hashing work, and failures are throttled (per email
//! and client, per email, per client: see the password service) whether or not an account exists. Only a verified account signs in: the password of a signup not
//! yet confirmed opens nothing (it could be anyone's, and a session that worked for a new or pending address and not
//! for a verified one would tell which addresses have an account).
//!
//! A sign-in answers a device token with the session, and the client sends it with its next sign-ins: a device the
//! email signed in from lately is not locked out with the guessers (see the password service).

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use proto::{
    password::v1::{CreateSessionRequest, CreateSessionResponse, RevokeSessionRequest, SessionOutcome},
    user_metadata::v1::{GetUserByEmailRequest, UserStatus},
};
use serde::Serialize;
use serde_json::{Map, Value};
use tonic::Code;

use crate::{
    domain::{
        email::Email,
        password::Password,
        signup::{FieldError, required_email, required_string, unknown_fields},
    },
    error::ApiError,
    extract::JsonObject,
    ratelimit::Client,
    startup::AppState,
};

/// The body of a sign-in (documentation; the handler parses it field by field).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the request body for the OpenAPI document")]
pub(crate) struct SignInRequest {
    /// The account's email.
    #[schema(example = "ada@example.com")]
    email: String,
    /// The account's password. An account signs in once its email is verified.
    #[schema(example = "correct horse battery staple")]
    password: String,
    /// The `device_token` an earlier sign-in answered this client (a browser, an app): keep it and send it. A device
    /// that signed in to this email within `LOGIN_TRUSTED_CLIENT_DAYS` is held only to its own failures, so
    /// strangers who lock the email out with wrong guesses do not lock its owner out there. A network is never
    /// trusted that way: a guesser may share it.
    #[schema(example = "kG1yQe3Vb0uYzK2m4tRr8wPq5sXn7aLc9dFh6jJ0iE_")]
    device_token: Option<String>,
}

/// An open session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SessionCreated {
    /// Send as `Authorization: Bearer <token>`. 256 random bits; the server keeps only its hash.
    token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// RFC 3339: the session ends then, however it is used.
    expires_at: Option<String>,
    /// RFC 3339: the session ends then unless it is used before (each use pushes this back).
    idle_expires_at: Option<String>,
    /// Send as `device_token` with this client's next sign-ins (the one sent, if this account trusted it already;
    /// else a new one): 256 random bits; the server keeps only its hash, with the account. Not a session: it opens
    /// nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    device_token: Option<String>,
}

/// Opens a session for an email and password.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "sessions",
    request_body(content = SignInRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Signed in", body = SessionCreated,
            headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Malformed JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown email, wrong password, or an email not verified yet (one answer for all)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing or malformed fields", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed sign-ins (for this email, or from this client), or this client's budget is used; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down or saturated; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id))]
pub(crate) async fn create(
    State(state): State<AppState>,
    client: Client,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let result = sign_in(&state, client, &body).await;
    let outcome = match &result {
        Ok(_) => "created",
        Err(ApiError::InvalidCredentials) => "invalid",
        Err(ApiError::SignInThrottled { .. }) => "throttled",
        Err(_) => "failed",
    };
    metrics::counter!("sign_ins_total", "outcome" => outcome).increment(1);
    result.map(|created| crate::me::private((StatusCode::CREATED, Json(created))))
}

/// Ends the session the request is made with.
#[utoipa::path(
    delete,
    path = "/v1/sessions/current",
    tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out: the token no longer works (through another replica of the API, after at most SESSION_CACHE_TTL_MS)"),
        (status = 401, description = "No session, or one that is unknown, revoked or expired", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "This client's budget of reads is used; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id))]
pub(crate) async fn delete_current(State(state): State<AppState>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let session = crate::auth::session(&state, &headers).await?;
    let request = RevokeSessionRequest { token: session.token.clone() };
    let passwords = &mut state.upstreams.passwords.clone();
    passwords.revoke_session(request).await.map_err(|s| ApiError::from_status("password", &s))?;
    state.sessions.forget(&session.token);
    Ok(StatusCode::NO_CONTENT)
}

async fn sign_in(state: &AppState, client: Client, body: &Map<String, Value>) -> Result<SessionCreated, ApiError> {
    let sign_in = parse(body).map_err(ApiError::Invalid)?;
    let (user_id, response) = open(state, client, &sign_in).await?;
    tracing::Span::current().record("user_id", user_id.as_str());
    let rfc3339 = |t| platform::time::from_proto(t).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    Ok(SessionCreated {
        token: response.token,
        token_type: "Bearer",
        expires_at: rfc3339(response.expires_at),
        idle_expires_at: rfc3339(response.idle_expires_at),
        device_token: Some(response.device_token).filter(|token| !token.is_empty()),
    })
}

/// A sign-in's fields.
struct SignIn {
    email: Email,
    password: Password,
    /// The device token the client sent, or empty.
    device_token: String,
}

/// Checks the password for the account of the email as a sign-in does (throttled per email and `client` or device,
/// the same work whether or not the account exists) and opens a session: the account's id and the session, or why
/// not.
async fn open(
    state: &AppState,
    client: Client,
    SignIn { email, password, device_token }: &SignIn,
) -> Result<(String, CreateSessionResponse), ApiError> {
    if !password.could_be_anyones() {
        return Err(ApiError::InvalidCredentials);
    }
    let user_id = verified_account(state, email).await?;
    let request = CreateSessionRequest {
        user_id: user_id.clone(),
        signup_id: String::new(),
        email_hash: state.hasher.hash(email),
        password: password.expose().to_owned(),
        client_hash: client.hash(&state.hasher),
        device_token: device_token.clone(),
    };
    let response = state.upstreams.passwords.clone().create_session(request).await;
    let response = response.map_err(|status| ApiError::from_status("password", &status))?.into_inner();
    match response.outcome() {
        SessionOutcome::Created => Ok((user_id, response)),
        SessionOutcome::Throttled => {
            Err(ApiError::SignInThrottled { retry_after_secs: u64::from(response.retry_after_seconds.max(1)) })
        }
        SessionOutcome::InvalidCredentials | SessionOutcome::Unspecified => Err(ApiError::InvalidCredentials),
    }
}

/// The verified account of `email`, whose password signs in: empty when there is none.
async fn verified_account(state: &AppState, email: &Email) -> Result<String, ApiError> {
    let request = GetUserByEmailRequest { email: email.as_str().to_owned() };
    let user = match state.upstreams.users.clone().get_user_by_email(request).await {
        Ok(response) => response.into_inner().user,
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => return Err(ApiError::from_status("user-metadata", &status)),
    };
    Ok(match user {
        Some(user) if user.status() == UserStatus::Verified => user.user_id,
        // No account, one not verified yet (whoever signed up with this address, its password proves nothing), or a
        // signup an earlier release left half-made: the check runs against a decoy, as much work as a real one.
        _ => String::new(),
    })
}

/// The fields of a sign-in, or every field's problem.
fn parse(body: &Map<String, Value>) -> Result<SignIn, Vec<FieldError>> {
    let mut errors = unknown_fields(body, &["email", "password", "device_token"], "is not a field of this request");
    let email = required_email(body, "email", &mut errors);
    let password = required_string(body, "password", &mut errors).map(Password::presented);
    let device_token = match body.get("device_token") {
        // Empty: what an answer of a password service of the release before (during a rollout) held.
        None | Some(Value::Null) => String::new(),
        Some(Value::String(token)) if token.is_empty() => String::new(),
        Some(Value::String(token)) if platform::token::shaped(token) => token.clone(),
        Some(_) => {
            errors.push(FieldError::new("device_token", "invalid_device_token", DEVICE_TOKEN_SHAPE));
            String::new()
        }
    };
    match (email, password) {
        (Some(email), Some(password)) if errors.is_empty() => Ok(SignIn { email, password, device_token }),
        _ => Err(errors),
    }
}

const DEVICE_TOKEN_SHAPE: &str = "must be the device_token an earlier sign-in answered (43 characters of base64url)";

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::parse;

    fn parsed(body: Value) -> Result<String, Vec<(String, String)>> {
        let Value::Object(body) = body else { return Err(Vec::new()) };
        parse(&body)
            .map(|sign_in| sign_in.device_token)
            .map_err(|errors| errors.into_iter().map(|e| (e.field, e.code)).collect())
    }

    #[test]
    fn a_sign_in_may_present_a_device_token_of_the_shape_it_was_given() {
        let token = "kG1yQe3Vb0uYzK2m4tRr8wPq5sXn7aLc9dFh6jJ0iE_";
        let sign_in = |device: Value| json!({ "email": "ada@example.com", "password": "x", "device_token": device });
        assert_eq!(parsed(sign_in(json!(token))), Ok(token.to_owned()));
        assert_eq!(parsed(sign_in(Value::Null)), Ok(String::new()), "null is no device");
        assert_eq!(parsed(sign_in(json!(""))), Ok(String::new()), "empty is no device");
        assert_eq!(parsed(json!({ "email": "ada@example.com", "password": "x" })), Ok(String::new()));
        for shape in [json!(&token[1..]), json!(format!("{token}A")), json!(token.replace('_', "/")), json!(7)] {
            let refused = vec![("device_token".to_owned(), "invalid_device_token".to_owned())];
            assert_eq!(parsed(sign_in(shape.clone())), Err(refused), "{shape}");
        }
    }
}
