//! `GET /v1/me/friend-suggestions`: people the caller may know, from the contacts uploaded at signup, for a
//! session. Only a verified account may ask: "has you in their contacts" is about the caller's email, so the caller
//! must have proven it is theirs. A suggestion says who and why, and nothing that depends on non-members; each
//! account gets a bounded number of suggestions a day.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
    http::HeaderMap,
    response::Response,
};
use proto::{
    friend_discovery::v1::{GetSuggestionsRequest, GetSuggestionsResponse, SuggestionReason},
    user_metadata::v1::UserStatus,
};
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::{error::ApiError, startup::AppState};

/// The most suggestions one page holds.
pub(crate) const MAX_LIMIT: u32 = 100;

/// The page to return.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Suggestions per page, 1 to 100 (default 20).
    limit: Option<u32>,
    /// `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// A page of suggestions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SuggestionsPage {
    /// Mutual first, then newest.
    suggestions: Vec<FriendSuggestion>,
    /// Pass as `page_token` for the next page; null on the last page.
    next_page_token: Option<String>,
}

/// Someone the caller may know.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct FriendSuggestion {
    user_id: String,
    display_name: String,
    /// `mutual`, `in_your_contacts` or `has_you_in_contacts`.
    #[schema(example = "mutual")]
    reason: &'static str,
}

/// Returns the caller's suggestions, one page at a time.
#[utoipa::path(
    get,
    path = "/v1/me/friend-suggestions",
    tag = "account",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of suggestions", body = SuggestionsPage,
            headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "A malformed limit or page token", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No session, or one that is unknown, revoked or expired", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The email is not verified yet", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Today's suggestions for this account are used up, or this client's budget is; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id))]
pub(crate) async fn suggestions(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::Malformed("limit must be a number".to_owned()))?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Malformed(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let (_, user) = crate::auth::user(&state, &headers).await?;
    if user.status() != UserStatus::Verified {
        return Err(ApiError::NotVerified);
    }
    let request =
        GetSuggestionsRequest { user_id: user.user_id, limit, page_token: query.page_token.unwrap_or_default() };
    let page =
        state.upstreams.friends.clone().get_suggestions(request).await.map_err(|status| match status.code() {
            Code::InvalidArgument => ApiError::Malformed("page_token is not valid".to_owned()),
            Code::ResourceExhausted => ApiError::SuggestionBudgetUsed { retry_after_secs: secs_to_utc_midnight() },
            _ => ApiError::from_status("friend-discovery", &status),
        })?;
    Ok(crate::me::private(Json(SuggestionsPage::from(page.into_inner()))))
}

impl From<GetSuggestionsResponse> for SuggestionsPage {
    fn from(page: GetSuggestionsResponse) -> Self {
        let suggestions = page
            .suggestions
            .into_iter()
            .map(|s| FriendSuggestion {
                reason: match s.reason() {
                    SuggestionReason::Mutual => "mutual",
                    SuggestionReason::InYourContacts => "in_your_contacts",
                    _ => "has_you_in_contacts",
                },
                user_id: s.user_id,
                display_name: s.display_name,
            })
            .collect();
        Self { suggestions, next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()) }
    }
}

/// Seconds until the daily budget renews.
fn secs_to_utc_midnight() -> u64 {
    let now = chrono::Utc::now();
    let next = now.date_naive().succ_opt().and_then(|day| day.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
    next.map_or(3600, |next| u64::try_from((next - now).num_seconds()).unwrap_or(3600).max(1))
}
