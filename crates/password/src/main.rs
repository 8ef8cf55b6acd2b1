//! The `password` binary: the platform's command line over the password service.

#[global_allocator]
static ALLOCATOR: platform::Allocator = platform::Allocator;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::service::main::<password::Password>().await
}
