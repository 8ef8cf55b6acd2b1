//! signup-api: the only HTTP ingress. It parses requests once into domain types, orchestrates the gRPC
//! services, and answers in JSON, with RFC 9457 problem details for every error.
//!
//! Architecture invariant: signup-api is stateless and owns no database; a plaintext password leaves it only
//! in the call to the password service, and a plaintext contact never leaves it.

mod admission;
mod auth;
mod change_password;
pub mod contacts;
mod cpu;
mod cross_site;
mod docs;
pub mod domain;
mod error;
mod export;
mod extract;
mod friends;
mod leave;
mod me;
mod openapi;
mod pages;
pub mod problem;
pub mod ratelimit;
mod resets;
mod routes;
mod sessions;
mod settings;
mod signups;
mod startup;
mod upstream;
mod verifications;

pub use routes::router;
pub use settings::{PORTS, Settings, Upstreams as UpstreamSettings};
pub use startup::{AppState, serve};
