//! The `signup.password.v1.PasswordService` RPCs: the boundary where wire types become domain values and
//! errors become gRPC statuses. No handler logs or returns a password.

use proto::password::v1::{
    BurnPasswordHashRequest, BurnPasswordHashResponse, DeletePasswordRequest, DeletePasswordResponse,
    SetPasswordRequest, SetPasswordResponse, VerifyPasswordRequest, VerifyPasswordResponse,
    password_service_server::PasswordService,
};
use secrecy::SecretString;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    hasher::{HashError, Hasher},
    store,
};

/// Passwords longer than this are refused before hashing; signup-api's own limit is far lower.
const MAX_PASSWORD_BYTES: usize = 4096;

/// The RPC handlers, over the service's own database and hashing pool.
#[derive(Debug, Clone)]
pub(crate) struct Passwords {
    pool: PgPool,
    hasher: Hasher,
}

impl Passwords {
    /// Handlers over `pool`, hashing with `hasher`.
    pub(crate) fn new(pool: PgPool, hasher: Hasher) -> Self {
        Self { pool, hasher }
    }
}

#[tonic::async_trait]
impl PasswordService for Passwords {
    #[tracing::instrument(skip_all, fields(user_id))]
    async fn set_password(
        &self,
        request: Request<SetPasswordRequest>,
    ) -> Result<Response<SetPasswordResponse>, Status> {
        let request = request.into_inner();
        let user_id = parse_uuid("user_id", &request.user_id)?;
        let version = parse_uuid("version", &request.version)?;
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        let phc = self.hasher.hash(password(request.password)?).await.map_err(hash_status)?;
        let stored =
            store::upsert(&self.pool, user_id, &phc, version).await.map_err(platform::grpc::database_status)?;
        if !stored {
            tracing::info!("a newer credential is already stored; kept it");
        }
        Ok(Response::new(SetPasswordResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn burn_password_hash(
        &self,
        request: Request<BurnPasswordHashRequest>,
    ) -> Result<Response<BurnPasswordHashResponse>, Status> {
        self.hasher.hash(password(request.into_inner().password)?).await.map_err(hash_status)?;
        Ok(Response::new(BurnPasswordHashResponse {}))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn verify_password(
        &self,
        request: Request<VerifyPasswordRequest>,
    ) -> Result<Response<VerifyPasswordResponse>, Status> {
        let request = request.into_inner();
        let user_id = parse_uuid("user_id", &request.user_id)?;
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        let stored = store::find(&self.pool, user_id).await.map_err(platform::grpc::database_status)?;
        let verified = self.hasher.verify(password(request.password)?, stored.clone()).await.map_err(hash_status)?;
        if let (Some(old), Some(new)) = (stored, verified.rehashed) {
            // Best effort: the login already succeeded; the next one retries the upgrade.
            match store::replace(&self.pool, user_id, &old, &new).await {
                Ok(()) => tracing::info!("credential rehashed under the current parameters"),
                Err(error) => tracing::warn!(%error, "could not store the rehashed credential"),
            }
        }
        Ok(Response::new(VerifyPasswordResponse { valid: verified.valid }))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn delete_password(
        &self,
        request: Request<DeletePasswordRequest>,
    ) -> Result<Response<DeletePasswordResponse>, Status> {
        let user_id = parse_uuid("user_id", &request.into_inner().user_id)?;
        tracing::Span::current().record("user_id", tracing::field::display(user_id));
        store::delete(&self.pool, user_id).await.map_err(platform::grpc::database_status)?;
        Ok(Response::new(DeletePasswordResponse {}))
    }
}

fn parse_uuid(field: &str, value: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(value).map_err(|_| Status::invalid_argument(format!("{field} must be a UUID")))
}

fn password(value: String) -> Result<SecretString, Status> {
    if value.is_empty() || value.len() > MAX_PASSWORD_BYTES {
        return Err(Status::invalid_argument(format!("password must be 1 to {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(SecretString::from(value))
}

fn hash_status(error: HashError) -> Status {
    match error {
        HashError::Saturated => Status::resource_exhausted("password hashing is at capacity; retry shortly"),
        HashError::Internal(reason) => {
            tracing::error!(%reason, "password hashing failed");
            Status::internal("password hashing failed")
        }
    }
}
