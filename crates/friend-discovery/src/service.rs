//! The `signup.friend_discovery.v1.FriendDiscoveryService` RPCs.

use base64::Engine as _;
use platform::grpc::database_status;
use proto::friend_discovery::v1::{
    ExportAccountRequest, ExportAccountResponse, GetSuggestionsRequest, GetSuggestionsResponse, Suggestion,
    SuggestionReason, friend_discovery_service_server::FriendDiscoveryService,
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
    pub(crate) pool: PgPool,
    /// Suggestions each asker is served a day, at most.
    pub(crate) per_day: i32,
    /// `SUGGESTION_SOURCES`: the newest members who have the asker and may be shown, matched per page.
    pub(crate) sources: i64,
}

#[tonic::async_trait]
impl FriendDiscoveryService for Suggestions {
    #[tracing::instrument(skip_all, fields(user_id))]
    async fn get_suggestions(
        &self,
        request: Request<GetSuggestionsRequest>,
    ) -> Result<Response<GetSuggestionsResponse>, Status> {
        let (user_id, limit, after) = parse(&request.into_inner())?;
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        let mut tx = self.pool.begin().await.map_err(database_status)?;
        let left = store::budget_left(&mut tx, user_id, self.per_day).await.map_err(database_status)?;
        if left == 0 {
            metrics::counter!("suggestion_budget_exhausted_total").increment(1);
            return Err(Status::resource_exhausted("today's suggestions for this user are used up; retry tomorrow"));
        }
        let limit = limit.min(u32::try_from(left).unwrap_or(0));
        // One more than asked tells whether another page follows.
        let mut rows = store::suggestions(&mut tx, user_id, (after, i64::from(limit) + 1), self.sources)
            .await
            .map_err(database_status)?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let served = i32::try_from(rows.len()).unwrap_or(i32::MAX);
        store::charge(&mut tx, user_id, served).await.map_err(database_status)?;
        tx.commit().await.map_err(database_status)?;
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => encode(last.cursor()),
            _ => String::new(),
        };
        let suggestions = rows.into_iter().map(Suggestion::from).collect();
        Ok(Response::new(GetSuggestionsResponse { suggestions, next_page_token }))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn export_account(
        &self,
        request: Request<ExportAccountRequest>,
    ) -> Result<Response<ExportAccountResponse>, Status> {
        let user_id = platform::grpc::uuid_argument("user_id", &request.into_inner().user_id)?;
        Ok(Response::new(store::export(&self.pool, user_id).await.map_err(database_status)?))
    }
}

/// The asker, the page size and where the page starts.
fn parse(request: &GetSuggestionsRequest) -> Result<(Uuid, u32, Option<Cursor>), Status> {
    let user_id = platform::grpc::uuid_argument("user_id", &request.user_id)?;
    let limit = match request.limit {
        0 => DEFAULT_LIMIT,
        n if n <= MAX_LIMIT => n,
        _ => return Err(Status::invalid_argument(format!("limit must be between 1 and {MAX_LIMIT}"))),
    };
    let after = match request.page_token.as_str() {
        "" => None,
        token => Some(decode(token).ok_or_else(|| Status::invalid_argument("page_token is not valid"))?),
    };
    Ok((user_id, limit, after))
}

impl From<store::Suggestion> for Suggestion {
    fn from(row: store::Suggestion) -> Self {
        let reason = match (row.in_yours, row.has_you) {
            (true, true) => SuggestionReason::Mutual,
            (true, false) => SuggestionReason::InYourContacts,
            _ => SuggestionReason::HasYouInContacts,
        };
        Self { user_id: row.user_id.to_string(), display_name: row.display_name, reason: reason.into() }
    }
}

/// The cursor as an opaque token: base64url of `v2.<mutual>.<user id>`.
fn encode(cursor: Cursor) -> String {
    let plain = format!("v2.{}.{}", u8::from(cursor.mutual), cursor.user_id.simple());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(plain)
}

fn decode(token: &str) -> Option<Cursor> {
    let plain = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let plain = String::from_utf8(plain).ok()?;
    let mut parts = plain.split('.');
    if parts.next()? != "v2" {
        return None;
    }
    let mutual = match parts.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let user_id = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(Cursor { mutual, user_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let cursor = Cursor { mutual: true, user_id: Uuid::now_v7() };
        assert_eq!(decode(&encode(cursor)), Some(cursor));
        assert_eq!(decode("not a token"), None);
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v2.2.x");
        assert_eq!(decode(&forged), None);
    }
}
