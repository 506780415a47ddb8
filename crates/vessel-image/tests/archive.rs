//! Reading OCI layouts written by hand: platform selection from an index, references, and
//! refusal of tampered blobs and wrong diff_ids.

mod common;

use std::fs;
use std::path::Path;

use common::{gzip, TarBuilder, TempDir};
use serde_json::json;
use vessel_image::{import_image, BlobStore, Digest, ImportError, ImportOptions};

/// Writes a blob into a layout and returns its descriptor JSON.
fn blob(layout: &Path, media: &str, data: &[u8]) -> serde_json::Value {
    let d = Digest::of(data);
    fs::write(layout.join("blobs/sha256").join(d.hex()), data).expect("write blob");
    json!({"mediaType": media, "digest": d.as_str(), "size": data.len()})
}

/// A layout with an amd64 and an arm64 image behind one nested index, plus a second named
/// image; `diff_id` overrides the amd64 config's diff_id when given.
fn layout(dir: &Path, diff_id: Option<&str>) -> Digest {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    let mut manifests = Vec::new();
    for arch in ["arm64", "amd64"] {
        let tar = TarBuilder::new().file("arch", arch.as_bytes()).finish();
        let layer = blob(
            dir,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &gzip(&tar),
        );
        let id = match (arch, diff_id) {
            ("amd64", Some(d)) => d.to_string(),
            _ => Digest::of(&tar).to_string(),
        };
        let config = json!({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"], "Env": [format!("ARCH={arch}")]},
            "rootfs": {"type": "layers", "diff_ids": [id]}});
        let config = blob(
            dir,
            "application/vnd.oci.image.config.v1+json",
            config.to_string().as_bytes(),
        );
        let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": [layer]});
        let mut m = blob(
            dir,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string().as_bytes(),
        );
        m["platform"] = json!({"architecture": arch, "os": "linux"});
        manifests.push(m);
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    let mut idx = blob(
        dir,
        "application/vnd.oci.image.index.v1+json",
        index.to_string().as_bytes(),
    );
    idx["annotations"] = json!({"org.opencontainers.image.ref.name": "example.org/multi:1"});
    let amd64 = Digest::parse(manifests[1]["digest"].as_str().expect("digest")).expect("digest");
    fs::write(
        dir.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [idx]}).to_string(),
    )
    .expect("write");
    amd64
}

#[test]
fn picks_the_wanted_platform_from_a_nested_index() {
    let t = TempDir::new("oci");
    let amd64 = layout(&t.join("layout"), None);
    let store = BlobStore::open(t.join("blobs")).expect("store");
    let img = import_image(&t.join("layout"), &store, &ImportOptions::default()).expect("import");
    assert_eq!(img.manifest_digest, amd64);
    assert_eq!(img.config.env, vec!["ARCH=amd64"]);
    assert_eq!(img.repo_tags, vec!["example.org/multi:1"]);
    assert_eq!(
        img.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert!(store.has(&img.layers[0].blob));
    let arm = ImportOptions {
        architecture: "arm64".into(),
        ..Default::default()
    };
    let img = import_image(&t.join("layout"), &store, &arm).expect("import arm64");
    assert_eq!(img.config.env, vec!["ARCH=arm64"]);
    let riscv = ImportOptions {
        architecture: "riscv64".into(),
        ..Default::default()
    };
    let e = import_image(&t.join("layout"), &store, &riscv).expect_err("no riscv64");
    assert!(matches!(e, ImportError::NoPlatform { .. }), "{e}");
    assert!(e.to_string().contains("linux/amd64"), "{e}");
    let named = ImportOptions {
        reference: Some("other:2".into()),
        ..Default::default()
    };
    assert!(matches!(
        import_image(&t.join("layout"), &store, &named),
        Err(ImportError::NoSuchReference(_))
    ));
}

#[test]
fn tampered_blobs_and_wrong_diff_ids_are_refused() {
    let t = TempDir::new("oci-bad");
    let wrong = Digest::of(b"something else").to_string();
    layout(&t.join("wrong"), Some(&wrong));
    let store = BlobStore::open(t.join("blobs")).expect("store");
    let e = import_image(&t.join("wrong"), &store, &ImportOptions::default())
        .expect_err("wrong diff_id");
    assert!(
        matches!(e, ImportError::DiffIdMismatch { index: 0, .. }),
        "{e}"
    );

    let good = t.join("tampered");
    layout(&good, None);
    // Flip a byte of every gzip blob: the digest no longer matches its name.
    for f in fs::read_dir(good.join("blobs/sha256"))
        .expect("list")
        .flatten()
    {
        let mut b = fs::read(f.path()).expect("read");
        if b.starts_with(&[0x1f, 0x8b]) {
            let n = b.len() / 2;
            b[n] ^= 1;
            fs::write(f.path(), b).expect("write");
        }
    }
    let fresh = BlobStore::open(t.join("blobs2")).expect("store");
    let e = import_image(&good, &fresh, &ImportOptions::default()).expect_err("tampered");
    assert!(matches!(e, ImportError::Blob { .. }), "{e}");
    let leftovers = fs::read_dir(fresh.dir())
        .expect("list")
        .flatten()
        .filter(|e| e.file_name() != "sha256")
        .count();
    assert_eq!(leftovers, 0, "temporary files left in the store");

    fs::create_dir_all(t.join("empty")).expect("mkdir");
    assert!(matches!(
        import_image(&t.join("empty"), &store, &ImportOptions::default()),
        Err(ImportError::NotAnImage(_))
    ));
}
