//! The HTTPS listener's TLS: the server's own certificate (made once with rcgen, or the
//! operator's), and a client-certificate check that asks for a certificate without requiring
//! one. Which certificate is trusted is decided by its fingerprint, by [`super::AuthService`].

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::{Error, Result};

/// File names of the server's certificate and key under the root directory.
pub const CERT_FILE: &str = "server.crt";
/// See [`CERT_FILE`].
pub const KEY_FILE: &str = "server.key";

/// SHA-256 of a certificate's DER, as 64 lowercase hex characters (what clients pin and
/// what trusted client certificates are known by).
pub use vessel_tls::fingerprint;

/// The ring provider: the only one Vessel uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM text, or why there are none.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(format!("the certificate is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::invalid(
            "no certificate in the PEM text (expected a -----BEGIN CERTIFICATE----- block)",
        ));
    }
    Ok(certs)
}

/// The server's certificate chain and key under `root`, made on the first start. An operator
/// may replace both files with their own (PEM); they are read at every start.
pub fn server_identity(
    root: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (cert_path, key_path) = (root.join(CERT_FILE), root.join(KEY_FILE));
    // The key is put in place before the certificate: a key alone is a first start that was
    // stopped half-way (a certificate is never written without its key), made again.
    if key_path.exists() && !cert_path.exists() {
        tracing::warn!(
            key = %key_path.display(),
            "a server key without its certificate (an interrupted first start): making both again"
        );
    }
    if !cert_path.exists() {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        if host != "localhost" {
            names.push(host);
        }
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| Error::internal(format!("making the server certificate: {e}")))?;
        write_private(&key_path, made.key_pair.serialize_pem().as_bytes())?;
        write_private(&cert_path, made.cert.pem().as_bytes())?;
        tracing::info!(
            fingerprint = %fingerprint(made.cert.der()),
            "made the server's TLS certificate"
        );
    }
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| Error::internal(format!("reading {}: {e}", p.display())))
    };
    let certs = certificates_from_pem(&read(&cert_path)?)
        .map_err(|e| Error::internal(format!("{}: {e}", cert_path.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?)
        .map_err(|e| Error::internal(format!("{}: no private key: {e}", key_path.display())))?;
    Ok((certs, key))
}

/// Writes `data` to `path` whole or not at all (a private temporary file renamed into place),
/// readable by root only.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::internal(format!("creating {}: {e}", tmp.display())))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::internal(format!("writing {}: {e}", tmp.display())))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::internal(format!("securing {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::internal(format!("placing {}: {e}", path.display())))
}

use std::os::unix::fs::OpenOptionsExt;

/// The TLS configuration of the HTTPS listener: the server's certificate, TLS 1.2 and 1.3,
/// HTTP/1.1, a client certificate asked for but not required.
pub fn server_config(root: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let (certs, key) = server_identity(root)?;
    let provider = provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(Arc::new(AnyClientCertificate { provider }))
        .with_single_cert(certs, key)
        .map_err(|e| Error::internal(format!("the server's TLS certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any client certificate whose handshake signature holds (the client owns the key):
/// whether it is trusted is a question of its fingerprint, answered per request.
#[derive(Debug)]
struct AnyClientCertificate {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_identity_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("vessel-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (first, _) = server_identity(&dir).unwrap();
        let (again, _) = server_identity(&dir).unwrap();
        assert_eq!(fingerprint(&first[0]), fingerprint(&again[0]));
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        server_config(&dir).unwrap();
        // A key without its certificate is a first start stopped between the two files (each
        // is written whole): both are made again, and the daemon starts.
        std::fs::remove_file(dir.join(CERT_FILE)).unwrap();
        let (remade, _) = server_identity(&dir).unwrap();
        assert_ne!(fingerprint(&remade[0]), fingerprint(&first[0]));
        assert!(!dir.join("server.key.tmp").exists() && !dir.join("server.crt.tmp").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn fingerprints_are_sha256_hex() {
        assert_eq!(
            fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(certificates_from_pem(b"not pem").is_err());
    }
}
