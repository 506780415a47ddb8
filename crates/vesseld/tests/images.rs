//! Images through the daemon: publish, aliases, layers shared and collected.

mod common;

use common::Daemon;

#[test]
fn publish_a_stopped_instance_and_launch_from_it() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "base"]);
    d.sh(
        "base",
        "echo made-in-base > /root/note; rm /etc/os-release; mkdir -p /srv/www; \
         truncate -s 192M /root/sparse; echo end >> /root/sparse; ln /root/note /root/same",
    );
    // Publishing needs a stopped instance.
    let err = d.fails(&["publish", "base", "--alias", "mine"]);
    assert!(err.contains("stop it first"), "{err}");
    d.ok(&["stop", "base", "--force"]);
    d.ok(&["publish", "base", "--alias", "mine"]);

    let img: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "info", "mine", "--format", "json"])).unwrap();
    assert_eq!(img["layers"].as_array().unwrap().len(), 2, "{img}");
    assert_eq!(img["source"], "publish base");

    d.ok(&["launch", "mine", "child"]);
    assert_eq!(d.sh("child", "cat /root/note").1.trim(), "made-in-base");
    // The deletion in the published layer hides the file of the layer below.
    assert_ne!(d.sh("child", "test -e /etc/os-release").0, 0);
    assert_eq!(d.sh("child", "test -d /srv/www").0, 0);
    // Ownership inside is the container's own, not the host's shifted ids.
    assert_eq!(d.sh("child", "stat -c %u:%g /root/note").1.trim(), "0:0");
    // The new layer takes the room the instance's files took: a hole stays a hole, a hard
    // link a link (a hole used to become zeros in the store, a link a copy).
    let (_, out) = d.sh(
        "child",
        "stat -c %s /root/sparse; tail -c 4 /root/sparse; stat -c %i /root/note /root/same",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["201326596", "end"], "{out}");
    assert_eq!(lines[2], lines[3], "the hard link became two files: {out}");
    let du = std::process::Command::new("du")
        .args(["-s", "--block-size=1M"])
        .arg(d.root().join("images/layers"))
        .output()
        .unwrap();
    let used: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(used < 64, "the layers take {used} MiB");

    // The base image can go once no instance uses it; its layer stays for "mine".
    d.ok(&["delete", "--force", "base"]);
    d.ok(&["image", "delete", "busybox"]);
    d.ok(&["restart", "child", "--force"]);
    assert_eq!(d.sh("child", "cat /root/note").1.trim(), "made-in-base");
    // Deleting the last user of the layers removes them.
    d.ok(&["delete", "--force", "child"]);
    d.ok(&["image", "delete", "mine"]);
    let layers = std::fs::read_dir(d.root().join("images/layers"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(layers, 0, "unused layers were left behind");
}

#[test]
fn aliases_move_and_go() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["image", "alias", "add", "busybox", "tiny"]);
    let img: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "info", "tiny", "--format", "json"])).unwrap();
    assert_eq!(img["aliases"], serde_json::json!(["busybox", "tiny"]));
    d.ok(&["image", "alias", "delete", "tiny"]);
    assert!(d.fails(&["image", "info", "tiny"]).contains("not found"));
    let err = d.fails(&["image", "alias", "delete", "tiny"]);
    assert!(err.contains("tiny"), "{err}");
    let err = d.fails(&["image", "alias", "add", "busybox", "../bad"]);
    assert!(err.contains("invalid image alias"), "{err}");
}

#[test]
fn debian_image_from_debootstrap() {
    let d = Daemon::start();
    let out = d.ok(&["image", "build", "debian", "--release", "bookworm"]);
    assert!(out.contains("debian/bookworm"), "{out}");
    let err = d.fails(&["image", "build", "debian", "--release", "hamm"]);
    assert!(err.contains("unknown Debian release"), "{err}");
    d.ok(&["launch", "debian/bookworm", "deb"]);
    let (_, v) = d.sh(
        "deb",
        "cat /etc/debian_version; apt-get --version | head -n1",
    );
    assert!(v.starts_with("12."), "{v}");
    assert!(v.contains("apt 2."), "{v}");
    // Set-id bits and owners survive the unprivileged copy.
    assert_eq!(
        d.sh("deb", "stat -c %A:%u /usr/bin/passwd").1.trim(),
        "-rwsr-xr-x:0"
    );
    // The image's stop signal ends its init at once (not killed at the stop timeout, 30 s).
    let t = std::time::Instant::now();
    d.ok(&["stop", "deb"]);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        t.elapsed()
    );
}

