//! Hostile layers: each is refused (or, where tar convention keeps it inside, stays inside),
//! nothing is written outside the destination, and no staging directory is left behind.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{gzip, snapshot, TarBuilder, TempDir};
use tar::EntryType;
use vessel_image::media::{OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD};
use vessel_image::{unpack_layer, UnpackError, UnpackOptions, UnpackStats};

/// A sandbox: sentinel trees around where the destination will go, so any write outside it
/// shows up as a difference.
struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = TempDir::new("hostile");
        for d in ["etc", "a/b/c", "outside", "sentinel/deep/er"] {
            fs::create_dir_all(dir.join(d)).expect("mkdir");
        }
        fs::write(dir.join("etc/passwd"), "root:x:0:0\n").expect("write");
        fs::write(dir.join("outside/file"), "keep").expect("write");
        fs::write(dir.join("sentinel/deep/er/x"), "x").expect("write");
        std::os::unix::fs::symlink("../etc", dir.join("a/b/c/up")).expect("symlink");
        // The destination's parent is nested so `..` chains have somewhere to land.
        fs::create_dir_all(dir.join("a/b/c/layers")).expect("mkdir");
        Self { dir }
    }

    fn dest(&self) -> std::path::PathBuf {
        self.dir.join("a/b/c/layers/dest")
    }

    /// Unpacks, checking that outside the destination nothing changed (also on the host's
    /// /etc) and that no staging directory remains.
    fn unpack(
        &self,
        bytes: &[u8],
        media: &str,
        opts: &UnpackOptions,
    ) -> Result<UnpackStats, UnpackError> {
        let before = snapshot(self.dir.path());
        let host_etc_x = Path::new("/etc/x").exists();
        let r = unpack_layer(bytes, media, &self.dest(), opts);
        let mut after = snapshot(self.dir.path());
        after.retain(|k, _| !k.starts_with("a/b/c/layers/dest"));
        let mut before = before;
        before.retain(|k, _| !k.starts_with("a/b/c/layers/dest"));
        // Creating and removing the staging directory changes the parent's mtime, no more.
        for snap in [&mut before, &mut after] {
            if let Some(n) = snap.get_mut("a/b/c/layers") {
                n.mtime = 0;
            }
        }
        common::assert_same_tree(&before, &after, "outside the destination");
        assert_eq!(
            Path::new("/etc/x").exists(),
            host_etc_x,
            "/etc/x on the host changed"
        );
        let leftovers: Vec<_> = fs::read_dir(self.dir.join("a/b/c/layers"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "dest")
            .collect();
        assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
        if r.is_err() {
            assert!(
                !self.dest().exists(),
                "destination created for a refused layer"
            );
        }
        r
    }

    fn reset(&self) {
        let _ = fs::remove_dir_all(self.dest());
    }
}

fn refused(bytes: &[u8], media: &str, what: &str, check: impl Fn(&UnpackError) -> bool) {
    let sb = Sandbox::new();
    match sb.unpack(bytes, media, &UnpackOptions::default()) {
        Ok(stats) => panic!("{what}: accepted ({stats:?})"),
        Err(e) => {
            let msg = format!("{e}");
            assert!(check(&e), "{what}: wrong refusal: {msg} ({e:?})");
        }
    }
}

#[test]
fn dotdot_escape_is_refused() {
    let t = TarBuilder::new()
        .file("ok", b"1")
        .file("../../etc/x", b"evil")
        .finish();
    refused(
        &t,
        OCI_LAYER_TAR,
        "../../etc/x",
        |e| matches!(e, UnpackError::Escapes { entry } if entry == "../../etc/x"),
    );
    let t = TarBuilder::new().file("a/../../x", b"evil").finish();
    refused(&t, OCI_LAYER_TAR, "a/../../x", |e| {
        matches!(e, UnpackError::Escapes { .. })
    });
}

