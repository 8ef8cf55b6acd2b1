//! The `signup.friend_discovery.v1.FriendDiscoveryService` RPCs.

use proto::friend_discovery::v1::{
    GetSuggestionsRequest, GetSuggestionsResponse, friend_discovery_service_server::FriendDiscoveryService,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

/// The RPC handlers, over the service's own database.
#[derive(Debug, Clone)]
pub(crate) struct Suggestions {
    #[allow(dead_code, reason = "used by the suggestion RPC of the friend-discovery issue")]
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
    async fn get_suggestions(
        &self,
        _: Request<GetSuggestionsRequest>,
    ) -> Result<Response<GetSuggestionsResponse>, Status> {
        Err(Status::unimplemented("GetSuggestions is not implemented yet"))
    }
}
