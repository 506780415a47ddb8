//! Pulls from a real registry (Debian's docker-registry) that skopeo pushed images to.

mod common;

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::proxy::{Behaviour, Proxy};
use common::{noise, verify_store, Layout, Registry, TempDir, TestLayer, TAR};
use vessel_image::{BlobStore, Digest};
use vessel_registry::{
    BlobKind, Client, ClientOptions, Credentials, Progress, ProgressEvent, PulledImage, Reference,
    RegistryError, PARTIAL_DIR,
};

fn client(insecure: &[String]) -> Client {
    Client::new(ClientOptions {
        insecure_hosts: insecure.to_vec(),
        connect_timeout: std::time::Duration::from_secs(5),
        read_timeout: std::time::Duration::from_secs(20),
        ..Default::default()
    })
    .expect("client")
}

fn pull_with(
    c: &Client,
    reference: &str,
    store: &BlobStore,
    cancel: &AtomicBool,
) -> (Result<PulledImage, RegistryError>, Vec<Progress>) {
    let mut events = Vec::new();
    let r = Reference::parse(reference).expect("reference");
    let res = c.pull(&r, store, &mut |p| events.push(p), cancel);
    (res, events)
}

fn pull(c: &Client, reference: &str, store: &BlobStore) -> Result<PulledImage, RegistryError> {
    pull_with(c, reference, store, &AtomicBool::new(false)).0
}

fn run_config() -> serde_json::Value {
    serde_json::json!({
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo hello"],
        "Env": ["PATH=/bin", "GREETING=hi"],
        "WorkingDir": "/srv",
        "User": "1000:1000",
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
        "StopSignal": "SIGQUIT",
        "Labels": {"org.example.role": "test"}
    })
}

/// Pushes `test/busybox:1`: the busybox layer and a small one.
fn push_busybox(reg: &Registry) -> (Layout, Vec<TestLayer>, common::Desc) {
    let mut layout = Layout::new();
    let bb = layout.busybox_layer();
    let etc = layout.layer(true, |root| {
        fs::create_dir_all(root.join("etc")).expect("etc");
        fs::write(root.join("etc/hostname"), "vessel\n").expect("hostname");
    });
    let layers = vec![bb, etc];
    let m = layout.image("amd64", &layers, run_config());
    layout.tag("1", &m);
    layout.push("1", &reg.host(), "test/busybox");
    (layout, layers, m)
}

/// An image whose top layer is `len` bytes of noise (uncompressed tar), tagged `big`.
fn push_big(reg: &Registry, len: usize) -> (Layout, TestLayer) {
    let mut layout = Layout::new();
    let bb = layout.busybox_layer();
    let big = layout.layer(false, |root| {
        fs::write(root.join("noise"), noise(len, 7)).expect("noise");
    });
    assert_eq!(big.desc.media_type, TAR);
    let m = layout.image(
        "amd64",
        &[bb, big.clone()],
        serde_json::json!({"Cmd": ["sh"]}),
    );
    layout.tag("big", &m);
    layout.push("big", &reg.host(), "test/busybox");
    (layout, big)
}

fn store_in(dir: &TempDir) -> BlobStore {
    BlobStore::open(dir.path().join("blobs")).expect("store")
}