#[test]
fn absolute_names_stay_inside() {
    let sb = Sandbox::new();
    let t = TarBuilder::new()
        .file("/etc/x", b"inside")
        .file("/abs/../y", b"y")
        .finish();
    sb.unpack(&t, OCI_LAYER_TAR, &UnpackOptions::default())
        .expect("absolute names are relative to the root");
    assert_eq!(fs::read(sb.dest().join("etc/x")).expect("etc/x"), b"inside");
    assert_eq!(fs::read(sb.dest().join("y")).expect("y"), b"y");
    sb.reset();
}

#[test]
fn writes_through_symlinks_are_refused() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a -> /etc then a/passwd",
            TarBuilder::new()
                .link(EntryType::Symlink, "a", "/etc")
                .file("a/passwd", b"evil")
                .finish(),
        ),
        (
            "a -> ../../.. then a/x",
            TarBuilder::new()
                .link(EntryType::Symlink, "a", "../../..")
                .file("a/x", b"evil")
                .finish(),
        ),
        (
            "chain a -> b -> c -> ../../..",
            TarBuilder::new()
                .link(EntryType::Symlink, "c", "../../..")
                .link(EntryType::Symlink, "b", "c")
                .link(EntryType::Symlink, "a", "b")
                .file("a/x", b"evil")
                .finish(),
        ),
        (
            "symlink deep below a directory",
            TarBuilder::new()
                .dir("d/", 0o755)
                .dir("d/e/", 0o755)
                .link(EntryType::Symlink, "d/e/f", "/")
                .file("d/e/f/g/h", b"evil")
                .finish(),
        ),
        (
            "inside symlink used as a directory",
            TarBuilder::new()
                .dir("real/", 0o755)
                .link(EntryType::Symlink, "l", "real")
                .file("l/x", b"x")
                .finish(),
        ),
        (
            "symlink then directory below it",
            TarBuilder::new()
                .link(EntryType::Symlink, "a", "../..")
                .dir("a/sub/", 0o755)
                .finish(),
        ),
        (
            "whiteout through a symlink",
            TarBuilder::new()
                .link(EntryType::Symlink, "a", "/etc")
                .file("a/.wh.passwd", b"")
                .finish(),
        ),
        (
            "opaque marker through a symlink",
            TarBuilder::new()
                .link(EntryType::Symlink, "a", "/etc")
                .file("a/.wh..wh..opq", b"")
                .finish(),
        ),
    ];
    for (what, t) in cases {
        refused(&t, OCI_LAYER_TAR, what, |e| {
            matches!(e, UnpackError::ThroughSymlink { .. })
        });
    }
}

#[test]
fn hard_links_outside_or_missing_are_refused() {
    let t = TarBuilder::new()
        .link(EntryType::Link, "pw", "/etc/passwd")
        .finish();
    refused(&t, OCI_LAYER_TAR, "hard link to /etc/passwd", |e| {
        matches!(e, UnpackError::HardLinkMissing { .. })
    });
    let t = TarBuilder::new()
        .link(EntryType::Link, "o", "../outside/file")
        .finish();
    refused(&t, OCI_LAYER_TAR, "hard link to ../outside", |e| {
        matches!(e, UnpackError::HardLinkOutside { .. })
    });
    let t = TarBuilder::new()
        .link(EntryType::Symlink, "s", "/etc")
        .link(EntryType::Link, "o", "s/passwd")
        .finish();
    refused(&t, OCI_LAYER_TAR, "hard link through a symlink", |e| {
        matches!(e, UnpackError::HardLinkOutside { .. })
    });
    // A good hard link works.
    let sb = Sandbox::new();
    let t = TarBuilder::new()
        .file("f", b"data")
        .link(EntryType::Link, "g", "/f")
        .finish();
    let stats = sb
        .unpack(&t, OCI_LAYER_TAR, &UnpackOptions::default())
        .expect("inside hard link");
    assert_eq!(stats.hardlinks, 1);
    assert_eq!(fs::read(sb.dest().join("g")).expect("g"), b"data");
}

