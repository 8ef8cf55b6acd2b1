//! The `signup.password.v1.PasswordService` RPCs: the boundary where wire types become domain values and
//! errors become gRPC statuses. No handler logs or returns a password.

use platform::{
    grpc::{database_status, uuid_argument as uuid},
    token::Token,
};
use proto::password::v1::{
    AuthenticateSessionRequest, AuthenticateSessionResponse, ChangePasswordRequest, ChangePasswordResponse,
    CheckPasswordRequest, CheckPasswordResponse, CreateSessionRequest, CreateSessionResponse,
    DiscardAttemptCredentialRequest, DiscardAttemptCredentialResponse, EndAccountSessionsRequest,
    EndAccountSessionsResponse, ExportAccountRequest, ExportAccountResponse, PromoteAttemptRequest,
    PromoteAttemptResponse, ResetPasswordRequest, ResetPasswordResponse, RevokeSessionRequest, RevokeSessionResponse,
    SessionOutcome, StoreAttemptCredentialRequest, StoreAttemptCredentialResponse, VerifyAttemptPasswordRequest,
    VerifyAttemptPasswordResponse, password_service_server::PasswordService,
};
use secrecy::SecretString;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    hasher::{HashError, Hasher},
    settings::{SessionSettings, Throttle},
    store::{self, NewSession, Promotion, SessionLimits},
};

/// Passwords longer than this are refused before hashing; signup-api's own limit is far lower.
const MAX_PASSWORD_BYTES: usize = 4096;

/// The RPC handlers, over the service's own database and hashing pool.
#[derive(Debug, Clone)]
pub(crate) struct Passwords {
    pub(crate) pool: PgPool,
    pub(crate) hasher: Hasher,
    pub(crate) sessions: SessionSettings,
    pub(crate) throttle: Throttle,
}

impl Passwords {
    fn session_limits(&self) -> SessionLimits {
        let sessions = &self.sessions;
        SessionLimits { idle: sessions.idle(), absolute: sessions.absolute(), per_account: sessions.per_account() }
    }
}

#[tonic::async_trait]
impl PasswordService for Passwords {
    #[tracing::instrument(skip_all, fields(signup_id))]
    async fn store_attempt_credential(
        &self,
        request: Request<StoreAttemptCredentialRequest>,
    ) -> Result<Response<StoreAttemptCredentialResponse>, Status> {
        let request = request.into_inner();
        let signup_id = uuid("signup_id", &request.signup_id)?;
        let email_hash = email_hash(&request.email_hash)?;
        tracing::Span::current().record("signup_id", tracing::field::display(signup_id));
        let phc = self.hasher.hash(password(request.password)?).await.map_err(hash_status)?;
        store::store_attempt(&self.pool, signup_id, email_hash, &phc).await.map_err(database_status)?;
        Ok(Response::new(StoreAttemptCredentialResponse {}))
    }

    #[tracing::instrument(skip_all, fields(signup_id = %request.get_ref().signup_id))]
    async fn discard_attempt_credential(
        &self,
        request: Request<DiscardAttemptCredentialRequest>,
    ) -> Result<Response<DiscardAttemptCredentialResponse>, Status> {
        let signup_id = uuid("signup_id", &request.into_inner().signup_id)?;
        let mut conn = self.pool.acquire().await.map_err(database_status)?;
        store::discard_attempt(&mut conn, signup_id).await.map_err(database_status)?;
        Ok(Response::new(DiscardAttemptCredentialResponse {}))
    }

    #[tracing::instrument(skip_all, fields(user_id, signup_id))]
    async fn verify_attempt_password(
        &self,
        request: Request<VerifyAttemptPasswordRequest>,
    ) -> Result<Response<VerifyAttemptPasswordResponse>, Status> {
        let request = request.into_inner();
        let (user_id, signup_id) = (uuid("user_id", &request.user_id)?, uuid("signup_id", &request.signup_id)?);
        record_ids(user_id, Some(signup_id));
        let password = password(request.password)?;
        let stored = store::attempt_phc(&self.pool, user_id, signup_id).await.map_err(database_status)?;
        let verified = self.hasher.verify(password, stored).await.map_err(hash_status)?;
        Ok(Response::new(VerifyAttemptPasswordResponse { valid: verified.valid }))
    }

