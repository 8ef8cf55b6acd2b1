//! Channels to the gRPC services signup-api calls: connected lazily, with a deadline on every call and the
//! caller's trace context in the metadata.

use platform::grpc::TracedChannel;

use crate::settings::Upstreams as UpstreamSettings;

/// One channel per upstream service. Cloning is cheap: channels multiplex over shared connections.
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// user-metadata.
    pub user_metadata: TracedChannel,
    /// password.
    pub password: TracedChannel,
}

impl Upstreams {
    /// Builds the channels; no I/O happens until the first call.
    pub fn new(settings: &UpstreamSettings) -> anyhow::Result<Self> {
        let deadline = settings.deadline();
        Ok(Self {
            user_metadata: platform::grpc::channel(&settings.user_metadata_url, deadline)?,
            password: platform::grpc::channel(&settings.password_url, deadline)?,
        })
    }
}
