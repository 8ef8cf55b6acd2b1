//! Rust types for the contracts in `proto/`, generated at build time. Modules mirror the protobuf packages.
//!
//! Generated types stop at each service boundary: services convert them into their own domain types there.

/// Every file in `proto/` as an encoded `FileDescriptorSet`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor_set.bin"));

// Generated code is the one place the workspace lints are relaxed: we do not control its shape.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod signup {
    pub mod user_metadata {
        pub mod v1 {
            tonic::include_proto!("signup.user_metadata.v1");
        }
    }
    pub mod password {
        pub mod v1 {
            tonic::include_proto!("signup.password.v1");
        }
    }
    pub mod email_verification {
        pub mod v1 {
            tonic::include_proto!("signup.email_verification.v1");
        }
    }
    pub mod friend_discovery {
        pub mod v1 {
            tonic::include_proto!("signup.friend_discovery.v1");
        }
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("signup.events.v1");
        }
    }
}

pub use signup::{email_verification, events, friend_discovery, password, user_metadata};

mod event;
pub use event::Event;
