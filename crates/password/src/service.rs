//! The `signup.password.v1.PasswordService` RPCs.

use proto::password::v1::{
    BurnPasswordHashRequest, BurnPasswordHashResponse, DeletePasswordRequest, DeletePasswordResponse,
    SetPasswordRequest, SetPasswordResponse, VerifyPasswordRequest, VerifyPasswordResponse,
    password_service_server::PasswordService,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

/// The RPC handlers, over the service's own database.
#[derive(Debug, Clone)]
pub(crate) struct Passwords {
    #[allow(dead_code, reason = "used by the credential RPCs of the signup issue")]
    pool: PgPool,
}

impl Passwords {
    /// Handlers over `pool`.
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[tonic::async_trait]
impl PasswordService for Passwords {
    async fn set_password(&self, _: Request<SetPasswordRequest>) -> Result<Response<SetPasswordResponse>, Status> {
        Err(Status::unimplemented("SetPassword is not implemented yet"))
    }

    async fn burn_password_hash(
        &self,
        _: Request<BurnPasswordHashRequest>,
    ) -> Result<Response<BurnPasswordHashResponse>, Status> {
        Err(Status::unimplemented("BurnPasswordHash is not implemented yet"))
    }

    async fn verify_password(
        &self,
        _: Request<VerifyPasswordRequest>,
    ) -> Result<Response<VerifyPasswordResponse>, Status> {
        Err(Status::unimplemented("VerifyPassword is not implemented yet"))
    }

    async fn delete_password(
        &self,
        _: Request<DeletePasswordRequest>,
    ) -> Result<Response<DeletePasswordResponse>, Status> {
        Err(Status::unimplemented("DeletePassword is not implemented yet"))
    }
}
