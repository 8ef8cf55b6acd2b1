//! The signed-in account: `GET /v1/me` reads it, `PATCH /v1/me` changes what its owner may change. Both take a
//! session (`Authorization: Bearer`), and both answers carry `Cache-Control: no-store`.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use proto::user_metadata::v1::{UpdateProfileRequest, User, UserStatus};
use serde::Serialize;
use serde_json::{Map, Value};
use tonic::Code;

use crate::{
    domain::signup::{FieldError, optional_bool, unknown_fields},
    error::ApiError,
    extract::JsonObject,
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

/// What `PATCH /v1/me` may change (documentation; the handler parses it field by field).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the request body for the OpenAPI document")]
pub(crate) struct ProfileChange {
    /// Whether others may be suggested this user; takes effect in everyone's suggestions within seconds.
    discoverable: Option<bool>,
}

/// Returns the profile of the signed-in account.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile", body = Profile,
            headers(("Cache-Control" = String, description = "no-store"))),
        (status = 401, description = "No session, or one that is unknown, revoked or expired", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "Bearer realm=\"signup\""))),
        (status = 429, description = "This client's budget is used; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down or saturated; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id))]
pub(crate) async fn get(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let result = crate::auth::user(&state, &headers).await.map(|(_, user)| user);
    let outcome = match &result {
        Ok(_) => "ok",
        Err(ApiError::Unauthorized) => "unauthorized",
        Err(_) => "failed",
    };
    metrics::counter!("me_requests_total", "outcome" => outcome).increment(1);
    result.map(|user| private(Json(to_profile(user))))
}

/// Changes the signed-in account's settings. Only a verified account has any: its email is proven to be its own.
#[utoipa::path(
    patch,
    path = "/v1/me",
    tag = "account",
    security(("bearer" = [])),
    request_body(content = ProfileChange, content_type = "application/json"),
    responses(
        (status = 200, description = "The profile as changed", body = Profile,
            headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Malformed JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No session, or one that is unknown, revoked or expired", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The email is not verified yet", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown or malformed fields", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "This client's budget is used; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id))]
pub(crate) async fn patch(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let discoverable = parse_change(&body).map_err(ApiError::Invalid)?;
    let session = crate::auth::session(&state, &headers).await?;
    let request = UpdateProfileRequest { user_id: session.user_id, discoverable };
    let response =
        state.upstreams.users.clone().update_profile(request).await.map_err(|status| match status.code() {
            Code::FailedPrecondition => ApiError::NotVerified,
            Code::NotFound => ApiError::Unauthorized,
            _ => ApiError::from_status("user-metadata", &status),
        })?;
    let user = response.into_inner().user.ok_or(ApiError::Unauthorized)?;
    Ok(private(Json(to_profile(user))))
}

/// An answer about one person: never stored by a cache on the way.
pub(crate) fn private(body: impl IntoResponse) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], body).into_response()
}

fn parse_change(body: &Map<String, Value>) -> Result<Option<bool>, Vec<FieldError>> {
    let mut errors = unknown_fields(body, &["discoverable"], "is not a field you can change");
    let discoverable = optional_bool(body, "discoverable", &mut errors);
    if errors.is_empty() { Ok(discoverable) } else { Err(errors) }
}

pub(crate) fn to_profile(user: User) -> Profile {
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
