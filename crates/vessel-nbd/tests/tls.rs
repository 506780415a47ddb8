//! TLS (`NBD_OPT_STARTTLS`) with real clients: libnbd's `nbdinfo` and `nbdcopy` (GnuTLS)
//! and QEMU's `qemu-img` with `tls-creds-x509`, each with a directory holding
//! `ca-cert.pem`, `client-cert.pem` and `client-key.pem`, as both expect.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use vessel_nbd::proto::*;
use vessel_nbd::{BlockDevice, DeviceError, FileDevice, NbdExport, NbdServer, ServerHandle};

/// The tests of this file one at a time: one of them counts the threads of the process.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A file device that counts its reads and flushes.
struct Counting {
    inner: FileDevice,
    reads: AtomicUsize,
    flushes: AtomicUsize,
}

impl BlockDevice for Counting {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DeviceError> {
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> Result<(), DeviceError> {
        self.inner.flush()?;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

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
/// client whose certificate is `mine`'s (a device that counts its flushes), while
/// `owner_taken` holds.
struct TlsFixture {
    server: NbdServer,
    tcp: ServerHandle,
    mine: Arc<Counting>,
    owner_taken: Arc<AtomicBool>,
    ca: Ca,
    /// Credentials of the client that may use `mine`.
    owner: String,
    /// Credentials of another client of the same CA.
    other: String,
    dir: TempDir,
}

impl TlsFixture {
    fn new(tag: &str, handshake_timeout: Duration) -> TlsFixture {
        Self::with_stall(tag, handshake_timeout, vessel_nbd::STALL_TIMEOUT)
    }

    fn with_stall(tag: &str, handshake_timeout: Duration, stall: Duration) -> TlsFixture {
        let dir = TempDir::new(tag);
        let ca = Ca::new("test export CA");
        let (owner, owner_der) = ca.client_dir(&dir.join("owner"), "owner", true);
        let (other, _) = ca.client_dir(&dir.join("other"), "other", true);
        let disk = FileDevice::create(dir.join("disk.img"), DISK_SIZE).expect("disk");
        let mine = Arc::new(Counting {
            inner: FileDevice::create(dir.join("mine.img"), 1 << 20).expect("mine"),
            reads: AtomicUsize::new(0),
            flushes: AtomicUsize::new(0),
        });
        let owner_taken = Arc::new(AtomicBool::new(true));
        let taken = owner_taken.clone();
        let server = NbdServer::new([
            NbdExport::new("disk", Arc::new(disk)),
            NbdExport::new("mine", mine.clone())
                .clients(move |der| taken.load(Ordering::SeqCst) && der == owner_der),
        ])
        .expect("server")
        .with_handshake_timeout(handshake_timeout)
        .with_stall_timeout(stall)
        .with_tls(server_config(&ca));
        let tcp = server
            .serve_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("serve tcp");
        TlsFixture {
            server,
            tcp,
            mine,
            owner_taken,
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
    let _serial = serial();
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
    let _serial = serial();
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

#[test]
fn the_handshake_deadline_covers_a_client_that_stalls_after_starttls() {
    let _serial = serial();
    let fx = TlsFixture::new("tls-stall", Duration::from_secs(1));
    let mut s = greeted(fx.port());
    // Options before TLS are refused with TLS_REQD, STARTTLS with data is invalid.
    assert_eq!(
        option_on(&mut s, OPT_LIST, &[]),
        (OPT_LIST, REP_ERR_TLS_REQD)
    );
    assert_eq!(
        option_on(&mut s, OPT_STARTTLS, b"x"),
        (OPT_STARTTLS, REP_ERR_INVALID)
    );
    assert_eq!(
        option_on(&mut s, OPT_STARTTLS, &[]),
        (OPT_STARTTLS, REP_ACK)
    );
    // Then a ClientHello that never ends: the start of a TLS record and a byte every
    // 200 ms, so that no single read waits the 1 s read timeout. The server closes once the
    // handshake's deadline passes all the same.
    let mut trickle = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let _ = trickle.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]);
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(200));
            if trickle.write_all(&[0]).is_err() {
                return;
            }
        }
    });
    let t = Instant::now();
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest);
    let took = t.elapsed();
    let _ = s.shutdown(std::net::Shutdown::Both);
    writer.join().expect("writer");
    assert!(n.is_ok(), "expected a close, got {n:?}");
    assert!(
        took < Duration::from_secs(6),
        "closed only after {took:?}: the deadline does not cover the TLS handshake"
    );
    // A rightful client still gets in.
    run_ok("nbdinfo", &["--size", &fx.uri("disk", &fx.owner)]);
}