fn partial_files(store: &BlobStore) -> Vec<String> {
    fs::read_dir(store.dir().join(PARTIAL_DIR))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pulls_by_tag_and_by_digest() {
    let reg = Registry::start();
    let (_layout, layers, manifest) = push_busybox(&reg);
    let c = client(&[reg.host()]);
    let dir = TempDir::new("store");
    let store = store_in(&dir);

    let reference = format!("{}/test/busybox:1", reg.host());
    let (res, events) = pull_with(&c, &reference, &store, &AtomicBool::new(false));
    let img = res.expect("pull by tag");
    assert_eq!(img.manifest_digest.as_str(), manifest.digest);
    assert_eq!(img.index_digest, None);
    assert_eq!(img.pinned_digest().as_str(), manifest.digest);
    assert_eq!(img.layers.len(), 2);
    for (got, want) in img.layers.iter().zip(&layers) {
        assert_eq!(got.blob.as_str(), want.desc.digest);
        assert_eq!(got.diff_id.as_str(), want.diff_id);
        assert_eq!(got.size, want.desc.size);
        assert_eq!(got.media_type, want.desc.media_type);
        assert!(store.has(&got.blob));
    }
    let cfg = &img.config;
    assert_eq!(cfg.entrypoint, ["/bin/sh", "-c"]);
    assert_eq!(cfg.cmd, ["echo hello"]);
    assert_eq!(cfg.env, ["PATH=/bin", "GREETING=hi"]);
    assert_eq!(cfg.working_dir.as_deref(), Some("/srv"));
    assert_eq!(cfg.user.as_deref(), Some("1000:1000"));
    assert_eq!(cfg.exposed_ports, ["53/udp", "80/tcp"]);
    assert_eq!(cfg.stop_signal.as_deref(), Some("SIGQUIT"));
    assert_eq!(cfg.labels["org.example.role"], "test");
    // Manifest, config and two layers, each named by its hash.
    assert!(store.has(&img.manifest_digest) && store.has(&img.config_digest));
    assert_eq!(verify_store(store.dir()), 4);
    assert!(partial_files(&store).is_empty());
    // Progress: each blob started and finished, bytes add up.
    for (i, kind) in [BlobKind::Config, BlobKind::Layer, BlobKind::Layer]
        .iter()
        .enumerate()
    {
        let mine: Vec<_> = events.iter().filter(|p| p.index == i).collect();
        assert!(mine.iter().all(|p| p.kind == *kind && p.count == 3));
        assert!(matches!(
            mine.first().map(|p| p.event),
            Some(ProgressEvent::Started { resumed_from: 0 })
        ));
        let last = mine.last().expect("events");
        assert_eq!(
            (last.event, last.done),
            (ProgressEvent::Finished, last.total)
        );
    }

    // By digest, into a fresh store.
    let dir2 = TempDir::new("store");
    let store2 = store_in(&dir2);
    let pinned = format!("{}/test/busybox@{}", reg.host(), manifest.digest);
    let img2 = pull(&c, &pinned, &store2).expect("pull by digest");
    assert_eq!(img2.manifest_digest, img.manifest_digest);
    assert_eq!(img2.layers, img.layers);
    assert_eq!(img2.config, img.config);
    assert_eq!(verify_store(store2.dir()), 4);

    // A digest the registry does not have.
    let absent = format!("{}/test/busybox@sha256:{}", reg.host(), "0".repeat(64));
    let err = pull(&c, &absent, &store2).expect_err("unknown digest");
    eprintln!("{err}");
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
}

#[test]
fn shared_layers_are_downloaded_once() {
    let reg = Registry::start();
    let mut layout = Layout::new();
    let bb = layout.busybox_layer();
    let extra = layout.layer(true, |root| {
        fs::write(root.join("app"), "app v2\n").expect("app")
    });
    let a = layout.image(
        "amd64",
        std::slice::from_ref(&bb),
        serde_json::json!({"Cmd": ["sh"]}),
    );
    let b = layout.image(
        "amd64",
        &[bb.clone(), extra.clone()],
        serde_json::json!({"Cmd": ["/app"]}),
    );
    layout.tag("a", &a);
    layout.tag("b", &b);
    layout.push("a", &reg.host(), "test/busybox");
    layout.push("b", &reg.host(), "test/busybox");

    let proxy = Proxy::start(reg.addr, Behaviour::default());
    let c = client(&[proxy.host()]);
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    pull(&c, &format!("{}/test/busybox:a", proxy.host()), &store).expect("pull a");
    assert_eq!(
        proxy.blob_gets().len(),
        2,
        "config and one layer: {:?}",
        proxy.blob_gets()
    );
    proxy.clear();

    let (res, events) = pull_with(
        &c,
        &format!("{}/test/busybox:b", proxy.host()),
        &store,
        &AtomicBool::new(false),
    );
    let img = res.expect("pull b");
    let gets: Vec<String> = proxy.blob_gets().into_iter().map(|r| r.path).collect();
    assert_eq!(gets.len(), 2, "only b's config and its new layer: {gets:?}");
    assert!(gets.iter().any(|p| p.ends_with(&extra.desc.digest)));
    assert!(!gets.iter().any(|p| p.ends_with(&bb.desc.digest)));
    assert!(events
        .iter()
        .any(|p| p.digest.as_str() == bb.desc.digest && p.event == ProgressEvent::Skipped));
    assert_eq!(img.layers.len(), 2);
    assert_eq!(verify_store(store.dir()), 2 + 2 + 2); // two manifests, two configs, two layers

    // A client for a store that tenants share fetches and verifies a stored blob too: a
    // manifest naming a digest is not the registry having its content.
    proxy.clear();
    let shared = Client::new(ClientOptions {
        insecure_hosts: vec![proxy.host()],
        verify_stored: true,
        ..Default::default()
    })
    .expect("client");
    pull(&shared, &format!("{}/test/busybox:b", proxy.host()), &store).expect("pull b again");
    let gets: Vec<String> = proxy.blob_gets().into_iter().map(|r| r.path).collect();
    assert!(
        gets.iter().any(|p| p.ends_with(&bb.desc.digest)),
        "{gets:?}"
    );
    assert!(
        gets.iter().any(|p| p.ends_with(&extra.desc.digest)),
        "{gets:?}"
    );
    assert_eq!(verify_store(store.dir()), 2 + 2 + 2);
}

#[test]
fn dropped_connection_resumes_with_range() {
    let reg = Registry::start();
    let (_layout, big) = push_big(&reg, 6 << 20);
    let proxy = Proxy::start(
        reg.addr,
        Behaviour {
            drop_after: Some((big.desc.digest.clone(), 1 << 20)),
            ..Default::default()
        },
    );
    let c = client(&[proxy.host()]);
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    let (res, events) = pull_with(
        &c,
        &format!("{}/test/busybox:big", proxy.host()),
        &store,
        &AtomicBool::new(false),
    );
    let img = res.expect("pull survives a dropped connection");
    let gets: Vec<_> = proxy
        .blob_gets()
        .into_iter()
        .filter(|r| r.path.ends_with(&big.desc.digest))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].header("range"), None);
    let range = gets[1]
        .header("range")
        .expect("the second request carries Range");
    let from: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .expect("bytes=N-");
    assert!(from > 0 && from <= 1 << 20, "{range}");
    assert_eq!(gets[1].status, 206);
    assert!(events
        .iter()
        .any(|p| p.event == ProgressEvent::Started { resumed_from: from }));
    assert!(store.has(&img.layers[1].blob));
    assert!(partial_files(&store).is_empty());
    verify_store(store.dir());
}

