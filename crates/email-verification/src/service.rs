//! The `signup.email_verification.v1.EmailVerificationService` RPCs.

use chrono::Utc;
use platform::{
    grpc::{TracedChannel, database_status},
    token::Token,
};
use proto::{
    email_verification::v1::{
        BeginConfirmationRequest, BeginConfirmationResponse, BeginPasswordResetRequest, BeginPasswordResetResponse,
        ConfirmEmailRequest, ConfirmEmailResponse, ConsumePasswordResetRequest, ConsumePasswordResetResponse,
        ExportAccountRequest, ExportAccountResponse, ReleaseConfirmationRequest, ReleaseConfirmationResponse,
        RequestPasswordResetRequest, RequestPasswordResetResponse, ResendVerificationRequest,
        ResendVerificationResponse, SendAccountDeletedNoticeRequest, SendAccountDeletedNoticeResponse,
        email_verification_service_server::EmailVerificationService,
    },
    user_metadata::v1::{MarkEmailVerifiedRequest, user_metadata_service_client::UserMetadataServiceClient},
};
use sqlx::PgPool;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::{settings::Policy, store};

/// The one answer for a token that is unknown, used, dead or expired: which one is nobody's business.
const INVALID_TOKEN: &str = "the token is invalid, used or expired";

/// The RPC handlers, over the service's own database and user-metadata.
#[derive(Debug, Clone)]
pub(crate) struct Verifications {
    pub(crate) pool: PgPool,
    /// Where confirmed accounts are marked verified.
    pub(crate) users: UserMetadataServiceClient<TracedChannel>,
    pub(crate) policy: Policy,
}

#[tonic::async_trait]
impl EmailVerificationService for Verifications {
    /// Counts one confirm try against the token and its signup attempt (the attempt's confirms take turns, so
    /// concurrent ones cannot exceed the limits) and names the account and signup attempt it belongs to.
    #[tracing::instrument(skip_all, fields(user_id, signup_id))]
    async fn begin_confirmation(
        &self,
        request: Request<BeginConfirmationRequest>,
    ) -> Result<Response<BeginConfirmationResponse>, Status> {
        let token = token(&request.into_inner().token)?;
        let limits = (self.policy.confirm_attempts, self.policy.confirm_attempts_per_signup);
        let begun = store::begin_confirmation(&self.pool, &token, limits).await.map_err(database_status)?;
        let Some((user_id, signup_id)) = begun else {
            metrics::counter!("verifications_total", "outcome" => "invalid_token").increment(1);
            return Err(Status::failed_precondition(INVALID_TOKEN));
        };
        let span = tracing::Span::current();
        span.record("user_id", tracing::field::display(user_id));
        span.record("signup_id", tracing::field::display(signup_id));
        Ok(Response::new(BeginConfirmationResponse { user_id: user_id.to_string(), signup_id: signup_id.to_string() }))
    }

    #[tracing::instrument(skip_all)]
    async fn release_confirmation(
        &self,
        request: Request<ReleaseConfirmationRequest>,
    ) -> Result<Response<ReleaseConfirmationResponse>, Status> {
        let token = token(&request.into_inner().token)?;
        store::release_confirmation(&self.pool, &token).await.map_err(database_status)?;
        Ok(Response::new(ReleaseConfirmationResponse {}))
    }

    /// Checks the token is still valid for the attempt, has user-metadata mark the account verified through that
    /// attempt (idempotent; it broadcasts EmailVerified through its outbox once), and only then uses the token in
    /// a short transaction that also checks, under the row lock, that it is still unused. If user-metadata cannot
    /// be reached nothing is used and the link still works; of concurrent confirms with one token exactly one
    /// uses it. No database connection is held across the call to user-metadata.
    #[tracing::instrument(skip_all, fields(user_id, signup_id))]
    async fn confirm_email(
        &self,
        request: Request<ConfirmEmailRequest>,
    ) -> Result<Response<ConfirmEmailResponse>, Status> {
        let request = request.into_inner();
        let token = token(&request.token)?;
        let signup_id: Uuid =
            request.signup_id.parse().map_err(|_| Status::invalid_argument("signup_id must be a UUID"))?;
        tracing::Span::current().record("signup_id", tracing::field::display(signup_id));
        let Some(user_id) = store::valid_token(&self.pool, &token, signup_id).await.map_err(database_status)? else {
            metrics::counter!("verifications_total", "outcome" => "invalid_token").increment(1);
            return Err(Status::failed_precondition(INVALID_TOKEN));
        };
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        let verified_at = Utc::now();
        let timestamp = platform::time::to_proto(verified_at);
        self.mark_in_user_metadata(user_id, signup_id, timestamp).await?;
        if !store::consume(&self.pool, &token, user_id, signup_id, verified_at).await.map_err(database_status)? {
            // A concurrent confirm with the same token used it first.
            metrics::counter!("verifications_total", "outcome" => "invalid_token").increment(1);
            return Err(Status::failed_precondition(INVALID_TOKEN));
        }
        metrics::counter!("verifications_total", "outcome" => "verified").increment(1);
        tracing::info!("email verified");
        Ok(Response::new(ConfirmEmailResponse { user_id: user_id.to_string(), verified_at: Some(timestamp) }))
    }