/// A rustls client over `s` (after STARTTLS) with the credentials in `creds`.
fn tls_client(
    s: TcpStream,
    creds: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(creds.join("ca-cert.pem")).expect("ca"))
        .expect("root");
    let chain = vec![CertificateDer::from_pem_file(creds.join("client-cert.pem")).expect("cert")];
    let key = PrivateKeyDer::from_pem_file(creds.join("client-key.pem")).expect("key");
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client config");
    let name = rustls::pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    rustls::StreamOwned::new(conn, s)
}

/// Sends one option (on the socket, or inside TLS) and reads its reply: (option, reply
/// type).
fn option_on(s: &mut impl ReadWrite, opt: u32, data: &[u8]) -> (u32, u32) {
    let mut m = IHAVEOPT.to_be_bytes().to_vec();
    m.extend_from_slice(&opt.to_be_bytes());
    m.extend_from_slice(&(data.len() as u32).to_be_bytes());
    m.extend_from_slice(data);
    s.write_all(&m).expect("send option");
    s.flush().expect("flush");
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
    )
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Connects, reads the greeting and sends the client flags.
fn greeted(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).expect("greeting");
    s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
        .expect("flags");
    s
}

#[test]
fn export_name_before_tls_closes_and_a_second_starttls_is_refused() {
    let _serial = serial();
    let fx = TlsFixture::new("tls-order", vessel_nbd::HANDSHAKE_TIMEOUT);
    // NBD_OPT_EXPORT_NAME cannot carry an error: before TLS it closes the connection,
    // without the export's size or flags.
    let mut s = greeted(fx.port());
    let mut m = IHAVEOPT.to_be_bytes().to_vec();
    m.extend_from_slice(&OPT_EXPORT_NAME.to_be_bytes());
    m.extend_from_slice(&4u32.to_be_bytes());
    m.extend_from_slice(b"disk");
    s.write_all(&m).expect("export name");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("a close");
    assert!(rest.is_empty(), "the server answered: {rest:?}");
    // Inside TLS a second STARTTLS is invalid, and the session goes on.
    let mut s = greeted(fx.port());
    assert_eq!(
        option_on(&mut s, OPT_STARTTLS, &[]),
        (OPT_STARTTLS, REP_ACK)
    );
    let mut t = tls_client(s, Path::new(&fx.owner));
    assert_eq!(
        option_on(&mut t, OPT_STARTTLS, &[]),
        (OPT_STARTTLS, REP_ERR_INVALID)
    );
    assert_eq!(option_on(&mut t, OPT_ABORT, &[]), (OPT_ABORT, REP_ACK));
}

#[test]
fn a_disconnect_over_tls_flushes_what_the_client_never_flushed() {
    let _serial = serial();
    let fx = TlsFixture::new("tls-disc", vessel_nbd::HANDSHAKE_TIMEOUT);
    let src = fx.dir.join("src.img");
    std::fs::write(&src, random_bytes(1 << 20, 0xd15c)).expect("source");
    // No --flush: libnbd ends with NBD_CMD_DISC and its TLS close right behind it, often
    // in one read of the server's; the server flushes after the disconnect.
    run_ok("nbdcopy", &[path_str(&src), &fx.uri("mine", &fx.owner)]);
    wait_until(
        Duration::from_secs(10),
        || fx.mine.flushes.load(Ordering::SeqCst) > 0,
        || "no flush after the client disconnected: the disconnect was lost".into(),
    );
    assert!(std::fs::read(fx.dir.join("mine.img")).expect("mine") == std::fs::read(&src).unwrap());
}