#[test]
fn cancelled_pull_leaves_no_partial_download() {
    let reg = Registry::start();
    let (_layout, big) = push_big(&reg, 6 << 20);
    let proxy = Proxy::start(reg.addr, Behaviour::default());
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    let reference = format!("{}/test/busybox:big", proxy.host());
    let big_digest = Digest::parse(&big.desc.digest).expect("digest");

    let cancel = AtomicBool::new(false);
    let mut partial_seen = 0;
    let c = client(&[proxy.host()]);
    let r = Reference::parse(&reference).expect("reference");
    let err = c
        .pull(
            &r,
            &store,
            &mut |p| {
                if p.digest == big_digest && p.done >= 2 << 20 {
                    partial_seen = partial_files(&store).len();
                    cancel.store(true, Ordering::Relaxed);
                }
            },
            &cancel,
        )
        .expect_err("cancelled");
    assert!(matches!(err, RegistryError::Cancelled), "{err}");
    assert_eq!(partial_seen, 1, "the download had its partial file");
    assert!(!store.has(&big_digest));
    assert!(
        partial_files(&store).is_empty(),
        "a cancelled pull kept {:?}",
        partial_files(&store)
    );
    // The next pull downloads everything again, from the start.
    proxy.clear();
    let img = pull(&client(&[proxy.host()]), &reference, &store).expect("pull again");
    assert_eq!(img.layers[1].blob, big_digest);
    assert!(proxy
        .blob_gets()
        .iter()
        .all(|g| g.header("range").is_none()));
    verify_store(store.dir());
}

