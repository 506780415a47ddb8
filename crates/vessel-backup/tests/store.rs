//! The backup store end to end on real files: trees and disks backed up and restored
//! exactly, unchanged data stored once, damage found, hostile input refused, and `gc`
//! beside a running backup losing nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use vessel_backup::{BackupError, Store, StoreConfig};

struct Tmp(PathBuf);

impl Tmp {
    fn new(what: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("vessel-backup-{what}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic bytes that do not compress.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn run(cmd: &str, args: &[&str]) {
    let s = std::process::Command::new(cmd).args(args).status().unwrap();
    assert!(s.success(), "{cmd} {args:?}");
}

/// A tree with every kind of entry: files small, empty and larger than the largest chunk,
/// a hard link, links, a fifo, a device, modes with set-id bits, owners, an extended
/// attribute and old times.
fn sample_tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc/app")).unwrap();
    std::fs::create_dir_all(root.join("var/empty")).unwrap();
    std::fs::write(root.join("etc/hostname"), "web\n").unwrap();
    std::fs::write(root.join("etc/app/empty"), "").unwrap();
    std::fs::write(root.join("big"), noise(1, 9 << 20)).unwrap();
    std::fs::write(root.join("text"), "line of text\n".repeat(100_000)).unwrap();
    std::fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname2")).unwrap();
    std::os::unix::fs::symlink("../etc/hostname", root.join("var/link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", root.join("dangling")).unwrap();
    run("mkfifo", &[root.join("var/fifo").to_str().unwrap()]);
    run(
        "mknod",
        &[root.join("null").to_str().unwrap(), "c", "1", "3"],
    );
    let suid = root.join("suid");
    std::fs::write(&suid, "#!/bin/sh\n").unwrap();
    std::os::unix::fs::chown(&suid, Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(
        root.join("var/empty"),
        std::fs::Permissions::from_mode(0o1733),
    )
    .unwrap();
    run(
        "setfattr",
        &[
            "-n",
            "user.note",
            "-v",
            "kept",
            root.join("text").to_str().unwrap(),
        ],
    );
    run(
        "touch",
        &[
            "-h",
            "-d",
            "2001-02-03 04:05:06.789",
            root.join("var/link").to_str().unwrap(),
        ],
    );
    run(
        "touch",
        &[
            "-d",
            "2001-02-03 04:05:06.789",
            root.join("etc/app").to_str().unwrap(),
        ],
    );
}

/// Everything about a tree that a restore must give back, by path.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let mut d = format!(
            "mode={:o} uid={} gid={} rdev={} nlink={}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.rdev(),
            m.nlink()
        );
        if !m.is_dir() {
            d += &format!(" mtime={}.{}", m.mtime(), m.mtime_nsec());
        } else {
            let mut names: Vec<_> = std::fs::read_dir(&p)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            names.sort();
            stack.extend(names);
            if rel.contains("app") {
                d += &format!(" mtime={}.{}", m.mtime(), m.mtime_nsec());
            }
        }
        if m.file_type().is_symlink() {
            d += &format!(" -> {}", std::fs::read_link(&p).unwrap().display());
        } else if m.is_file() {
            let data = std::fs::read(&p).unwrap();
            d += &format!(" sha={}", vessel_backup::Digest::of(&data));
            let x = std::process::Command::new("getfattr")
                .args(["-d", "--absolute-names", p.to_str().unwrap()])
                .output()
                .unwrap();
            d += &String::from_utf8_lossy(&x.stdout).replace(p.to_str().unwrap(), "");
        }
        out.insert(rel, d);
    }
    out
}

