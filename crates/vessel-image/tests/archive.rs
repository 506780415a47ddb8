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

/// A `docker save` archive of one image whose config says `os`/`arch`, with `layers` entries in
/// `manifest.json` that all name the same layer file.
fn docker_archive(path: &Path, os: &str, arch: &str, layer: &[u8], layers: usize) {
    let diff_id = Digest::of(layer);
    let config = json!({"architecture": arch, "os": os, "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": vec![diff_id.as_str(); layers]}})
    .to_string();
    let config_name = format!("{}.json", Digest::of(config.as_bytes()).hex());
    let manifest = json!([{"Config": config_name, "RepoTags": ["localhost/plat:1"],
        "Layers": vec!["layer/layer.tar"; layers]}])
    .to_string();
    let mut b = TarBuilder::new()
        .file("manifest.json", manifest.as_bytes())
        .file(&config_name, config.as_bytes());
    b = b.file("layer/layer.tar", layer);
    fs::write(path, b.finish()).expect("write archive");
}

#[test]
fn docker_archives_for_another_platform_are_refused() {
    let t = TempDir::new("docker-plat");
    let layer = TarBuilder::new().file("f", b"1").finish();
    let store = BlobStore::open(t.join("blobs")).expect("store");
    docker_archive(&t.join("win.tar"), "windows", "arm64", &layer, 1);
    let e = import_image(&t.join("win.tar"), &store, &ImportOptions::default())
        .expect_err("windows/arm64");
    assert!(matches!(e, ImportError::NoPlatform { .. }), "{e}");
    assert!(e.to_string().contains("windows/arm64"), "{e}");
    assert!(e.to_string().contains("linux/amd64"), "{e}");
    docker_archive(&t.join("ok.tar"), "linux", "amd64", &layer, 1);
    import_image(&t.join("ok.tar"), &store, &ImportOptions::default()).expect("linux/amd64");
}

#[test]
fn more_layers_than_overlayfs_stacks_are_refused_before_reading_them() {
    let t = TempDir::new("docker-layers");
    let layer = TarBuilder::new().file("f", b"1").finish();
    let store = BlobStore::open(t.join("blobs")).expect("store");
    docker_archive(&t.join("many.tar"), "linux", "amd64", &layer, 20_000);
    let started = std::time::Instant::now();
    let e = import_image(&t.join("many.tar"), &store, &ImportOptions::default())
        .expect_err("20,000 layers");
    assert!(
        matches!(
            e,
            ImportError::TooManyLayers {
                count: 20_000,
                limit: 500
            }
        ),
        "{e}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // Nothing of the image was stored (not even its config).
    assert_eq!(
        fs::read_dir(store.dir().join("sha256"))
            .expect("list")
            .count(),
        0
    );
    let opts = ImportOptions {
        max_layers: 3,
        ..Default::default()
    };
    docker_archive(&t.join("three.tar"), "linux", "amd64", &layer, 3);
    import_image(&t.join("three.tar"), &store, &opts).expect("3 layers at a limit of 3");
    docker_archive(&t.join("four.tar"), "linux", "amd64", &layer, 4);
    let e = import_image(&t.join("four.tar"), &store, &opts).expect_err("4 > 3");
    assert!(e.to_string().contains("4 layers"), "{e}");
}

#[test]
fn gzip_bombs_are_refused_when_their_diff_id_is_computed() {
    let t = TempDir::new("oci-bomb");
    let dir = t.join("layout");
    fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    let zeros = TarBuilder::new().file("z", &vec![0u8; 32 << 20]).finish();
    let gz = gzip(&zeros);
    let layer = blob(&dir, "application/vnd.oci.image.layer.v1.tar+gzip", &gz);
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&zeros).as_str()]}});
    let config = blob(
        &dir,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = json!({"schemaVersion": 2, "config": config, "layers": [layer],
        "mediaType": "application/vnd.oci.image.manifest.v1+json"});
    let m = blob(
        &dir,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    fs::write(
        dir.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [m]}).to_string(),
    )
    .expect("write");
    let store = BlobStore::open(t.join("blobs")).expect("store");
    let tight = ImportOptions {
        space: vessel_image::SpaceLimits {
            ratio_floor: 1 << 20,
            ..Default::default()
        },
        ..Default::default()
    };
    let e = import_image(&dir, &store, &tight).expect_err("bomb");
    assert!(
        matches!(
            e,
            ImportError::LayerTooLarge {
                index: 0,
                ratio: 100,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("decompression bomb"), "{e}");
    import_image(&dir, &store, &ImportOptions::default()).expect("under the default floor");
}
