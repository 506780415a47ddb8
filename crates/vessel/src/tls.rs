//! TLS to a remote daemon: its certificate is self-signed, so it is trusted by pinning the
//! SHA-256 fingerprint of its DER, not by a chain to a root.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};

/// The SHA-256 of a certificate's DER as 64 lowercase hex characters.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `s` has the shape of a fingerprint: 64 lowercase hex characters.
pub fn is_fingerprint(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The server presented another certificate than the pinned one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintMismatch {
    /// The fingerprint stored when the server was trusted.
    pub pinned: String,
    /// The fingerprint of the certificate the server presented.
    pub presented: String,
}

impl fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate fingerprint {} does not match the pinned {}",
            self.presented, self.pinned
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

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

/// What the verifier accepts.
#[derive(Debug, Clone)]
enum Pin {
    /// Exactly the certificate with this fingerprint.
    Fingerprint(String),
    /// Any certificate (only to learn its fingerprint, before asking whether to trust it).
    Any,
}

/// Accepts the server by its leaf certificate's fingerprint; still checks the handshake's
/// signatures, so the server must hold the certificate's key.
#[derive(Debug)]
struct PinnedVerifier {
    pin: Pin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pin {
            Pin::Any => Ok(ServerCertVerified::assertion()),
            Pin::Fingerprint(pinned) => {
                let presented = fingerprint(end_entity);
                if presented == *pinned {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                        OtherError(Arc::new(FingerprintMismatch {
                            pinned: pinned.clone(),
                            presented,
                        })),
                    )))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn config(pin: Pin, identity: Option<&ClientIdentity>) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(ring::default_provider());
    let verifier = Arc::new(PinnedVerifier {
        pin,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS")?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let (certs, key) = id.load()?;
            builder.with_client_auth_cert(certs, key).with_context(|| {
                format!(
                    "the client key {} does not fit the certificate {}",
                    id.key.display(),
                    id.cert.display()
                )
            })?
        }
    };
    Ok(Arc::new(config))
}

/// A TLS configuration that accepts only the server whose certificate has `fingerprint`.
pub fn pinned_config(
    fingerprint: &str,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<ClientConfig>> {
    if !is_fingerprint(fingerprint) {
        bail!(
            "invalid certificate fingerprint '{fingerprint}': expected 64 lowercase hex characters"
        );
    }
    config(Pin::Fingerprint(fingerprint.to_string()), identity)
}

/// A TLS configuration that accepts any server certificate, to learn its fingerprint.
pub fn probe_config(identity: Option<&ClientIdentity>) -> Result<Arc<ClientConfig>> {
    config(Pin::Any, identity)
}

/// The mismatch a failed handshake hides in its error, if that is why it failed.
pub fn mismatch_in(e: &std::io::Error) -> Option<FingerprintMismatch> {
    let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) =
        e.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    inner.downcast_ref::<FingerprintMismatch>().cloned()
}

/// Reads both files of `identity`, for an early and clear error.
pub fn check_identity(identity: &ClientIdentity) -> Result<()> {
    identity.load().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_sha256_hex() {
        assert_eq!(
            fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_fingerprint(&fingerprint(b"")));
        assert!(!is_fingerprint("BA7816BF"));
        assert!(!is_fingerprint(&fingerprint(b"").to_uppercase()));
    }

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
