//! TLS of NBD exports: a certificate authority of the daemon's own (made once, kept under
//! `<root>/storage/nbd-tls/`), a server certificate from it for each TLS listener, and
//! client certificates from it for each client an export is given to. A listener takes
//! client certificates of this authority only; each export then takes only the ones issued
//! for it and not revoked (known by their fingerprints, in its record).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::auth::tls::{provider, write_private};
use crate::error::{Error, Result};

/// The authority's name (its certificates are made again from it to sign: see [`NbdCa`]).
const CA_NAME: &str = "Vessel NBD export CA";

/// The daemon's authority for NBD over TLS.
pub struct NbdCa {
    /// Made again from the stored key and [`CA_NAME`] to sign with: what a signature
    /// takes from its issuer (the name and the key, hence the key identifier) is the same
    /// as the stored certificate's, so what it signs chains to that one.
    issuer: rcgen::Certificate,
    key: KeyPair,
    /// The stored certificate (what clients trust), PEM and DER.
    pem: String,
    der: CertificateDer<'static>,
}

/// A client's certificate and key, PEM, and the certificate's fingerprint.
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    pub fingerprint: String,
}

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("NBD TLS: {what}: {e}"))
}

/// The current year (for validity periods).
fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA", e))?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(this_year() - 1, 1, 1);
    p.not_after = rcgen::date_time_ymd(this_year() + 30, 1, 1);
    Ok(p)
}

impl NbdCa {
    /// The authority under `dir`, made on first use.
    pub fn load_or_create(dir: &Path) -> Result<NbdCa> {
        let (cert_path, key_path) = (dir.join("ca-cert.pem"), dir.join("ca-key.pem"));
        if !cert_path.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(&format!("creating {}", dir.display()), e))?;
            let key = KeyPair::generate().map_err(|e| err("CA key", e))?;
            let cert = ca_params()?
                .self_signed(&key)
                .map_err(|e| err("CA certificate", e))?;
            // The key first: a key without a certificate is made again.
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            write_private(&cert_path, cert.pem().as_bytes())?;
            tracing::info!(dir = %dir.display(), "made the NBD export certificate authority");
        }
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| err(&format!("reading {}", p.display()), e))
        };
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| err("CA key", e))?;
        let pem = read(&cert_path)?;
        let der = crate::auth::tls::certificates_from_pem(pem.as_bytes())
            .map_err(|e| err(&cert_path.display().to_string(), e.message))?
            .remove(0);
        let issuer = ca_params()?
            .self_signed(&key)
            .map_err(|e| err("CA certificate", e))?;
        Ok(NbdCa {
            issuer,
            key,
            pem,
            der,
        })
    }

    /// The authority's certificate, PEM (a client's `ca-cert.pem`).
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    fn leaf(&self, mut p: CertificateParams) -> Result<(rcgen::Certificate, KeyPair)> {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = rcgen::date_time_ymd(this_year() - 1, 1, 1);
        p.not_after = rcgen::date_time_ymd(this_year() + 10, 1, 1);
        let key = KeyPair::generate().map_err(|e| err("key", e))?;
        let cert = p
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(|e| err("certificate", e))?;
        Ok((cert, key))
    }

    /// A client certificate for export `export`.
    pub fn issue_client(&self, export: &str) -> Result<ClientIdentity> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("client", e))?;
        p.distinguished_name
            .push(DnType::CommonName, format!("NBD client of {export}"));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (cert, key) = self.leaf(p)?;
        Ok(ClientIdentity {
            fingerprint: crate::auth::tls::fingerprint(cert.der()),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The TLS configuration of a listener on `addr`: a server certificate naming the
    /// addresses clients reach it by (the listen address; for an unspecified one, this
    /// host's addresses), `localhost` and the host name; client certificates of this
    /// authority required.
    pub fn server_config(&self, addr: SocketAddr) -> Result<Arc<rustls::ServerConfig>> {
        let mut names: Vec<SanType> = vec![SanType::DnsName(
            "localhost".try_into().map_err(|e| err("name", e))?,
        )];
        if let Some(host) = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| h != "localhost")
        {
            if let Ok(n) = host.as_str().try_into() {
                names.push(SanType::DnsName(n));
            }
        }
        let mut ips: Vec<IpAddr> = Vec::new();
        if addr.ip().is_unspecified() {
            ips.extend([
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ]);
            if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
                for a in addrs {
                    let Some(s) = a.address else { continue };
                    if let Some(v4) = s.as_sockaddr_in() {
                        ips.push(IpAddr::V4(v4.ip()));
                    } else if let Some(v6) = s.as_sockaddr_in6() {
                        ips.push(IpAddr::V6(v6.ip()));
                    }
                }
            }
        } else {
            ips.push(addr.ip());
        }
        ips.sort();
        ips.dedup();
        names.extend(ips.into_iter().map(SanType::IpAddress));
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("server", e))?;
        p.distinguished_name
            .push(DnType::CommonName, format!("Vessel NBD server {addr}"));
        p.subject_alt_names = names;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (cert, key) = self.leaf(p)?;
        let provider = provider();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.der.clone())
            .map_err(|e| err("CA certificate", e))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| err("client verifier", e))?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err("versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![cert.der().clone(), self.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(|e| err("server certificate", e))?;
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory removed again, also when the test fails.
    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn certificates_issued_after_a_reload_chain_to_the_stored_authority() {
        let dir = std::env::temp_dir().join(format!("vessel-nbd-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let scratch = Scratch(dir.clone());
        let first = NbdCa::load_or_create(&dir).unwrap();
        let again = NbdCa::load_or_create(&dir).unwrap();
        assert_eq!(first.cert_pem(), again.cert_pem(), "the CA was made again");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join("ca-key.pem"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A client certificate from the reloaded authority passes a verifier that trusts
        // the stored certificate.
        let client = again.issue_client("disk").unwrap();
        let der = crate::auth::tls::certificates_from_pem(client.cert_pem.as_bytes())
            .unwrap()
            .remove(0);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(first.der.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now())
            .expect("the reloaded authority's client certificate chains to the stored one");
        assert_eq!(client.fingerprint, crate::auth::tls::fingerprint(&der));
        // And one from another authority does not.
        let other_dir = dir.join("other");
        let other = NbdCa::load_or_create(&other_dir).unwrap();
        let stranger = other.issue_client("disk").unwrap();
        let der = crate::auth::tls::certificates_from_pem(stranger.cert_pem.as_bytes())
            .unwrap()
            .remove(0);
        assert!(verifier
            .verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now())
            .is_err());
        drop(scratch);
        assert!(!dir.exists());
    }
}
