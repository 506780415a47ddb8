//! TLS to a server whose certificate is self-signed: it is trusted by pinning the SHA-256
//! fingerprint of its DER, not by a chain to a root. The CLI pins a remote's certificate;
//! the members of a cluster pin each other's (with their own as the client certificate).

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};

/// The SHA-256 of a certificate's DER as 64 lowercase hex characters.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
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

/// What the verifier accepts.
#[derive(Debug, Clone)]
pub enum Pin {
    /// Exactly the certificate with this fingerprint.
    Fingerprint(String),
    /// Any certificate (only to learn its fingerprint, before asking whether to trust it).
    Any,
}

/// Why no configuration was made.
#[derive(Debug)]
pub enum ConfigError {
    /// The pin is not 64 lowercase hex characters.
    BadFingerprint(String),
    /// The client key does not fit its certificate, or TLS could not be set up.
    Tls(rustls::Error),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadFingerprint(s) => write!(
                f,
                "invalid certificate fingerprint '{s}': expected 64 lowercase hex characters"
            ),
            Self::Tls(e) => write!(f, "cannot set up TLS: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

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

/// A client configuration (ring provider) that accepts the server `pin` says, presenting
/// `identity` (a certificate chain, leaf first, and its key) when one is given.
pub fn client_config(
    pin: Pin,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, ConfigError> {
    if let Pin::Fingerprint(f) = &pin {
        if !is_fingerprint(f) {
            return Err(ConfigError::BadFingerprint(f.clone()));
        }
    }
    let provider = Arc::new(ring::default_provider());
    let verifier = Arc::new(PinnedVerifier {
        pin,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ConfigError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(ConfigError::Tls)?,
    };
    Ok(Arc::new(config))
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
    fn a_malformed_pin_is_refused() {
        let e = client_config(Pin::Fingerprint("abc".into()), None).unwrap_err();
        assert!(
            e.to_string()
                .contains("invalid certificate fingerprint 'abc'"),
            "{e}"
        );
        assert!(client_config(Pin::Fingerprint(fingerprint(b"")), None).is_ok());
    }
}
