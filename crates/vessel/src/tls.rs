//! TLS to a remote daemon: its certificate is self-signed, so it is trusted by pinning the
//! SHA-256 fingerprint of its DER (`vessel-tls`, shared with the members of a cluster). This
//! module reads the client's certificate files.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ClientConfig;
use vessel_tls::Pin;

pub use vessel_tls::{fingerprint, mismatch_in, FingerprintMismatch};

/// Client credentials: a certificate chain and its key (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// PEM file of the certificate (chain, leaf first).
    pub cert: PathBuf,
    /// PEM file of the private key.
    pub key: PathBuf,
}

impl ClientIdentity {
    /// Reads and checks both files.
    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .with_context(|| {
                format!(
                    "cannot read the client certificate {} (a PEM file)",
                    self.cert.display()
                )
            })?;
        if certs.is_empty() {
            bail!(
                "{} holds no certificate (expected a PEM CERTIFICATE block)",
                self.cert.display()
            );
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).with_context(|| {
            format!(
                "cannot read the client key {} (a PEM private key)",
                self.key.display()
            )
        })?;
        Ok((certs, key))
    }
}

fn config(pin: Pin, identity: Option<&ClientIdentity>) -> Result<Arc<ClientConfig>> {
    let identity = identity
        .map(|id| id.load().map(|loaded| (id, loaded)))
        .transpose()?;
    let (files, loaded) = match identity {
        Some((id, loaded)) => (Some(id), Some(loaded)),
        None => (None, None),
    };
    vessel_tls::client_config(pin, loaded).map_err(|e| match (e, files) {
        (vessel_tls::ConfigError::Tls(e), Some(id)) => anyhow::anyhow!(
            "the client key {} does not fit the certificate {}: {e}",
            id.key.display(),
            id.cert.display()
        ),
        (e, _) => anyhow::anyhow!("{e}"),
    })
}

/// A TLS configuration that accepts only the server whose certificate has `fingerprint`.
pub fn pinned_config(
    fingerprint: &str,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<ClientConfig>> {
    config(Pin::Fingerprint(fingerprint.to_string()), identity)
}

/// A TLS configuration that accepts any server certificate, to learn its fingerprint.
pub fn probe_config(identity: Option<&ClientIdentity>) -> Result<Arc<ClientConfig>> {
    config(Pin::Any, identity)
}

/// Reads both files of `identity`, for an early and clear error.
pub fn check_identity(identity: &ClientIdentity) -> Result<()> {
    identity.load().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pins_and_identities_are_refused() {
        assert!(pinned_config("abc", None).is_err());
        let missing = ClientIdentity {
            cert: "/nonexistent/client.crt".into(),
            key: "/nonexistent/client.key".into(),
        };
        let err = pinned_config(&fingerprint(b""), Some(&missing)).unwrap_err();
        assert!(
            format!("{err:#}")
                .contains("cannot read the client certificate /nonexistent/client.crt"),
            "{err:#}"
        );
    }
}
