//! Test fixtures: a real `docker-registry` per test, OCI layouts pushed with `skopeo`, and a
//! loopback proxy that counts, drops, strips `Range` or demands authentication.

#![allow(dead_code)]

pub mod proxy;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// Fails (never skips) when a Debian package's tool is missing.
pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's {package} package (apt-get install {package})"
    );
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "vessel-registry-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// `sha256:<hex>` of bytes.
pub fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A real registry (Debian's docker-registry) on a free loopback port, killed and removed on drop.
pub struct Registry {
    child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// A registry whose config has `extra` YAML appended (e.g. an `auth:` section).
    pub fn start_with(extra: &str) -> Self {
        require("/usr/bin/docker-registry", "docker-registry");
        let dir = TempDir::new("registry");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n{extra}",
                dir.path().join("data").display()
            ),
        )
        .expect("write registry config");
        let log = fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut reg = Self { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // 401 when the registry demands a token.
            if matches!(http_status(addr, "/v2/"), Some(200 | 401)) {
                break;
            }
            if let Ok(Some(status)) = reg.child.try_wait() {
                panic!("docker-registry exited with {status}: {}", reg.log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer GET /v2/ within 20 s: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes a manifest and the blobs it names straight over the distribution API (what
    /// skopeo does, without its per-layer cost: 500 layers naming one blob take it minutes).
    pub fn push_raw(&self, repo: &str, tag: &str, blobs: &[&[u8]], manifest: &[u8], media: &str) {
        for b in blobs {
            let (status, headers, _) = http(
                self.addr,
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                b"",
            );
            assert_eq!(status, 202, "start an upload: {headers:?}");
            let location = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.clone())
                .expect("upload location");
            let path = location
                .split_once("://")
                .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
                .unwrap_or(location);
            let sep = if path.contains('?') { '&' } else { '?' };
            let (status, headers, _) = http(
                self.addr,
                "PUT",
                &format!("{path}{sep}digest={}", sha(b)),
                &[("Content-Type", "application/octet-stream")],
                b,
            );
            assert_eq!(status, 201, "finish an upload: {headers:?}");
        }
        let (status, _, body) = http(
            self.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", media)],
            manifest,
        );
        assert_eq!(
            status,
            201,
            "push manifest: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// The file in the registry's storage holding a blob.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on loopback: status, headers and body of the answer.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send");
    s.write_all(body).expect("send body");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("answer");
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("answer head");
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    (status, headers, resp[split + 4..].to_vec())
}

/// Status of a plain `GET` on loopback, or `None` when nothing answers.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A descriptor as written into manifests.
#[derive(Debug, Clone)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Desc {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// A layer: its blob and the digest of its uncompressed tar.
#[derive(Debug, Clone)]
pub struct TestLayer {
    pub desc: Desc,
    pub diff_id: String,
}

/// Writes an OCI image layout by hand (the test's own small writer), for skopeo to push.
pub struct Layout {
    pub dir: TempDir,
    refs: Vec<serde_json::Value>,
}

pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const TAR_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

impl Layout {
    pub fn new() -> Self {
        require("/usr/bin/skopeo", "skopeo");
        require("/usr/bin/tar", "tar");
        require("/usr/bin/gzip", "gzip");
        let dir = TempDir::new("layout");
        fs::create_dir_all(dir.path().join("blobs/sha256")).expect("layout dir");
        fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("oci-layout");
        Self {
            dir,
            refs: Vec::new(),
        }
    }

    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Desc {
        let digest = sha(bytes);
        fs::write(
            self.dir
                .path()
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
            bytes,
        )
        .expect("write blob");
        Desc {
            media_type: media_type.into(),
            digest,
            size: bytes.len() as u64,
        }
    }

    /// A layer made with `tar` (and `gzip -n` when `gzip`) from a tree `fill` populates.
    pub fn layer(&self, gzip: bool, fill: impl FnOnce(&Path)) -> TestLayer {
        let tree = TempDir::new("tree");
        fill(tree.path());
        let out = Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
            ])
            .arg("-C")
            .arg(tree.path())
            .args(["-cf", "-", "."])
            .output()
            .expect("run tar");
        assert!(
            out.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tar = out.stdout;
        let diff_id = sha(&tar);
        if !gzip {
            return TestLayer {
                desc: self.blob(TAR, &tar),
                diff_id,
            };
        }
        let mut child = Command::new("gzip")
            .args(["-n", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run gzip");
        let mut stdin = child.stdin.take().expect("gzip stdin");
        let writer = std::thread::spawn(move || stdin.write_all(&tar));
        let out = child.wait_with_output().expect("gzip output");
        writer.join().expect("gzip writer").expect("write to gzip");
        assert!(out.status.success());
        TestLayer {
            desc: self.blob(TAR_GZ, &out.stdout),
            diff_id,
        }
    }

    /// The busybox root file system: `/bin/busybox` and a few links.
    pub fn busybox_layer(&self) -> TestLayer {
        require("/bin/busybox", "busybox-static");
        self.layer(true, |root| {
            fs::create_dir_all(root.join("bin")).expect("bin");
            fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
            for l in ["sh", "ls", "cat"] {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(l)).expect("link");
            }
        })
    }

    /// An image manifest for `arch` with these layers and `config` as the config's `config` block.
    pub fn image(&self, arch: &str, layers: &[TestLayer], config: serde_json::Value) -> Desc {
        let cfg = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        });
        let cfg = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&cfg).expect("config json"),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cfg.json(),
            "layers": layers.iter().map(|l| l.desc.json()).collect::<Vec<_>>(),
        });
        self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).expect("manifest json"),
        )
    }

    /// An index of (manifest, architecture) entries.
    pub fn index(&self, entries: &[(&Desc, &str)]) -> Desc {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries.iter().map(|(d, arch)| {
                let mut j = d.json();
                j["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
                j
            }).collect::<Vec<_>>(),
        });
        self.blob(
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&index).expect("index json"),
        )
    }

    /// Names `desc` `tag` in the layout's index.json.
    pub fn tag(&mut self, tag: &str, desc: &Desc) {
        let mut j = desc.json();
        j["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        self.refs.push(j);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": self.refs});
        fs::write(
            self.dir.path().join("index.json"),
            serde_json::to_vec(&index).expect("index.json"),
        )
        .expect("write index.json");
    }

    /// Pushes the layout's `tag` to `registry` as `repo:tag` with skopeo (`--all` for indexes).
    pub fn push(&self, tag: &str, registry: &str, repo: &str) {
        let out = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{tag}", self.dir.path().display()))
            .arg(format!("docker://{registry}/{repo}:{tag}"))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Deterministic bytes that do not compress, `len` of them.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Checks that every blob in a store's `sha256/` hashes to its name; returns how many there are.
pub fn verify_store(dir: &Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir.join("sha256")).expect("read store") {
        let e = e.expect("entry");
        let bytes = fs::read(e.path()).expect("read blob");
        assert_eq!(
            sha(&bytes),
            format!("sha256:{}", e.file_name().to_string_lossy()),
            "blob {} does not hash to its name",
            e.path().display()
        );
        n += 1;
    }
    n
}