#[test]
fn partial_download_of_a_crashed_process_is_resumed() {
    let reg = Registry::start();
    let (_layout, big) = push_big(&reg, 6 << 20);
    let proxy = Proxy::start(reg.addr, Behaviour::default());
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    let big_digest = Digest::parse(&big.desc.digest).expect("digest");
    // What a process killed in the middle of a download leaves: its file, unlocked.
    let blob = fs::read(reg.blob_file(&big.desc.digest)).expect("registry's blob");
    let kept = 2 << 20;
    fs::create_dir_all(store.dir().join(PARTIAL_DIR)).expect("mkdir");
    let orphan = store
        .dir()
        .join(PARTIAL_DIR)
        .join(format!("{}.4000000.0", big_digest.hex()));
    fs::write(&orphan, &blob[..kept]).expect("orphan");
    let img = pull(
        &client(&[proxy.host()]),
        &format!("{}/test/busybox:big", proxy.host()),
        &store,
    )
    .expect("resumed pull");
    let gets: Vec<_> = proxy
        .blob_gets()
        .into_iter()
        .filter(|g| g.path.ends_with(&big.desc.digest))
        .collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(
        gets[0].header("range"),
        Some(format!("bytes={kept}-").as_str())
    );
    assert_eq!(gets[0].status, 206);
    assert_eq!(img.layers[1].blob, big_digest);
    assert!(partial_files(&store).is_empty());
    verify_store(store.dir());
}