    /// Queues a new verification mail for the named attempt of a pending account, within the address's mail
    /// budget. Unknown and verified addresses, attempts the account does not have and requests over the budget
    /// change nothing; the answer is the same for all.
    #[tracing::instrument(skip_all)]
    async fn resend_verification(
        &self,
        request: Request<ResendVerificationRequest>,
    ) -> Result<Response<ResendVerificationResponse>, Status> {
        let ResendVerificationRequest { email, client_hash, signup_id } = request.into_inner();
        let client_hash = asked(&email, client_hash)?;
        // Empty names no attempt (a signup-api of the release before, during a rollout): nothing is sent.
        let signup_id = platform::grpc::optional_uuid_argument("signup_id", &signup_id)?.unwrap_or_default();
        let mut tx = store::begin_alike(&self.pool).await.map_err(database_status)?;
        let (budget, tries) = (self.policy.budget, self.policy.confirm_attempts_per_signup);
        let queued =
            store::resend(&mut tx, (&email, &client_hash), signup_id, budget, tries).await.map_err(database_status)?;
        tx.commit().await.map_err(database_status)?;
        metrics::counter!("verification_resends_total", "outcome" => queued.label()).increment(1);
        if queued == store::Queued::OverBudget {
            metrics::counter!("mail_over_budget_total", "kind" => "resend").increment(1);
        }
        Ok(Response::new(ResendVerificationResponse {}))
    }

    /// Queues the "your account was deleted" mail, within the address's budget, tied to no user.
    #[tracing::instrument(skip_all)]
    async fn send_account_deleted_notice(
        &self,
        request: Request<SendAccountDeletedNoticeRequest>,
    ) -> Result<Response<SendAccountDeletedNoticeResponse>, Status> {
        let request = request.into_inner();
        if request.email.is_empty() || !request.email.contains('@') {
            return Err(Status::invalid_argument("email must be a normalised email address"));
        }
        let queued =
            store::account_deleted(&self.pool, &request.email, &request.locale).await.map_err(database_status)?;
        metrics::counter!("account_deleted_notices_total", "outcome" => queued.label()).increment(1);
        Ok(Response::new(SendAccountDeletedNoticeResponse {}))
    }

    /// Queues a reset mail for a verified account, a "sign up again" notice for a pending one, nothing otherwise;
    /// within the address's budget; the same answer for all.
    #[tracing::instrument(skip_all)]
    async fn request_password_reset(
        &self,
        request: Request<RequestPasswordResetRequest>,
    ) -> Result<Response<RequestPasswordResetResponse>, Status> {
        let RequestPasswordResetRequest { email, client_hash } = request.into_inner();
        let client_hash = asked(&email, client_hash)?;
        let mut tx = store::begin_alike(&self.pool).await.map_err(database_status)?;
        let queued = store::request_password_reset(&mut tx, &email, &client_hash, self.policy.budget)
            .await
            .map_err(database_status)?;
        tx.commit().await.map_err(database_status)?;
        metrics::counter!("password_reset_requests_total", "outcome" => queued.label()).increment(1);
        Ok(Response::new(RequestPasswordResetResponse {}))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn begin_password_reset(
        &self,
        request: Request<BeginPasswordResetRequest>,
    ) -> Result<Response<BeginPasswordResetResponse>, Status> {
        let invalid = || Status::failed_precondition(INVALID_TOKEN);
        let token = Token::parse(&request.into_inner().token).ok_or_else(invalid)?;
        let (user_id, email) =
            store::reset_account(&self.pool, &token).await.map_err(database_status)?.ok_or_else(invalid)?;
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        Ok(Response::new(BeginPasswordResetResponse { user_id: user_id.to_string(), email }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn consume_password_reset(
        &self,
        request: Request<ConsumePasswordResetRequest>,
    ) -> Result<Response<ConsumePasswordResetResponse>, Status> {
        let invalid = || Status::failed_precondition(INVALID_TOKEN);
        let token = Token::parse(&request.into_inner().token).ok_or_else(invalid)?;
        let (user_id, asked_at) =
            store::consume_reset(&self.pool, &token).await.map_err(database_status)?.ok_or_else(invalid)?;
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        metrics::counter!("password_resets_total").increment(1);
        let asked_at = Some(platform::time::to_proto(asked_at));
        Ok(Response::new(ConsumePasswordResetResponse { user_id: user_id.to_string(), asked_at }))
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

impl Verifications {
    async fn mark_in_user_metadata(
        &self,
        user_id: Uuid,
        signup_id: Uuid,
        verified_at: prost_types::Timestamp,
    ) -> Result<(), Status> {
        let request = MarkEmailVerifiedRequest {
            user_id: user_id.to_string(),
            verified_at: Some(verified_at),
            signup_id: signup_id.to_string(),
        };
        let Err(status) = self.users.clone().mark_email_verified(request).await else { return Ok(()) };
        tracing::warn!(code = ?status.code(), message = status.message(), "user-metadata did not mark the account");
        Err(match status.code() {
            _ if platform::grpc::is_unavailable(&status) => Status::unavailable("user-metadata is unavailable; retry"),
            // The account is gone (archived), or another attempt verified it: the link is dead.
            Code::NotFound | Code::FailedPrecondition => Status::failed_precondition(INVALID_TOKEN),
            _ => Status::internal("marking the account verified failed"),
        })
    }
}

fn token(presented: &str) -> Result<Token, Status> {
    Token::parse(presented).ok_or_else(|| Status::failed_precondition(INVALID_TOKEN))
}

/// The address and client of a request for mail: a normalised address, and an empty or 32-byte client hash.
fn asked(email: &str, client_hash: Vec<u8>) -> Result<Vec<u8>, Status> {
    if email.is_empty() || !email.contains('@') {
        return Err(Status::invalid_argument("email must be a normalised email address"));
    }
    platform::grpc::client_hash_argument(client_hash)
}
