//! The `signup.email_verification.v1.EmailVerificationService` RPCs.

use proto::email_verification::v1::{
    ConfirmEmailRequest, ConfirmEmailResponse, ResendVerificationRequest, ResendVerificationResponse,
    email_verification_service_server::EmailVerificationService,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

/// The RPC handlers, over the service's own database.
#[derive(Debug, Clone)]
pub(crate) struct Verifications {
    #[allow(dead_code, reason = "used by the verification RPCs of the email-verification issue")]
    pool: PgPool,
}

impl Verifications {
    /// Handlers over `pool`.
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[tonic::async_trait]
impl EmailVerificationService for Verifications {
    async fn confirm_email(&self, _: Request<ConfirmEmailRequest>) -> Result<Response<ConfirmEmailResponse>, Status> {
        Err(Status::unimplemented("ConfirmEmail is not implemented yet"))
    }

    async fn resend_verification(
        &self,
        _: Request<ResendVerificationRequest>,
    ) -> Result<Response<ResendVerificationResponse>, Status> {
        Err(Status::unimplemented("ResendVerification is not implemented yet"))
    }
}