/// Runs a command and asserts success.
#[track_caller]
fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pull_from_a_registry_an_image_pushed_by_skopeo() {
    let (d, port) = Daemon::start_https();
    let work = d.dir.join("pull");
    std::fs::create_dir_all(work.join("rootfs/bin")).unwrap();
    std::fs::create_dir_all(work.join("rootfs/srv")).unwrap();
    std::fs::copy("/bin/busybox", work.join("rootfs/bin/busybox")).unwrap();
    for a in ["sh", "cat", "sleep", "id", "pwd"] {
        std::os::unix::fs::symlink("busybox", work.join("rootfs/bin").join(a)).unwrap();
    }
    std::fs::write(work.join("rootfs/srv/hello"), "pulled-ok\n").unwrap();
    run(std::process::Command::new("tar")
        .arg("-C")
        .arg(work.join("rootfs"))
        .arg("-cf")
        .arg(work.join("rootfs.tar"))
        .arg("."));
    // podman makes the image (with a config to honour), skopeo pushes it.
    let podman = |args: &[&str]| {
        let mut c = std::process::Command::new("podman");
        c.arg("--root")
            .arg(work.join("proot"))
            .arg("--runroot")
            .arg(work.join("prun"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    let tar = work.join("rootfs.tar");
    run(&mut podman(&[
        "import",
        "--change",
        r#"CMD ["/bin/sh","-c","while :; do sleep 1; done"]"#,
        "--change",
        "ENV GREETING=hello-from-config",
        "--change",
        "WORKDIR /srv",
        tar.to_str().unwrap(),
        "localhost/bb:1",
    ]));
    let archive = work.join("bb-oci.tar");
    run(&mut podman(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        archive.to_str().unwrap(),
        "localhost/bb:1",
    ]));
    let registry = common::Registry::start(&work.join("registry"));
    let reference = format!("{}/test/bb:1", registry.addr);
    run(std::process::Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", archive.display()),
        &format!("docker://{reference}"),
    ]));

    // A registry on loopback speaks plain HTTP without --insecure (as Docker's do); other
    // hosts need it (vessel-registry's tests show the TLS error and its hint).
    d.ok(&["image", "pull", &reference]);
    let img: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "info", "test/bb:1", "--format", "json"])).unwrap();
    assert_eq!(img["working_dir"], "/srv", "{img}");
    assert_eq!(img["layers"].as_array().unwrap().len(), 1);

    d.ok(&["launch", "test/bb:1", "p1"]);
    let (_, out) = d.sh("p1", "pwd; echo $GREETING; cat hello; readlink /proc/1/cwd");
    assert_eq!(out, "/srv\nhello-from-config\npulled-ok\n/srv\n");
    // The pulled blobs are stored under their digests and verify.
    let blobs = d.root().join("images/blobs/sha256");
    for e in std::fs::read_dir(&blobs).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        let hex = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes));
        assert_eq!(hex::encode(hex), e.file_name().to_string_lossy());
    }
    // Unknown tags get a clear error.
    let err = d.fails(&[
        "image",
        "pull",
        &format!("{}/test/bb:nope", registry.addr),
        "--insecure",
    ]);
    assert!(err.contains("not found"), "{err}");
    // Deleting the image removes its layer and the layer's blob.
    d.ok(&["delete", "--force", "p1"]);
    d.ok(&["image", "delete", "test/bb:1"]);
    assert_eq!(
        std::fs::read_dir(d.root().join("images/layers"))
            .unwrap()
            .count(),
        0
    );
    let layer_blobs = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().map(|m| m.len() > 100_000).unwrap_or(false))
        .count();
    assert_eq!(layer_blobs, 0, "the layer's blob was left behind");
    // A project's operator reaches no registry on the host (its loopback services, the
    // cloud's metadata service): refused before a connection, by name or by address. An
    // admin pulls into the project.
    d.ok(&["project", "create", "alpha"]);
    let token = d.token("alpha-ops", "alpha", "operator");
    let port_of = registry.addr.port();
    for reference in [reference.clone(), format!("localhost:{port_of}/test/bb:1")] {
        let body = serde_json::json!({ "reference": reference, "insecure": true }).to_string();
        let err = https_op(&d, port, &token, ("/1.0/images/pull", "alpha"), &body);
        assert!(
            err.contains("is an address of this host") && err.contains("only an admin"),
            "{reference}: {err}"
        );
    }
    let (_, listed) = https(&d, port, &token, "GET", "/1.0/images?project=alpha", None);
    assert_eq!(listed, "[]");
    d.ok(&["image", "pull", &reference, "--project", "alpha"]);
    let (_, listed) = https(&d, port, &token, "GET", "/1.0/images?project=alpha", None);
    assert!(listed.contains("test/bb:1"), "{listed}");
    let _ = run(&mut podman(&["rm", "-af"]));
}

