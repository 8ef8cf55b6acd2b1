//! The workspace's one TLS crypto provider. Every rustls user here is built on ring (no second crypto library in
//! the binaries); a client that takes the process default (reqwest, under object_store's S3 client) needs it
//! installed first.

/// Installs ring as the process's default rustls provider; harmless when one is installed already.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