#[test]
fn devices_are_skipped_unless_allowed() {
    let t = TarBuilder::new()
        .device("dev/sda", 8, 0)
        .file("f", b"1")
        .finish();
    let sb = Sandbox::new();
    let stats = sb
        .unpack(&t, OCI_LAYER_TAR, &UnpackOptions::default())
        .expect("devices are skipped");
    assert_eq!(stats.skipped_devices, 1);
    assert!(fs::symlink_metadata(sb.dest().join("dev/sda")).is_err());
    sb.reset();
    let opts = UnpackOptions {
        allow_devices: true,
        ..Default::default()
    };
    let stats = sb
        .unpack(&t, OCI_LAYER_TAR, &opts)
        .expect("devices allowed");
    assert_eq!(stats.special, 1);
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = fs::symlink_metadata(sb.dest().join("dev/sda")).expect("device");
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), libc::makedev(8, 0));
}

#[test]
fn absurd_sizes_are_refused() {
    let t = TarBuilder::new().huge_header("big", 10 << 40).finish();
    refused(
        &t,
        OCI_LAYER_TAR,
        "10 TB header",
        |e| matches!(e, UnpackError::EntryTooLarge { size, .. } if *size == 10 << 40),
    );
    let sb = Sandbox::new();
    let t = TarBuilder::new()
        .file("a", &[1; 600])
        .file("b", &[2; 600])
        .finish();
    let opts = UnpackOptions {
        max_total_size: 1000,
        ..Default::default()
    };
    assert!(matches!(
        sb.unpack(&t, OCI_LAYER_TAR, &opts),
        Err(UnpackError::TotalTooLarge { .. })
    ));
    let opts = UnpackOptions {
        max_entries: 1,
        ..Default::default()
    };
    assert!(matches!(
        sb.unpack(&t, OCI_LAYER_TAR, &opts),
        Err(UnpackError::TooManyEntries { .. })
    ));
}

#[test]
fn truncated_and_corrupt_streams_are_refused() {
    let t = TarBuilder::new()
        .file("a", &[7; 3000])
        .file("b", b"tail")
        .finish();
    for cut in [100, 512, 1024, 2000, 3584, t.len() - 1024] {
        refused(&t[..cut], OCI_LAYER_TAR, &format!("cut at {cut}"), |e| {
            matches!(e, UnpackError::Stream(_) | UnpackError::Read { .. })
        });
    }
    let gz = gzip(&t);
    refused(&gz[..gz.len() / 2], OCI_LAYER_GZIP, "truncated gzip", |e| {
        matches!(e, UnpackError::Stream(_) | UnpackError::Read { .. })
    });
    let mut bad = gz.clone();
    let n = bad.len();
    bad[n - 6] ^= 0xff; // the CRC
    refused(&bad, OCI_LAYER_GZIP, "gzip with a bad CRC", |e| {
        matches!(e, UnpackError::Stream(_))
    });
    let mut bad = gz.clone();
    for b in &mut bad[20..60] {
        *b ^= 0x55;
    }
    refused(&bad, OCI_LAYER_GZIP, "corrupt gzip", |e| {
        matches!(e, UnpackError::Stream(_) | UnpackError::Read { .. })
    });
    let zst = zstd::encode_all(&t[..], 3).expect("zstd");
    refused(
        &zst[..zst.len() / 2],
        OCI_LAYER_ZSTD,
        "truncated zstd",
        |e| matches!(e, UnpackError::Stream(_) | UnpackError::Read { .. }),
    );
    refused(b"not zstd at all", OCI_LAYER_ZSTD, "not zstd", |e| {
        matches!(e, UnpackError::Stream(_))
    });
    refused(b"not gzip at all", OCI_LAYER_GZIP, "not gzip", |e| {
        matches!(e, UnpackError::Stream(_))
    });
}

#[test]
fn names_with_nul_are_refused() {
    let t = TarBuilder::new()
        .pax_file("x", &[("path", b"ok\0../../etc/x")], b"evil")
        .finish();
    refused(&t, OCI_LAYER_TAR, "NUL in a PAX path", |e| {
        matches!(e, UnpackError::NulInName { .. })
    });
    let t = TarBuilder::new()
        .pax_file("x", &[("linkpath", b"a\0b")], b"")
        .finish();
    refused(&t, OCI_LAYER_TAR, "NUL in a PAX link path", |e| {
        matches!(e, UnpackError::NulInName { .. })
    });
}