#[test]
fn trickling_registry_stalls_and_never_holds_up_another_pull() {
    let reg = Registry::start();
    let (_layout, big) = push_big(&reg, 1 << 20);
    let slow = Proxy::start(
        reg.addr,
        Behaviour {
            trickle: Some((big.desc.digest.clone(), Duration::from_millis(200))),
            ..Default::default()
        },
    );
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    let stalling = Client::new(ClientOptions {
        insecure_hosts: vec![slow.host(), reg.host()],
        stall_window: Duration::from_secs(3),
        min_window_bytes: 4 << 10,
        ..Default::default()
    })
    .expect("client");
    let started = Instant::now();
    let (slow_result, fast) = std::thread::scope(|s| {
        let trickled = s.spawn(|| {
            pull(
                &stalling,
                &format!("{}/test/busybox:big", slow.host()),
                &store,
            )
        });
        // Once the trickled download of the big blob has its partial file, the same blob is
        // pulled directly.
        let hex = big.desc.digest.trim_start_matches("sha256:").to_string();
        while !partial_files(&store).iter().any(|n| n.starts_with(&hex)) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the slow pull never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let t = Instant::now();
        let direct = pull(
            &client(&[reg.host()]),
            &format!("{}/test/busybox:big", reg.host()),
            &store,
        );
        // Done while the other still trickles (it stalls out 3 s into its window): it
        // did not wait for it.
        let fast = (direct, t.elapsed(), trickled.is_finished());
        (trickled.join().expect("slow pull"), fast)
    });
    let (direct, took, slow_done) = fast;
    direct.expect("the direct pull succeeds while the other trickles");
    assert!(
        !slow_done,
        "the direct pull ended after the trickled one, in {took:?}"
    );
    let err = slow_result.expect_err("a trickle is stalled");
    assert!(
        matches!(err, RegistryError::Stalled { min: 4096, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("stalled"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        partial_files(&store).is_empty(),
        "{:?}",
        partial_files(&store)
    );
    verify_store(store.dir());

    // The whole-blob deadline holds even when every window brings enough.
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    let deadline = Client::new(ClientOptions {
        insecure_hosts: vec![slow.host()],
        blob_time_base: Duration::from_secs(2),
        min_average_rate: u64::MAX,
        ..Default::default()
    })
    .expect("client");
    let err = pull(
        &deadline,
        &format!("{}/test/busybox:big", slow.host()),
        &store,
    )
    .expect_err("over its time");
    assert!(matches!(err, RegistryError::TimedOut { .. }), "{err}");
    assert!(partial_files(&store).is_empty());
}

#[test]
fn redirects_to_other_schemes_are_refused_and_http_ones_followed() {
    let reg = Registry::start();
    let (_layout, _layers, _) = push_busybox(&reg);
    for to in [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
        "file:/etc/shadow",
    ] {
        let proxy = Proxy::start(
            reg.addr,
            Behaviour {
                redirect: Some(("/blobs/".into(), to.into())),
                ..Default::default()
            },
        );
        let dir = TempDir::new("store");
        let store = store_in(&dir);
        let err = pull(
            &client(&[proxy.host()]),
            &format!("{}/test/busybox:1", proxy.host()),
            &store,
        )
        .expect_err("redirect refused");
        assert!(
            matches!(err, RegistryError::BadRedirect { .. }),
            "{to}: {err}"
        );
        assert!(err.to_string().contains(to), "{err}");
        assert!(partial_files(&store).is_empty());
        assert_eq!(verify_store(store.dir()), 0);
    }
    // A redirect to the registry itself (object storage, in real life) is followed.
    let proxy = Proxy::start(
        reg.addr,
        Behaviour {
            redirect: Some(("/blobs/".into(), format!("http://{}{{path}}", reg.host()))),
            ..Default::default()
        },
    );
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    pull(
        &client(&[proxy.host(), reg.host()]),
        &format!("{}/test/busybox:1", proxy.host()),
        &store,
    )
    .expect("an HTTP redirect to an insecure host is followed");
}

#[test]
fn more_layers_than_can_be_stacked_are_refused_before_any_download() {
    let reg = Registry::start();
    let layout = Layout::new();
    let tiny = layout.layer(true, |root| fs::write(root.join("f"), "1").expect("f"));
    let m = layout.image(
        "amd64",
        &vec![tiny.clone(); 501],
        serde_json::json!({"Cmd": ["sh"]}),
    );
    let blob = |digest: &str| {
        fs::read(
            layout
                .dir
                .path()
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .expect("blob")
    };
    let manifest = blob(&m.digest);
    let doc: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest");
    let config = blob(doc["config"]["digest"].as_str().expect("config digest"));
    // Straight over the API: skopeo takes minutes for 501 layers naming one blob.
    reg.push_raw(
        "test/busybox",
        "many",
        &[&config, &blob(&tiny.desc.digest)],
        &manifest,
        "application/vnd.oci.image.manifest.v1+json",
    );
    let proxy = Proxy::start(reg.addr, Behaviour::default());
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    let err = pull(
        &client(&[proxy.host()]),
        &format!("{}/test/busybox:many", proxy.host()),
        &store,
    )
    .expect_err("501 layers");
    assert!(
        matches!(
            err,
            RegistryError::TooManyLayers {
                count: 501,
                limit: 500,
                ..
            }
        ),
        "{err}"
    );
    assert!(proxy.blob_gets().is_empty(), "{:?}", proxy.blob_gets());
}

#[test]
fn blobs_too_large_for_the_store_are_refused_before_any_byte() {
    let reg = Registry::start();
    let (_layout, _big) = push_big(&reg, 2 << 20);
    let proxy = Proxy::start(reg.addr, Behaviour::default());
    let reference = format!("{}/test/busybox:big", proxy.host());
    let full = Client::new(ClientOptions {
        insecure_hosts: vec![proxy.host()],
        space: vessel_image::SpaceLimits {
            min_free_bytes: u64::MAX / 4,
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("client");
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    let err = pull(&full, &reference, &store).expect_err("no room");
    assert!(matches!(err, RegistryError::NoSpace { .. }), "{err}");
    assert!(proxy.blob_gets().is_empty(), "{:?}", proxy.blob_gets());
    let small = Client::new(ClientOptions {
        insecure_hosts: vec![proxy.host()],
        max_blob_bytes: 1 << 20,
        ..Default::default()
    })
    .expect("client");
    let err = pull(&small, &reference, &store).expect_err("too large");
    assert!(
        matches!(err, RegistryError::TooLarge { limit, .. } if limit == 1 << 20),
        "{err}"
    );
    assert!(partial_files(&store).is_empty());
}

#[test]
fn registry_ignoring_range_gets_a_full_download() {
    let reg = Registry::start();
    let (_layout, big) = push_big(&reg, 3 << 20);
    let proxy = Proxy::start(
        reg.addr,
        Behaviour {
            drop_after: Some((big.desc.digest.clone(), 1 << 20)),
            strip_range: true,
            ..Default::default()
        },
    );
    let c = client(&[proxy.host()]);
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    let img = pull(&c, &format!("{}/test/busybox:big", proxy.host()), &store).expect("pull");
    let gets: Vec<_> = proxy
        .blob_gets()
        .into_iter()
        .filter(|r| r.path.ends_with(&big.desc.digest))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(
        gets[1].header("range").is_some(),
        "the client asked for a range"
    );
    assert_eq!(gets[1].status, 200, "the registry sent it all");
    assert!(store.has(&img.layers[1].blob));
    verify_store(store.dir());
}

#[test]
fn tampered_blob_is_refused_and_nothing_is_stored() {
    let reg = Registry::start();
    let (_layout, layers, _) = push_busybox(&reg);
    let target = &layers[0].desc.digest;
    let file = reg.blob_file(target);
    let mut bytes = fs::read(&file).expect("registry blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&file, &bytes).expect("tamper");

    let c = client(&[reg.host()]);
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    let err = pull(&c, &format!("{}/test/busybox:1", reg.host()), &store).expect_err("tampered");
    eprintln!("{err}");
    match &err {
        RegistryError::DigestMismatch { expected, .. } => assert_eq!(expected.as_str(), target),
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(
        err.to_string().contains("does not match its digest"),
        "{err}"
    );
    let d = Digest::parse(target).expect("digest");
    assert!(!store.has(&d));
    assert!(partial_files(&store).is_empty());
    verify_store(store.dir());
}

#[test]
fn unknown_tag_and_repository_are_clear_404s() {
    let reg = Registry::start();
    push_busybox(&reg);
    let c = client(&[reg.host()]);
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    for name in ["test/busybox:nope", "test/absent:1"] {
        let err = pull(&c, &format!("{}/{name}", reg.host()), &store).expect_err(name);
        eprintln!("{err}");
        assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("image {}/{name} not found", reg.host())),
            "{err}"
        );
    }
}

#[test]
fn unreachable_registries_are_clear_errors() {
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    // Nothing listens there.
    let host = format!("127.0.0.1:{}", common::free_port());
    let err = pull(
        &client(std::slice::from_ref(&host)),
        &format!("{host}/test/busybox:1"),
        &store,
    )
    .expect_err("down");
    eprintln!("{err}");
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach {host}: ")),
        "{err}"
    );

    // A plain-HTTP registry spoken to over TLS: suggest --insecure.
    let reg = Registry::start();
    let err = pull(
        &client(&[]),
        &format!("{}/test/busybox:1", reg.host()),
        &store,
    )
    .expect_err("tls");
    eprintln!("{err}");
    assert!(err.to_string().contains("--insecure"), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach {}", reg.host())),
        "{err}"
    );
}

#[test]
fn index_resolves_to_linux_amd64() {
    let reg = Registry::start();
    let mut layout = Layout::new();
    let bb = layout.busybox_layer();
    let arm = layout.image(
        "arm64",
        std::slice::from_ref(&bb),
        serde_json::json!({"Cmd": ["arm"]}),
    );
    let amd = layout.image(
        "amd64",
        std::slice::from_ref(&bb),
        serde_json::json!({"Cmd": ["amd"]}),
    );
    let index = layout.index(&[(&arm, "arm64"), (&amd, "amd64")]);
    let arm_only = layout.index(&[(&arm, "arm64")]);
    layout.tag("multi", &index);
    layout.tag("armonly", &arm_only);
    layout.tag("armimage", &arm);
    layout.push("multi", &reg.host(), "test/busybox");
    layout.push("armonly", &reg.host(), "test/busybox");
    layout.push("armimage", &reg.host(), "test/busybox");

    let c = client(&[reg.host()]);
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    let img = pull(&c, &format!("{}/test/busybox:multi", reg.host()), &store).expect("pull index");
    assert_eq!(img.manifest_digest.as_str(), amd.digest);
    assert_eq!(
        img.index_digest.as_ref().map(Digest::as_str),
        Some(index.digest.as_str())
    );
    assert_eq!(img.config.cmd, ["amd"]);
    assert!(store.has(&img.manifest_digest));
    // Pinned by the index digest too.
    let by_digest = pull(
        &c,
        &format!("{}/test/busybox@{}", reg.host(), index.digest),
        &store,
    )
    .expect("pull index by digest");
    assert_eq!(by_digest.manifest_digest, img.manifest_digest);

    for tag in ["armonly", "armimage"] {
        let err = pull(&c, &format!("{}/test/busybox:{tag}", reg.host()), &store).expect_err(tag);
        eprintln!("{err}");
        assert!(
            matches!(err, RegistryError::NoMatchingPlatform { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("no linux/amd64 variant, only: linux/arm64"),
            "{err}"
        );
    }
}

#[test]
fn anonymous_bearer_token_is_fetched_and_reused() {
    let reg = Registry::start();
    push_busybox(&reg);
    let proxy = Proxy::start(
        reg.addr,
        Behaviour {
            bearer: Some("t0ken".into()),
            ..Default::default()
        },
    );
    let c = client(&[proxy.host()]);
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    pull(&c, &format!("{}/test/busybox:1", proxy.host()), &store).expect("pull with a token");
    let seen = proxy.seen();
    let tokens: Vec<_> = seen
        .iter()
        .filter(|r| r.path.starts_with("/token"))
        .collect();
    assert_eq!(tokens.len(), 1, "one token for the whole pull: {seen:?}");
    assert!(
        tokens[0].path.contains("service=test-registry"),
        "{}",
        tokens[0].path
    );
    assert!(
        tokens[0]
            .path
            .contains("scope=repository%3Atest%2Fbusybox%3Apull"),
        "{}",
        tokens[0].path
    );
    assert_eq!(
        seen.iter().filter(|r| r.status == 401).count(),
        1,
        "{seen:?}"
    );
    assert!(seen
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .all(|r| r.header("authorization") == Some("Bearer t0ken") && r.status == 200));
    verify_store(store.dir());
}

#[test]
fn basic_credentials_come_from_the_options() {
    let reg = Registry::start();
    push_busybox(&reg);
    let proxy = Proxy::start(
        reg.addr,
        Behaviour {
            basic: Some("dXNlcjpzM2NyZXQ=".into()), // user:s3cret
            ..Default::default()
        },
    );
    let reference = format!("{}/test/busybox:1", proxy.host());
    let dir = TempDir::new("store");
    let store = store_in(&dir);

    let err = pull(&client(&[proxy.host()]), &reference, &store).expect_err("no credentials");

    eprintln!("{err}");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("none are configured"), "{err}");

    let with = |password: &str| {
        Client::new(ClientOptions {
            insecure_hosts: vec![proxy.host()],
            credentials: [(
                proxy.host(),
                Credentials {
                    username: "user".into(),
                    password: password.into(),
                },
            )]
            .into(),
            ..Default::default()
        })
        .expect("client")
    };
    let err = pull(&with("wrong"), &reference, &store).expect_err("wrong password");
    eprintln!("{err}");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    pull(&with("s3cret"), &reference, &store).expect("pull with credentials");
    verify_store(store.dir());
}

#[test]
fn oversized_manifests_are_refused() {
    let reg = Registry::start();
    push_busybox(&reg);
    let c = Client::new(ClientOptions {
        insecure_hosts: vec![reg.host()],
        max_manifest_bytes: 100,
        ..Default::default()
    })
    .expect("client");
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    let err = pull(&c, &format!("{}/test/busybox:1", reg.host()), &store).expect_err("too large");
    eprintln!("{err}");
    assert!(
        matches!(err, RegistryError::TooLarge { limit: 100, .. }),
        "{err}"
    );
}

#[test]
fn concurrent_pulls_of_one_blob_all_succeed() {
    let reg = Registry::start();
    let (_layout, big) = push_big(&reg, 4 << 20);
    let proxy = Proxy::start(reg.addr, Behaviour::default());
    let c = client(&[proxy.host()]);
    let dir = TempDir::new("store");
    let store = store_in(&dir);
    let reference = format!("{}/test/busybox:big", proxy.host());
    let results: Vec<_> = std::thread::scope(|s| {
        let pulls: Vec<_> = (0..3)
            .map(|_| s.spawn(|| pull(&c, &reference, &store)))
            .collect();
        pulls
            .into_iter()
            .map(|p| p.join().expect("pull thread"))
            .collect()
    });
    for r in &results {
        let img = r.as_ref().expect("every concurrent pull succeeds");
        assert_eq!(img.layers[1].blob.as_str(), big.desc.digest);
    }
    // Each pull downloads into its own file (none waits on another's lock), so a blob may be
    // fetched more than once, never more than once per pull.
    let big_gets = proxy
        .blob_gets()
        .iter()
        .filter(|g| g.path.ends_with(&big.desc.digest))
        .count();
    assert!((1..=3).contains(&big_gets), "{:?}", proxy.blob_gets());
    assert!(partial_files(&store).is_empty());
    verify_store(store.dir());
}

#[test]
fn registry_with_token_auth_accepts_the_fetched_token() {
    let keys = TempDir::new("keys");
    let (token, cert) =
        common::signed_token(keys.path(), "test-issuer", "test-registry", "test/busybox");
    // The token server: answers /token with the signed token and records what was asked.
    let token_server = Proxy::start(
        "127.0.0.1:9".parse().expect("address"),
        Behaviour {
            serve_token: Some(token),
            ..Default::default()
        },
    );
    let reg = Registry::start_with(&format!(
        "auth:\n  token:\n    realm: http://{}/token\n    service: test-registry\n    \
         issuer: test-issuer\n    rootcertbundle: {}\n",
        token_server.host(),
        cert.display()
    ));
    push_busybox(&reg);
    token_server.clear();

    let dir = TempDir::new("store");
    let store = store_in(&dir);
    let reference = format!("{}/test/busybox:1", reg.host());
    // The realm is plain HTTP: refused unless its host is listed as insecure.
    let err = pull(&client(&[reg.host()]), &reference, &store).expect_err("plain-HTTP realm");
    eprintln!("{err}");
    assert!(matches!(err, RegistryError::InsecureRealm { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("list {} as insecure", token_server.host())),
        "{err}"
    );

    let img = pull(
        &client(&[reg.host(), token_server.host()]),
        &reference,
        &store,
    )
    .expect("pull with a token from the registry's token server");
    assert_eq!(img.layers.len(), 2);
    let asked = token_server.seen();
    assert_eq!(asked.len(), 1, "one token for the pull: {asked:?}");
    assert!(
        asked[0].path.contains("service=test-registry"),
        "{}",
        asked[0].path
    );
    assert!(
        asked[0]
            .path
            .contains("scope=repository%3Atest%2Fbusybox%3Apull"),
        "{}",
        asked[0].path
    );
    assert_eq!(asked[0].header("authorization"), None, "anonymous");
    verify_store(store.dir());
}
