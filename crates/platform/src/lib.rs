//! Domain-free glue every service shares: settings, telemetry, shutdown, health, metrics, database, broker.
//!
//! Architecture invariant: nothing here knows about users, passwords or emails. Something moves in only when
//! two services need it.

pub mod amqp;
pub mod archive;
pub mod backing;
pub mod backoff;
pub mod cli;
pub mod db;
pub mod deadletters;
pub mod events;
pub mod grpc;
pub mod health;
pub mod healthcheck;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod propagation;
pub mod server;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod token;

/// The allocator every service binary declares as its `#[global_allocator]`: mimalloc. The images link musl
/// statically; against musl's own malloc, mimalloc took 12–15% less of every service's CPU per signup
/// (ARCHITECTURE.md).
pub use mimalloc::MiMalloc as Allocator;