#[test]
fn non_utf8_names_are_fine() {
    let sb = Sandbox::new();
    let t = TarBuilder::new()
        .pax_file("x", &[("path", b"caf\xe9")], b"bytes")
        .finish();
    sb.unpack(&t, OCI_LAYER_TAR, &UnpackOptions::default())
        .expect("non-UTF-8 name");
    use std::os::unix::ffi::OsStrExt;
    let p = sb.dest().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    assert_eq!(fs::read(p).expect("file"), b"bytes");
}

#[test]
fn destination_must_not_exist() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.dest()).expect("mkdir");
    let t = TarBuilder::new().file("f", b"1").finish();
    assert!(matches!(
        unpack_layer(&t[..], OCI_LAYER_TAR, &sb.dest(), &UnpackOptions::default()),
        Err(UnpackError::DestExists(_))
    ));
}

/// A tiny deterministic generator (xorshift), so failures can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_tars_never_escape_or_panic() {
    let seeds: Vec<Vec<u8>> = vec![
        TarBuilder::new()
            .dir("d/", 0o755)
            .file("d/f", b"hello")
            .link(EntryType::Symlink, "d/s", "../../../outside")
            .link(EntryType::Link, "d/h", "d/f")
            .file("d/.wh.gone", b"")
            .file("d/.wh..wh..opq", b"")
            .device("d/null", 1, 3)
            .finish(),
        TarBuilder::new()
            .link(EntryType::Symlink, "s", "/")
            .file("t/x", b"abc")
            .pax_file("p", &[("path", b"../p")], b"1")
            .finish(),
    ];
    let sb = Sandbox::new();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let start = Instant::now();
    let mut runs = 0;
    let mut accepted = 0;
    // At least 100, and up to 400 while the time budget lasts.
    while runs < 100 || (runs < 400 && start.elapsed() < Duration::from_secs(8)) {
        let mut t = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            if t.is_empty() {
                break;
            }
            let i = rng.below(t.len());
            let blocks = t.len() / 512;
            match rng.below(6) {
                // Names, link names and type flags of the first headers are where it hurts.
                0 => t[rng.below(100.min(i + 1))] = b"./../\0/ax"[rng.below(9)],
                1 => {
                    let k = 512 * rng.below(blocks) + 156;
                    if k < t.len() {
                        t[k] = b"0125346xLKgS"[rng.below(12)]
                    }
                }
                2 => {
                    let k = 512 * rng.below(blocks) + 157 + rng.below(20);
                    if k < t.len() {
                        t[k] = b"./../ax"[rng.below(7)]
                    }
                }
                3 => t.truncate(i),
                4 => t[i] ^= 1 << rng.below(8),
                _ => t[i] = rng.next() as u8,
            }
        }
        // Fix checksums half the time so mutations get past header verification.
        if rng.below(2) == 0 {
            for h in (0..t.len() / 512).map(|k| k * 512) {
                let blk = &mut t[h..h + 512];
                if blk.iter().all(|&b| b == 0) {
                    break;
                }
                blk[148..156].copy_from_slice(b"        ");
                let sum: u32 = blk.iter().map(|&b| u32::from(b)).sum();
                blk[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            }
        }
        if sb
            .unpack(&t, OCI_LAYER_TAR, &UnpackOptions::default())
            .is_ok()
        {
            accepted += 1;
        }
        sb.reset();
        runs += 1;
    }
    eprintln!("{runs} mutated tars, {accepted} accepted, none escaped");
}

