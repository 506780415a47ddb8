//! Whiteout semantics: layers unpacked in overlayfs form and mounted for real must show the
//! same tree as `flatten` of the same layers, for every kind of replacement and deletion.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{assert_same_tree, require_root, snapshot, OverlayMount, TarBuilder, TempDir};
use tar::EntryType;
use vessel_image::media::{OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD};
use vessel_image::{build_layer, flatten, unpack_layer, BlobStore, UnpackOptions};

fn layers() -> Vec<Vec<u8>> {
    let cap = [
        1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let l0 = TarBuilder::new()
        .dir("./", 0o755)
        .dir("a/", 0o755)
        .dir("a/b/", 0o700)
        .file("a/f1", b"f1")
        .file("a/b/f2", b"f2")
        .file("x", b"x0")
        .file_owned("owned", b"o", 0o640, 1000, 1001)
        .file_owned("suid", b"s", 0o4755, 0, 0)
        .link(EntryType::Link, "hard", "x")
        .link(EntryType::Symlink, "s", "a")
        .dir("o/", 0o755)
        .file("o/1", b"1")
        .file("o/2", b"2")
        .dir("a2/", 0o755)
        .file("a2/old", b"old")
        .device("null", 1, 3)
        .pax_file(
            "caps",
            &[
                ("SCHILY.xattr.security.capability", &cap),
                ("SCHILY.xattr.user.k", b"v"),
            ],
            b"c",
        )
        .pax_file(
            "trusted",
            &[("SCHILY.xattr.trusted.overlay.redirect", b"/x")],
            b"t",
        )
        .finish();
    let l1 = TarBuilder::new()
        .file(".wh.x", b"")
        .file("a/.wh.f1", b"")
        .file("o/.wh..wh..opq", b"")
        .file("o/3", b"3")
        .dir("n/", 0o750)
        .file("n/new", b"new")
        .dir("s/", 0o755)
        .file("s/in", b"s is a directory now")
        .file("a/b", b"a/b is a file now")
        .file(".wh.y", b"")
        .file("y", b"same-layer name survives its whiteout")
        .file(".wh.a2", b"")
        .dir("a2/", 0o711)
        .file("a2/fresh", b"fresh")
        .file(".wh.never-existed", b"")
        .finish();
    let l2 = TarBuilder::new()
        .dir("x/", 0o755)
        .file("x/inner", b"x is a dir")
        .file("o/.wh.3", b"")
        .file("n/.wh.new", b"")
        .file(".wh.null", b"")
        .file("caps", b"replaced")
        .finish();
    vec![l0, l1, l2]
}

fn unpack_all(dir: &Path) -> Vec<PathBuf> {
    let opts = UnpackOptions {
        allow_devices: true,
        ..Default::default()
    };
    layers()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let dest = dir.join(format!("l{i}"));
            // One layer per compression so every decoder runs.
            let (data, media) = match i {
                0 => (common::gzip(t), OCI_LAYER_GZIP),
                1 => (zstd::encode_all(&t[..], 3).expect("zstd"), OCI_LAYER_ZSTD),
                _ => (t.clone(), OCI_LAYER_TAR),
            };
            unpack_layer(&data[..], media, &dest, &opts).expect("unpack");
            dest
        })
        .collect()
}

#[test]
fn overlay_mount_and_flatten_agree() {
    require_root();
    let work = TempDir::new("overlay");
    let layers = unpack_all(work.path());
    let top_first: Vec<&Path> = layers.iter().rev().map(PathBuf::as_path).collect();
    let mnt = work.join("mnt");
    let _m = OverlayMount::new(&top_first, &mnt);
    let flat = work.join("flat");
    let bottom_first: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
    flatten(&bottom_first, &flat).expect("flatten");
    let seen = snapshot(&mnt);
    assert_same_tree(&seen, &snapshot(&flat), "overlay mount vs flattened tree");

    let names: Vec<&str> = seen.keys().map(String::as_str).collect();
    let expected = [
        "", "a", "a/b", "a2", "a2/fresh", "caps", "hard", "n", "o", "owned", "s", "s/in", "suid",
        "trusted", "x", "x/inner", "y",
    ];
    let mut want: Vec<&str> = expected.to_vec();
    want.sort();
    assert_eq!(names, want);
    assert_eq!(
        fs::read(flat.join("hard")).expect("hard"),
        b"x0",
        "hard link keeps the deleted file's data"
    );
    let md = fs::metadata(flat.join("owned")).expect("owned");
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o640, 1000, 1001)
    );
    assert_eq!(
        fs::metadata(flat.join("suid")).expect("suid").mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::metadata(flat.join("a2")).expect("a2").mode() & 0o7777,
        0o711
    );
    assert!(
        seen["caps"].xattrs.is_empty(),
        "replaced file has no xattrs"
    );
    assert!(
        seen["trusted"].xattrs.is_empty(),
        "trusted.* xattrs are not taken from layers"
    );
    assert_eq!(seen["x"].mtime, 1_600_000_000);
}

#[test]
fn capabilities_survive_unpack_and_build() {
    require_root();
    let work = TempDir::new("caps");
    let layers = unpack_all(work.path());
    let seen = snapshot(&layers[0]);
    assert_eq!(
        seen["caps"].xattrs.get("user.k").map(Vec::as_slice),
        Some(&b"v"[..])
    );
    assert!(seen["caps"].xattrs.contains_key("security.capability"));
    // Unpacked layer -> build_layer -> unpack again gives the same tree, whiteouts included.
    let store = BlobStore::open(work.join("blobs")).expect("store");
    for (i, l) in layers.iter().enumerate() {
        let built = build_layer(l, &store).expect("build");
        let again = work.join(format!("again{i}"));
        let opts = UnpackOptions {
            allow_devices: true,
            ..Default::default()
        };
        unpack_layer(
            store.open_blob(&built.blob).expect("blob"),
            &built.media_type,
            &again,
            &opts,
        )
        .expect("unpack");
        assert_same_tree(
            &snapshot(l),
            &snapshot(&again),
            &format!("layer {i} after build and unpack"),
        );
    }
}
