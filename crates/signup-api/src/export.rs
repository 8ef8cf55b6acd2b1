//! Taking one's data: `GET /v1/me/export` gathers, over gRPC, what every service that holds something about the
//! signed-in account holds: the profile (user-metadata), how the password is kept and the live sessions
//! (password), the mail history (email-verification) and the discovery settings and counts (friend-discovery).
//! Never a hash, a token or a contact: what is secret stays where it is, and contacts are kept only as keyed hashes.

use axum::{Json, extract::State, http::HeaderMap, response::Response};
use proto::{
    email_verification::v1::ExportAccountRequest as MailExportRequest,
    friend_discovery::v1::ExportAccountRequest as DiscoveryExportRequest,
    password::v1::ExportAccountRequest as PasswordExportRequest,
};
use serde::Serialize;

use crate::{error::ApiError, me::Profile, startup::AppState};

/// Everything the system holds about the caller.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Export {
    /// RFC 3339: when this document was gathered.
    exported_at: String,
    /// From user-metadata: the account.
    profile: Profile,
    /// From password: how the password is kept and the live sessions; never the hash, never a token.
    password: PasswordPart,
    /// From email-verification: when the address was proven, and every mail queued to it; never a link.
    mail: MailPart,
    /// From friend-discovery: the discovery settings and how much is stored; contacts exist there only as keyed
    /// hashes, so none can be shown.
    discovery: DiscoveryPart,
}

/// password's part.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PasswordPart {
    /// Whether the account has a password (before verification, each signup attempt has its own).
    has_password: bool,
    /// `argon2id`.
    #[schema(example = "argon2id")]
    algorithm: String,
    /// The hash's parameters.
    #[schema(example = "v=19,m=19456,t=2,p=1")]
    parameters: String,
    /// RFC 3339.
    password_set_at: Option<String>,
    /// RFC 3339: when the password was last set (verified, changed, reset); a rehash under new parameters is not a
    /// change.
    password_changed_at: Option<String>,
    /// Signup attempts still waiting for their link, each with its own password.
    pending_attempt_passwords: u32,
    /// The live sessions.
    sessions: Vec<SessionPart>,
    /// RFC 3339: when each device the account signed in from lately (one a lockout of its email does not lock out)
    /// last signed in.
    devices_signed_in_at: Vec<String>,
}

/// One live session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SessionPart {
    /// RFC 3339.
    created_at: Option<String>,
    /// RFC 3339.
    last_used_at: Option<String>,
    /// RFC 3339.
    expires_at: Option<String>,
}

/// email-verification's part.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MailPart {
    /// RFC 3339.
    verified_at: Option<String>,
    /// Links (verification or password reset) issued and neither used nor expired.
    live_links: u32,
    /// Every mail queued to the address.
    mails: Vec<MailRecord>,
}

/// One mail.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MailRecord {
    /// `verification`, `existing_account_notice`, `password_changed`, `password_reset` or `reset_not_verified`.
    kind: String,
    /// `pending`, `sent`, `failed` or `superseded`.
    status: String,
    /// RFC 3339.
    queued_at: Option<String>,
    /// RFC 3339.
    sent_at: Option<String>,
    /// Delivery attempts.
    attempts: u32,
}

/// friend-discovery's part.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DiscoveryPart {
    /// Whether the account is a verified member others may be suggested.
    member: bool,
    /// Whether others may be suggested it.
    discoverable: bool,
    /// Keyed hashes of the contacts uploaded with the verified signup.
    contact_hashes: u32,
    /// Signup attempts waiting for their link, each holding its own contact hashes.
    pending_attempts: u32,
    /// Whether a keyed hash of the account's own email is stored.
    email_hash_stored: bool,
}

/// Returns everything the system holds about the signed-in account.
#[utoipa::path(
    get,
    path = "/v1/me/export",
    tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Everything held about the account, from every service that holds some", body = Export,
            headers(("Cache-Control" = String, description = "no-store"))),
        (status = 401, description = "No session, or one that is unknown, revoked or expired", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "This client's budget is used; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A service that holds part of it is down; see Retry-After", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(user_id))]
pub(crate) async fn get(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (session, user) = crate::auth::user(&state, &headers).await?;
    let email = crate::auth::email(&user);
    let user_id = session.user_id;
    let (mut passwords, mut verifications, mut friends) =
        (state.upstreams.passwords.clone(), state.upstreams.verifications.clone(), state.upstreams.friends.clone());
    let password = PasswordExportRequest { user_id: user_id.clone(), email_hash: state.hasher.hash(&email) };
    let (password, mail, discovery) = tokio::join!(
        passwords.export_account(password),
        verifications.export_account(MailExportRequest { user_id: user_id.clone() }),
        friends.export_account(DiscoveryExportRequest { user_id }),
    );
    let password = password.map_err(|s| ApiError::from_status("password", &s))?.into_inner();
    let mail = mail.map_err(|s| ApiError::from_status("email-verification", &s))?.into_inner();
    let discovery = discovery.map_err(|s| ApiError::from_status("friend-discovery", &s))?.into_inner();
    let export = Export {
        exported_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        profile: crate::me::to_profile(user),
        password: password.into(),
        mail: mail.into(),
        discovery: discovery.into(),
    };
    Ok(crate::me::private(Json(export)))
}

impl From<proto::password::v1::ExportAccountResponse> for PasswordPart {
    fn from(part: proto::password::v1::ExportAccountResponse) -> Self {
        let session = |s: proto::password::v1::ExportedSession| SessionPart {
            created_at: rfc3339(s.created_at),
            last_used_at: rfc3339(s.last_used_at),
            expires_at: rfc3339(s.expires_at),
        };
        Self {
            has_password: part.has_password,
            algorithm: part.algorithm,
            parameters: part.parameters,
            password_set_at: rfc3339(part.password_set_at),
            password_changed_at: rfc3339(part.password_changed_at),
            pending_attempt_passwords: part.pending_attempt_passwords,
            sessions: part.sessions.into_iter().map(session).collect(),
            devices_signed_in_at: part.devices_signed_in_at.into_iter().filter_map(|t| rfc3339(Some(t))).collect(),
        }
    }
}

impl From<proto::email_verification::v1::ExportAccountResponse> for MailPart {
    fn from(part: proto::email_verification::v1::ExportAccountResponse) -> Self {
        let mail = |m: proto::email_verification::v1::ExportedMail| MailRecord {
            kind: m.kind,
            status: m.status,
            queued_at: rfc3339(m.queued_at),
            sent_at: rfc3339(m.sent_at),
            attempts: m.attempts,
        };
        Self {
            verified_at: rfc3339(part.verified_at),
            live_links: part.live_links,
            mails: part.mails.into_iter().map(mail).collect(),
        }
    }
}

impl From<proto::friend_discovery::v1::ExportAccountResponse> for DiscoveryPart {
    fn from(part: proto::friend_discovery::v1::ExportAccountResponse) -> Self {
        Self {
            member: part.member,
            discoverable: part.discoverable,
            contact_hashes: part.contact_hashes,
            pending_attempts: part.pending_attempts,
            email_hash_stored: part.email_hash_stored,
        }
    }
}

fn rfc3339(at: Option<prost_types::Timestamp>) -> Option<String> {
    platform::time::from_proto(at).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}