/// A tar header block for a regular file of `size` bytes named `name` (data not included).
fn file_header(name: &str, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_path(name).expect("name");
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// Options that bound `blob`'s expansion by its ratio alone (a floor of 1 MiB).
fn ratio_bounded(blob: &[u8]) -> UnpackOptions {
    UnpackOptions {
        compressed_size: Some(blob.len() as u64),
        space: vessel_image::SpaceLimits {
            ratio_floor: 1 << 20,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A gzip layer holding one file of `size` zero bytes, written in a stream (a bomb).
fn gzip_zeros(size: u64) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&file_header("zeros", size)).expect("gzip");
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        e.write_all(&chunk[..n]).expect("gzip");
        left -= n as u64;
    }
    e.write_all(&vec![0u8; (512 - size % 512) as usize % 512 + 1024])
        .expect("gzip");
    e.finish().expect("gzip")
}

#[test]
fn pax_records_are_capped_per_entry_not_only_per_record() {
    // Three PAX headers of 400 KiB each before one entry: each fits the old per-record cap,
    // together they pass the per-entry one.
    let big = vec![b'v'; 400 << 10];
    let mut b = tar::Builder::new(Vec::new());
    for _ in 0..3 {
        b.append_pax_extensions([("comment", &big[..])])
            .expect("pax");
    }
    let mut t = b.into_inner().expect("tar");
    t.extend_from_slice(&file_header("f", 0));
    t.extend_from_slice(&[0u8; 1024]);
    refused(
        &t,
        OCI_LAYER_TAR,
        "1.2 MiB of PAX records for one entry",
        |e| matches!(e, UnpackError::Stream(s) if s.to_string().contains("extension records")),
    );
    // The same records spread over three entries are fine: memory is per entry.
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..3 {
        b.append_pax_extensions([("comment", &big[..])])
            .expect("pax");
        let mut h = tar::Header::new_gnu();
        h.set_path(format!("f{i}")).expect("name");
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &[][..]).expect("append");
    }
    let t = b.into_inner().expect("tar");
    let sb = Sandbox::new();
    sb.unpack(&t, OCI_LAYER_TAR, &UnpackOptions::default())
        .expect("one PAX record per entry");
}

#[test]
fn decompression_bombs_are_refused_by_ratio() {
    let bomb = gzip_zeros(64 << 20);
    assert!(bomb.len() < 200 << 10, "{}", bomb.len());
    let opts = ratio_bounded(&bomb);
    let sb = Sandbox::new();
    let e = sb
        .unpack(&bomb, OCI_LAYER_GZIP, &opts)
        .expect_err("a 64 MiB layer from a few KiB");
    assert!(
        matches!(&e, UnpackError::RatioExceeded { entry, ratio: 100, .. } if entry == "zeros"),
        "{e}"
    );
    assert!(e.to_string().contains("decompression bomb"), "{e}");
    // Without a known compressed size, or with a generous ratio, the same layer unpacks.
    let sb = Sandbox::new();
    let ok = UnpackOptions {
        compressed_size: Some(bomb.len() as u64),
        space: vessel_image::SpaceLimits {
            ratio_floor: 128 << 20,
            ..Default::default()
        },
        ..Default::default()
    };
    let stats = sb.unpack(&bomb, OCI_LAYER_GZIP, &ok).expect("within ratio");
    assert_eq!(stats.bytes, 64 << 20);
    assert!(stats.stream_bytes > 64 << 20);
}

/// A tmpfs of `size` bytes mounted at `dir`, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: u64) -> Self {
        common::require_root();
        fs::create_dir_all(dir).expect("mkdir");
        let opts = std::ffi::CString::new(format!("size={size},nr_inodes=4096")).expect("opts");
        let t = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: valid NUL-terminated strings; a tmpfs mount on a test directory.
        let r = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                t.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        common::unmount_below(&self.0);
    }
}

