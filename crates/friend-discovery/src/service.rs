//! The `signup.friend_discovery.v1.FriendDiscoveryService` RPCs.

use base64::Engine as _;
use platform::grpc::database_status;
use proto::friend_discovery::v1::{
    GetSuggestionsRequest, GetSuggestionsResponse, Suggestion, SuggestionReason,
    friend_discovery_service_server::FriendDiscoveryService,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::store::{self, Cursor};

/// Suggestions per page when the caller does not say.
const DEFAULT_LIMIT: u32 = 20;
/// The most suggestions one page may hold.
const MAX_LIMIT: u32 = 100;

/// The RPC handlers, over the service's own database.
#[derive(Debug, Clone)]
pub(crate) struct Suggestions {
    pool: PgPool,
}

impl Suggestions {
    /// Handlers over `pool`.
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[tonic::async_trait]
impl FriendDiscoveryService for Suggestions {
    #[tracing::instrument(skip_all, fields(user_id))]
    async fn get_suggestions(
        &self,
        request: Request<GetSuggestionsRequest>,
    ) -> Result<Response<GetSuggestionsResponse>, Status> {
        let request = request.into_inner();
        let user_id: Uuid = request.user_id.parse().map_err(|_| Status::invalid_argument("user_id must be a UUID"))?;
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        let limit = match request.limit {
            0 => DEFAULT_LIMIT,
            n if n <= MAX_LIMIT => n,
            _ => return Err(Status::invalid_argument(format!("limit must be between 1 and {MAX_LIMIT}"))),
        };
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(decode(token).ok_or_else(|| Status::invalid_argument("page_token is not valid"))?),
        };
        // One more than asked tells whether another page follows.
        let mut rows =
            store::suggestions(&self.pool, user_id, after, i64::from(limit) + 1).await.map_err(database_status)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => encode(last.cursor()),
            _ => String::new(),
        };
        let suggestions = rows
            .into_iter()
            .map(|row| Suggestion {
                user_id: row.user_id.to_string(),
                display_name: row.display_name,
                reason: match (row.in_yours, row.has_you) {
                    (true, true) => SuggestionReason::Mutual,
                    (true, false) => SuggestionReason::InYourContacts,
                    _ => SuggestionReason::HasYouInContacts,
                }
                .into(),
                shared_contacts: u32::try_from(row.shared).unwrap_or(0),
            })
            .collect();
        Ok(Response::new(GetSuggestionsResponse { suggestions, next_page_token }))
    }
}

/// The cursor as an opaque token: base64url of `v1.<mutual>.<shared>.<user id>`.
fn encode(cursor: Cursor) -> String {
    let plain = format!("v1.{}.{}.{}", u8::from(cursor.mutual), cursor.shared, cursor.user_id.simple());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(plain)
}

fn decode(token: &str) -> Option<Cursor> {
    let plain = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let plain = String::from_utf8(plain).ok()?;
    let mut parts = plain.split('.');
    if parts.next()? != "v1" {
        return None;
    }
    let mutual = match parts.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let shared = parts.next()?.parse().ok().filter(|n: &i32| *n >= 0)?;
    let user_id = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(Cursor { mutual, shared, user_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let cursor = Cursor { mutual: true, shared: 7, user_id: Uuid::now_v7() };
        assert_eq!(decode(&encode(cursor)), Some(cursor));
        assert_eq!(decode("not a token"), None);
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v1.2.7.x");
        assert_eq!(decode(&forged), None);
    }
}
