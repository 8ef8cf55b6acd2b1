//! The `password` binary: the platform's command line over the password service.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::service::main::<password::Password>().await
}
