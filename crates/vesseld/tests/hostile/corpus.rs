//! The hostile corpus, generated: a small raw tar writer (independent of the code under test,
//! so it can write what that code refuses), every kind of hostile layer and image, and the
//! two ways images reach the daemon: an archive for `vessel image import` (OCI layout or
//! `docker save`) and a push to a registry for `vessel image pull`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// `sha256:<hex>` of bytes.
pub fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One tar entry, written raw: any name, type, size or PAX record.
#[derive(Clone, Default)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Size written in the header (the data's length unless a lie is wanted).
    pub size: Option<u64>,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
    pub major: u32,
    pub minor: u32,
    /// PAX records written in an `x` header before this entry.
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    pub fn file(name: &str, data: &[u8]) -> Self {
        Self {
            name: name.into(),
            kind: b'0',
            mode: 0o644,
            data: data.to_vec(),
            ..Default::default()
        }
    }

    pub fn dir(name: &str, mode: u32) -> Self {
        Self {
            name: name.into(),
            kind: b'5',
            mode,
            ..Default::default()
        }
    }

    pub fn symlink(name: &str, target: &str) -> Self {
        Self {
            name: name.into(),
            kind: b'2',
            mode: 0o777,
            link: target.into(),
            ..Default::default()
        }
    }

    pub fn hardlink(name: &str, target: &str) -> Self {
        Self {
            name: name.into(),
            kind: b'1',
            mode: 0o644,
            link: target.into(),
            ..Default::default()
        }
    }

    pub fn pax(mut self, key: &str, value: &[u8]) -> Self {
        self.pax.push((key.into(), value.to_vec()));
        self
    }
}

fn octal(dst: &mut [u8], v: u64) {
    let w = dst.len() - 1;
    if v >= 8u64.pow(w as u32) {
        // GNU base-256: the first byte's top bit marks it.
        dst.fill(0);
        let bytes = v.to_be_bytes();
        let n = dst.len();
        dst[n - 8..].copy_from_slice(&bytes);
        dst[0] |= 0x80;
        return;
    }
    dst[..w].copy_from_slice(format!("{v:0w$o}").as_bytes());
    dst[w] = 0;
}

/// A ustar header block.
#[allow(clippy::too_many_arguments)]
pub fn header(
    name: &[u8],
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    link: &[u8],
    dev: (u32, u32),
) -> [u8; 512] {
    let mut b = [0u8; 512];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    octal(&mut b[100..108], u64::from(mode));
    octal(&mut b[108..116], uid.min(0o7777777));
    octal(&mut b[116..124], gid.min(0o7777777));
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], 1_600_000_000);
    b[156] = kind;
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    octal(&mut b[329..337], u64::from(dev.0));
    octal(&mut b[337..345], u64::from(dev.1));
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&c| u32::from(c)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

