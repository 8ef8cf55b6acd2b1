//! gRPC between the services over mutual TLS (`GRPC_TLS_*`): the whole signup path runs over it, and a gRPC port
//! takes no caller without a certificate of the services' authority.

use e2e::{
    pki::{Authority, Pem},
    stack::{Options, Stack},
};
use proto::password::v1::{ResetPasswordRequest, password_service_client::PasswordServiceClient};
use serde_json::Value;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const PASSWORD: &str = "correct horse battery staple";

/// A channel to `port` over TLS that trusts the services' authority and presents `identity`, if any.
async fn tls_channel(port: u16, ca: &str, identity: Option<&Pem>) -> anyhow::Result<tonic::transport::Channel> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(pem) = identity {
        tls = tls.identity(Identity::from_pem(&pem.cert, &pem.key));
    }
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?.tls_config(tls)?;
    Ok(endpoint.connect_lazy())
}

/// Whether the gRPC server behind `channel` answers a health check.
async fn answers(channel: tonic::transport::Channel) -> bool {
    HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.is_ok()
}

/// Attack: a process inside the network calls password's `ResetPassword` for an account: a user id is all the call
/// takes, and without mutual TLS the network is the only boundary (ARCHITECTURE.md, invariant 12). With
/// `GRPC_TLS_*` set, the whole signup path runs over mutual TLS (signup, the mailed link, the confirm, a sign-in:
/// every service calls another), and the call reaches password neither in plain text, nor over TLS without a
/// certificate, nor with a certificate of another authority: the account's password is unchanged. A certificate
/// of the services' authority is answered (the control).
#[tokio::test]
async fn with_mutual_tls_only_the_services_reach_a_grpc_port() -> anyhow::Result<()> {
    platform::tls::install_provider();
    let mut stack = Stack::start_with(Options { grpc_tls: true, ..Options::default() }).await?;
    stack.wait_ready().await?;
    let email = format!("mtls-{}@example.com", uuid::Uuid::now_v7().simple());
    let session = stack.verified_session(&email, PASSWORD).await?;
    let me: Value = stack.me(&session).await?.json().await?;
    let user_id = me["user_id"].as_str().ok_or_else(|| anyhow::anyhow!("no user_id in {me}"))?.to_owned();

    let authority = stack.authority.as_ref().ok_or_else(|| anyhow::anyhow!("no authority"))?;
    let (ca, port) = (authority.cert(), stack.member("password").port);
    let stranger = Authority::new("someone else")?.issue("intruder")?;
    let reset = || ResetPasswordRequest {
        user_id: user_id.clone(),
        new_password: "the intruder's battery staple horse".to_owned(),
        ..Default::default()
    };
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?.connect_lazy();
    let intruders = [
        ("plain text", plain),
        ("TLS without a certificate", tls_channel(port, &ca, None).await?),
        ("a certificate of another authority", tls_channel(port, &ca, Some(&stranger)).await?),
    ];
    for (how, channel) in intruders {
        assert!(!answers(channel.clone()).await, "{how}: a health check was answered");
        let answer = PasswordServiceClient::new(channel).reset_password(reset()).await;
        assert!(answer.is_err(), "{how}: ResetPassword was served");
    }
    assert_eq!(stack.sign_in(&email, PASSWORD).await?.status(), 201, "the password was reset");

    let service = authority.issue("a service")?;
    assert!(answers(tls_channel(port, &ca, Some(&service)).await?).await, "a service's certificate was refused");
    Ok(())
}
