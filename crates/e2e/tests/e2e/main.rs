//! End-to-end tests: one binary, one module per concern. Every test starts what it needs on fresh databases,
//! free ports and its own broker names, so they run in parallel.

mod abuse;
mod account;
mod admin;
mod configuration;
mod contracts;
mod friends;
mod integrity;
mod lifecycle;
mod migrations;
mod mutual_tls;
mod peers;
mod readiness;
mod signup;
mod traces;
mod verification;
