//! The end-to-end harness: builds and starts the real service binaries against the real Postgres and RabbitMQ,
//! each test with its own databases, ports and broker names, and gives tests typed ways to poke at them.
//!
//! Tests live in `tests/e2e/`, one binary of modules.

pub mod broker;
pub mod cpu;
pub mod database;
pub mod otlp;
pub mod pki;
pub mod poll;
pub mod process;
pub mod proxy;
pub mod smtp;
pub mod stack;

/// The local backing services tests run against; override with `TEST_POSTGRES_URL` and `TEST_AMQP_URL`.
pub mod backing {
    /// A Postgres server where the test role may create databases (`postgres` database, trust auth here).
    pub fn postgres_url() -> String {
        from_env("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    }

    /// A RabbitMQ broker.
    pub fn amqp_url() -> String {
        from_env("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
    }

    #[allow(clippy::disallowed_methods, reason = "the harness, not a service, picks its backing services")]
    fn from_env(variable: &str, default: &str) -> String {
        std::env::var(variable).unwrap_or_else(|_| default.to_owned())
    }
}