#[test]
fn a_tree_comes_back_exactly_and_a_second_backup_reads_nothing_unchanged() {
    let t = Tmp::new("tree");
    let src = t.0.join("src");
    sample_tree(&src);
    let store = Store::create(&t.0.join("store"), StoreConfig::default()).unwrap();
    let mut w = store.writer("web").unwrap();
    w.blob("config", b"{\"name\":\"web\"}").unwrap();
    let first = w.tree("rootfs", &src, &mut |_| {}).unwrap();
    let (index, _) = w.finish(Default::default()).unwrap();
    assert!(first.new_chunks > 5, "{first:?}");
    let out = t.0.join("out");
    store
        .restore_tree(&index, "rootfs", &out, &mut |_| {})
        .unwrap();
    assert_eq!(describe(&src), describe(&out));
    assert_eq!(
        store.read_blob(&index, "config").unwrap(),
        b"{\"name\":\"web\"}"
    );
    // Restored for an unprivileged user of the files, a tree with a device node (here
    // /dev/null's, 1:3) is refused with nothing made; one with only overlayfs whiteouts
    // (character devices 0:0) is restored.
    let refused = t.0.join("refused");
    let e = store
        .restore_tree_as(&index, "rootfs", &refused, false, &mut |_| {})
        .unwrap_err();
    assert!(
        e.to_string().contains("\"null\" is a device node (1:3)"),
        "{e}"
    );
    assert!(!refused.exists());
    let only_whiteouts = t.0.join("whiteouts");
    std::fs::create_dir_all(&only_whiteouts).unwrap();
    run(
        "mknod",
        &[only_whiteouts.join("gone").to_str().unwrap(), "c", "0", "0"],
    );
    let mut w = store.writer("whiteouts").unwrap();
    w.tree("rootfs", &only_whiteouts, &mut |_| {}).unwrap();
    let (wi, _) = w.finish(Default::default()).unwrap();
    let out_w = t.0.join("out-whiteouts");
    store
        .restore_tree_as(&wi, "rootfs", &out_w, false, &mut |_| {})
        .unwrap();
    assert_eq!(describe(&only_whiteouts), describe(&out_w));
    // An index (from an archive, say) whose blob names its chunk millions of times, or a
    // chunk of a terabyte, is refused before anything is read.
    let mut hostile = index.clone();
    let config = hostile
        .archives
        .iter_mut()
        .find(|a| a.name == "config")
        .unwrap();
    let one = config.chunks[0];
    config.chunks = vec![one; 2_000_000];
    let err = match store.read_blob(&hostile, "config") {
        Ok(v) => panic!("read {} bytes", v.len()),
        Err(e) => e,
    };
    assert!(err.to_string().contains("more than"), "{err}");
    let config = hostile
        .archives
        .iter_mut()
        .find(|a| a.name == "config")
        .unwrap();
    config.chunks = vec![vessel_backup::ChunkRef(one.0, 1 << 40)];
    assert!(store.read_blob(&hostile, "config").is_err());

    // Unchanged: nothing read, (almost) nothing stored.
    let (store_bytes, _) = store.usage().unwrap();
    let mut w = store.writer("web").unwrap();
    let second = w.tree("rootfs", &src, &mut |_| {}).unwrap();
    w.finish(Default::default()).unwrap();
    assert_eq!(second.read, 0, "{second:?}");
    assert_eq!(second.new_chunks, 0, "{second:?}");
    let (after, _) = store.usage().unwrap();
    assert!(
        (after - store_bytes) * 100 < store_bytes,
        "{store_bytes} -> {after}"
    );

    // A file changed in its middle: only the chunks around the change are new.
    let big = src.join("big");
    let f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.write_all_at(b"changed", 5 << 20).unwrap();
    let mut w = store.writer("web").unwrap();
    let third = w.tree("rootfs", &src, &mut |_| {}).unwrap();
    let (index3, _) = w.finish(Default::default()).unwrap();
    assert_eq!(
        third.read,
        9 << 20,
        "only the changed file is read: {third:?}"
    );
    assert!(third.new_chunks <= 3, "{third:?}");
    let out3 = t.0.join("out3");
    store
        .restore_tree(&index3, "rootfs", &out3, &mut |_| {})
        .unwrap();
    assert_eq!(describe(&src), describe(&out3));
    // A restore never writes over what exists.
    let e = store
        .restore_tree(&index3, "rootfs", &out3, &mut |_| {})
        .unwrap_err();
    assert!(e.to_string().contains("exists"), "{e}");
}