#[test]
fn a_full_store_is_refused_before_it_fills() {
    let t = common::TempDir::new("space");
    let _fs = Tmpfs::mount(&t.join("store"), 32 << 20);
    let layer = {
        let mut v = file_header("small", 1 << 20);
        v.extend(vec![1u8; 1 << 20]);
        v.extend(file_header("big", 24 << 20));
        v.extend(vec![2u8; 24 << 20]);
        v.extend([0u8; 1024]);
        v
    };
    let opts = UnpackOptions {
        space: vessel_image::SpaceLimits {
            min_free_bytes: 16 << 20,
            min_free_inodes: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let dest = t.join("store/layer");
    let e = unpack_layer(&layer[..], OCI_LAYER_TAR, &dest, &opts).expect_err("no room");
    assert!(
        matches!(&e, UnpackError::NoSpace { entry, needed, .. } if entry == "big" && *needed == 24 << 20),
        "{e}"
    );
    assert!(e.to_string().contains("keeps 16777216 bytes"), "{e}");
    assert_eq!(fs::read_dir(t.join("store")).expect("list").count(), 0);
    let free = vessel_image::space::free_space(&t.join("store")).expect("statvfs");
    assert!(
        free.bytes > 30 << 20,
        "the refused layer left data: {free:?}"
    );
    // Inodes count too: 4096 of them, 1500 kept free, 3500 files asked for.
    let mut many = tar::Builder::new(Vec::new());
    for i in 0..3500 {
        let mut h = tar::Header::new_gnu();
        h.set_path(format!("f{i}")).expect("name");
        h.set_size(0);
        h.set_cksum();
        many.append(&h, &[][..]).expect("append");
    }
    let many = many.into_inner().expect("tar");
    let opts = UnpackOptions {
        space: vessel_image::SpaceLimits {
            min_free_bytes: 0,
            min_free_inodes: 1500,
            ..Default::default()
        },
        ..Default::default()
    };
    let e = unpack_layer(&many[..], OCI_LAYER_TAR, &dest, &opts).expect_err("no inodes");
    assert!(matches!(e, UnpackError::NoSpace { .. }), "{e}");
    assert_eq!(fs::read_dir(t.join("store")).expect("list").count(), 0);
}

#[test]
fn the_root_entry_never_changes_the_layer_directory() {
    let sb = Sandbox::new();
    let t = TarBuilder::new()
        .dir("./", 0o777)
        .file_owned("./f", b"x", 0o644, 1000, 1000)
        .finish();
    let mut t2 = t.clone();
    // Owner 1000:1000 on the root entry too (TarBuilder writes 0:0).
    {
        let mut h = tar::Header::from_byte_slice(&t2[..512]).clone();
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_cksum();
        t2[..512].copy_from_slice(h.as_bytes());
    }
    let stats = sb
        .unpack(&t2, OCI_LAYER_TAR, &UnpackOptions::default())
        .expect("unpack");
    use std::os::unix::fs::MetadataExt;
    let md = fs::metadata(sb.dest()).expect("dest");
    assert_eq!(
        md.mode() & 0o7777,
        0o755,
        "the archive's mode reached the store"
    );
    assert_eq!(
        (md.uid(), md.gid()),
        (0, 0),
        "the archive's owner reached the store"
    );
    let root = stats.root.expect("root entry recorded");
    assert_eq!((root.mode, root.uid, root.gid), (0o777, 1000, 1000));
    // Entries below keep their own owners.
    let f = fs::metadata(sb.dest().join("f")).expect("f");
    assert_eq!((f.uid(), f.gid()), (1000, 1000));
}

#[test]
fn names_and_paths_longer_than_linux_allows_are_refused() {
    let comp = |n: usize| "c".repeat(n);
    // 255 bytes per component is the most; 256 is refused.
    let t = TarBuilder::new()
        .pax_file("x", &[("path", comp(255).as_bytes())], b"ok")
        .finish();
    Sandbox::new()
        .unpack(&t, OCI_LAYER_TAR, &UnpackOptions::default())
        .expect("a 255-byte name");
    let t = TarBuilder::new()
        .pax_file("x", &[("path", comp(256).as_bytes())], b"no")
        .finish();
    refused(&t, OCI_LAYER_TAR, "256-byte name", |e| {
        matches!(e, UnpackError::NameTooLong { len: 256, .. })
    });
    // 4095 bytes from the root ("/" + path) is the most.
    let deep = |last: usize| format!("{}{}", format!("{}/", comp(255)).repeat(15), comp(last));
    assert_eq!(deep(254).len() + 1, 4095);
    let t = TarBuilder::new()
        .pax_file("x", &[("path", deep(254).as_bytes())], b"ok")
        .finish();
    // Not in the sandbox: its snapshot opens absolute paths, which this one is too long for.
    let plain = common::TempDir::new("deep");
    unpack_layer(
        &t[..],
        OCI_LAYER_TAR,
        &plain.join("dest"),
        &UnpackOptions::default(),
    )
    .expect("a 4095-byte path");
    let t = TarBuilder::new()
        .pax_file("x", &[("path", deep(255).as_bytes())], b"no")
        .finish();
    refused(&t, OCI_LAYER_TAR, "4096-byte path", |e| {
        matches!(e, UnpackError::PathTooLong { len: 4096, .. })
    });
    let four_thousand = "p/".repeat(2000);
    let t = TarBuilder::new()
        .pax_file(
            "x",
            &[("linkpath", four_thousand.repeat(2).as_bytes())],
            b"",
        )
        .finish();
    let mut t2 = t.clone();
    // Make that entry a symlink.
    let n = t2.len() - 1024 - 512;
    t2[n + 156] = b'2';
    {
        let mut h = tar::Header::from_byte_slice(&t2[n..n + 512]).clone();
        h.set_cksum();
        t2[n..n + 512].copy_from_slice(h.as_bytes());
    }
    refused(&t2, OCI_LAYER_TAR, "8000-byte symlink target", |e| {
        matches!(e, UnpackError::PathTooLong { len: 8000, .. })
    });
}

#[test]
fn directory_names_kept_in_memory_are_bounded() {
    let mut b = TarBuilder::new();
    for i in 0..100 {
        b = b.dir(&format!("dir-{i:04}/"), 0o755);
    }
    let t = b.finish();
    let opts = UnpackOptions {
        max_metadata: 2000,
        ..Default::default()
    };
    let sb = Sandbox::new();
    let e = sb
        .unpack(&t, OCI_LAYER_TAR, &opts)
        .expect_err("too many names");
    assert!(
        matches!(e, UnpackError::MetadataTooLarge { limit: 2000, .. }),
        "{e}"
    );
}

#[test]
fn a_layer_must_have_the_diff_id_it_is_stored_under() {
    let t = TarBuilder::new()
        .file("bin/sh", b"not what it claims")
        .finish();
    let claimed = vessel_image::Digest::of(b"the digest of another image's layer");
    let opts = UnpackOptions {
        diff_id: Some(claimed.clone()),
        ..Default::default()
    };
    let e = Sandbox::new()
        .unpack(&t, OCI_LAYER_TAR, &opts)
        .expect_err("a layer claiming another diff_id");
    assert!(
        matches!(&e, UnpackError::DiffIdMismatch { expected, .. } if *expected == claimed),
        "{e}"
    );
    let gz = gzip(&t);
    let opts = UnpackOptions {
        diff_id: Some(vessel_image::Digest::of(&t)),
        ..Default::default()
    };
    Sandbox::new()
        .unpack(&gz, OCI_LAYER_GZIP, &opts)
        .expect("the true diff_id of a gzip layer is its tar's digest");
}

#[test]
fn a_layers_diff_id_is_its_uncompressed_streams_digest_and_bombs_are_bounded() {
    use sha2::Digest as _;
    let plain = [file_header("f", 0), vec![0u8; 1024]].concat();
    let want = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&plain)));
    let opts = UnpackOptions::default();
    for (bytes, media) in [
        (plain.clone(), OCI_LAYER_TAR),
        (gzip(&plain), OCI_LAYER_GZIP),
    ] {
        let got = vessel_image::layer_diff_id(&bytes[..], media, &opts).unwrap();
        assert_eq!(got.as_str(), want, "{media}");
    }
    // A bomb expands no further than an unpack would let it.
    let bomb = gzip_zeros(64 << 20);
    let opts = ratio_bounded(&bomb);
    let e = vessel_image::layer_diff_id(&bomb[..], OCI_LAYER_GZIP, &opts).unwrap_err();
    assert!(
        e.to_string().contains("exceeds") || format!("{e:?}").contains("exceeds"),
        "{e:?}"
    );
}
