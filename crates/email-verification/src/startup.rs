//! Builds the email-verification service (templates, transport, database, listeners) and runs it, with its
//! consumer and mail sender, until shutdown.

use std::{net::SocketAddr, sync::Arc};

use platform::{
    service::{Host, Service as _, Worker},
    shutdown::CancellationToken,
};
use proto::{
    email_verification::v1::email_verification_service_server::EmailVerificationServiceServer,
    user_metadata::v1::user_metadata_service_client::UserMetadataServiceClient,
};

use crate::{
    EmailVerification, Settings,
    consumer::EventHandler,
    mail::{Templates, Transport},
    sender::Sender,
    service::Verifications,
};

/// A built, not yet serving, email-verification service.
#[derive(Debug)]
pub struct App {
    host: Host,
    transport: Transport,
    templates: Templates,
    settings: Settings,
}

impl App {
    /// Does all I/O setup: loads the templates, checks where mail goes (before anything else, so a deployment that
    /// forgot `SMTP_URL` stops at once), connects to the database, checks its schema, prepares the transport, starts
    /// connecting to the broker, binds the listeners (port 0 allowed).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let templates = Templates::load()?;
        settings.mail.smtp()?;
        let host = Host::build(EmailVerification::NAME, &settings.common, EmailVerification::migrator()).await?;
        let transport = Transport::from_settings(&settings.mail)?;
        Ok(Self { host, transport, templates, settings })
    }

    /// Where gRPC is served.
    pub fn local_addr(&self) -> SocketAddr {
        self.host.local_addr()
    }

    /// Where `/livez`, `/readyz` and `/metrics` are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.host.ops_addr()
    }

    /// Serves, consumes events and sends mail until `cancel` fires; then drains all three within the grace period
    /// (the batch in hand is finished and acked, attempts in flight are recorded).
    pub async fn run_until(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let (pool, settings) = (self.host.pool().clone(), &self.settings);
        let channel = platform::grpc::channel(settings.user_metadata.url.as_str(), settings.user_metadata.deadline())?;
        let verifications = Verifications::new(pool.clone(), UserMetadataServiceClient::new(channel), settings.policy);
        let sender = Sender::new(pool.clone(), self.transport, self.templates, settings.mail.clone(), settings.policy);
        let consumer = self.host.consumer(EventHandler::new(pool, settings.policy), &cancel);
        let sender = Worker::spawn("mail sender", Arc::new(sender).run(cancel.clone()));
        let service = EmailVerificationServiceServer::new(verifications);
        self.host.run(service, [Some(sender), consumer].into_iter().flatten().collect(), cancel).await
    }
}