#[test]
fn a_client_no_longer_taken_is_cut_off_and_the_others_stay() {
    let _serial = serial();
    let fx = TlsFixture::new("tls-revoke", vessel_nbd::HANDSHAKE_TIMEOUT);
    let mut mine = NbdSession::open(&fx.uri("mine", &fx.owner));
    let mut disk = NbdSession::open(&fx.uri("disk", &fx.owner));
    let mut other = NbdSession::open(&fx.uri("disk", &fx.other));
    // Nothing changed: nothing to close.
    assert_eq!(fx.server.close_disallowed(), 0);
    // The owner's certificate is no longer taken for mine: its session there ends; its
    // session on disk, and another client's, go on.
    fx.owner_taken.store(false, Ordering::SeqCst);
    assert_eq!(fx.server.close_disallowed(), 1);
    let said = mine.again();
    assert!(said.starts_with("closed:"), "{said}");
    assert_eq!(disk.again(), "read");
    assert_eq!(other.again(), "read");
    let out = run("nbdinfo", &["--size", &fx.uri("mine", &fx.owner)]);
    assert!(!out.status.success(), "the owner opened mine again");
}

/// A TLS client of `mine` that sends 256 reads of the whole export and reads none of the
/// replies, once the server has stopped reading the device for it (its replies backed up).
fn stuck_client(fx: &TlsFixture) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut s = greeted(fx.port());
    assert_eq!(
        option_on(&mut s, OPT_STARTTLS, &[]),
        (OPT_STARTTLS, REP_ACK)
    );
    let mut t = tls_client(s, Path::new(&fx.owner));
    // Into transmission with NBD_OPT_EXPORT_NAME: the size and flags come back.
    let mut m = IHAVEOPT.to_be_bytes().to_vec();
    m.extend_from_slice(&OPT_EXPORT_NAME.to_be_bytes());
    m.extend_from_slice(&4u32.to_be_bytes());
    m.extend_from_slice(b"mine");
    t.write_all(&m).expect("export name");
    t.flush().expect("flush");
    let mut info = [0u8; 10];
    t.read_exact(&mut info).expect("size and flags");
    assert_eq!(u64::from_be_bytes(info[..8].try_into().unwrap()), 1 << 20);
    // 256 reads of the whole export, not one reply read: the replies back up until the
    // server waits to send (its reads stop coming).
    let mut reqs = Vec::new();
    for handle in 0..256u64 {
        reqs.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        reqs.extend_from_slice(&0u16.to_be_bytes());
        reqs.extend_from_slice(&CMD_READ.to_be_bytes());
        reqs.extend_from_slice(&handle.to_be_bytes());
        reqs.extend_from_slice(&0u64.to_be_bytes());
        reqs.extend_from_slice(&(1u32 << 20).to_be_bytes());
    }
    t.write_all(&reqs).expect("requests");
    t.flush().expect("flush");
    // In transmission once the server has read the device (a starved connection thread
    // could otherwise look stuck before it began); then until its reads stop coming.
    wait_until(
        Duration::from_secs(20),
        || fx.mine.reads.load(Ordering::SeqCst) > 0,
        || "the server read nothing".into(),
    );
    let mut last = usize::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = fx.mine.reads.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    assert!(
        last < 256,
        "the server sent 256 MiB to a client that read none of it"
    );
    t
}

/// Reads what the server sent, which must end: the connection is closed.
fn ends(t: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>) {
    let mut rest = Vec::new();
    match t.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the connection is still open: {e}"
        ),
    }
}

#[test]
fn a_client_cut_off_while_it_reads_nothing_loses_its_connection() {
    let _serial = serial();
    let fx = TlsFixture::new("tls-stuck", vessel_nbd::HANDSHAKE_TIMEOUT);
    let before = server_threads();
    let mut t = stuck_client(&fx);
    // Cut off: its connection's threads end, the TLS pump too, although it had replies
    // to send that the client never takes.
    fx.owner_taken.store(false, Ordering::SeqCst);
    assert_eq!(fx.server.close_disallowed(), 1);
    wait_until(
        Duration::from_secs(10),
        || server_threads() <= before,
        || {
            format!(
                "{} threads, {before} before: the cut-off connection is still served",
                server_threads()
            )
        },
    );
    // The client finds its connection closed once it reads what was sent.
    ends(&mut t);
}

