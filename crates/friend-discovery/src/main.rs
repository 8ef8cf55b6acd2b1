//! The `friend-discovery` binary: the platform's command line over the friend-discovery service.

#[global_allocator]
static ALLOCATOR: platform::Allocator = platform::Allocator;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::service::main::<friend_discovery::FriendDiscovery>().await
}