#[test]
fn a_disk_comes_back_with_its_holes_and_unchanged_regions_are_shared() {
    let t = Tmp::new("disk");
    let disk = t.0.join("disk.img");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(64 << 20).unwrap();
    f.write_all_at(&noise(7, 3 << 20), 10 << 20).unwrap();
    f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
    let store = Store::create(&t.0.join("store"), StoreConfig::default()).unwrap();
    let mut w = store.writer("vm").unwrap();
    w.block("disk-root", &disk, &mut |_| {}).unwrap();
    let (index, stats) = w.finish(Default::default()).unwrap();
    assert_eq!(stats.bytes, 64 << 20);
    // Holes are not read: the chunks holding data (10-16 MiB, 60-64 MiB) are.
    assert_eq!(stats.read, 12 << 20, "{stats:?}");
    let out = t.0.join("restored.img");
    store
        .restore_block(&index, "disk-root", &out, &mut |_| {})
        .unwrap();
    assert_eq!(std::fs::read(&disk).unwrap(), std::fs::read(&out).unwrap());
    let blocks = std::fs::metadata(&out).unwrap().blocks() * 512;
    assert!(
        blocks < 16 << 20,
        "zeros left as holes: {blocks} bytes allocated"
    );
    // The same disk again, untouched: taken unread from the backup before.
    let mut w = store.writer("vm").unwrap();
    let again = w.block("disk-root", &disk, &mut |_| {}).unwrap();
    let (index2, _) = w.finish(Default::default()).unwrap();
    assert_eq!((again.read, again.files_reused), (0, 1), "{again:?}");
    assert_eq!(index2.archives, index.archives);
    // Written to (even with the same bytes): read again, and every chunk is known.
    f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
    let mut w = store.writer("vm").unwrap();
    let third = w.block("disk-root", &disk, &mut |_| {}).unwrap();
    w.finish(Default::default()).unwrap();
    assert_eq!((third.read, third.new_chunks), (12 << 20, 0), "{third:?}");
}

#[test]
fn a_disk_backup_built_on_the_one_before_reads_only_the_changed_ranges() {
    let t = Tmp::new("changed");
    let disk = t.0.join("disk.img");
    let size: u64 = (20 << 20) + 12345; // a short last chunk
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&disk)
        .unwrap();
    f.write_all_at(&noise(3, size as usize), 0).unwrap();
    let store = Store::create(&t.0.join("store"), StoreConfig::default()).unwrap();
    let mut w = store.writer("vm").unwrap();
    w.block("root", &disk, &mut |_| {}).unwrap();
    w.finish(Default::default()).unwrap();
    // Changes: one inside a chunk, one across a chunk boundary, one in the last chunk.
    let dirty: Vec<(u64, u64)> = vec![(1000, 10), ((8 << 20) - 100, 300), (size - 5, 5)];
    for (i, &(at, len)) in dirty.iter().enumerate() {
        f.write_all_at(&noise(100 + i as u64, len as usize), at)
            .unwrap();
    }
    let mut w = store.writer("vm").unwrap();
    let mut read = |at: u64, buf: &mut [u8]| f.read_exact_at(buf, at);
    let stats = w
        .block_changed("root", size, &dirty, &disk, &mut read, &mut |_| {})
        .unwrap();
    let (index, _) = w.finish(Default::default()).unwrap();
    assert_eq!(stats.read, 315, "{stats:?}");
    assert_eq!(
        stats.new_chunks, 4,
        "chunks 0, 1, 2 and the last: {stats:?}"
    );
    let out = t.0.join("restored.img");
    store
        .restore_block(&index, "root", &out, &mut |_| {})
        .unwrap();
    assert!(std::fs::read(&disk).unwrap() == std::fs::read(&out).unwrap());
    // Built on a disk of another size: refused, nothing guessed.
    let mut w = store.writer("vm").unwrap();
    let e = w
        .block_changed("root", size + 1, &dirty, &disk, &mut read, &mut |_| {})
        .unwrap_err();
    assert!(e.to_string().contains("cannot be built on"), "{e}");
    let e = w
        .block_changed("other", size, &dirty, &disk, &mut read, &mut |_| {})
        .unwrap_err();
    assert!(e.to_string().contains("no earlier backup"), "{e}");
}

/// Flips `byte` of the file at `path`.
fn flip(path: &Path, byte: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, byte).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, byte).unwrap();
}

fn chunk_files(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(store.join("chunks")).unwrap().flatten() {
        for c in std::fs::read_dir(d.path()).unwrap().flatten() {
            out.push(c.path());
        }
    }
    out.sort();
    out
}