/// PAX records as a `x` entry's data.
pub fn pax_records(recs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in recs {
        let base = k.len() + v.len() + 3;
        let mut len = base + 1;
        while base + len.to_string().len() != len {
            len = base + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} ").as_bytes());
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

pub fn pad(v: &mut Vec<u8>) {
    let rem = v.len() % 512;
    if rem != 0 {
        v.resize(v.len() + 512 - rem, 0);
    }
}

/// A tar stream built entry by entry.
#[derive(Default)]
pub struct Tar(pub Vec<u8>);

impl Tar {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(mut self, e: Entry) -> Self {
        let mut pax = e.pax.clone();
        if e.name.len() > 100 && !pax.iter().any(|(k, _)| k == b"path") {
            pax.push((b"path".to_vec(), e.name.clone()));
        }
        if e.link.len() > 100 && !pax.iter().any(|(k, _)| k == b"linkpath") {
            pax.push((b"linkpath".to_vec(), e.link.clone()));
        }
        if e.uid > 0o7777777 {
            pax.push((b"uid".to_vec(), e.uid.to_string().into_bytes()));
        }
        if !pax.is_empty() {
            let body = pax_records(&pax);
            self.0.extend_from_slice(&header(
                b"././@PaxHeader",
                b'x',
                0o644,
                0,
                0,
                body.len() as u64,
                b"",
                (0, 0),
            ));
            self.0.extend_from_slice(&body);
            pad(&mut self.0);
        }
        let size = e.size.unwrap_or(e.data.len() as u64);
        self.0.extend_from_slice(&header(
            &e.name,
            e.kind,
            e.mode,
            e.uid,
            e.gid,
            size,
            &e.link,
            (e.major, e.minor),
        ));
        self.0.extend_from_slice(&e.data);
        pad(&mut self.0);
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    gzip_level(data, flate2::Compression::fast())
}

fn gzip_level(data: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// A gzip stream whose members are `member` repeated `times` then `tail`: a few MiB that
/// expand to GiBs, built without compressing GiBs.
pub fn gzip_members(member: &[u8], times: usize, tail: &[u8]) -> Vec<u8> {
    let one = gzip_level(member, flate2::Compression::best());
    let mut out = Vec::with_capacity(one.len() * times + tail.len() + 64);
    for _ in 0..times {
        out.extend_from_slice(&one);
    }
    out.extend_from_slice(&gzip(tail));
    out
}

/// A layer as stored: the blob, its media type and the diff_id its config announces.
#[derive(Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub media: &'static str,
    pub diff_id: String,
}

pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const TAR_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

impl Layer {
    pub fn plain(tar: Vec<u8>) -> Self {
        Self {
            diff_id: sha(&tar),
            blob: tar,
            media: TAR,
        }
    }

    pub fn gz(tar: &[u8]) -> Self {
        Self {
            diff_id: sha(tar),
            blob: gzip(tar),
            media: TAR_GZ,
        }
    }
}

/// The busybox root file system as one layer: a runnable base.
pub fn busybox_layer() -> Layer {
    let bb = std::fs::read("/bin/busybox").expect("/bin/busybox: apt-get install busybox-static");
    let mut t = Tar::new().add(Entry::dir("bin/", 0o755)).add(Entry {
        mode: 0o755,
        ..Entry::file("bin/busybox", &bb)
    });
    for a in ["sh", "echo", "cat", "ls", "sleep", "stat", "id"] {
        t = t.add(Entry::symlink(&format!("bin/{a}"), "busybox"));
    }
    Layer::gz(&t.finish())
}

/// An image: config (os/architecture/diff_ids) and layers, bottom first. `repeat` names the
/// last layer that many times in all (for layer-count bombs: one blob, many entries).
#[derive(Clone)]
pub struct Image {
    pub os: &'static str,
    pub arch: &'static str,
    pub layers: Vec<Layer>,
    pub repeat: usize,
}

impl Image {
    pub fn of(layers: Vec<Layer>) -> Self {
        Self {
            os: "linux",
            arch: "amd64",
            layers,
            repeat: 1,
        }
    }

    /// Layers as the manifest lists them.
    fn listed(&self) -> Vec<&Layer> {
        let mut v: Vec<&Layer> = self.layers.iter().collect();
        if let Some(last) = self.layers.last() {
            for _ in 1..self.repeat {
                v.push(last);
            }
        }
        v
    }

    pub fn config(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": self.arch,
            "os": self.os,
            "config": {"Cmd": ["/bin/sh", "-c", "while :; do sleep 1; done"]},
            "rootfs": {"type": "layers", "diff_ids": self.listed().iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        }))
        .expect("config json")
    }

    pub fn manifest(&self) -> Vec<u8> {
        let config = self.config();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
            "layers": self.listed().iter().map(|l| serde_json::json!({"mediaType": l.media, "digest": sha(&l.blob), "size": l.blob.len()})).collect::<Vec<_>>(),
        }))
        .expect("manifest json")
    }

    /// Bytes of the image's distinct blobs (config, manifest, layers).
    pub fn blob_bytes(&self) -> u64 {
        let layers: u64 = self.layers.iter().map(|l| l.blob.len() as u64).sum();
        layers + self.config().len() as u64 + self.manifest().len() as u64
    }

    /// An OCI image layout as one tar (what `podman save --format oci-archive` writes).
    pub fn oci_archive(&self, path: &Path) {
        let config = self.config();
        let manifest = self.manifest();
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "hostile:1"}}]});
        let mut t = Tar::new()
            .add(Entry::file(
                "oci-layout",
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            ))
            .add(Entry::file(
                "index.json",
                &serde_json::to_vec(&index).expect("index"),
            ));
        let mut seen = std::collections::HashSet::new();
        for blob in [&config, &manifest]
            .into_iter()
            .chain(self.layers.iter().map(|l| &l.blob))
        {
            let d = sha(blob);
            if seen.insert(d.clone()) {
                t = t.add(Entry::file(&format!("blobs/sha256/{}", &d[7..]), blob));
            }
        }
        std::fs::write(path, t.finish()).expect("write archive");
    }

    /// A `docker save` archive: manifest.json, the config and one tar per layer.
    pub fn docker_archive(&self, path: &Path) {
        let config = self.config();
        let config_name = format!("{}.json", &sha(&config)[7..]);
        let mut names = Vec::new();
        let mut t = Tar::new();
        for (i, l) in self.layers.iter().enumerate() {
            let name = format!("layer{i}/layer.tar");
            t = t.add(Entry::file(&name, &l.blob));
            names.push(name);
        }
        let last = names.last().cloned().unwrap_or_default();
        for _ in 1..self.repeat {
            names.push(last.clone());
        }
        let manifest = serde_json::json!([{"Config": config_name, "RepoTags": ["localhost/hostile:1"], "Layers": names}]);
        t = t
            .add(Entry::file(
                "manifest.json",
                &serde_json::to_vec(&manifest).expect("manifest"),
            ))
            .add(Entry::file(&config_name, &config));
        std::fs::write(path, t.finish()).expect("write archive");
    }

    /// Pushes the image to a registry as `repo:1`, straight over the distribution API.
    pub fn push(&self, registry: SocketAddr, repo: &str) {
        self.push_as(registry, repo, "1")
    }

    /// Pushes the image to a registry as `repo:tag`.
    pub fn push_as(&self, registry: SocketAddr, repo: &str, tag: &str) {
        let config = self.config();
        let mut seen = std::collections::HashSet::new();
        for blob in std::iter::once(&config).chain(self.layers.iter().map(|l| &l.blob)) {
            if seen.insert(sha(blob)) {
                push_blob(registry, repo, blob);
            }
        }
        let (status, _, body) = http(
            registry,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            &self.manifest(),
        );
        assert_eq!(
            status,
            201,
            "push manifest of {repo}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

fn push_blob(registry: SocketAddr, repo: &str, blob: &[u8]) {
    let (status, headers, _) = http(
        registry,
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
        registry,
        "PUT",
        &format!("{path}{sep}digest={}", sha(blob)),
        &[("Content-Type", "application/octet-stream")],
        blob,
    );
    assert_eq!(status, 201, "finish an upload: {headers:?}");
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
    s.set_read_timeout(Some(Duration::from_secs(60)))
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

/// Names of the extended attributes of `p` (not following a symlink).
pub fn xattr_names(p: &Path) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path");
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid NUL-terminated path and a buffer of the length given.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        n >= 0,
        "llistxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    buf.truncate(n as usize);
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// What the daemon must do with a case.
pub enum Expect {
    /// Refused; every string must appear in the error (the entry's name and the reason; `a|b`
    /// accepts either). `import` and `pull` differ where the two paths meet the problem at
    /// different steps.
    Refused {
        import: Vec<String>,
        pull: Vec<String>,
    },
    /// Accepted; the check looks at the stored top layer's directory.
    Accepted(fn(&Path)),
}

/// A hostile case: its image, whether it is imported as a docker archive, and its outcome.
pub struct Case {
    pub name: &'static str,
    pub image: Image,
    pub docker: bool,
    pub expect: Expect,
}
