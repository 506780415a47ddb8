//! TLS (`NBD_OPT_STARTTLS`) with real clients: libnbd's `nbdinfo` and `nbdcopy` (GnuTLS)
//! and QEMU's `qemu-img` with `tls-creds-x509`, each with a directory holding
//! `ca-cert.pem`, `client-cert.pem` and `client-key.pem`, as both expect.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use vessel_nbd::proto::*;
use vessel_nbd::{FileDevice, NbdExport, NbdServer, ServerHandle};

/// A certificate authority for the test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let cert = p.self_signed(&key).expect("CA");
        Ca { cert, key }
    }

    /// A leaf certificate and its key, for a server (`server`) or a client.
    fn issue(&self, name: &str, server: bool) -> (rcgen::Certificate, KeyPair) {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name.push(DnType::CommonName, name);
        if server {
            p.subject_alt_names = vec![
                SanType::DnsName("localhost".try_into().expect("dns name")),
                SanType::IpAddress(Ipv4Addr::LOCALHOST.into()),
            ];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("leaf");
        (cert, key)
    }

    /// A client credentials directory as libnbd and QEMU read it; its path and the DER
    /// of its certificate.
    fn client_dir(&self, dir: &Path, name: &str, with_cert: bool) -> (String, Vec<u8>) {
        std::fs::create_dir_all(dir).expect("creds dir");
        std::fs::write(dir.join("ca-cert.pem"), self.cert.pem()).expect("ca");
        let mut der = Vec::new();
        if with_cert {
            let (cert, key) = self.issue(name, false);
            std::fs::write(dir.join("client-cert.pem"), cert.pem()).expect("cert");
            std::fs::write(dir.join("client-key.pem"), key.serialize_pem()).expect("key");
            der = cert.der().to_vec();
        }
        (path_str(dir).to_string(), der)
    }
}

/// The server's rustls configuration: its certificate from `ca`, client certificates
/// required and chained to `ca`.
fn server_config(ca: &Ca) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let (cert, key) = ca.issue("nbd server", true);
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    Arc::new(config)
}

/// A TLS server on loopback TCP: `disk` for any client of the CA, `mine` only for the
/// client whose certificate is `mine`'s.
struct TlsFixture {
    tcp: ServerHandle,
    ca: Ca,
    /// Credentials of the client that may use `mine`.
    owner: String,
    /// Credentials of another client of the same CA.
    other: String,
    dir: TempDir,
}

impl TlsFixture {
    fn new(tag: &str, handshake_timeout: Duration) -> TlsFixture {
        let dir = TempDir::new(tag);
        let ca = Ca::new("test export CA");
        let (owner, owner_der) = ca.client_dir(&dir.join("owner"), "owner", true);
        let (other, _) = ca.client_dir(&dir.join("other"), "other", true);
        let disk = FileDevice::create(dir.join("disk.img"), DISK_SIZE).expect("disk");
        let mine = FileDevice::create(dir.join("mine.img"), 1 << 20).expect("mine");
        let server = NbdServer::new([
            NbdExport::new("disk", Arc::new(disk)),
            NbdExport::new("mine", Arc::new(mine)).clients(move |der| der == owner_der),
        ])
        .expect("server")
        .with_handshake_timeout(handshake_timeout)
        .with_tls(server_config(&ca));
        let tcp = server
            .serve_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("serve tcp");
        TlsFixture {
            tcp,
            ca,
            owner,
            other,
            dir,
        }
    }

    fn port(&self) -> u16 {
        self.tcp.tcp_addr().expect("tcp").port()
    }

    /// `nbds://127.0.0.1:PORT/NAME?tls-certificates=DIR`.
    fn uri(&self, export: &str, creds: &str) -> String {
        format!(
            "nbds://127.0.0.1:{}/{export}?tls-certificates={creds}",
            self.port()
        )
    }