#[test]
fn every_flipped_byte_is_found_by_verify_and_by_restore_which_leaves_nothing() {
    let t = Tmp::new("flip");
    let src = t.0.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), "some text ".repeat(50)).unwrap();
    std::fs::write(src.join("b"), noise(3, 300)).unwrap();
    let root = t.0.join("store");
    let store = Store::create(&root, StoreConfig::default()).unwrap();
    let mut w = store.writer("c1").unwrap();
    w.tree("rootfs", &src, &mut |_| {}).unwrap();
    let (index, _) = w.finish(Default::default()).unwrap();
    let index_file = root.join("backups/c1").join(&index.id).join("index");
    let mut files = chunk_files(&root);
    files.push(index_file.clone());
    for file in files {
        let len = std::fs::metadata(&file).unwrap().len();
        for byte in 0..len {
            flip(&file, byte);
            let v = store.verify(None, None, &mut |_| {}).unwrap();
            assert!(
                !v[0].problems.is_empty(),
                "{} byte {byte} not found by verify",
                file.display()
            );
            let out = t.0.join("out");
            let restored = store
                .get("c1", &index.id)
                .and_then(|i| store.restore_tree(&i, "rootfs", &out, &mut |_| {}));
            assert!(
                matches!(restored, Err(BackupError::Corrupt(_))),
                "{} byte {byte}: {restored:?}",
                file.display()
            );
            assert!(!out.exists());
            assert_eq!(
                std::fs::read_dir(&t.0).unwrap().count(),
                2,
                "nothing left beside the target"
            );
            flip(&file, byte);
        }
    }
    let v = store.verify(None, None, &mut |_| {}).unwrap();
    assert!(v[0].problems.is_empty(), "{v:?}");
    assert!(store.list(None).unwrap()[0].damaged.is_none());
}

#[test]
fn gc_frees_what_no_backup_names_and_loses_nothing_of_a_running_backup() {
    let t = Tmp::new("gc");
    let a = t.0.join("a");
    let b = t.0.join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("shared"), noise(11, 2 << 20)).unwrap();
    std::fs::write(b.join("shared"), noise(11, 2 << 20)).unwrap();
    std::fs::write(a.join("own"), noise(12, 2 << 20)).unwrap();
    let store = Store::create(&t.0.join("store"), StoreConfig::default()).unwrap();
    let take = |group: &str, src: &Path| {
        let mut w = store.writer(group).unwrap();
        w.tree("rootfs", src, &mut |_| {}).unwrap();
        w.finish(Default::default()).unwrap().0
    };
    let ia = take("a", &a);
    let ib = take("b", &b);
    // Deleted, a's own chunks go; the shared ones stay for b. Chunks are old enough.
    std::thread::sleep(std::time::Duration::from_secs(3));
    store.delete("a", &ia.id).unwrap();
    let r = store.gc().unwrap();
    assert!(r.removed_bytes > 1 << 20, "{r:?}");
    let out = t.0.join("out-b");
    store
        .restore_tree(
            &store.get("b", &ib.id).unwrap(),
            "rootfs",
            &out,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(
        std::fs::read(out.join("shared")).unwrap(),
        noise(11, 2 << 20)
    );

    // A backup whose chunks are written but not yet named when gc runs.
    std::fs::write(a.join("new"), noise(13, 3 << 20)).unwrap();
    let mut w = store.writer("a").unwrap();
    w.tree("rootfs", &a, &mut |_| {}).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let r = store.gc().unwrap();
    assert_eq!(r.removed_chunks, 0, "{r:?}");
    let (index, _) = w.finish(Default::default()).unwrap();
    let v = store.verify(Some("a"), None, &mut |_| {}).unwrap();
    assert!(v.iter().all(|v| v.problems.is_empty()), "{v:?}");
    let out = t.0.join("out-a");
    store
        .restore_tree(&index, "rootfs", &out, &mut |_| {})
        .unwrap();
    assert_eq!(std::fs::read(out.join("new")).unwrap(), noise(13, 3 << 20));
    // On a store whose file system's clock lags this host's (an NFS server's, 10 s behind
    // here: every file it writes has its time), a running backup's new chunks are kept.
    std::fs::write(a.join("lagged"), noise(14, 2 << 20)).unwrap();
    let mut w = store.writer("a").unwrap();
    w.tree("rootfs", &a, &mut |_| {}).unwrap();
    let behind = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
    let mut files = vec![t.0.join("store")];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(behind).unwrap();
        }
    }
    let r = store.gc().unwrap();
    assert_eq!(r.removed_chunks, 0, "{r:?}");
    let (index, _) = w.finish(Default::default()).unwrap();
    let out = t.0.join("out-lagged");
    store
        .restore_tree(&index, "rootfs", &out, &mut |_| {})
        .unwrap();
    assert_eq!(
        std::fs::read(out.join("lagged")).unwrap(),
        noise(14, 2 << 20)
    );
    // A backup dropped unfinished leaves nothing.
    let w = store.writer("a").unwrap();
    let id = w.id().to_string();
    drop(w);
    assert!(!t.0.join("store/backups/a").join(&id).exists());
}

