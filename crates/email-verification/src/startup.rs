//! Builds the email-verification service (pool, migrations check, listeners) and runs it until shutdown.

use std::{future::Future, net::SocketAddr};

use platform::{backing::Backing, events::ConsumerStatus, server::GrpcServer};
use proto::{
    email_verification::v1::email_verification_service_server::EmailVerificationServiceServer,
    user_metadata::v1::user_metadata_service_client::UserMetadataServiceClient,
};
use tonic::service::Routes;

use crate::{
    Settings,
    consumer::EventHandler,
    mail::{Templates, Transport},
    sender::Sender,
    service::Verifications,
};

/// A built, not yet serving, email-verification service. Tests start it exactly as the binary does.
#[derive(Debug)]
pub struct App {
    server: GrpcServer,
    backing: Backing,
    consumer: ConsumerStatus,
    transport: Transport,
    templates: Templates,
    settings: Settings,
}

impl App {
    /// Does all I/O setup: loads the templates, connects to the database, checks its schema, prepares the mail
    /// transport, starts connecting to the broker, binds the listeners (port 0 allowed).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if settings.database.migrate_on_start {
            platform::events::declare_subscription(&settings.amqp, &settings.subscription).await?;
        }
        let templates = Templates::load()?;
        // Where mail goes is checked before anything else, so a deployment that forgot SMTP_URL stops at once.
        settings.mail.smtp()?;
        let backing =
            Backing::attach(&settings.database, crate::migrator(), Some((&settings.amqp, "email-verification")))
                .await?;
        let transport = Transport::from_settings(&settings.mail)?;
        let consumer = ConsumerStatus::default();
        let readiness = backing.readiness().inform("consumer", consumer.readiness_check()).build();
        let server = GrpcServer::bind(&settings.server, readiness).await?;
        Ok(Self { server, backing, consumer, transport, templates, settings })
    }

    /// Where gRPC is served.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Where `/livez`, `/readyz` and `/metrics` are served.
    pub fn ops_addr(&self) -> SocketAddr {
        self.server.ops_addr()
    }

    /// Serves, consumes events and sends mail until `shutdown` resolves; then drains all three within the grace
    /// period (the message in hand is finished and acked, attempts in flight are recorded), and closes the
    /// broker connection and the pool.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let cancel = platform::shutdown::token_from(shutdown);
        let routes = routes(&self.backing, &self.server, &self.settings)?;
        let handler = EventHandler::new(self.backing.pool.clone(), self.settings.policy);
        let sender = std::sync::Arc::new(Sender::new(
            self.backing.pool.clone(),
            self.transport,
            self.templates,
            self.settings.mail.clone(),
            self.settings.policy,
        ));
        let sender = tokio::spawn(sender.run(cancel.clone()));
        let consumer = self.backing.spawn_consumer(&self.settings.subscription, handler, &self.consumer, &cancel);
        let grace = self.settings.shutdown.grace_period();
        let deadline = platform::shutdown::Deadline::after(&cancel, grace);
        self.server.run(routes, cancel, grace).await;
        platform::shutdown::drain("mail sender", sender, deadline.remaining().await).await;
        self.backing.drain_and_close(consumer, &deadline).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The one place the gRPC server's services are listed.
fn routes(backing: &Backing, server: &GrpcServer, settings: &Settings) -> anyhow::Result<Routes> {
    let channel = platform::grpc::channel(&settings.user_metadata.url, settings.user_metadata.deadline)?;
    let users = UserMetadataServiceClient::new(channel);
    let service = EmailVerificationServiceServer::new(Verifications::new(backing.pool.clone(), users, settings.policy));
    Ok(Routes::new(platform::grpc::health_service::<EmailVerificationServiceServer<Verifications>>(server.readiness()))
        .add_service(platform::grpc::reflection_service()?)
        .add_service(service))
}
