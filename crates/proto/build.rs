//! Compiles `proto/` with the pure-Rust `protox` compiler, so no system `protoc` is needed, and hands the
//! descriptors to tonic/prost codegen. The encoded descriptor set is kept for gRPC server reflection.

#![allow(clippy::disallowed_methods, reason = "cargo hands build scripts their inputs as environment variables")]

use std::{env, error::Error, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "signup/user_metadata/v1/user_metadata.proto",
    "signup/password/v1/password.proto",
    "signup/email_verification/v1/email_verification.proto",
    "signup/friend_discovery/v1/friend_discovery.proto",
    "signup/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let descriptors = protox::compile(PROTOS, [&root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("descriptor_set.bin"), prost::Message::encode_to_vec(&descriptors))?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
