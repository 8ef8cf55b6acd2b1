//! The `user-metadata` binary: the platform's command line over the user-metadata service.

#[global_allocator]
static ALLOCATOR: platform::Allocator = platform::Allocator;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::service::main::<user_metadata::UserMetadata>().await
}
