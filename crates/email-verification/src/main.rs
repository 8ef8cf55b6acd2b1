//! The `email-verification` binary: the platform's command line over the email-verification service.

#[global_allocator]
static ALLOCATOR: platform::Allocator = platform::Allocator;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::service::main::<email_verification::EmailVerification>().await
}
