//! Clients of the gRPC services signup-api calls: connected lazily, with a deadline on every call and the
//! caller's trace context in the metadata.

use platform::grpc::TracedChannel;
use proto::{
    email_verification::v1::email_verification_service_client::EmailVerificationServiceClient,
    friend_discovery::v1::friend_discovery_service_client::FriendDiscoveryServiceClient,
    password::v1::password_service_client::PasswordServiceClient,
    user_metadata::v1::user_metadata_service_client::UserMetadataServiceClient,
};

use crate::settings::Upstreams as UpstreamSettings;

/// One client per upstream service. Cloning is cheap: clients multiplex over shared connections.
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// user-metadata.
    pub users: UserMetadataServiceClient<TracedChannel>,
    /// password.
    pub passwords: PasswordServiceClient<TracedChannel>,
    /// email-verification.
    pub verifications: EmailVerificationServiceClient<TracedChannel>,
    /// friend-discovery.
    pub friends: FriendDiscoveryServiceClient<TracedChannel>,
    /// The raw channels, for health checks.
    pub user_metadata_channel: TracedChannel,
    /// The raw channel to password, for health checks.
    pub password_channel: TracedChannel,
}

impl Upstreams {
    /// Builds the clients; no I/O happens until the first call.
    pub fn new(settings: &UpstreamSettings) -> anyhow::Result<Self> {
        let deadline = settings.deadline();
        let user_metadata_channel = platform::grpc::channel(settings.user_metadata_url.as_str(), deadline)?;
        let password_channel = platform::grpc::channel(settings.password_url.as_str(), deadline)?;
        let verification_channel = platform::grpc::channel(settings.email_verification_url.as_str(), deadline)?;
        let friends_channel = platform::grpc::channel(settings.friend_discovery_url.as_str(), deadline)?;
        Ok(Self {
            friends: FriendDiscoveryServiceClient::new(friends_channel),
            verifications: EmailVerificationServiceClient::new(verification_channel),
            users: UserMetadataServiceClient::new(user_metadata_channel.clone()),
            passwords: PasswordServiceClient::new(password_channel.clone()),
            user_metadata_channel,
            password_channel,
        })
    }
}
