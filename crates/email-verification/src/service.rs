//! The `signup.email_verification.v1.EmailVerificationService` RPCs.

use chrono::Utc;
use platform::grpc::{TracedChannel, database_status};
use proto::{
    email_verification::v1::{
        ConfirmEmailRequest, ConfirmEmailResponse, ResendVerificationRequest, ResendVerificationResponse,
        email_verification_service_server::EmailVerificationService,
    },
    user_metadata::v1::{MarkEmailVerifiedRequest, user_metadata_service_client::UserMetadataServiceClient},
};
use sqlx::PgPool;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::{
    mail::Kind,
    settings::Policy,
    store::{self, Token},
};

/// The one answer for a token that is unknown, used, superseded or expired: which one is nobody's business.
const INVALID_TOKEN: &str = "the token is invalid, used or expired";

/// The RPC handlers, over the service's own database and user-metadata.
#[derive(Debug, Clone)]
pub(crate) struct Verifications {
    pool: PgPool,
    users: UserMetadataServiceClient<TracedChannel>,
    policy: Policy,
}

impl Verifications {
    /// Handlers over `pool`, marking confirmed accounts verified through `users`.
    pub(crate) fn new(pool: PgPool, users: UserMetadataServiceClient<TracedChannel>, policy: Policy) -> Self {
        Self { pool, users, policy }
    }
}

#[tonic::async_trait]
impl EmailVerificationService for Verifications {
    /// Checks the token, has user-metadata mark the account verified (idempotent; it broadcasts EmailVerified
    /// through its outbox once), and only then uses the token in a short transaction that also checks, under the
    /// row lock, that it is still unused. If user-metadata cannot be reached nothing is used and the link still
    /// works; of concurrent confirms with one token exactly one uses it, the others get the invalid-token answer.
    /// No database connection is held across the call to user-metadata.
    #[tracing::instrument(skip_all, fields(user_id))]
    async fn confirm_email(
        &self,
        request: Request<ConfirmEmailRequest>,
    ) -> Result<Response<ConfirmEmailResponse>, Status> {
        let Some(token) = Token::parse(&request.into_inner().token) else {
            return Err(Status::failed_precondition(INVALID_TOKEN));
        };
        let Some(user_id) = store::valid_token(&self.pool, &token).await.map_err(database_status)? else {
            metrics::counter!("verifications_total", "outcome" => "invalid_token").increment(1);
            return Err(Status::failed_precondition(INVALID_TOKEN));
        };
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        let verified_at = Utc::now();
        let timestamp = platform::time::to_proto(verified_at);
        let request = MarkEmailVerifiedRequest { user_id: user_id.to_string(), verified_at: Some(timestamp) };
        if let Err(status) = self.users.clone().mark_email_verified(request).await {
            tracing::warn!(code = ?status.code(), message = status.message(), "user-metadata did not mark the account");
            return Err(match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled => {
                    Status::unavailable("user-metadata is unavailable; retry")
                }
                // The account is gone (archived) or not in a state that can be verified: the link is dead.
                Code::NotFound | Code::FailedPrecondition => Status::failed_precondition(INVALID_TOKEN),
                _ => Status::internal("marking the account verified failed"),
            });
        }
        if !store::consume(&self.pool, &token, user_id, verified_at).await.map_err(database_status)? {
            // A concurrent confirm with the same token used it first.
            metrics::counter!("verifications_total", "outcome" => "invalid_token").increment(1);
            return Err(Status::failed_precondition(INVALID_TOKEN));
        }
        metrics::counter!("verifications_total", "outcome" => "verified").increment(1);
        tracing::info!("email verified");
        Ok(Response::new(ConfirmEmailResponse { user_id: user_id.to_string(), verified_at: Some(timestamp) }))
    }

    /// Queues a new verification mail for a pending account, superseding the earlier ones, within the
    /// per-address limit. Unknown and verified addresses, and requests over the limit, change nothing; the
    /// answer is the same for all.
    #[tracing::instrument(skip_all)]
    async fn resend_verification(
        &self,
        request: Request<ResendVerificationRequest>,
    ) -> Result<Response<ResendVerificationResponse>, Status> {
        let email = request.into_inner().email;
        if email.is_empty() || !email.contains('@') {
            return Err(Status::invalid_argument("email must be a normalised email address"));
        }
        let mut tx = self.pool.begin().await.map_err(database_status)?;
        // The allowance is counted for every address, known or not, so the work (and the time it takes) does not
        // depend on whether an account exists, and probing is limited too.
        let (limit, window) = (self.policy.resend_limit, self.policy.resend_window);
        let allowed = store::within_limit(&mut tx, &email, "resend", limit, window).await.map_err(database_status)?;
        let account = store::pending_account(&mut tx, &email).await.map_err(database_status)?;
        let outcome = match (account, allowed) {
            (None, _) => "no_pending_account",
            (Some(account), false) => {
                tracing::info!(user_id = %account.user_id, "resend over the per-address limit; ignored");
                "rate_limited"
            }
            (Some(account), true) => {
                let mail_id = Uuid::now_v7();
                let (name, locale) = (&account.display_name, &account.locale);
                store::queue(&mut tx, mail_id, Kind::Verification, account.user_id, &email, name, locale)
                    .await
                    .map_err(database_status)?;
                store::supersede(&mut tx, account.user_id, mail_id).await.map_err(database_status)?;
                tracing::info!(user_id = %account.user_id, %mail_id, "verification mail queued again");
                "queued"
            }
        };
        tx.commit().await.map_err(database_status)?;
        metrics::counter!("verification_resends_total", "outcome" => outcome).increment(1);
        Ok(Response::new(ResendVerificationResponse {}))
    }
}
