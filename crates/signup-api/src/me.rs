//! `GET /v1/me`: the caller's own profile, for HTTP Basic credentials (email and password) checked by the
//! password service. An unknown email and a wrong password get the same 401 after the same hashing work.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, header},
};
use base64::Engine as _;
use proto::{
    password::v1::VerifyPasswordRequest,
    user_metadata::v1::{GetUserByEmailRequest, User, UserStatus},
};
use serde::Serialize;
use tonic::Code;

use crate::{
    domain::{email::Email, password::Password},
    error::ApiError,
    startup::AppState,
};

/// The caller's profile.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Profile {
    /// UUID v7.
    user_id: String,
    /// Normalised email.
    email: String,
    display_name: String,
    /// Whether the email is confirmed.
    email_verified: bool,
    /// `pending_verification` or `verified`.
    #[schema(example = "verified")]
    status: &'static str,
    /// BCP 47 tag, empty when none was given.
    locale: String,
    /// Whether others may be suggested this user.
    discoverable: bool,
    /// RFC 3339.
    created_at: Option<String>,
    /// RFC 3339; absent until verified.
    verified_at: Option<String>,
}

/// Email and password from an `Authorization: Basic` header.
struct Credentials {
    email: Email,
    password: Password,
}

/// Returns the profile of the account the credentials belong to.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "account",
    security(("basic" = [])),
    responses(
        (status = 200, description = "The caller's profile", body = Profile),
        (status = 401, description = "Missing or wrong credentials (one answer for an unknown email and a wrong password)", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "Basic realm=\"signup\", charset=\"UTF-8\""))),
        (status = 503, description = "A dependency is down or saturated; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id))]
pub(crate) async fn get(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Profile>, ApiError> {
    let result = profile(&state, &headers).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(ApiError::Unauthorized) => "unauthorized",
        Err(_) => "failed",
    };
    metrics::counter!("me_requests_total", "outcome" => outcome).increment(1);
    result.map(Json).inspect_err(ApiError::log)
}

async fn profile(state: &AppState, headers: &HeaderMap) -> Result<Profile, ApiError> {
    authenticate(state, headers).await.map(to_profile)
}

/// The account whose email and password came in `Authorization: Basic`: checked by the password service, with
/// the same hashing work for an unknown email as for a wrong password, and one answer (401) for both.
pub(crate) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<User, ApiError> {
    let credentials = credentials(headers).ok_or(ApiError::Unauthorized)?;
    let mut users = state.upstreams.users.clone();
    let user =
        match users.get_user_by_email(GetUserByEmailRequest { email: credentials.email.as_str().to_owned() }).await {
            Ok(response) => response.into_inner().user,
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(ApiError::from_status("user-metadata", &status)),
        };
    // Without an account, verify against a fresh id: the password service then spends the same work on a decoy.
    let user_id = user.as_ref().map_or_else(|| uuid::Uuid::now_v7().to_string(), |u| u.user_id.clone());
    let request = VerifyPasswordRequest { user_id, password: credentials.password.expose().to_owned() };
    let mut passwords = state.upstreams.passwords.clone();
    let valid = passwords
        .verify_password(request)
        .await
        .map_err(|status| ApiError::from_status("password", &status))?
        .into_inner()
        .valid;
    match user {
        Some(user) if valid && user.status() != UserStatus::Registering => {
            tracing::Span::current().record("user_id", user.user_id.as_str());
            Ok(user)
        }
        _ => Err(ApiError::Unauthorized),
    }
}

/// Parses `Authorization: Basic base64(email:password)`; `None` for anything else.
fn credentials(headers: &HeaderMap) -> Option<Credentials> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (email, password) = decoded.split_once(':')?;
    Some(Credentials { email: Email::parse(email).ok()?, password: Password::presented(password) })
}

fn to_profile(user: User) -> Profile {
    let verified = user.status() == UserStatus::Verified;
    let rfc3339 = |t: Option<prost_types::Timestamp>| {
        platform::time::from_proto(t).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    Profile {
        email_verified: verified,
        status: if verified { "verified" } else { "pending_verification" },
        created_at: rfc3339(user.created_at),
        verified_at: rfc3339(user.verified_at),
        user_id: user.user_id,
        email: user.email,
        display_name: user.display_name,
        locale: user.locale,
        discoverable: user.discoverable,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn basic(raw: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
        headers
    }

    #[test]
    fn basic_credentials_split_at_the_first_colon_and_normalise_the_email() {
        let credentials = credentials(&basic("Ada@Example.COM:pass:word")).unwrap();
        assert_eq!(credentials.email.as_str(), "ada@example.com");
        assert_eq!(credentials.password.expose(), "pass:word");
    }

    #[test]
    fn anything_but_basic_credentials_is_none() {
        assert!(credentials(&HeaderMap::new()).is_none());
        assert!(credentials(&basic("no-colon")).is_none());
        assert!(credentials(&basic("not-an-email:password")).is_none());
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert!(credentials(&bearer).is_none());
    }
}
