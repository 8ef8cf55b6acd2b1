//! The signed-in caller: `Authorization: Bearer <session token>`, checked by the password service with one keyed
//! lookup (no password hashing per request) and remembered for a moment ([`SessionCache`]). Anything else is one
//! `401`.

mod cache;

pub(crate) use cache::SessionCache;

use axum::http::{HeaderMap, header};
use platform::token;
use proto::{
    password::v1::AuthenticateSessionRequest,
    user_metadata::v1::{GetUserRequest, User},
};
use tonic::Code;

use crate::{error::ApiError, startup::AppState};

/// A live session: its bearer token and the account it belongs to.
pub(crate) struct Session {
    pub(crate) token: String,
    pub(crate) user_id: String,
}

/// The token is a secret: it is never printed, whatever prints a session.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("token", &"<redacted>").field("user_id", &self.user_id).finish()
    }
}

/// The session the request's bearer token opens, or `Unauthorized` (no token, a malformed one, or one that is
/// unknown, revoked or expired).
pub(crate) async fn session(state: &AppState, headers: &HeaderMap) -> Result<Session, ApiError> {
    let token = bearer(headers).ok_or(ApiError::Unauthorized)?;
    let user_id = match state.sessions.user_id(&token) {
        Some(user_id) => {
            metrics::counter!("session_checks_total", "source" => "remembered").increment(1);
            user_id
        }
        None => {
            metrics::counter!("session_checks_total", "source" => "password").increment(1);
            checked(state, &token).await?
        }
    };
    tracing::Span::current().record("user_id", user_id.as_str());
    Ok(Session { token, user_id })
}

/// Asks the password service whose session `token` opens, and remembers the answer. A session an earlier release
/// opened with an unverified account's signup attempt is refused: only a verified account signs in.
async fn checked(state: &AppState, token: &str) -> Result<String, ApiError> {
    let began = state.sessions.check_begins();
    let request = AuthenticateSessionRequest { token: token.to_owned() };
    let response = match state.upstreams.passwords.clone().authenticate_session(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == Code::Unauthenticated => return Err(ApiError::Unauthorized),
        Err(status) => return Err(ApiError::from_status("password", &status)),
    };
    if response.attempt_bound {
        return Err(ApiError::Unauthorized);
    }
    let ends = platform::time::from_proto(response.idle_expires_at).unwrap_or_else(chrono::Utc::now);
    let lasts = (ends - chrono::Utc::now()).to_std().unwrap_or_default();
    state.sessions.remember(began, token, &response.user_id, lasts);
    Ok(response.user_id)
}

/// The signed-in account itself. A session whose account is gone is no session.
pub(crate) async fn user(state: &AppState, headers: &HeaderMap) -> Result<(Session, User), ApiError> {
    let session = session(state, headers).await?;
    let request = GetUserRequest { user_id: session.user_id.clone() };
    match state.upstreams.users.clone().get_user(request).await {
        Ok(response) => {
            let user = response.into_inner().user.ok_or(ApiError::Unauthorized)?;
            Ok((session, user))
        }
        Err(status) if status.code() == Code::NotFound => Err(ApiError::Unauthorized),
        Err(status) => Err(ApiError::from_status("user-metadata", &status)),
    }
}

/// The signed-in account's email, as its keyed hash and the password policy need it.
pub(crate) fn email(user: &User) -> crate::domain::email::Email {
    crate::domain::email::Email::stored(user.email.clone())
}

/// The token of `Authorization: Bearer <token>`, if it has the shape of one we issue.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && token::shaped(token)).then(|| token.to_owned())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_a_bearer_token_of_our_shape_is_taken() {
        let token = "A".repeat(43);
        assert_eq!(bearer(&authorization(&format!("Bearer {token}"))), Some(token.clone()));
        assert_eq!(bearer(&authorization(&format!("bearer  {token} "))), Some(token.clone()));
        assert_eq!(bearer(&HeaderMap::new()), None);
        assert_eq!(bearer(&authorization("Basic YWRhOnBhc3N3b3Jk")), None);
        assert_eq!(bearer(&authorization("Bearer too-short")), None);
        assert_eq!(bearer(&authorization(&format!("Token {token}"))), None);
    }
}
