//! Real images made and read by podman: `podman save` archives are imported, unpacked,
//! overlay-mounted and flattened; exports are loaded by `podman load` and run. Each test has a
//! private podman store (vfs driver) that is removed on drop, also when the test fails.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{assert_same_tree, require_root, require_tool, snapshot, OverlayMount, TempDir};
use vessel_image::{
    build_layer, flatten, import_image, new_image, unpack_layer, write_oci_archive, BlobStore,
    ImageConfig, ImportOptions, ImportedImage, UnpackOptions,
};

const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

struct Podman {
    dir: TempDir,
}

impl Podman {
    fn new(tag: &str) -> Self {
        require_root();
        require_tool("podman", "podman");
        require_tool("runc", "runc");
        require_tool("conmon", "conmon");
        require_tool("tar", "tar");
        assert!(
            Path::new("/bin/busybox").is_file(),
            "/bin/busybox is missing: install the Debian package `busybox-static`"
        );
        Self {
            dir: TempDir::new(&format!("podman-{tag}")),
        }
    }

    fn podman(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new("timeout")
            .arg("180")
            .arg("podman")
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(["--runtime", "runc"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.podman(args);
        assert!(
            o.status.success(),
            "podman {args:?} failed ({:?}):\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A busybox tree with owners, modes, a hard link, a directory to empty and a file to
    /// delete, imported as `localhost/vi-base:1`.
    fn import_base(&self) {
        let t = self.dir.join("tree");
        for d in ["bin", "etc/keep", "etc/d", "etc/opq", "tmp"] {
            fs::create_dir_all(t.join(d)).expect("mkdir");
        }
        fs::copy("/bin/busybox", t.join("bin/busybox")).expect("copy busybox");
        for l in ["sh", "cat", "ls", "test", "echo", "rm", "mkdir"] {
            std::os::unix::fs::symlink("busybox", t.join("bin").join(l)).expect("symlink");
        }
        let w = |p: &str, s: &str, mode: u32| {
            fs::write(t.join(p), s).expect("write");
            fs::set_permissions(t.join(p), fs::Permissions::from_mode(mode)).expect("chmod");
        };
        w("etc/keep/f", "kept\n", 0o640);
        w("etc/gone", "gone\n", 0o644);
        w("etc/d/one", "1\n", 0o644);
        w("etc/d/two", "2\n", 0o644);
        w("etc/opq/a", "a\n", 0o644);
        w("bin/suid", "#!/bin/sh\n", 0o4755);
        fs::set_permissions(t.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod");
        std::os::unix::fs::chown(t.join("etc/keep/f"), Some(1000), Some(1001)).expect("chown");
        fs::hard_link(t.join("etc/d/one"), t.join("etc/hard")).expect("hard link");
        let tarball = self.dir.join("base.tar");
        let st = Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(&t)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .status()
            .expect("tar");
        assert!(st.success());
        self.ok(&[
            "import",
            tarball.to_str().expect("path"),
            "localhost/vi-base:1",
        ]);
    }

    /// A second layer from a Containerfile that deletes a file and empties a directory.
    fn build_app(&self) {
        let ctx = self.dir.join("ctx");
        fs::create_dir_all(&ctx).expect("mkdir");
        fs::write(
            ctx.join("Containerfile"),
            "FROM localhost/vi-base:1\n\
             RUN rm /etc/gone && rm -rf /etc/d && mkdir /etc/d && echo new > /etc/new\n\
             CMD [\"cat\", \"/etc/new\"]\n",
        )
        .expect("write");
        let mut args = vec!["build", "--network", "none"];
        args.extend(ULIMITS);
        args.extend(["-t", "localhost/vi-app:1", ctx.to_str().expect("path")]);
        self.ok(&args);
    }

    fn save(&self, image: &str, format: &str, out: &Path) {
        self.ok(&[
            "save",
            "--format",
            format,
            "-o",
            out.to_str().expect("path"),
            image,
        ]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.podman(&["rmi", "--all", "--force"]);
        // TempDir's drop unmounts what is left below the directory and removes it.
    }
}

/// Unpacks every layer of `img` into `dir/<n>`, returning the paths bottom first.
fn unpack_all(store: &BlobStore, img: &ImportedImage, dir: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(dir).expect("mkdir");
    let mut out = Vec::new();
    for (i, l) in img.layers.iter().enumerate() {
        let dest = dir.join(format!("layer{i}"));
        let blob = store.open_blob(&l.blob).expect("blob");
        unpack_layer(blob, &l.media_type, &dest, &UnpackOptions::default()).expect("unpack");
        out.push(dest);
    }
    out
}

#[test]
fn podman_saved_image_imports_unpacks_and_flattens() {
    let p = Podman::new("save");
    p.import_base();
    p.build_app();
    let work = TempDir::new("save-work");
    let store = BlobStore::open(work.join("blobs")).expect("store");
    let saved = work.join("app-docker.tar");
    p.save("localhost/vi-app:1", "docker-archive", &saved);
    let img =
        import_image(&saved, &store, &ImportOptions::default()).expect("import docker archive");
    assert_eq!(img.repo_tags, vec!["localhost/vi-app:1".to_string()]);
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.config.cmd, vec!["cat", "/etc/new"]);
    assert!(img.config.env.iter().any(|e| e.starts_with("PATH=")));
    for d in [&img.manifest_digest, &img.config_digest] {
        assert!(store.has(d));
    }
    // The same image saved as an OCI archive and as an OCI directory reads the same.
    for (format, path) in [
        ("oci-archive", work.join("app-oci.tar")),
        ("oci-dir", work.join("app-oci-dir")),
    ] {
        p.save("localhost/vi-app:1", format, &path);
        let o = import_image(&path, &store, &ImportOptions::default()).expect(format);
        assert_eq!(o.config_digest, img.config_digest, "{format}");
        let ids = |i: &ImportedImage| {
            i.layers
                .iter()
                .map(|l| l.diff_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&o), ids(&img), "{format}");
        assert_eq!(
            o.repo_tags,
            vec!["localhost/vi-app:1".to_string()],
            "{format}"
        );
    }

    let layers = unpack_all(&store, &img, &work.join("layers"));
    let top_first: Vec<&Path> = layers.iter().rev().map(PathBuf::as_path).collect();
    let mnt = work.join("mnt");
    let _m = OverlayMount::new(&top_first, &mnt);
    assert!(
        fs::symlink_metadata(mnt.join("etc/gone")).is_err(),
        "deleted file still there"
    );
    assert_eq!(
        fs::read_dir(mnt.join("etc/d")).expect("etc/d").count(),
        0,
        "emptied dir not empty"
    );
    assert_eq!(
        fs::read_to_string(mnt.join("etc/new")).expect("new"),
        "new\n"
    );
    let md = fs::metadata(mnt.join("etc/keep/f")).expect("kept file");
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o640, 1000, 1001)
    );
    assert_eq!(
        fs::metadata(mnt.join("bin/suid")).expect("suid").mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::metadata(mnt.join("tmp")).expect("tmp").mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::read_link(mnt.join("bin/sh")).expect("sh"),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read_to_string(mnt.join("etc/hard")).expect("hard link"),
        "1\n"
    );
    assert_eq!(
        fs::read(mnt.join("bin/busybox")).expect("busybox"),
        fs::read("/bin/busybox").expect("host busybox")
    );

    let flat = work.join("flat");
    let bottom_first: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
    flatten(&bottom_first, &flat).expect("flatten");
    assert_same_tree(
        &snapshot(&mnt),
        &snapshot(&flat),
        "overlay mount vs flattened tree",
    );
}

/// Makes an overlayfs whiteout (character device 0:0).
fn whiteout(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: valid path; creates a device node.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) };
    assert_eq!(r, 0, "mknod whiteout: {}", std::io::Error::last_os_error());
}

fn set_opaque(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: valid path, name and value.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(r, 0, "set opaque: {}", std::io::Error::last_os_error());
}

#[test]
fn exported_image_loads_and_runs_in_podman() {
    let p = Podman::new("export");
    p.import_base();
    let work = TempDir::new("export-work");
    let store = BlobStore::open(work.join("blobs")).expect("store");
    let saved = work.join("base.tar");
    p.save("localhost/vi-base:1", "docker-archive", &saved);
    let base = import_image(&saved, &store, &ImportOptions::default()).expect("import");

    // An instance's writable layer, as overlayfs leaves it.
    let upper = work.join("upper");
    fs::create_dir_all(upper.join("etc/keep")).expect("mkdir");
    fs::create_dir_all(upper.join("etc/opq")).expect("mkdir");
    fs::write(upper.join("etc/exported"), "from vessel\n").expect("write");
    fs::write(upper.join("etc/opq/c"), "c\n").expect("write");
    whiteout(&upper.join("etc/keep/f"));
    set_opaque(&upper.join("etc/opq"));
    let layer = build_layer(&upper, &store).expect("build layer");
    assert_eq!(
        build_layer(&upper, &store).expect("again").blob,
        layer.blob,
        "layers are deterministic"
    );

    let cfg = ImageConfig {
        cmd: vec!["cat".into(), "/etc/exported".into()],
        env: vec!["PATH=/bin".into()],
        ..Default::default()
    };
    let img = new_image(
        &store,
        Some(&base),
        &[layer],
        &cfg,
        vec!["localhost/vi-export:1".into()],
    )
    .expect("new image");
    let archive = work.join("export.tar");
    write_oci_archive(&store, &img, fs::File::create(&archive).expect("create")).expect("export");

    // Our own reader takes it back unchanged.
    let back = import_image(
        &archive,
        &BlobStore::open(work.join("blobs2")).expect("store"),
        &ImportOptions::default(),
    )
    .expect("re-import");
    assert_eq!(
        (back.manifest_digest.clone(), back.layers.clone()),
        (img.manifest_digest.clone(), img.layers.clone())
    );
    assert_eq!(back.config, cfg);

    p.ok(&["load", "-i", archive.to_str().expect("path")]);
    let images = p.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        images.lines().any(|l| l == "localhost/vi-export:1"),
        "podman images:\n{images}"
    );
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend(ULIMITS);
    args.push("localhost/vi-export:1");
    assert_eq!(p.ok(&args), "from vessel\n", "the image's own command");
    args.extend([
        "sh",
        "-c",
        "cat /etc/exported; ls -A /etc/opq; test -e /etc/keep/f && echo present || echo gone; cat /etc/d/one",
    ]);
    assert_eq!(p.ok(&args), "from vessel\nc\ngone\n1\n");
}