    /// `qemu-img` arguments that open `export` over TLS with `creds`.
    fn qemu_args(&self, export: &str, creds: &str) -> Vec<String> {
        vec![
            "--object".into(),
            format!("tls-creds-x509,id=tls0,dir={creds},endpoint=client"),
            "--image-opts".into(),
            format!(
                "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={},export={export},tls-creds=tls0",
                self.port()
            ),
        ]
    }
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn clients_reach_exports_only_through_tls_with_a_certificate_of_the_ca() {
    let fx = TlsFixture::new("tls-access", vessel_nbd::HANDSHAKE_TIMEOUT);
    // Each client sees the exports its certificate may use.
    let list = run_ok("nbdinfo", &["--list", "--json", &fx.uri("", &fx.owner)]);
    assert!(
        list.contains("\"disk\"") && list.contains("\"mine\""),
        "{list}"
    );
    let list = run_ok("nbdinfo", &["--list", "--json", &fx.uri("", &fx.other)]);
    assert!(
        list.contains("\"disk\"") && !list.contains("\"mine\""),
        "{list}"
    );
    let info = run_ok("nbdinfo", &["--json", &fx.uri("mine", &fx.owner)]);
    assert!(info.contains("\"export-size\": 1048576"), "{info}");
    let out = run("nbdinfo", &["--json", &fx.uri("mine", &fx.other)]);
    assert!(!out.status.success(), "another client opened mine");
    assert!(stderr_of(&out).contains("mine"), "{}", stderr_of(&out));

    // Without TLS the server serves nothing (libnbd shows NBD_REP_ERR_TLS_REQD as "not
    // supported"; the stall test below reads the reply itself).
    let plain = format!("nbd://127.0.0.1:{}/disk", fx.port());
    let out = run("nbdinfo", &["--json", &plain]);
    assert!(!out.status.success(), "a plain client opened disk");
    assert!(
        stderr_of(&out).contains("not supported"),
        "{}",
        stderr_of(&out)
    );
    let out = run("nbdinfo", &["--list", &plain]);
    assert!(!out.status.success(), "a plain client listed the exports");

    // TLS without a client certificate, or with one from another CA: refused in the TLS
    // handshake.
    let (anonymous, _) = fx.ca.client_dir(&fx.dir.join("anonymous"), "", false);
    let out = run("nbdinfo", &["--json", &fx.uri("disk", &anonymous)]);
    assert!(
        !out.status.success(),
        "a client without a certificate got in"
    );
    let stranger_ca = Ca::new("another CA");
    let stranger = fx.dir.join("stranger");
    stranger_ca.client_dir(&stranger, "stranger", true);
    // It trusts the server's CA, but its own certificate is from elsewhere.
    std::fs::write(stranger.join("ca-cert.pem"), fx.ca.cert.pem()).expect("ca");
    let out = run("nbdinfo", &["--json", &fx.uri("disk", path_str(&stranger))]);
    assert!(!out.status.success(), "a client of another CA got in");
    // A client that does not trust the server's certificate refuses it.
    let wary = fx.dir.join("wary");
    stranger_ca.client_dir(&wary, "wary", true);
    let out = run("nbdinfo", &["--json", &fx.uri("disk", path_str(&wary))]);
    assert!(
        !out.status.success(),
        "a client trusted a server of another CA"
    );

    // The server is still there for the rightful client.
    run_ok("nbdinfo", &["--json", &fx.uri("disk", &fx.other)]);
}

#[test]
fn data_written_over_tls_reads_back_through_qemu() {
    let fx = TlsFixture::new("tls-data", vessel_nbd::HANDSHAKE_TIMEOUT);
    let src = fx.dir.join("src.img");
    let data = random_bytes(DISK_SIZE as usize, 0x715);
    std::fs::write(&src, &data).expect("source");
    // libnbd writes it (several connections, many requests in flight), flushing at the end.
    run_ok(
        "nbdcopy",
        &["--flush", path_str(&src), &fx.uri("disk", &fx.owner)],
    );
    // QEMU reads it back over TLS.
    let back = fx.dir.join("back.img");
    let mut args: Vec<String> = vec!["convert".into(), "-O".into(), "raw".into()];
    args.extend(fx.qemu_args("disk", &fx.other));
    args.push(path_str(&back).into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok("qemu-img", &args);
    assert!(
        std::fs::read(&back).expect("copy") == data,
        "the bytes read back over TLS differ from those written"
    );
    // And the export's file holds them too.
    assert!(std::fs::read(fx.dir.join("disk.img")).expect("disk") == data);
    // QEMU is refused `mine` with another client's certificate.
    let mut args: Vec<String> = vec!["info".into()];
    args.extend(fx.qemu_args("mine", &fx.other));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("qemu-img", &args);
    assert!(
        !out.status.success(),
        "qemu-img opened mine as another client"
    );
}

/// Sends one option and reads its reply header: (option, reply type, data).
fn option(s: &mut TcpStream, opt: u32, data: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut m = IHAVEOPT.to_be_bytes().to_vec();
    m.extend_from_slice(&opt.to_be_bytes());
    m.extend_from_slice(&(data.len() as u32).to_be_bytes());
    m.extend_from_slice(data);
    s.write_all(&m).expect("send option");
    let mut h = [0u8; 20];
    s.read_exact(&mut h).expect("reply header");
    assert_eq!(
        u64::from_be_bytes(h[..8].try_into().unwrap()),
        OPT_REPLY_MAGIC
    );
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("reply data");
    (
        u32::from_be_bytes(h[8..12].try_into().unwrap()),
        u32::from_be_bytes(h[12..16].try_into().unwrap()),
        body,
    )
}

#[test]
fn the_handshake_deadline_covers_a_client_that_stalls_after_starttls() {
    let fx = TlsFixture::new("tls-stall", Duration::from_secs(1));
    let mut s = TcpStream::connect(("127.0.0.1", fx.port())).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).expect("greeting");
    s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
        .expect("flags");
    // Options before TLS are refused with TLS_REQD, STARTTLS with data is invalid.
    let (opt, kind, _) = option(&mut s, OPT_LIST, &[]);
    assert_eq!((opt, kind), (OPT_LIST, REP_ERR_TLS_REQD));
    let (_, kind, _) = option(&mut s, OPT_STARTTLS, b"x");
    assert_eq!(kind, REP_ERR_INVALID);
    let (opt, kind, _) = option(&mut s, OPT_STARTTLS, &[]);
    assert_eq!((opt, kind), (OPT_STARTTLS, REP_ACK));
    // Then nothing: no ClientHello. The server closes once the deadline passes.
    let t = Instant::now();
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest);
    assert!(
        n.is_ok() && rest.is_empty(),
        "expected a close, got {n:?} and {rest:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "closed only after {:?}",
        t.elapsed()
    );
    // A rightful client still gets in.
    run_ok("nbdinfo", &["--size", &fx.uri("disk", &fx.owner)]);
}
