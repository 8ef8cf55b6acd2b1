//! The `signup.user_metadata.v1.UserMetadataService` RPCs: wire types become domain values here, and store
//! errors become gRPC statuses.

use chrono::Utc;
use platform::grpc::uuid_argument as uuid;
use proto::user_metadata::v1::{
    DeleteUserRequest, DeleteUserResponse, GetSignupStatsRequest, GetSignupStatsResponse, GetUserByEmailRequest,
    GetUserRequest, GetUserResponse, MarkEmailVerifiedRequest, MarkEmailVerifiedResponse, RegisterSignupRequest,
    RegisterSignupResponse, UpdateProfileRequest, UpdateProfileResponse, User as WireUser, UserStatus,
    user_metadata_service_server::UserMetadataService,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::{
    cache::UserCache,
    events::{self, Attempt},
    store::{self, AttemptLimit, Idempotency, NewSignup, Profile, Registered, StoreError, User},
};

/// Longest accepted idempotency key, display name and locale; signup-api enforces tighter limits.
const MAX_KEY: usize = 255;
const MAX_TEXT: usize = 1024;

/// The RPC handlers, over the service's own database.
#[derive(Debug, Clone)]
pub(crate) struct Users {
    pub(crate) pool: PgPool,
    /// How long an idempotency key is remembered.
    pub(crate) key_ttl: std::time::Duration,
    /// How many signup attempts a pending account takes.
    pub(crate) attempts: AttemptLimit,
    /// The users `GetUser` read, kept true by `users_changed`; every write here forgets its user at once.
    pub(crate) cache: UserCache,
}

#[tonic::async_trait]
impl UserMetadataService for Users {
    #[tracing::instrument(skip_all, fields(user_id, signup_id, outcome))]
    async fn register_signup(
        &self,
        request: Request<RegisterSignupRequest>,
    ) -> Result<Response<RegisterSignupResponse>, Status> {
        let request = request.into_inner();
        let signup_id = uuid("signup_id", &request.signup_id)?;
        let signup = NewSignup {
            email: non_empty("email", request.email)?,
            signup_id,
            profile: Profile {
                display_name: non_empty("display_name", request.display_name)?,
                locale: bounded("locale", request.locale)?,
                discoverable: request.discoverable,
            },
            idempotency: idempotency(request.idempotency_key, request.request_fingerprint)?,
            key_ttl: self.key_ttl,
            attempts: self.attempts,
            client_hash: platform::grpc::client_hash_argument(request.client_hash)?,
        };
        let attempt = Attempt {
            signup_id,
            contacts: request.contact_hashes,
            email_hash: request.email_hash,
            client_hash: signup.client_hash.clone(),
        };
        let announce =
            |user: &User, profile: &Profile, existing: bool| events::signup(user, profile, existing, &attempt);
        let registered = store::register(&self.pool, &signup, &announce).await.map_err(status)?;
        let response = record_outcome(&registered, signup_id);
        self.cache.forget(response.user_id);
        Ok(Response::new(response.into()))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        let user_id = uuid("user_id", &request.into_inner().user_id)?;
        let user = self.cache.user(&self.pool, user_id).await.map_err(status)?;
        Ok(Response::new(GetUserResponse { user: Some(wire(&user)) }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_user_by_email(
        &self,
        request: Request<GetUserByEmailRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let email = non_empty("email", request.into_inner().email)?;
        let user = store::by_email(&self.pool, &email).await.map_err(status)?;
        Ok(Response::new(GetUserResponse { user: Some(wire(&user)) }))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id, signup_id = %request.get_ref().signup_id))]
    async fn mark_email_verified(
        &self,
        request: Request<MarkEmailVerifiedRequest>,
    ) -> Result<Response<MarkEmailVerifiedResponse>, Status> {
        let request = request.into_inner();
        let user_id = uuid("user_id", &request.user_id)?;
        let signup_id = uuid("signup_id", &request.signup_id)?;
        let verified_at = platform::time::from_proto(request.verified_at).unwrap_or_else(Utc::now);
        let user = store::mark_verified(&self.pool, user_id, signup_id, verified_at, events::verified).await;
        self.cache.forget(user_id);
        let user = user.map_err(status)?;
        Ok(Response::new(MarkEmailVerifiedResponse { user: Some(wire(&user)) }))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn update_profile(
        &self,
        request: Request<UpdateProfileRequest>,
    ) -> Result<Response<UpdateProfileResponse>, Status> {
        let request = request.into_inner();
        let user_id = uuid("user_id", &request.user_id)?;
        let user = match request.discoverable {
            Some(discoverable) => {
                store::set_discoverable(&self.pool, user_id, discoverable, events::discoverability).await
            }
            None => store::by_id(&self.pool, user_id).await,
        };
        self.cache.forget(user_id);
        let user = user.map_err(status)?;
        Ok(Response::new(UpdateProfileResponse { user: Some(wire(&user)) }))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn delete_user(&self, request: Request<DeleteUserRequest>) -> Result<Response<DeleteUserResponse>, Status> {
        let user_id = uuid("user_id", &request.into_inner().user_id)?;
        let deleted = store::delete_user(&self.pool, user_id).await;
        self.cache.forget(user_id);
        let deleted = deleted.map_err(platform::grpc::database_status)?;
        tracing::info!(deleted, "account deletion requested by its owner");
        Ok(Response::new(DeleteUserResponse { deleted }))
    }

    async fn get_signup_stats(
        &self,
        request: Request<GetSignupStatsRequest>,
    ) -> Result<Response<GetSignupStatsResponse>, Status> {
        let request = request.into_inner();
        let time = platform::time::from_proto;
        let (Some(from), Some(to)) = (time(request.from), time(request.to)) else {
            return Err(Status::invalid_argument("from and to are required"));
        };
        if from >= to {
            return Err(Status::invalid_argument("from must be before to"));
        }
        let stats = store::signup_stats(&self.pool, from, to).await.map_err(platform::grpc::database_status)?;
        Ok(Response::new(stats))
    }
}

fn wire(user: &User) -> WireUser {
    WireUser {
        user_id: user.id.to_string(),
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        status: match user.status() {
            store::Status::Registering => UserStatus::Registering,
            store::Status::PendingVerification => UserStatus::PendingVerification,
            store::Status::Verified => UserStatus::Verified,
        }
        .into(),
        locale: user.locale.clone(),
        discoverable: user.discoverable,
        created_at: Some(platform::time::to_proto(user.created_at)),
        updated_at: Some(platform::time::to_proto(user.updated_at)),
        verified_at: user.verified_at.map(platform::time::to_proto),
        signup_id: user.signup_id.to_string(),
    }
}

fn non_empty(field: &str, value: String) -> Result<String, Status> {
    if value.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    bounded(field, value)
}

fn bounded(field: &str, value: String) -> Result<String, Status> {
    if value.len() > MAX_TEXT {
        return Err(Status::invalid_argument(format!("{field} is longer than {MAX_TEXT} bytes")));
    }
    Ok(value)
}

/// What a registration answers: its account, its attempt (on a replay, the first request's), whether it was a replay.
struct Outcome {
    user_id: uuid::Uuid,
    signup_id: uuid::Uuid,
    replayed: bool,
    dropped: bool,
}

impl From<Outcome> for RegisterSignupResponse {
    fn from(Outcome { user_id, signup_id, replayed, dropped }: Outcome) -> Self {
        Self { user_id: user_id.to_string(), replayed, signup_id: signup_id.to_string(), dropped }
    }
}

/// What a registration did, on the request's span and in `signup_attempts_total`, and what it answers.
fn record_outcome(registered: &Registered, signup_id: uuid::Uuid) -> Outcome {
    let (user_id, answered, outcome) = match registered {
        Registered::Announced { user, existing: false } => (user.id, signup_id, "announced"),
        Registered::Announced { user, existing: true } => (user.id, signup_id, "existing_account"),
        Registered::Dropped { user_id } => (*user_id, signup_id, "too_many_attempts"),
        Registered::Replayed { user_id, signup_id: first } => (*user_id, first.unwrap_or(signup_id), "replayed"),
    };
    let span = tracing::Span::current();
    span.record("user_id", tracing::field::display(user_id));
    span.record("signup_id", tracing::field::display(signup_id));
    span.record("outcome", outcome);
    metrics::counter!("signup_attempts_total", "outcome" => outcome).increment(1);
    let replayed = matches!(registered, Registered::Replayed { .. });
    let dropped = matches!(registered, Registered::Dropped { .. });
    Outcome { user_id, signup_id: answered, replayed, dropped }
}

fn idempotency(key: String, fingerprint: Vec<u8>) -> Result<Option<Idempotency>, Status> {
    match (key.is_empty(), fingerprint.is_empty()) {
        (true, _) => Ok(None),
        (false, true) => Err(Status::invalid_argument("an idempotency key needs a request fingerprint")),
        (false, false) if key.len() > MAX_KEY => Err(Status::invalid_argument("idempotency key is too long")),
        (false, false) => Ok(Some(Idempotency { key, fingerprint })),
    }
}

fn status(error: StoreError) -> Status {
    match error {
        StoreError::KeyUsedForOtherEmail
        | StoreError::KeyReused
        | StoreError::UnknownAttempt
        | StoreError::VerifiedByAnotherAttempt
        | StoreError::NotVerified => Status::failed_precondition(error.to_string()),
        StoreError::NotFound => Status::not_found(error.to_string()),
        StoreError::Database(error) => platform::grpc::database_status(error),
    }
}
