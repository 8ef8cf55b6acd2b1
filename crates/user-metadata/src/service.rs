//! The `signup.user_metadata.v1.UserMetadataService` RPCs.

use proto::user_metadata::v1::{
    CompleteSignupRequest, CompleteSignupResponse, GetUserByEmailRequest, GetUserRequest, GetUserResponse,
    MarkEmailVerifiedRequest, MarkEmailVerifiedResponse, RegisterSignupRequest, RegisterSignupResponse,
    user_metadata_service_server::UserMetadataService,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

/// The RPC handlers, over the service's own database.
#[derive(Debug, Clone)]
pub(crate) struct Users {
    #[allow(dead_code, reason = "used by the user RPCs of the signup issue")]
    pool: PgPool,
}

impl Users {
    /// Handlers over `pool`.
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[tonic::async_trait]
impl UserMetadataService for Users {
    async fn register_signup(
        &self,
        _: Request<RegisterSignupRequest>,
    ) -> Result<Response<RegisterSignupResponse>, Status> {
        Err(Status::unimplemented("RegisterSignup is not implemented yet"))
    }

    async fn complete_signup(
        &self,
        _: Request<CompleteSignupRequest>,
    ) -> Result<Response<CompleteSignupResponse>, Status> {
        Err(Status::unimplemented("CompleteSignup is not implemented yet"))
    }

    async fn get_user(&self, _: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        Err(Status::unimplemented("GetUser is not implemented yet"))
    }

    async fn get_user_by_email(&self, _: Request<GetUserByEmailRequest>) -> Result<Response<GetUserResponse>, Status> {
        Err(Status::unimplemented("GetUserByEmail is not implemented yet"))
    }

    async fn mark_email_verified(
        &self,
        _: Request<MarkEmailVerifiedRequest>,
    ) -> Result<Response<MarkEmailVerifiedResponse>, Status> {
        Err(Status::unimplemented("MarkEmailVerified is not implemented yet"))
    }
}