fn base64(input: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}

/// A self-signed certificate and a JWT signed with its key (RS256, certificate in `x5c`)
/// granting pull and push on `repository`, as docker-registry's token auth expects. Returns
/// the token and the certificate (the registry's `rootcertbundle`).
pub fn signed_token(
    dir: &Path,
    issuer: &str,
    service: &str,
    repository: &str,
) -> (String, PathBuf) {
    require("/usr/bin/openssl", "openssl");
    let key = dir.join("token.key");
    let cert = dir.join("token.crt");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=vessel-test-token",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl req");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .expect("run openssl x509");
    assert!(der.status.success());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let header =
        serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [base64(&der.stdout, false)]});
    let claims = serde_json::json!({
        "iss": issuer, "sub": "", "aud": service, "exp": now + 3600, "nbf": now - 60, "iat": now - 60,
        "jti": "vessel-test",
        "access": [{"type": "repository", "name": repository, "actions": ["pull", "push"]}],
    });
    let signing_input = format!(
        "{}.{}",
        base64(header.to_string().as_bytes(), true),
        base64(claims.to_string().as_bytes(), true)
    );
    let input = dir.join("token.input");
    fs::write(&input, &signing_input).expect("write signing input");
    let sig = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key)
        .arg(&input)
        .output()
        .expect("run openssl dgst");
    assert!(
        sig.status.success(),
        "openssl dgst: {}",
        String::from_utf8_lossy(&sig.stderr)
    );
    (
        format!("{signing_input}.{}", base64(&sig.stdout, true)),
        cert,
    )
}
