//! The workspace's one TLS crypto provider, and the optional mutual TLS of gRPC between the services. Every rustls
//! user here is built on ring (no second crypto library in the binaries); a client that takes the process default
//! (reqwest, under object_store's S3 client) needs it installed first.

use std::sync::OnceLock;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::settings::SettingsError;

/// Installs ring as the process's default rustls provider; harmless when one is installed already.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Mutual TLS on every gRPC port and call of this process: `GRPC_TLS_CERT` (this service's certificate chain),
/// `GRPC_TLS_KEY` (its private key) and `GRPC_TLS_CA` (the authority that signs every service's certificate), PEM,
/// set together or not at all. Set, a server takes only callers that present a certificate of that authority,
/// and a channel speaks only to `https://` servers that do, presenting its own. Unset, gRPC is plain text inside
/// the network boundary (ARCHITECTURE.md, invariant 12).
pub struct MutualTls {
    cert: String,
    key: SecretString,
    ca: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawMutualTls {
    grpc_tls_cert: Option<String>,
    grpc_tls_key: Option<SecretString>,
    grpc_tls_ca: Option<String>,
}

static MUTUAL_TLS: OnceLock<Option<MutualTls>> = OnceLock::new();

/// Reads `GRPC_TLS_*` and keeps them for this process's gRPC servers and channels; called once at start, before
/// either is made. A certificate or key that does not parse stops the process here, naming its variable.
pub fn init_mutual_tls() -> Result<(), SettingsError> {
    let raw: RawMutualTls = crate::settings::load()?;
    let tls = match (raw.grpc_tls_cert, raw.grpc_tls_key, raw.grpc_tls_ca) {
        (None, None, None) => None,
        (Some(cert), Some(key), Some(ca)) => {
            let invalid = |variable: &str, what: &str| SettingsError::invalid(variable, format!("is not {what} (PEM)"));
            let certs = |pem: &str| CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>();
            if certs(&cert).map_or(true, |certs| certs.is_empty()) {
                return Err(invalid("GRPC_TLS_CERT", "a certificate chain"));
            }
            if PrivateKeyDer::from_pem_slice(key.expose_secret().as_bytes()).is_err() {
                return Err(invalid("GRPC_TLS_KEY", "a private key"));
            }
            if certs(&ca).map_or(true, |certs| certs.is_empty()) {
                return Err(invalid("GRPC_TLS_CA", "a certificate"));
            }
            install_provider();
            let tls = MutualTls { cert, key, ca };
            tls.configures()?;
            Some(tls)
        }
        (cert, key, _) => {
            let missing = match (cert, key) {
                (None, _) => "GRPC_TLS_CERT",
                (_, None) => "GRPC_TLS_KEY",
                _ => "GRPC_TLS_CA",
            };
            let reason = "is missing: GRPC_TLS_CERT, GRPC_TLS_KEY and GRPC_TLS_CA are set together or not at all";
            return Err(SettingsError::invalid(missing, reason));
        }
    };
    let _ = MUTUAL_TLS.set(tls);
    Ok(())
}

/// The mutual TLS [`init_mutual_tls`] read, if any (none before it ran).
pub fn mutual_tls() -> Option<&'static MutualTls> {
    MUTUAL_TLS.get().and_then(Option::as_ref)
}

impl MutualTls {
    /// Builds both sides once, so what only building finds (a key that does not match the certificate, a key type
    /// ring cannot use, an authority with no usable root) stops the process at start instead of leaving it ready
    /// with a gRPC port that serves nothing.
    fn configures(&self) -> Result<(), SettingsError> {
        let invalid = |error: tonic::transport::Error| {
            SettingsError::invalid(
                "GRPC_TLS_CERT",
                format!("with GRPC_TLS_KEY and GRPC_TLS_CA, does not configure: {error}"),
            )
        };
        tonic::transport::Server::builder().tls_config(self.server()).map_err(invalid)?;
        tonic::transport::Endpoint::from_static("https://localhost").tls_config(self.client()).map_err(invalid)?;
        Ok(())
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert, self.key.expose_secret())
    }

    /// A server's side: its certificate, and callers' certificates required, of the authority; a handshake that
    /// does not finish within ten seconds is dropped (a peer without a certificate cannot hold one open).
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca))
            .timeout(std::time::Duration::from_secs(10))
    }

    /// A channel's side: servers' certificates of the authority only, and its own presented.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca)).identity(self.identity())
    }
}

impl std::fmt::Debug for MutualTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutualTls").finish_non_exhaustive()
    }
}
