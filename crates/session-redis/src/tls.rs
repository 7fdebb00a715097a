//! TLS to the server (feature `tls`): rustls through redis-rs, trusting the system's roots or
//! the certificates given to the builder, optionally presenting a client certificate.

use deadpool_redis::redis::{
    self, ClientTlsConfig, ConnectionAddr, ConnectionInfo, TlsCertificates,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use session_core::{Error, Result};

/// What the builder was told about TLS.
#[derive(Clone, Default)]
pub(crate) struct TlsSettings {
    /// PEM certificates to trust instead of the system's roots.
    pub(crate) roots: Option<Vec<u8>>,
    /// PEM certificate chain and private key to present.
    pub(crate) client: Option<ClientTlsConfig>,
}

impl TlsSettings {
    pub(crate) fn is_set(&self) -> bool {
        self.roots.is_some() || self.client.is_some()
    }

    /// Completes the connection settings of a URL: installs a crypto provider for a
    /// `rediss://` URL, and attaches the certificates given to the builder.
    pub(crate) fn apply(&self, info: ConnectionInfo) -> Result<ConnectionInfo> {
        let is_tls = matches!(info.addr, ConnectionAddr::TcpTls { .. });
        if is_tls {
            ensure_crypto_provider();
        }
        if !self.is_set() {
            return Ok(info);
        }
        if !is_tls {
            return Err(Error::Config(
                "TLS certificates were given but the Redis URL is not rediss://".into(),
            ));
        }
        if let Some(pem) = &self.roots {
            // redis-rs skips anything that is not a PEM certificate and would trust nothing
            // at all; say so now rather than fail every connection later.
            let found =
                CertificateDer::pem_slice_iter(pem).collect::<std::result::Result<Vec<_>, _>>();
            match found {
                Ok(certs) if !certs.is_empty() => {}
                Ok(_) => {
                    return Err(Error::Config(
                        "tls_root_certificates: no PEM certificate found".into(),
                    ));
                }
                Err(e) => {
                    return Err(Error::Config(
                        format!("tls_root_certificates: invalid PEM: {e}").into(),
                    ));
                }
            }
        }
        let certificates = TlsCertificates {
            client_tls: self.client.clone(),
            root_cert: self.roots.clone(),
        };
        let client = redis::Client::build_with_tls(info, certificates)
            .map_err(|e| Error::Config(format!("invalid Redis TLS configuration: {e}").into()))?;
        Ok(client.get_connection_info().clone())
    }
}

/// Makes sure rustls has a process-wide crypto provider, installing ring's if none was
/// installed. redis-rs builds its TLS configuration with rustls's default provider, which
/// rustls can pick by itself only when exactly one provider feature is compiled in; another
/// crate in the build enabling aws-lc-rs as well would otherwise make every connection panic.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