#[test]
fn prune_keeps_what_the_policy_says() {
    let t = Tmp::new("prune");
    let src = t.0.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    let store = Store::create(&t.0.join("store"), StoreConfig::default()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let mut w = store.writer("g").unwrap();
        w.tree("rootfs", &src, &mut |_| {}).unwrap();
        ids.push(w.finish(Default::default()).unwrap().0.id);
    }
    assert!(store.prune("g", 0, 0).is_err());
    // The newest is damaged: it neither counts as one of the two kept nor goes.
    let newest = t.0.join("store/backups/g").join(&ids[3]).join("damaged");
    std::fs::write(&newest, "a chunk is missing").unwrap();
    let gone = store.prune("g", 2, 0).unwrap();
    assert_eq!(gone, ids[..1]);
    std::fs::remove_file(&newest).unwrap();
    let gone = store.prune("g", 2, 0).unwrap();
    assert_eq!(gone, ids[1..2]);
    let left: Vec<String> = store
        .list(Some("g"))
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(left, ids[2..]);
}

#[test]
fn an_archive_carries_a_backup_and_a_damaged_or_hostile_one_leaves_nothing() {
    let t = Tmp::new("archive");
    let src = t.0.join("src");
    sample_tree(&src);
    let store = Store::create(&t.0.join("store"), StoreConfig::default()).unwrap();
    let mut w = store.writer("web").unwrap();
    w.blob("instance", b"{}").unwrap();
    w.tree("rootfs", &src, &mut |_| {}).unwrap();
    let (index, _) = w.finish(Default::default()).unwrap();
    let mut archive = Vec::new();
    store
        .export_archive(&index, &mut archive, &mut |_| {})
        .unwrap();
    // Whole: imported and restored elsewhere.
    let (other, i2) = Store::import_archive(&archive[..], &t.0.join("imported")).unwrap();
    assert_eq!(i2, index);
    let out = t.0.join("out");
    other
        .restore_tree(&i2, "rootfs", &out, &mut |_| {})
        .unwrap();
    assert_eq!(describe(&src), describe(&out));
    // Truncated anywhere, or one byte flipped in a sample of places: refused, nothing left.
    let target = t.0.join("bad");
    let step = (archive.len() / 97).max(1);
    // (What follows the last entry's data is the tar's padding: cutting it loses nothing.)
    let data_end = archive.iter().rposition(|b| *b != 0).unwrap() + 1;
    for cut in (0..data_end).step_by(step) {
        assert!(
            Store::import_archive(&archive[..cut], &target).is_err(),
            "cut at {cut}"
        );
        assert!(!target.exists());
    }
    let mut checked = 0;
    for at in (0..archive.len()).step_by(step) {
        let mut bad = archive.clone();
        bad[at] ^= 0x04;
        // A flip in tar padding or an unused header field changes nothing that matters.
        if let Ok((s, i)) = Store::import_archive(&bad[..], &target) {
            let out = t.0.join("check");
            s.restore_tree(&i, "rootfs", &out, &mut |_| {}).unwrap();
            assert_eq!(
                describe(&src),
                describe(&out),
                "flip at {at} changed the data"
            );
            std::fs::remove_dir_all(&out).unwrap();
            std::fs::remove_dir_all(&target).unwrap();
        } else {
            checked += 1;
            assert!(!target.exists());
        }
    }
    assert!(checked > 20, "only {checked} flips were refused");
    // Hostile entries: a path out of the store, a link.
    for hostile in ["../../evil", "chunks/aa/../../../evil"] {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, "vessel-archive.json", &b"x"[..]).ok();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_cksum();
        let _ = b.append_data(&mut h, hostile, &b"x"[..]);
        let data = b.into_inner().unwrap();
        assert!(Store::import_archive(&data[..], &target).is_err());
        assert!(!target.exists());
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_link_name("/etc/passwd").unwrap();
    h.set_cksum();
    b.append_data(&mut h, "index", &b""[..]).unwrap();
    let data = b.into_inner().unwrap();
    let e = Store::import_archive(&data[..], &target).unwrap_err();
    assert!(e.to_string().contains("not a plain file"), "{e}");
    assert!(!target.exists());
}
