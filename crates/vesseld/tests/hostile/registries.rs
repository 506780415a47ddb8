//! Lying registries (endless, oversized, redirecting and trickling blobs) and the layer-count
//! limit, against a real daemon.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, Daemon};
use crate::corpus::{self, Entry, Image, Layer, Tar};
use crate::watch::{disk_usage, Watch};
use crate::{lying, Registry, MAX_HWM};

/// A repository of the lying registry serving an image whose only layer is `blob` as
/// described by `desc` (its digest and declared size may lie).
fn lying_repo(layer_digest: &str, declared: u64, blob: lying::Blob) -> lying::Repo {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [corpus::sha(b"not reached")]}
    }))
    .expect("config");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": corpus::sha(&config), "size": config.len()},
        "layers": [{"mediaType": corpus::TAR_GZ, "digest": layer_digest, "size": declared}],
    }))
    .expect("manifest");
    let mut blobs = HashMap::new();
    blobs.insert(corpus::sha(&config), lying::Blob::Honest(config));
    blobs.insert(layer_digest.to_string(), blob);
    lying::Repo { manifest, blobs }
}

/// Starts `vessel image pull` in the background; its output comes through the handle.
fn pull_in_background(d: &Daemon, reference: String) -> std::thread::JoinHandle<Output> {
    let bins = common::bin_dir();
    let socket = d.socket.clone();
    std::thread::spawn(move || {
        Command::new(bins.join("vessel"))
            .arg("--socket")
            .arg(&socket)
            .args(["image", "pull", &reference, "--insecure"])
            .stdin(Stdio::null())
            .output()
            .expect("run vessel")
    })
}