/// `curl` over HTTPS with a bearer token: (status, body).
fn https(
    d: &Daemon,
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut c = std::process::Command::new("curl");
    c.args([
        "-sS",
        "--max-time",
        "120",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
    ])
    .arg("--cacert")
    .arg(d.root().join("server.crt"))
    .arg("-H")
    .arg(format!("Authorization: Bearer {token}"))
    .args(["-X", method]);
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = c
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Posts `body` to `path` in `project` over HTTPS, waits for the operation it starts and
/// returns its error.
fn https_op(
    d: &Daemon,
    port: u16,
    token: &str,
    (path, project): (&str, &str),
    body: &str,
) -> String {
    let path = format!("{path}?project={project}");
    let (status, started) = https(d, port, token, "POST", &path, Some(body));
    assert_eq!(status, 202, "{started}");
    let op: serde_json::Value = serde_json::from_str(&started).unwrap();
    let id = op["id"].as_str().unwrap();
    let wait = format!("/1.0/operations/{id}/wait?timeout=60&project={project}");
    let (status, done) = https(d, port, token, "GET", &wait, None);
    assert_eq!(status, 200, "{done}");
    let done: serde_json::Value = serde_json::from_str(&done).unwrap();
    assert_eq!(done["status"], "failure", "{done}");
    done["error"].as_str().unwrap_or_default().to_string()
}

/// podman with a private store under `work`.
fn podman(work: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("podman");
    c.arg("--root")
        .arg(work.join("proot"))
        .arg("--runroot")
        .arg(work.join("prun"))
        .args(["--storage-driver", "vfs"])
        .args(args);
    c
}

/// A podman store that is emptied on drop, also when the test fails.
struct PodmanStore(std::path::PathBuf);

impl Drop for PodmanStore {
    fn drop(&mut self) {
        let _ = podman(&self.0, &["rm", "-af", "-t", "0"]).output();
        let _ = podman(&self.0, &["rmi", "-af"]).output();
    }
}

#[test]
fn import_a_podman_save_archive_and_export_for_podman_load() {
    let d = Daemon::start();
    let work = d.dir.join("imp");
    std::fs::create_dir_all(work.join("rootfs/bin")).unwrap();
    std::fs::create_dir_all(work.join("rootfs/etc")).unwrap();
    std::fs::copy("/bin/busybox", work.join("rootfs/bin/busybox")).unwrap();
    for a in ["sh", "cat", "sleep", "ls"] {
        std::os::unix::fs::symlink("busybox", work.join("rootfs/bin").join(a)).unwrap();
    }
    std::fs::write(work.join("rootfs/etc/marker"), "from-podman\n").unwrap();
    let _store = PodmanStore(work.clone());
    let tar = work.join("rootfs.tar");
    run(std::process::Command::new("tar")
        .arg("-C")
        .arg(work.join("rootfs"))
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    run(&mut podman(
        &work,
        &[
            "import",
            "--change",
            r#"CMD ["/bin/sh","-c","while :; do sleep 1; done"]"#,
            tar.to_str().unwrap(),
            "localhost/imp:1",
        ],
    ));
    let saved = work.join("saved.tar");
    run(&mut podman(
        &work,
        &["save", "-o", saved.to_str().unwrap(), "localhost/imp:1"],
    ));
    d.ok(&["image", "import", saved.to_str().unwrap(), "--alias", "imp"]);
    d.ok(&["launch", "imp", "i1"]);
    assert_eq!(d.sh("i1", "cat /etc/marker").1, "from-podman\n");

    // A truncated archive is refused and leaves nothing.
    let bytes = std::fs::read(&saved).unwrap();
    let cut = work.join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let images_before = d.ok(&["image", "list", "--format", "json"]);
    let err = d.fails(&["image", "import", cut.to_str().unwrap()]);
    assert!(err.contains("import"), "{err}");
    assert_eq!(d.ok(&["image", "list", "--format", "json"]), images_before);

    // Our export of the busybox image loads into podman and runs there.
    d.busybox();
    let out = work.join("exported.tar");
    d.ok(&["image", "export", "busybox", out.to_str().unwrap()]);
    run(&mut podman(&work, &["load", "-i", out.to_str().unwrap()]));
    let listed = run(&mut podman(
        &work,
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    ));
    assert!(listed.contains("busybox:latest"), "{listed}");
    let shown = run(&mut podman(
        &work,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--runtime",
            "runc",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "busybox:latest",
            "cat",
            "/etc/os-release",
        ],
    ));
    assert!(shown.contains("Vessel busybox"), "{shown}");
    // And it comes back into Vessel as the same tree.
    d.ok(&[
        "image",
        "import",
        out.to_str().unwrap(),
        "--alias",
        "roundtrip",
    ]);
    d.ok(&["launch", "roundtrip", "rt"]);
    assert!(d
        .sh("rt", "cat /etc/os-release")
        .1
        .contains("Vessel busybox"));
}

#[test]
fn vm_disk_images_are_checked_on_import() {
    let d = Daemon::start();
    let work = d.dir.join("disks");
    std::fs::create_dir_all(&work).unwrap();
    let good = work.join("good.qcow2");
    run(std::process::Command::new("qemu-img")
        .args(["create", "-f", "qcow2"])
        .arg(&good)
        .arg("32M"));
    let out = d.ok(&[
        "image",
        "import",
        good.to_str().unwrap(),
        "--alias",
        "disk1",
    ]);
    assert!(out.contains("disk1"), "{out}");
    let img: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "info", "disk1", "--format", "json"])).unwrap();
    assert_eq!(img["kind"], "vm");
    let fp = img["fingerprint"].as_str().unwrap();
    let fw: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.root().join("images").join(fp).join("firmware.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(fw["format"], "qcow2");
    assert_eq!(fw["virtual_size"], 32 << 20);
    // A VM image is not a container image.
    assert!(d.fails(&["launch", "disk1", "c1"]).contains("--vm"));
    // Disk images export as a bundle and import back unchanged.
    let bundle = work.join("disk-bundle.tar");
    d.ok(&["image", "export", "disk1", bundle.to_str().unwrap()]);
    d.ok(&["image", "delete", "disk1"]);
    d.ok(&[
        "image",
        "import",
        bundle.to_str().unwrap(),
        "--alias",
        "disk1",
    ]);
    assert_eq!(d.info_image("disk1")["fingerprint"], fp);

    // A qcow2 naming a backing file (any file of the host) is refused.
    let backed = work.join("backed.qcow2");
    run(std::process::Command::new("qemu-img")
        .args(["create", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&good)
        .arg(&backed));
    let err = d.fails(&["image", "import", backed.to_str().unwrap()]);
    assert!(err.contains("backing file"), "{err}");
    // So is one naming an external data file (a host path `qemu-img` as root would read),
    // and a raw disk that starts like a VMDK descriptor naming a host file as its extent
    // (which a probing `qemu-img` would read): as images, and into a block volume.
    let secret = work.join("secret");
    std::fs::write(&secret, "host secret\n".repeat(100_000)).unwrap();
    let external = work.join("external.qcow2");
    run(std::process::Command::new("qemu-img")
        .args(["create", "-f", "qcow2", "-o"])
        .arg(format!("data_file={},data_file_raw=on", secret.display()))
        .arg(&external)
        .arg("1M"));
    let err = d.fails(&["image", "import", external.to_str().unwrap()]);
    assert!(err.contains("external data file"), "{err}");
    let vmdk = work.join("vmdk.raw");
    let mut descriptor = format!(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"monolithicFlat\"\nRW 2048 FLAT \"{}\" 0\n",
        secret.display()
    )
    .into_bytes();
    descriptor.resize(1 << 20, 0);
    std::fs::write(&vmdk, &descriptor).unwrap();
    let err = d.fails(&["image", "import", vmdk.to_str().unwrap(), "--vm"]);
    assert!(err.contains("starts like a vmdk"), "{err}");
    d.ok(&["storage", "pool", "create", "vols", "dir"]);
    d.ok(&[
        "storage", "volume", "create", "vols", "blk", "--type", "block", "--size", "4MiB",
    ]);
    let err = d.fails(&[
        "storage",
        "volume",
        "import",
        "vols",
        "blk",
        external.to_str().unwrap(),
    ]);
    assert!(err.contains("external data file"), "{err}");
    // A raw upload is written as raw, whatever its bytes say: the descriptor's own bytes
    // land in the volume, not the file it names.
    d.ok(&[
        "storage",
        "volume",
        "import",
        "vols",
        "blk",
        vmdk.to_str().unwrap(),
    ]);
    let file = d.root().join("storage/vols/block/blk.raw");
    let written = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(written.starts_with(b"# Disk DescriptorFile"));
    assert!(!String::from_utf8_lossy(&written).contains("host secret"));
    // An upload larger than an image of the volume's size can be stops as it passes that
    // (4 MiB + 1/16 + 16 MiB here), before it is staged whole (the bound was 64 GiB).
    let big = work.join("big.raw");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let err = d.fails(&[
        "storage",
        "volume",
        "import",
        "vols",
        "blk",
        big.to_str().unwrap(),
    ]);
    assert!(err.contains("larger than the 21233664 bytes"), "{err}");
    std::fs::remove_file(&big).unwrap();
    d.ok(&["storage", "volume", "delete", "vols", "blk"]);
    d.ok(&["storage", "pool", "delete", "vols"]);
    // A corrupted one too.
    let mut bytes = std::fs::read(&good).unwrap();
    for b in &mut bytes[64..4096] {
        *b = 0xff;
    }
    let bad = work.join("bad.qcow2");
    std::fs::write(&bad, &bytes).unwrap();
    let err = d.fails(&["image", "import", bad.to_str().unwrap()]);
    // (Its feature bits, all set now, name an external data file: refused before a check.)
    assert!(
        err.contains("qcow2") || err.contains("external data file"),
        "{err}"
    );
    // Unknown content is refused with what to do; a raw disk needs --vm.
    let raw = work.join("disk.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let err = d.fails(&["image", "import", raw.to_str().unwrap()]);
    assert!(err.contains("--vm"), "{err}");
    d.ok(&[
        "image",
        "import",
        raw.to_str().unwrap(),
        "--vm",
        "--alias",
        "rawdisk",
    ]);
    assert_eq!(d.info_image("rawdisk")["source"], "import raw");
    d.ok(&["image", "delete", "rawdisk"]);
    let list: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "list", "--format", "json"])).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "a refused import left an image: {list}"
    );
    // Nothing is left in staging either.
    let leftovers: Vec<_> = std::fs::read_dir(d.root().join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".staging"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn vm_images_are_built_from_debian_cloud_kernel() {
    let d = Daemon::start();
    d.ok(&["image", "build", "vm"]);
    d.ok(&["image", "build", "vm", "--layout", "disk"]);
    for (alias, disk) in [("vm/busybox", false), ("vm/busybox-disk", true)] {
        let img = d.info_image(alias);
        assert_eq!(img["kind"], "vm", "{img}");
        let dir = d
            .root()
            .join("images")
            .join(img["fingerprint"].as_str().unwrap());
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("image.json")).unwrap()).unwrap();
        assert!(manifest["kernel_version"]
            .as_str()
            .unwrap()
            .ends_with("cloud-amd64"));
        assert!(dir.join("vmlinuz").is_file() && dir.join("initrd.img").is_file());
        assert_eq!(dir.join("disk.qcow2").is_file(), disk);
        // The fingerprint is the digest of image.json, which records every file's digest.
        let bytes = std::fs::read(dir.join("image.json")).unwrap();
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        assert_eq!(img["fingerprint"], digest);
    }
    // A VM image exports as a bundle and comes back as the same image.
    let fp = d.info_image("vm/busybox")["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let bundle = d.dir.join("vm.tar");
    d.ok(&["image", "export", "vm/busybox", bundle.to_str().unwrap()]);
    d.ok(&["image", "delete", "vm/busybox"]);
    d.ok(&[
        "image",
        "import",
        bundle.to_str().unwrap(),
        "--alias",
        "back",
    ]);
    assert_eq!(d.info_image("back")["fingerprint"], fp.as_str());
    // A bundle whose files do not match their digests is refused.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    let tampered = d.dir.join("tampered.tar");
    std::fs::write(&tampered, &bytes).unwrap();
    d.ok(&["image", "delete", "back"]);
    let err = d.fails(&["image", "import", tampered.to_str().unwrap()]);
    assert!(
        err.contains("verify") || err.contains("digest") || err.contains("sha256"),
        "{err}"
    );
    assert!(d.fails(&["image", "info", &fp]).contains("not found"));
    // The kernel is downloaded once and kept for the next build.
    assert!(d.root().join("images/kernels").read_dir().unwrap().count() >= 1);
    assert!(d
        .fails(&["launch", "vm/busybox-disk", "c1"])
        .contains("--vm"));
}