    #[tracing::instrument(skip_all, fields(user_id, signup_id))]
    async fn promote_attempt(
        &self,
        request: Request<PromoteAttemptRequest>,
    ) -> Result<Response<PromoteAttemptResponse>, Status> {
        let request = request.into_inner();
        let (user_id, signup_id) = (uuid("user_id", &request.user_id)?, uuid("signup_id", &request.signup_id)?);
        record_ids(user_id, Some(signup_id));
        let mut tx = self.pool.begin().await.map_err(database_status)?;
        let promotion = store::promote(&mut tx, user_id, signup_id).await.map_err(database_status)?;
        tx.commit().await.map_err(database_status)?;
        match promotion {
            Promotion::Promoted => tracing::info!("attempt promoted: its password is the account's"),
            Promotion::AlreadyPromoted => {}
            Promotion::Unknown => return Err(Status::failed_precondition("the attempt has no credential")),
        }
        Ok(Response::new(PromoteAttemptResponse {}))
    }

    #[tracing::instrument(skip_all, fields(user_id, outcome))]
    async fn create_session(
        &self,
        request: Request<CreateSessionRequest>,
    ) -> Result<Response<CreateSessionResponse>, Status> {
        let request = request.into_inner();
        let asker = asker(&request.email_hash, &request.client_hash)?;
        let user_id = platform::grpc::optional_uuid_argument("user_id", &request.user_id)?;
        if !request.signup_id.is_empty() {
            return Err(Status::invalid_argument("signup_id must be empty: sessions open only for verified accounts"));
        }
        let password = password(request.password)?;
        if let Some(user_id) = user_id {
            record_ids(user_id, None);
        }
        let response = self.sign_in(asker, Token::parse(&request.device_token), user_id, password).await?;
        tracing::Span::current().record("outcome", tracing::field::debug(response.outcome()));
        metrics::counter!("sign_ins_total", "outcome" => outcome_label(response.outcome())).increment(1);
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all, fields(user_id))]
    async fn authenticate_session(
        &self,
        request: Request<AuthenticateSessionRequest>,
    ) -> Result<Response<AuthenticateSessionResponse>, Status> {
        let unauthenticated = || Status::unauthenticated("the session is unknown, revoked or expired");
        let token = Token::parse(&request.into_inner().token).ok_or_else(unauthenticated)?;
        let session = store::session(&self.pool, &token.hash(), self.sessions.idle())
            .await
            .map_err(database_status)?
            .ok_or_else(unauthenticated)?;
        tracing::Span::current().record("user_id", tracing::field::display(session.user_id));
        Ok(Response::new(AuthenticateSessionResponse {
            user_id: session.user_id.to_string(),
            expires_at: Some(platform::time::to_proto(session.expires_at)),
            idle_expires_at: Some(platform::time::to_proto(session.idle_expires_at)),
            attempt_bound: session.attempt_bound,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_session(
        &self,
        request: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        if let Some(token) = Token::parse(&request.into_inner().token) {
            store::revoke(&self.pool, &token.hash()).await.map_err(database_status)?;
        }
        Ok(Response::new(RevokeSessionResponse {}))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let request = request.into_inner();
        let user_id = platform::grpc::uuid_argument("user_id", &request.user_id)?;
        let keep = Token::parse(&request.keep_session_token).map(|token| token.hash());
        let own = self.own_session(user_id, keep.as_deref()).await?;
        let asker = match own {
            Some(session) => signed_in(&request.email_hash, session)?,
            None => asker(&request.email_hash, &request.client_hash)?,
        };
        let (current, new) = (password(request.current_password)?, password(request.new_password)?);
        let answer = |outcome: SessionOutcome, retry_after_seconds| {
            Ok(Response::new(ChangePasswordResponse { outcome: outcome.into(), retry_after_seconds }))
        };
        let checked = match self.check(asker, Some(user_id), current).await? {
            Checked::Throttled(retry_after) => return answer(SessionOutcome::Throttled, retry_after),
            // A valid password has a generation: only a stored one can be.
            Checked::Invalid | Checked::Valid(_, None) => return answer(SessionOutcome::InvalidCredentials, 0),
            Checked::Valid(_, Some(checked)) => checked,
        };
        let phc = self.hasher.hash_for_owner(new).await.map_err(hash_status)?;
        // Only over the credential just checked: a reset that landed meanwhile wins, and this change is refused.
        let by = store::ChangedBy::Password(checked);
        let change = store::Change { user_id, phc: &phc, by, keep: keep.as_deref() };
        let changed = store::change_password(&self.pool, &change).await.map_err(database_status)?;
        if !changed {
            return answer(SessionOutcome::InvalidCredentials, 0);
        }
        tracing::info!("password changed; the account's other sessions ended");
        answer(SessionOutcome::Created, 0)
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn check_password(
        &self,
        request: Request<CheckPasswordRequest>,
    ) -> Result<Response<CheckPasswordResponse>, Status> {
        let request = request.into_inner();
        let user_id = platform::grpc::uuid_argument("user_id", &request.user_id)?;
        let answer =
            |valid, retry_after_seconds| Ok(Response::new(CheckPasswordResponse { valid, retry_after_seconds }));
        let session = Token::parse(&request.session_token).map(|token| token.hash());
        // A session that ended meanwhile proves nothing: the answer of a wrong password.
        let Some(session) = self.own_session(user_id, session.as_deref()).await? else { return answer(false, 0) };
        let asker = signed_in(&request.email_hash, session)?;
        match self.check(asker, Some(user_id), password(request.password)?).await? {
            Checked::Valid(..) => answer(true, 0),
            Checked::Invalid => answer(false, 0),
            Checked::Throttled(retry_after) => answer(false, retry_after),
        }
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn reset_password(
        &self,
        request: Request<ResetPasswordRequest>,
    ) -> Result<Response<ResetPasswordResponse>, Status> {
        let request = request.into_inner();
        let user_id = platform::grpc::uuid_argument("user_id", &request.user_id)?;
        let link = store::Link {
            asked_at: platform::time::from_proto(request.asked_at),
            digest: &request.link_digest,
            email_hash: email_hash(&request.email_hash).unwrap_or_default(),
        };
        let used_up = || {
            Status::failed_precondition(
                "the account has no password to reset, or it was set with this link or after the link was asked for",
            )
        };
        // A link that can no longer set the password costs no hash.
        if !store::link_usable(&self.pool, user_id, &link).await.map_err(database_status)? {
            return Err(used_up());
        }
        let phc = self.hasher.hash_for_owner(password(request.new_password)?).await.map_err(hash_status)?;
        let change = store::Change { user_id, phc: &phc, by: store::ChangedBy::Link(link), keep: None };
        if !store::change_password(&self.pool, &change).await.map_err(database_status)? {
            return Err(used_up());
        }
        tracing::info!("password reset; every session of the account ended");
        Ok(Response::new(ResetPasswordResponse {}))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn end_account_sessions(
        &self,
        request: Request<EndAccountSessionsRequest>,
    ) -> Result<Response<EndAccountSessionsResponse>, Status> {
        let user_id = platform::grpc::uuid_argument("user_id", &request.into_inner().user_id)?;
        store::revoke_all(&self.pool, user_id).await.map_err(database_status)?;
        Ok(Response::new(EndAccountSessionsResponse {}))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn export_account(
        &self,
        request: Request<ExportAccountRequest>,
    ) -> Result<Response<ExportAccountResponse>, Status> {
        let request = request.into_inner();
        let user_id = platform::grpc::uuid_argument("user_id", &request.user_id)?;
        let export = store::export(&self.pool, user_id, &request.email_hash).await.map_err(database_status)?;
        Ok(Response::new(export))
    }
}

impl Passwords {
    /// Signs in from `device`, the token an earlier sign-in gave it (if it presented a well-formed one).
    ///
    /// A device the account signed in on lately is held to its own count only, not to the email's lockout: the
    /// owner is not locked out of it with the guessers. A token the service did not issue is never reused (a value
    /// the client chose, or copied from an example, must not become a trust that every account signing in with it
    /// shares): the session comes with a fresh one, trusted from then on. One it issued stays the device's, for
    /// every account it signs in to.
    async fn sign_in(
        &self,
        asker: store::Asker<'_>,
        device: Option<Token>,
        user_id: Option<Uuid>,
        password: SecretString,
    ) -> Result<CreateSessionResponse, Status> {
        // Looked up for an unknown user (the nil id) and without a token (a fresh one) too: the same statements.
        let presented = match device {
            Some(device) => device,
            None => new_token()?,
        };
        let account = user_id.unwrap_or_default();
        let presented_hash = presented.hash();
        let trust = store::device_trust(&self.pool, account, &presented_hash, &self.throttle);
        let trust = trust.await.map_err(database_status)?;
        let device = if trust.issued { presented } else { new_token()? };
        let device_hash = device.hash();
        let asker = if trust.here { store::Asker { client_hash: &device_hash, proven: true, ..asker } } else { asker };
        match self.check(asker, user_id, password).await? {
            Checked::Valid(user_id, Some(checked)) => {
                let opened = self.open(user_id, checked, &device_hash).await?;
                Ok(CreateSessionResponse { device_token: device.expose().to_owned(), ..opened })
            }
            Checked::Valid(_, None) | Checked::Invalid => Ok(wrong_password()),
            Checked::Throttled(retry_after_seconds) => Ok(CreateSessionResponse {
                outcome: SessionOutcome::Throttled.into(),
                retry_after_seconds,
                ..CreateSessionResponse::default()
            }),
        }
    }

    /// Throttles and checks `password` against the account's. The failure is counted before the check so
    /// concurrent guesses cannot slip past the count; a check that never ran (saturated hashing) is not held against
    /// anyone; a success forgets this client's count and rehashes under the current parameters.
    async fn check(
        &self,
        asker: store::Asker<'_>,
        user_id: Option<Uuid>,
        password: SecretString,
    ) -> Result<Checked, Status> {
        let reserved = store::reserve_attempt(&self.pool, asker, &self.throttle).await.map_err(database_status)?;
        if let Err(wait) = reserved {
            return Ok(Checked::Throttled(u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX)));
        }
        // An unknown user is looked up too (the nil id has no credential): the same statements for every email.
        let stored = store::account_phc(&self.pool, user_id.unwrap_or_default()).await.map_err(database_status)?;
        let (stored, generation) = stored.unzip();
        let verified = self.hasher.verify(password, stored.clone()).await;
        if verified.is_err()
            && let Err(error) = store::release_attempt(&self.pool, asker).await
        {
            tracing::warn!(%error, "could not give back an attempt that was never checked");
        }
        let verified = verified.map_err(hash_status)?;
        let Some(user_id) = user_id.filter(|_| verified.valid) else { return Ok(Checked::Invalid) };
        if let (Some(old), Some(new)) = (stored, verified.rehashed) {
            self.upgrade(user_id, &old, &new).await;
        }
        store::succeeded(&self.pool, asker).await.map_err(database_status)?;
        Ok(Checked::Valid(user_id, generation))
    }

    /// Stores the credential rehashed under the current parameters. Best effort: the sign-in already succeeded;
    /// the next one retries the upgrade.
    async fn upgrade(&self, user_id: Uuid, old: &str, new: &str) {
        match store::replace(&self.pool, user_id, old, new).await {
            Ok(()) => tracing::info!("credential rehashed under the current parameters"),
            Err(error) => tracing::warn!(%error, "could not store the rehashed credential"),
        }
    }

    /// `token_hash`, if it is a live session of `user_id`.
    async fn own_session<'t>(&self, user_id: Uuid, token_hash: Option<&'t [u8]>) -> Result<Option<&'t [u8]>, Status> {
        let Some(token_hash) = token_hash else { return Ok(None) };
        let owned = store::owns_session(&self.pool, user_id, token_hash).await.map_err(database_status)?;
        Ok(owned.then_some(token_hash))
    }

    /// Opens a session, under a fresh token, for the account whose password of generation `checked` was just
    /// checked, and trusts the device; a password changed or reset since (or an account deleted) makes the
    /// sign-in's password wrong, so it opens none and trusts nothing.
    async fn open(&self, user_id: Uuid, checked: i64, device_hash: &[u8]) -> Result<CreateSessionResponse, Status> {
        let token = new_token()?;
        let new = NewSession { token_hash: &token.hash(), user_id, checked, device_hash };
        let opened = store::open_session(&self.pool, &new, self.session_limits()).await.map_err(database_status)?;
        let Some(session) = opened else { return Ok(wrong_password()) };
        Ok(CreateSessionResponse {
            outcome: SessionOutcome::Created.into(),
            token: token.expose().to_owned(),
            expires_at: Some(platform::time::to_proto(session.expires_at)),
            idle_expires_at: Some(platform::time::to_proto(session.idle_expires_at)),
            ..CreateSessionResponse::default()
        })
    }
}

/// A fresh token (a session's, a device's) from the operating system's random generator.
fn new_token() -> Result<Token, Status> {
    Token::generate().map_err(|error| {
        tracing::error!(%error, "the operating system's random generator failed");
        Status::internal("could not open a session")
    })
}

/// A sign-in's answer when the password is not the account's (or there is no account).
fn wrong_password() -> CreateSessionResponse {
    CreateSessionResponse { outcome: SessionOutcome::InvalidCredentials.into(), ..CreateSessionResponse::default() }
}

/// What a password check found.
enum Checked {
    /// The password is the account's: the account, and the generation of its password that was checked.
    Valid(Uuid, Option<i64>),
    /// Unknown user or wrong password.
    Invalid,
    /// Too many failures: not checked; retry after these seconds.
    Throttled(u32),
}

fn outcome_label(outcome: SessionOutcome) -> &'static str {
    match outcome {
        SessionOutcome::Created => "created",
        SessionOutcome::InvalidCredentials => "invalid",
        SessionOutcome::Throttled => "throttled",
        SessionOutcome::Unspecified => "unspecified",
    }
}

fn record_ids(user_id: Uuid, signup_id: Option<Uuid>) {
    let span = tracing::Span::current();
    span.record("user_id", tracing::field::display(user_id));
    if let Some(signup_id) = signup_id {
        span.record("signup_id", tracing::field::display(signup_id));
    }
}

fn email_hash(value: &[u8]) -> Result<&[u8], Status> {
    if value.len() != 32 {
        return Err(Status::invalid_argument("email_hash must be 32 bytes"));
    }
    Ok(value)
}

/// The email and client a sign-in's failures count against: a 32-byte email hash, and a 32-byte client hash or none.
fn asker<'a>(email: &'a [u8], client: &'a [u8]) -> Result<store::Asker<'a>, Status> {
    let client_hash = platform::grpc::client_hash_argument(client)?;
    Ok(store::Asker { email_hash: email_hash(email)?, client_hash, proven: false })
}

/// The failures of a signed-in owner's check count against the email and the live session (its token's hash).
fn signed_in<'a>(email: &'a [u8], session: &'a [u8]) -> Result<store::Asker<'a>, Status> {
    Ok(store::Asker { email_hash: email_hash(email)?, client_hash: session, proven: true })
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
