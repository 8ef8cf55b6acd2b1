//! `GET /v1/me/friend-suggestions`: people the caller may know, from the contacts uploaded at signup, for a
//! session. Only a verified account may ask: "has you in their contacts" is about the caller's email, so the caller
//! must have proven it is theirs. A suggestion says who and why, and nothing that depends on non-members; each
//! account gets a bounded number of suggestions a day.
//!
//! Nothing in a page names another member the way the system does: a user id is a UUID v7, whose first 48 bits
//! are the moment that person first signed up, and it is the same for every viewer. So a suggestion's `id` is a
//! keyed hash of the viewer and the suggested member (stable for this viewer, unlinkable across viewers), and the
//! page token friend-discovery returns (which holds the last member's id) is sealed with ChaCha20-Poly1305 and
//! bound to the viewer. Both keys derive from `IDEMPOTENCY_FINGERPRINT_KEY`; rotating it renumbers suggestions and
//! ends the page tokens outstanding, nothing more.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
    http::HeaderMap,
    response::Response,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use proto::{
    friend_discovery::v1::{GetSuggestionsRequest, GetSuggestionsResponse, SuggestionReason},
    user_metadata::v1::UserStatus,
};
use ring::{
    aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom as _, SystemRandom},
};
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::{contacts::KeyedHasher, error::ApiError, startup::AppState};

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
    /// The same for this person in every page you get, and different in anyone else's: not their user id.
    #[schema(example = "3q2-7wP0kX1n9dGxQe8aZg")]
    id: String,
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
    let viewer = user.user_id;
    let page_token = match query.page_token.as_deref() {
        None | Some("") => String::new(),
        Some(sealed) => state.suggestion_seal.open(&viewer, sealed).ok_or_else(invalid_page_token)?,
    };
    let request = GetSuggestionsRequest { user_id: viewer.clone(), limit, page_token };
    let page =
        state.upstreams.friends.clone().get_suggestions(request).await.map_err(|status| match status.code() {
            Code::InvalidArgument => invalid_page_token(),
            Code::ResourceExhausted => ApiError::SuggestionBudgetUsed { retry_after_secs: secs_to_utc_midnight() },
            _ => ApiError::from_status("friend-discovery", &status),
        })?;
    let page = SuggestionsPage::new(page.into_inner(), &viewer, &state.suggestion_seal)?;
    Ok(crate::me::private(Json(page)))
}

fn invalid_page_token() -> ApiError {
    ApiError::Malformed("page_token is not valid".to_owned())
}

/// The keys a page of suggestions is shown under: one that names each suggested member for one viewer, and one
/// that seals friend-discovery's page token for that viewer.
#[derive(Debug)]
pub(crate) struct SuggestionSeal {
    ids: KeyedHasher,
    tokens: LessSafeKey,
    random: SystemRandom,
}

impl SuggestionSeal {
    /// Both keys, derived from `fingerprints` (its HMAC, each under a label of its own).
    pub(crate) fn new(fingerprints: &KeyedHasher) -> anyhow::Result<Self> {
        let key = fingerprints.mac(b"signup-api suggestion page token v1\0", b"");
        let key = UnboundKey::new(&CHACHA20_POLY1305, &key)
            .map_err(|_| anyhow::anyhow!("a ChaCha20-Poly1305 key is 32 bytes"))?;
        Ok(Self { ids: fingerprints.clone(), tokens: LessSafeKey::new(key), random: SystemRandom::new() })
    }

    /// How `viewer` sees `member`: 128 bits of a keyed hash of both.
    fn id(&self, viewer: &str, member: &str) -> String {
        let mac = self.ids.mac(b"signup-api suggestion id v1\0", format!("{viewer}\0{member}").as_bytes());
        URL_SAFE_NO_PAD.encode(&mac[..16])
    }

    /// friend-discovery's `token`, sealed for `viewer`: a random nonce, then the ciphertext and its tag.
    fn seal(&self, viewer: &str, token: &str) -> Result<String, ApiError> {
        let failed = || ApiError::Internal(anyhow::anyhow!("sealing a page token failed"));
        let mut nonce = [0_u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| failed())?;
        let mut sealed = token.as_bytes().to_vec();
        let aad = Aad::from(viewer.as_bytes());
        self.tokens
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad, &mut sealed)
            .map_err(|_| failed())?;
        Ok(URL_SAFE_NO_PAD.encode([&nonce[..], &sealed].concat()))
    }

    /// The token `viewer` was given, or `None` when it is not one sealed for them under this key.
    fn open(&self, viewer: &str, sealed: &str) -> Option<String> {
        let mut bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let mut in_out = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).ok()?;
        let plain = self.tokens.open_in_place(nonce, Aad::from(viewer.as_bytes()), &mut in_out).ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

impl SuggestionsPage {
    /// friend-discovery's page as `viewer` is shown it.
    fn new(page: GetSuggestionsResponse, viewer: &str, seal: &SuggestionSeal) -> Result<Self, ApiError> {
        let suggestions = page
            .suggestions
            .into_iter()
            .map(|s| FriendSuggestion {
                reason: match s.reason() {
                    SuggestionReason::Mutual => "mutual",
                    SuggestionReason::InYourContacts => "in_your_contacts",
                    _ => "has_you_in_contacts",
                },
                id: seal.id(viewer, &s.user_id),
                display_name: s.display_name,
            })
            .collect();
        let next_page_token = match page.next_page_token.as_str() {
            "" => None,
            token => Some(seal.seal(viewer, token)?),
        };
        Ok(Self { suggestions, next_page_token })
    }
}

/// Seconds until the daily budget renews.
fn secs_to_utc_midnight() -> u64 {
    let now = chrono::Utc::now();
    let next = now.date_naive().succ_opt().and_then(|day| day.and_hms_opt(0, 0, 0)).map(|t| t.and_utc());
    next.map_or(3600, |next| u64::try_from((next - now).num_seconds()).unwrap_or(3600).max(1))
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn seal(key: &str) -> anyhow::Result<SuggestionSeal> {
        SuggestionSeal::new(&KeyedHasher::new(SecretString::from(key)))
    }

    #[test]
    fn a_sealed_token_opens_only_for_its_viewer_under_its_key_and_untouched() -> anyhow::Result<()> {
        let (ours, theirs) =
            (seal("a key of at least thirty-two bytes, one")?, seal("a key of at least thirty-two bytes, two")?);
        let sealed = ours.seal("u", "djIuMC4w").map_err(|_| anyhow::anyhow!("sealing failed"))?;
        assert_eq!(ours.open("u", &sealed).as_deref(), Some("djIuMC4w"));
        assert_ne!(ours.seal("u", "djIuMC4w").ok(), Some(sealed.clone()), "a fresh nonce each time");
        assert_eq!(ours.open("v", &sealed), None, "another viewer");
        assert_eq!(theirs.open("u", &sealed), None, "another key");
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed)?;
        bytes[NONCE_LEN] ^= 1;
        assert_eq!(ours.open("u", &URL_SAFE_NO_PAD.encode(&bytes)), None, "a flipped bit");
        assert_eq!(ours.open("u", "c2hvcnQ"), None, "shorter than a nonce");
        assert_eq!(ours.id("u", "m"), ours.id("u", "m"));
        assert_ne!(ours.id("u", "m"), ours.id("v", "m"));
        Ok(())
    }
}
