//! `POST /v1/signups`: one signup attempt, committed through password and user-metadata before it is accepted.
//!
//! The password is hashed first, before anything is written anywhere: a signup refused because hashing is
//! saturated leaves nothing behind. Then user-metadata records the attempt and its event in one transaction. The
//! answer is the same `202` for a new, a still pending and an already verified email, and each path does one
//! password hash, so neither the body nor the timing tells whether an account exists.
//!
//! The attempt's password is not the account's: it becomes that only when the attempt's own link is confirmed
//! with it. So signing up with someone else's address, before or after them, can neither take their account nor
//! stop them from confirming theirs.

use axum::{
    Json,
    extract::{FromRequest as _, Request, State},
    http::{HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use proto::{
    password::v1::{DiscardAttemptCredentialRequest, StoreAttemptCredentialRequest},
    user_metadata::v1::RegisterSignupRequest,
};
use serde::Serialize;
use serde_json::json;
use tonic::Code;
use uuid::Uuid;

use crate::{
    admission::Ticket,
    domain::signup::{self, Signup},
    error::ApiError,
    extract::JsonObject,
    startup::AppState,
};

/// The body of every accepted signup.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SignupAccepted {
    /// Always `verification_pending`: check your mailbox.
    #[schema(example = "verification_pending")]
    pub status: &'static str,
    /// The email as the system will use it (trimmed, lower-cased, IDN domain in ASCII).
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// This signup attempt: a resend (`POST /v1/email-verifications`) names it to have its link mailed again. Only
    /// the one who signed up is told it, so nobody who only knows the address can ask for that mail, and a resend
    /// never mails another attempt's link (someone else may sign up with the same address after you). A retry with
    /// the same `Idempotency-Key` names the first request's attempt.
    #[schema(example = "0193a5c4-6b1e-7d2a-9f00-1c2d3e4f5a6b")]
    pub signup_id: Uuid,
}

/// The fields of a signup (documentation of the body; the handler parses it field by field).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the request body for the OpenAPI document")]
pub(crate) struct SignupRequest {
    /// The account's email; internationalised domains are accepted.
    #[schema(example = "ada@example.com")]
    email: String,
    /// At least `PASSWORD_MIN_LENGTH` (15) and at most `PASSWORD_MAX_LENGTH` (128) characters, both as sent and
    /// after NFKC; not a common or breached password; not close to the email; not guessable (a zxcvbn score of at
    /// least `PASSWORD_MIN_SCORE`, 3, given the email and display name).
    #[schema(example = "correct horse battery staple")]
    password: String,
    /// Shown to friends (never put in mail); 1 to `DISPLAY_NAME_MAX_LENGTH` (100) characters, without links,
    /// domain names, `@`, control, bidirectional-override or zero-width characters (a link is one also when
    /// characters that render as nothing break it up).
    #[schema(example = "Ada Lovelace")]
    display_name: String,
    /// Email addresses of people the user knows, at most `MAX_CONTACTS` (1000). Only keyed hashes of them leave
    /// the API.
    contacts: Option<Vec<String>>,
    /// BCP 47 language tag for the emails we send.
    #[schema(example = "en-GB")]
    locale: Option<String>,
    /// Whether others may be suggested this user once verified (default true).
    discoverable: Option<bool>,
}

/// Accepts a signup once it is committed, or explains what is wrong with it.
#[utoipa::path(
    post,
    path = "/v1/signups",
    tag = "signups",
    request_body(content = SignupRequest, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key, email and body get the same answer and create nothing new; the key with another body for the same email from the same network is a 422 (a key is scoped to its email and the client's network: from another network it is a new key)")),
    responses(
        (status = 202, description = "Committed; a verification email is on its way (or a notice, for an existing account), within the address's mail budget", body = SignupAccepted),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within REQUEST_BODY_TIMEOUT_MS; nothing was done", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over MAX_BODY_BYTES", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (listed in `errors`), or an Idempotency-Key reused for this email with another body", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "This client's signup budget is used; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down or saturated; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id))]
pub(crate) async fn create(
    State(state): State<AppState>,
    client: crate::ratelimit::Client,
    headers: HeaderMap,
    request: Request,
) -> Result<(StatusCode, Json<SignupAccepted>), ApiError> {
    // As many signups in flight as password takes: refused before anything is read or checked ([`room`] asked
    // already, before the client's budget; asked again here for the requests that waited for it). The place is
    // taken once the body is here, so a body that trickles in holds none.
    let result = match state.admission.has_room() {
        false => Err(at_capacity()),
        true => match JsonObject::from_request(request, &()).await {
            Ok(JsonObject(body)) => match state.admission.admit() {
                Some(ticket) => accept(&state, client, &headers, body, ticket).await,
                None => Err(at_capacity()),
            },
            Err(error) => Err(error),
        },
    };
    count(&result);
    result
}

/// Refuses a signup at once while password has no room for it, before it counts against its client's budget: a
/// signup refused for capacity is no signup, and a client that retries after `Retry-After`, as told, must not spend
/// its budget on 503s and find a 429 once the overload is over.
pub(crate) async fn room(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.admission.has_room() {
        return next.run(request).await;
    }
    metrics::counter!("signups_total", "outcome" => "unavailable").increment(1);
    at_capacity().into_response()
}

fn at_capacity() -> ApiError {
    ApiError::Unavailable { reason: "password is at capacity".to_owned(), retry_after_secs: 1 }
}

/// Counts a signup's outcome in `signups_total`.
fn count<T>(result: &Result<T, ApiError>) {
    let outcome = match result {
        Ok(_) => "accepted",
        Err(ApiError::Invalid(_)) => "invalid",
        Err(ApiError::Unavailable { .. }) => "unavailable",
        Err(_) => "failed",
    };
    metrics::counter!("signups_total", "outcome" => outcome).increment(1);
}

async fn accept(
    state: &AppState,
    client: crate::ratelimit::Client,
    headers: &HeaderMap,
    body: serde_json::Map<String, serde_json::Value>,
    ticket: Ticket,
) -> Result<(StatusCode, Json<SignupAccepted>), ApiError> {
    let key = idempotency_key(headers)?;
    let limits = state.limits;
    let signup = crate::cpu::off_runtime(move || signup::parse(&body, &limits)).await?.map_err(ApiError::Invalid)?;
    let signup_id = Uuid::now_v7();
    let email_hash = state.hasher.hash(&signup.email);
    store_password(state, &signup, signup_id, &email_hash, ticket).await?;
    let asked = Asked { email_hash, client_hash: client.hash(&state.hasher), key: key.as_deref() };
    let signup_id = register(state, &signup, signup_id, asked).await?;
    let email = signup.email.as_str().to_owned();
    let accepted = SignupAccepted { status: "verification_pending", email, signup_id };
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Hashes and stores the attempt's password. For an address that already has a verified account this is stored
/// too (and never used), so every signup costs the same. password's answer teaches admission how much it takes.
async fn store_password(
    state: &AppState,
    signup: &Signup,
    signup_id: Uuid,
    email_hash: &[u8],
    mut ticket: Ticket,
) -> Result<(), ApiError> {
    ticket.asking();
    let request = StoreAttemptCredentialRequest {
        signup_id: signup_id.to_string(),
        email_hash: email_hash.to_vec(),
        password: signup.password.expose().to_owned(),
    };
    let stored = state.upstreams.passwords.clone().store_attempt_credential(request).await;
    match &stored {
        Ok(_) => ticket.taken(),
        Err(status) if status.code() == Code::ResourceExhausted => ticket.refused_for_capacity(),
        Err(_) => {}
    }
    stored.map(drop).map_err(|status| ApiError::from_status("password", &status))
}

/// Who asked for a signup: the email's keyed hash, the client's, and the request's `Idempotency-Key`.
struct Asked<'a> {
    email_hash: Vec<u8>,
    client_hash: Vec<u8>,
    key: Option<&'a str>,
}

/// Records the attempt; returns the attempt the answer names (on a replay, the first request's).
async fn register(state: &AppState, signup: &Signup, signup_id: Uuid, asked: Asked<'_>) -> Result<Uuid, ApiError> {
    let Asked { email_hash, client_hash, key } = asked;
    let request = RegisterSignupRequest {
        email: signup.email.as_str().to_owned(),
        display_name: signup.display_name.as_str().to_owned(),
        locale: signup.locale.as_ref().map(|l| l.as_str().to_owned()).unwrap_or_default(),
        discoverable: signup.discoverable,
        idempotency_key: key.map(|key| scoped_key(state, &signup.email, &client_hash, key)).unwrap_or_default(),
        request_fingerprint: key.map(|_| fingerprint(state, signup)).unwrap_or_default(),
        signup_id: signup_id.to_string(),
        contact_hashes: signup.contacts.iter().map(|c| state.hasher.hash(c)).collect(),
        email_hash,
        client_hash,
    };
    match state.upstreams.users.clone().register_signup(request).await {
        Ok(response) => {
            let response = response.into_inner();
            tracing::Span::current().record("user_id", response.user_id.as_str());
            if response.replayed {
                discard_password(state, signup_id).await;
            }
            if response.dropped {
                // After the answer, which must not take longer for an address whose attempts are spent.
                let state = state.clone();
                tokio::spawn(async move { discard_password(&state, signup_id).await });
            }
            // A user-metadata of the release before (during a rollout) names none: then it is this request's.
            Ok(response.signup_id.parse().unwrap_or(signup_id))
        }
        Err(status) if status.code() == Code::FailedPrecondition => {
            discard_password(state, signup_id).await;
            Err(ApiError::IdempotencyKeyReused)
        }
        Err(status) => Err(ApiError::from_status("user-metadata", &status)),
    }
}

/// Removes the password stored for an attempt user-metadata did not record (the signup replayed an earlier one,
/// reused its key with another body, or came when the account's attempts were spent): no event will name it, and it
/// would outlive even the account's deletion.
/// One left behind (password unreachable just now) expires with the attempts.
async fn discard_password(state: &AppState, signup_id: Uuid) {
    let request = DiscardAttemptCredentialRequest { signup_id: signup_id.to_string() };
    if let Err(status) = state.upstreams.passwords.clone().discard_attempt_credential(request).await {
        tracing::warn!(code = ?status.code(), "an unrecorded attempt's password was not removed; it expires with the attempts");
    }
}

/// `Idempotency-Key`: 1 to 255 visible ASCII characters, if present.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().map_err(|_| ApiError::BadIdempotencyKey)?.trim();
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() > 255 || !visible {
        return Err(ApiError::BadIdempotencyKey);
    }
    Ok(Some(key.to_owned()))
}

/// The key as user-metadata keeps it: scoped to the signup's email and to the client (its network, as the rate
/// limits count it), as a keyed hash under `IDEMPOTENCY_FINGERPRINT_KEY` (64 hex digits that say nothing of the
/// address). Keys are the client's word and some are predictable (the README's example, a counter): scoped to the
/// email alone, someone elsewhere could send the victim's key with another body and learn from the 422 that the
/// address signed up (or, knowing the rest of the body, whether a guessed password was the one sent), or use the
/// key first and make the victim's signup a 422. A retry from another network is a new attempt, not a replay.
fn scoped_key(state: &AppState, email: &crate::domain::email::Email, client_hash: &[u8], key: &str) -> String {
    let message = [email.as_str().as_bytes(), b"\0", client_hash, b"\0", key.as_bytes()].concat();
    let mac = state.fingerprints.mac(b"signup-api idempotency key v2\0", &message);
    mac.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A keyed hash of the normalised request under `IDEMPOTENCY_FINGERPRINT_KEY`, so a retry with another body is
/// recognised without storing the body.
fn fingerprint(state: &AppState, signup: &Signup) -> Vec<u8> {
    let canonical = json!({
        "email": signup.email.as_str(),
        "password": signup.password.expose(),
        "display_name": signup.display_name.as_str(),
        "contacts": signup.contacts.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "locale": signup.locale.as_ref().map(|l| l.as_str()),
        "discoverable": signup.discoverable,
    });
    state.fingerprints.mac(b"signup-api idempotency fingerprint v2\0", canonical.to_string().as_bytes())
}