/// A client over TLS that leaves replies unread past the stall timeout loses its
/// connection, and the replies held for it go with the connection's threads (the TLS
/// pump writes without blocking: a send timeout on the socket alone never fired).
#[test]
fn a_tls_client_that_reads_no_replies_is_closed_after_the_stall_timeout() {
    let _serial = serial();
    let fx = TlsFixture::with_stall(
        "tls-stall-replies",
        vessel_nbd::HANDSHAKE_TIMEOUT,
        Duration::from_secs(1),
    );
    let before = server_threads();
    let mut t = stuck_client(&fx);
    wait_until(
        Duration::from_secs(10),
        || server_threads() <= before,
        || {
            format!(
                "{} threads, {before} before: a client that took no reply for 1 s is still \
                 served",
                server_threads()
            )
        },
    );
    ends(&mut t);
}

/// Waits up to `limit` for `done`, or fails saying `why`.
fn wait_until(limit: Duration, done: impl Fn() -> bool, why: impl Fn() -> String) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < limit, "{}", why());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").expect("tasks").count()
}

/// The server's connection threads in this process: named `nbd-…` (the unnamed ones a
/// connection thread starts take its name), but for the listener's accept thread, which
/// names itself once it runs (until then it has its creator's name, so counting it would
/// make the count before a connection depend on the scheduler); the harness's and the
/// clients' threads are not.
fn server_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("nbd") && !name.starts_with("nbd-accept"))
        .count()
}

#[test]
fn failed_tls_handshakes_leave_no_threads_behind() {
    let _serial = serial();
    let fx = TlsFixture::new("tls-flood", vessel_nbd::HANDSHAKE_TIMEOUT);
    let before = threads();
    for _ in 0..40 {
        let mut s = greeted(fx.port());
        assert_eq!(
            option_on(&mut s, OPT_STARTTLS, &[]),
            (OPT_STARTTLS, REP_ACK)
        );
        // Not a TLS record: the handshake fails at once.
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("garbage");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    // Each connection's threads end with it, well before the 30 s handshake deadline.
    let t = Instant::now();
    loop {
        let now = threads();
        if now <= before + 2 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{now} threads, {before} before 40 failed handshakes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed and reaped when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_vessel_nbd_command_serves_with_tls_from_a_certificate_directory() {
    let _serial = serial();
    let dir = TempDir::new("tls-bin");
    let ca = Ca::new("command CA");
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).expect("pki");
    let (cert, key) = ca.issue("server", true);
    std::fs::write(pki.join("ca-cert.pem"), ca.cert.pem()).expect("ca");
    std::fs::write(pki.join("server-cert.pem"), cert.pem()).expect("cert");
    std::fs::write(pki.join("server-key.pem"), key.serialize_pem()).expect("key");
    let (creds, _) = ca.client_dir(&dir.join("client"), "client", true);
    std::fs::write(dir.join("disk.img"), vec![7u8; 1 << 20]).expect("image");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let _server = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_vessel-nbd"))
            .args(["--tcp", &format!("127.0.0.1:{port}"), "--tls-certificates"])
            .arg(&pki)
            .arg(format!("disk={}", path_str(&dir.join("disk.img"))))
            .spawn()
            .expect("start vessel-nbd"),
    );
    let uri = format!("nbds://127.0.0.1:{port}/disk?tls-certificates={creds}");
    let t = Instant::now();
    while !run("nbdinfo", &["--size", &uri]).status.success() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "vessel-nbd does not answer over TLS"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(run_ok("nbdinfo", &["--size", &uri]).trim(), "1048576");
    let plain = format!("nbd://127.0.0.1:{port}/disk");
    assert!(!run("nbdinfo", &["--size", &plain]).status.success());
    // A directory without the key is refused at start, naming the file.
    std::fs::remove_file(pki.join("server-key.pem")).expect("remove key");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vessel-nbd"))
        .args(["--tcp", "127.0.0.1:0", "--tls-certificates"])
        .arg(&pki)
        .arg(format!("disk={}", path_str(&dir.join("disk.img"))))
        .output()
        .expect("run vessel-nbd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("server-key.pem"),
        "{err}"
    );
}
