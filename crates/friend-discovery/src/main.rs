//! The `friend-discovery` binary: the platform's command line over the friend-discovery service.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::service::main::<friend_discovery::FriendDiscovery>().await
}