/// Partial downloads in the daemon's blob store.
fn partials(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.root().join("images/blobs/partial"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn lying_registries_are_bounded_in_bytes_and_time_and_cleaned_up() {
    let d = Daemon::start();
    let root = d.root();
    let watch = Watch::start(d.pid(), root.clone());
    let noise: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let trickled = Layer::gz(&Tar::new().add(Entry::file("noise", &noise)).finish());
    let stalled = Layer::gz(
        &Tar::new()
            .add(Entry::file("other", &noise[..200_000]))
            .finish(),
    );
    let declared = 64u64 << 20;
    let mut repos = HashMap::new();
    let endless = corpus::sha(b"endless");
    repos.insert(
        "lie/endless".to_string(),
        lying_repo(&endless, declared, lying::Blob::Endless),
    );
    let huge = corpus::sha(b"huge");
    repos.insert(
        "lie/huge".to_string(),
        lying_repo(&huge, 1 << 50, lying::Blob::Endless),
    );
    let small = corpus::gzip(b"small");
    repos.insert(
        "lie/longer".to_string(),
        lying_repo(
            &corpus::sha(&small),
            small.len() as u64,
            lying::Blob::Longer(small.clone(), 1 << 20),
        ),
    );
    repos.insert(
        "lie/redirect".to_string(),
        lying_repo(
            &corpus::sha(b"r"),
            1,
            lying::Blob::Redirect("file:///etc/passwd".into()),
        ),
    );
    let slow = |l: &Layer| lying::Blob::Trickle(l.blob.clone(), Duration::from_secs(20));
    repos.insert(
        "lie/trickle".to_string(),
        lying_repo(
            &corpus::sha(&trickled.blob),
            trickled.blob.len() as u64,
            slow(&trickled),
        ),
    );
    repos.insert(
        "lie/stall".to_string(),
        lying_repo(
            &corpus::sha(&stalled.blob),
            stalled.blob.len() as u64,
            slow(&stalled),
        ),
    );
    let liar = lying::Lying::start(repos);
    let pull = |repo: &str| {
        d.vessel(&[
            "image",
            "pull",
            &format!("{}/{repo}:1", liar.host()),
            "--insecure",
        ])
    };
    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // A blob without end stops at its declared size; the partial file goes.
    let before = disk_usage(&root);
    watch.take_peak_disk(before);
    let t = Instant::now();
    let out = pull("lie/endless");
    assert!(!out.status.success());
    let e = err(&out);
    assert!(
        e.contains(&format!("where the manifest says {declared}")),
        "{e}"
    );
    let peak = watch.take_peak_disk(0);
    assert!(
        peak - before <= declared + (8 << 20),
        "endless blob grew the store by {} MiB",
        (peak - before) >> 20
    );
    assert!(partials(&d).is_empty(), "{:?}", partials(&d));
    eprintln!(
        "endless: refused in {:?}, store peak +{} MiB, {} MiB sent",
        t.elapsed(),
        (peak - before) >> 20,
        liar.sent.load(std::sync::atomic::Ordering::Relaxed) >> 20
    );

    // A size no store can hold is refused before a byte is asked for.
    let sent = liar.sent.load(std::sync::atomic::Ordering::Relaxed);
    let out = pull("lie/huge");
    let e = err(&out);
    assert!(
        !out.status.success() && e.contains("larger than the 68719476736 bytes allowed"),
        "{e}"
    );
    std::thread::sleep(Duration::from_millis(300));
    // (The image's small config comes again: the daemon verifies a stored blob too.)
    let fetched = liar.sent.load(std::sync::atomic::Ordering::Relaxed) - sent;
    assert!(
        fetched < 4096,
        "{fetched} bytes fetched: bytes of the huge blob among them"
    );

    // A length beyond the declared size is refused from the header.
    let out = pull("lie/longer");
    let e = err(&out);
    assert!(
        !out.status.success() && e.contains(&format!("where the manifest says {}", small.len())),
        "{e}"
    );
    assert!(partials(&d).is_empty());

    // A redirect to file:// is refused with a reason, not a panic.
    let out = pull("lie/redirect");
    let e = err(&out);
    assert!(!out.status.success(), "{e}");
    assert!(
        e.contains("file:///etc/passwd")
            && e.contains("only http:// and https:// URLs are followed"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");

    // A trickled blob holds up no other pull of the same blob, and a cancel removes it.
    let reg = Registry::start(&d.dir.join("registry"));
    Image::of(vec![trickled.clone()]).push(reg.addr, "real/twin");
    let trickling = pull_in_background(&d, format!("{}/lie/trickle:1", liar.host()));
    let deadline = Instant::now() + Duration::from_secs(30);
    // The trickled layer's own partial file (the config, served honestly, comes first).
    let hex = corpus::sha(&trickled.blob)[7..].to_string();
    while !partials(&d).iter().any(|n| n.starts_with(&hex)) {
        assert!(
            Instant::now() < deadline,
            "the trickled download never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Instant::now();
    d.ok(&[
        "image",
        "pull",
        &format!("{}/real/twin:1", reg.addr),
        "--insecure",
        "--alias",
        "twin",
    ]);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the twin waited {:?}",
        t.elapsed()
    );
    let ops: serde_json::Value =
        serde_json::from_str(&d.ok(&["operation", "list", "--format", "json"])).expect("ops");
    let running: Vec<String> = ops
        .as_array()
        .expect("ops")
        .iter()
        .filter(|o| o["status"] == "running")
        .filter_map(|o| o["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(running.len(), 1, "{ops}");
    d.ok(&["operation", "cancel", &running[0]]);
    let out = trickling.join().expect("trickling pull");
    assert!(
        !out.status.success() && err(&out).contains("cancel"),
        "{}",
        err(&out)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !partials(&d).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        partials(&d).is_empty(),
        "a cancelled pull kept {:?}",
        partials(&d)
    );

    // Left alone, a trickle is stalled: at most 32 KiB every 30 s is too slow.
    let t = Instant::now();
    let out = pull("lie/stall");
    let e = err(&out);
    assert!(
        !out.status.success() && e.contains("the download is stalled"),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(100),
        "stalled after {:?}",
        t.elapsed()
    );
    assert!(partials(&d).is_empty());
    eprintln!("trickle: stalled after {:?}", t.elapsed());
    let (rss, hwm) = watch.memory();
    eprintln!(
        "lying registry: daemon peak VmRSS {} MiB, VmHWM {} MiB",
        rss >> 20,
        hwm >> 20
    );
    assert!(hwm < MAX_HWM);
}

/// The overlay options a launch of `layers` layers would use in `root`, with the longest
/// instance name and the longer of a layer's two paths (canonical for privileged instances,
/// idmapped under the instance's `mnt/` for the others): the daemon's own bound, recomputed.
fn options_len(root: &Path, layers: usize) -> usize {
    let inst = root.join("instances").join("x".repeat(63));
    let canonical = format!("{}/images/layers/{}", root.display(), "0".repeat(64));
    let staged = inst.join("mnt").join("layer-499").display().to_string();
    let layer = if canonical.len() >= staged.len() {
        canonical
    } else {
        staged
    };
    let lowers = vec![layer; layers].join(":");
    format!(
        "lowerdir={lowers},upperdir={},workdir={}",
        inst.join("disk/upper").display(),
        inst.join("disk/work").display()
    )
    .len()
}

/// Mounts an overlay with these options on `target`; unmounts it again when it worked.
fn try_overlay(opts: &str, target: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let o = std::ffi::CString::new(opts).expect("options");
    let t = std::ffi::CString::new(target.as_os_str().as_bytes()).expect("target");
    // SAFETY: valid NUL-terminated strings; an overlay mount on a test directory.
    let r = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            t.as_ptr(),
            c"overlay".as_ptr(),
            0,
            o.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: valid path; our own mount.
    unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    Ok(())
}

#[test]
fn the_layer_limit_is_what_a_launch_can_mount() {
    let d = Daemon::start();
    // The kernel's rule first: mount(2) keeps 4,095 bytes of options and cuts the rest.
    let page = d.dir.join("page");
    let (upper, work, target) = (page.join("u"), page.join("w"), page.join("t"));
    for p in [&upper, &work, &target] {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    let fixed = format!(",upperdir={},workdir={}", upper.display(), work.display()).len()
        + "lowerdir=".len();
    let mut lowers = Vec::new();
    let mut len = fixed;
    while len + 200 < 4095 {
        let dir = page.join(format!("{:0>150}", lowers.len()));
        len += dir.as_os_str().len() + usize::from(!lowers.is_empty());
        lowers.push(dir);
    }
    let last = page.join("x".repeat(4095 - len - 1 - page.as_os_str().len() - 1));
    lowers.push(last.clone());
    for l in &lowers {
        std::fs::create_dir_all(l).expect("lower");
    }
    let opts = |lowers: &[PathBuf]| {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
            upper.display(),
            work.display()
        )
    };
    assert_eq!(opts(&lowers).len(), 4095);
    try_overlay(&opts(&lowers), &target).expect("4,095 bytes of options mount");
    let longer = page.join(format!(
        "{}y",
        last.file_name().expect("name").to_string_lossy()
    ));
    std::fs::create_dir_all(&longer).expect("lower");
    let mut one_more = lowers.clone();
    *one_more.last_mut().expect("last") = longer;
    assert_eq!(opts(&one_more).len(), 4096);
    let e = try_overlay(&opts(&one_more), &target).expect_err("4,096 bytes do not");
    eprintln!("4,096 bytes of overlay options: {e}");

    // The daemon's limit for its own paths: the most layers whose options fit.
    let root = d.root();
    let n = (1..=500)
        .take_while(|&k| options_len(&root, k) <= 4095)
        .last()
        .expect("one layer fits");
    assert!(n < 500, "the page binds before overlayfs' 500 layers");
    eprintln!("layer limit for {}: {n}", root.display());
    let image = |count: usize| {
        let mut layers = vec![corpus::busybox_layer()];
        for i in 1..count {
            layers.push(Layer::plain(
                Tar::new()
                    .add(Entry::file(&format!("l{i}"), i.to_string().as_bytes()))
                    .finish(),
            ));
        }
        Image::of(layers)
    };
    let at = d.dir.join("at-limit.tar");
    image(n).oci_archive(&at);
    d.ok(&[
        "image",
        "import",
        at.to_str().expect("path"),
        "--alias",
        "deep",
    ]);
    // It runs, unprivileged (the longest layer paths): the limit is not too low.
    d.ok(&["launch", "deep", "deep1"]);
    assert_eq!(
        d.sh("deep1", &format!("cat /l{}", n - 1)).1,
        (n - 1).to_string()
    );
    // And on a root disk of its own (its upper and work directories lie one level deeper).
    d.ok(&["launch", "deep", "deep2", "-l", "disk=32MiB"]);
    assert_eq!(
        d.sh("deep2", &format!("cat /l{}", n - 1)).1,
        (n - 1).to_string()
    );
    let over = d.dir.join("over-limit.tar");
    image(n + 1).oci_archive(&over);
    let e = d.fails(&[
        "image",
        "import",
        over.to_str().expect("path"),
        "--alias",
        "deeper",
    ]);
    assert!(
        e.contains(&format!("has {} layers, more than the {n}", n + 1)),
        "{e}"
    );
    // Pulled, the same image is refused before any layer is downloaded.
    let reg = Registry::start(&d.dir.join("registry"));
    image(n + 1).push(reg.addr, "deep/over");
    let e = d.fails(&[
        "image",
        "pull",
        &format!("{}/deep/over:1", reg.addr),
        "--insecure",
    ]);
    assert!(
        e.contains(&format!("has {} layers, more than the {n}", n + 1)),
        "{e}"
    );
}
