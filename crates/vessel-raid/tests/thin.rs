//! Thin volumes on a plain file: sparse reads, copy-on-write between origins, snapshots
//! and clones, restore, space accounting, resize, running out of space, persistence,
//! falling back to the previous metadata copy, and refusals of bad input.

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Rng, TempDir};
use vessel_raid::thin::{ThinError, ThinOptions, ThinPool, Volume};

const ES: u64 = 64 << 10;
const META: u64 = 64 << 10;
/// Header block, then two metadata copies, then (aligned to the extent) the data area.
const DATA_OFFSET: u64 = (4096 + 2 * META).next_multiple_of(ES);

fn options() -> ThinOptions {
    ThinOptions {
        extent_size: ES,
        metadata_size: Some(META),
    }
}

fn open_file(path: &Path) -> Arc<File> {
    Arc::new(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open backing file"),
    )
}

/// A pool of `extents` data extents on a fresh file.
fn new_pool(dir: &TempDir, extents: u64) -> (PathBuf, Arc<ThinPool>) {
    let path = dir.file("pool", DATA_OFFSET + extents * ES);
    let pool = ThinPool::format(open_file(&path), &options()).expect("format");
    (path, Arc::new(pool))
}

fn reopen(path: &Path) -> Arc<ThinPool> {
    Arc::new(ThinPool::open(open_file(path)).expect("open pool"))
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    Rng::new(seed).fill(&mut buf);
    buf
}

fn read(vol: &Volume, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xAAu8; len];
    vol.read_at(offset, &mut buf).expect("read");
    buf
}

/// Compares bytes without printing megabytes when they differ.
#[track_caller]
fn same(got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "got {} bytes, want {}; first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

fn used_extents(pool: &ThinPool) -> u64 {
    pool.usage().used / ES
}

#[test]
fn unwritten_ranges_read_as_zeroes_and_are_reported_unallocated() {
    let dir = TempDir::new("thin-sparse");
    let (path, pool) = new_pool(&dir, 16);
    // Junk in the data area from an earlier life of the device must never show through.
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&vec![0xEEu8; (16 * ES) as usize], DATA_OFFSET)
        .unwrap();
    pool.create_volume("v", 1 << 20, "block").expect("create");
    let v = pool.volume("v").expect("handle");
    same(&read(&v, 0, 1 << 20), &vec![0u8; 1 << 20]);
    assert_eq!(v.extents(0, 1 << 20).unwrap(), vec![(1 << 20, false)]);

    let data = pattern(1, 5000);
    v.write_at(3 * ES + 100, &data).expect("write");
    same(&read(&v, 3 * ES + 100, 5000), &data);
    // The rest of the freshly allocated extent reads as zeroes, not as the junk.
    same(&read(&v, 3 * ES, 100), &[0u8; 100]);
    same(&read(&v, 3 * ES + 5100, 1000), &vec![0u8; 1000]);
    assert_eq!(
        v.extents(0, 1 << 20).unwrap(),
        vec![(3 * ES, false), (ES, true), ((1 << 20) - 4 * ES, false)]
    );
    assert_eq!(v.extents(3 * ES + 10, 20).unwrap(), vec![(20, true)]);
    assert_eq!(used_extents(&pool), 1);
    let info = &pool.list()[0];
    assert_eq!((info.allocated_bytes, info.size), (ES, 1 << 20));

    // A write spanning extents allocates both.
    v.write_at(6 * ES - 10, &[7u8; 20]).expect("spanning write");
    assert_eq!(used_extents(&pool), 3);
    same(&read(&v, 6 * ES - 10, 20), &[7u8; 20]);
}

#[test]
fn snapshots_and_clones_are_isolated_by_copy_on_write() {
    let dir = TempDir::new("thin-cow");
    let (_path, pool) = new_pool(&dir, 32);
    pool.create_volume("origin", 4 * ES, "filesystem").unwrap();
    let origin = pool.volume("origin").unwrap();
    let a = pattern(10, (2 * ES) as usize);
    origin.write_at(0, &a).unwrap();
    pool.snapshot("origin", "snap").unwrap();
    pool.clone_volume("origin", "clone").unwrap();
    assert_eq!(used_extents(&pool), 2, "snapshot and clone share extents");

    let snap = pool.volume("snap").unwrap();
    let clone = pool.volume("clone").unwrap();
    let b = pattern(11, 4096);
    let c = pattern(12, 4096);
    origin.write_at(100, &b).unwrap();
    clone.write_at(ES + 100, &c).unwrap();
    assert_eq!(
        used_extents(&pool),
        4,
        "each write copied one shared extent"
    );

    let mut want_origin = a.clone();
    want_origin[100..100 + 4096].copy_from_slice(&b);
    let mut want_clone = a.clone();
    want_clone[(ES + 100) as usize..(ES + 100) as usize + 4096].copy_from_slice(&c);
    same(&read(&origin, 0, a.len()), &want_origin);
    same(&read(&snap, 0, a.len()), &a);
    same(&read(&clone, 0, a.len()), &want_clone);

    // A second write to the now private copy does not copy again.
    origin.write_at(200, &c).unwrap();
    assert_eq!(used_extents(&pool), 4);

    assert!(matches!(
        snap.write_at(0, b"x"),
        Err(ThinError::ReadOnly(name)) if name == "snap"
    ));
    assert!(matches!(snap.discard(0, ES), Err(ThinError::ReadOnly(_))));
    assert!(matches!(
        pool.resize("snap", ES),
        Err(ThinError::ReadOnly(_))
    ));

    let list = pool.list();
    let names: Vec<_> = list.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["clone", "origin", "snap"]);
    assert_eq!(list[0].origin.as_deref(), Some("origin"));
    assert!(!list[0].read_only);
    assert_eq!(list[2].origin.as_deref(), Some("origin"));
    assert!(list[2].read_only);
    assert_eq!(list[2].label, "filesystem");
    assert_eq!(list[1].origin, None);

    // A clone of a snapshot is writable and leaves the snapshot alone.
    pool.clone_volume("snap", "from-snap").unwrap();
    let fs = pool.volume("from-snap").unwrap();
    fs.write_at(0, b"changed").unwrap();
    same(&read(&snap, 0, 7), &a[..7]);
    same(&read(&fs, 0, 7), b"changed");
}

#[test]
fn restore_brings_back_the_snapshot_content_and_size() {
    let dir = TempDir::new("thin-restore");
    let (path, pool) = new_pool(&dir, 32);
    pool.create_volume("v", 4 * ES, "block").unwrap();
    let v = pool.volume("v").unwrap();
    let a = pattern(20, (4 * ES) as usize);
    v.write_at(0, &a).unwrap();
    pool.snapshot("v", "before").unwrap();
    pool.resize("v", 8 * ES).unwrap();
    v.write_at(ES, &pattern(21, (6 * ES) as usize)).unwrap();
    v.flush().unwrap();

    pool.restore("v", "before").unwrap();
    assert_eq!(v.size().unwrap(), 4 * ES);
    same(&read(&v, 0, a.len()), &a);
    assert_eq!(used_extents(&pool), 4, "the diverged extents are released");
    // Writing after the restore copies again; the snapshot is untouched.
    v.write_at(0, b"after").unwrap();
    let snap = pool.volume("before").unwrap();
    same(&read(&snap, 0, a.len()), &a);
    same(&read(&v, 0, 5), b"after");

    // Closing the pool commits the unflushed write.
    drop((v, snap, pool));
    let pool = reopen(&path);
    let v = pool.volume("v").unwrap();
    same(&read(&v, 0, 5), b"after");
    same(&read(&v, 5, a.len() - 5), &a[5..]);
}

#[test]
fn delete_and_discard_give_space_back() {
    let dir = TempDir::new("thin-free");
    let (_path, pool) = new_pool(&dir, 16);
    pool.create_volume("v", 16 * ES, "block").unwrap();
    let v = pool.volume("v").unwrap();
    let data = pattern(30, (8 * ES) as usize);
    v.write_at(0, &data).unwrap();
    assert_eq!(used_extents(&pool), 8);

    // Whole extents are unmapped, the partial ends zeroed.
    v.discard(ES / 2, 3 * ES).unwrap();
    assert_eq!(used_extents(&pool), 6);
    same(&read(&v, 0, (ES / 2) as usize), &data[..(ES / 2) as usize]);
    same(
        &read(&v, ES / 2, (3 * ES) as usize),
        &vec![0u8; (3 * ES) as usize],
    );
    same(
        &read(&v, 3 * ES + ES / 2, (ES / 2) as usize),
        &data[(3 * ES + ES / 2) as usize..(4 * ES) as usize],
    );
    assert_eq!(
        v.extents(0, 8 * ES).unwrap(),
        vec![(ES, true), (2 * ES, false), (5 * ES, true)]
    );
    v.write_zeroes(4 * ES, 2 * ES).unwrap();
    assert_eq!(used_extents(&pool), 4);
    same(
        &read(&v, 4 * ES, (2 * ES) as usize),
        &vec![0u8; (2 * ES) as usize],
    );

    // A volume with a snapshot cannot be deleted; its snapshot can.
    pool.snapshot("v", "s").unwrap();
    match pool.delete("v") {
        Err(ThinError::HasSnapshots { name, snapshots }) => {
            assert_eq!((name.as_str(), snapshots), ("v", vec!["s".to_string()]))
        }
        other => panic!("unexpected: {other:?}"),
    }
    pool.delete("s").unwrap();
    pool.delete("v").unwrap();
    assert_eq!(used_extents(&pool), 0);
    assert!(pool.list().is_empty());
    assert!(matches!(
        v.read_at(0, &mut [0u8; 1]),
        Err(ThinError::NoSuchVolume(n)) if n == "v"
    ));

    // The freed extents are all usable again.
    pool.create_volume("w", 16 * ES, "block").unwrap();
    let w = pool.volume("w").unwrap();
    let full = pattern(31, (16 * ES) as usize);
    w.write_at(0, &full).unwrap();
    same(&read(&w, 0, full.len()), &full);
    assert_eq!(pool.usage().free, 0);
}

#[test]
fn clones_outlive_a_deleted_origin() {
    let dir = TempDir::new("thin-clone-delete");
    let (path, pool) = new_pool(&dir, 16);
    pool.create_volume("base", 4 * ES, "block").unwrap();
    let data = pattern(35, (4 * ES) as usize);
    pool.volume("base").unwrap().write_at(0, &data).unwrap();
    pool.clone_volume("base", "child").unwrap();
    pool.delete("base").unwrap();
    assert_eq!(used_extents(&pool), 4, "the clone still holds the extents");
    let child = pool.volume("child").unwrap();
    same(&read(&child, 0, data.len()), &data);
    assert_eq!(pool.list()[0].origin, None);
    drop((child, pool));
    let pool = reopen(&path);
    same(&read(&pool.volume("child").unwrap(), 0, data.len()), &data);
}

#[test]
fn resize_frees_the_tail_and_grows_with_zeroes() {
    let dir = TempDir::new("thin-resize");
    let (_path, pool) = new_pool(&dir, 16);
    pool.create_volume("v", 8 * ES, "block").unwrap();
    let v = pool.volume("v").unwrap();
    let data = pattern(40, (8 * ES) as usize);
    v.write_at(0, &data).unwrap();
    assert_eq!(used_extents(&pool), 8);

    // Shrink to the middle of extent 2: extents 3.. are freed.
    let small = 2 * ES + 4096;
    pool.resize("v", small).unwrap();
    assert_eq!(v.size().unwrap(), small);
    assert_eq!(used_extents(&pool), 3);
    assert!(matches!(
        v.read_at(small, &mut [0u8; 1]),
        Err(ThinError::OutOfRange { .. })
    ));
    same(&read(&v, 0, small as usize), &data[..small as usize]);

    // Growing again shows zeroes past the old end, also inside the kept extent.
    pool.resize("v", 6 * ES).unwrap();
    same(&read(&v, 0, small as usize), &data[..small as usize]);
    same(
        &read(&v, small, (6 * ES - small) as usize),
        &vec![0u8; (6 * ES - small) as usize],
    );
    // Growing past the pool is thin provisioning, not an error.
    pool.resize("v", 1024 * ES).unwrap();
    assert_eq!(pool.list()[0].size, 1024 * ES);
}

#[test]
fn running_out_of_space_is_an_error_and_keeps_data() {
    let dir = TempDir::new("thin-nospace");
    let (_path, pool) = new_pool(&dir, 6);
    pool.create_volume("big", 64 * ES, "block").unwrap();
    let v = pool.volume("big").unwrap();
    for i in 0..6 {
        v.write_at(i * ES, &pattern(50 + i, ES as usize)).unwrap();
    }
    match v.write_at(6 * ES, b"one too many") {
        Err(ThinError::NoSpace { total }) => assert_eq!(total, 6),
        other => panic!("unexpected: {other:?}"),
    }
    assert_eq!(v.extents(6 * ES, ES).unwrap(), vec![(ES, false)]);
    // Overwriting an exclusive extent needs no space.
    v.write_at(10, b"in place").unwrap();

    // A snapshot makes every extent shared: writing the origin would need a copy.
    pool.snapshot("big", "s").unwrap();
    assert!(matches!(
        v.write_at(ES, b"copy needed"),
        Err(ThinError::NoSpace { .. })
    ));
    let s = pool.volume("s").unwrap();
    same(&read(&s, ES, ES as usize), &pattern(51, ES as usize));
    same(&read(&v, ES, ES as usize), &pattern(51, ES as usize));

    // Freeing space (without an explicit flush) makes writes possible again.
    pool.delete("s").unwrap();
    v.discard(0, 2 * ES).unwrap();
    v.write_at(6 * ES, b"fits now").unwrap();
    v.write_at(2 * ES, b"no copy now").unwrap();
    same(&read(&v, 6 * ES, 8), b"fits now");
}

#[test]
fn volumes_persist_across_close_and_reopen() {
    let dir = TempDir::new("thin-persist");
    let (path, pool) = new_pool(&dir, 32);
    pool.create_volume("disk", 8 * ES, "block").unwrap();
    pool.create_volume("fs", 4 * ES, "filesystem").unwrap();
    let disk = pool.volume("disk").unwrap();
    let a = pattern(60, (3 * ES) as usize);
    disk.write_at(ES + 17, &a).unwrap();
    pool.snapshot("disk", "disk.1").unwrap();
    disk.write_at(ES + 17, b"newer").unwrap();
    disk.flush().unwrap();
    let list = pool.list();
    let usage = pool.usage();
    let pool_id = pool.pool_id();
    drop((disk, pool));

    let pool = reopen(&path);
    assert_eq!(pool.pool_id(), pool_id);
    assert_eq!(pool.list(), list);
    assert_eq!(pool.usage(), usage);
    let disk = pool.volume("disk").unwrap();
    let snap = pool.volume("disk.1").unwrap();
    same(&read(&snap, ES + 17, a.len()), &a);
    same(&read(&disk, ES + 17, 5), b"newer");
    same(&read(&disk, ES + 22, a.len() - 5), &a[5..]);
    assert!(snap.is_read_only().unwrap());
    let info = pool
        .list()
        .into_iter()
        .find(|v| v.name == "disk.1")
        .unwrap();
    assert_eq!(info.origin.as_deref(), Some("disk"));
    assert!(info.created.elapsed().unwrap().as_secs() < 600);
}

/// Generation of the metadata copy in `slot`, read straight from the file.
fn copy_generation(path: &Path, slot: u64) -> u64 {
    let mut g = [0u8; 8];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut g, 4096 + slot * META + 8)
        .unwrap();
    u64::from_le_bytes(g)
}

#[test]
fn a_torn_newest_metadata_copy_falls_back_to_the_previous_one() {
    let dir = TempDir::new("thin-torn");
    let (path, pool) = new_pool(&dir, 16);
    pool.create_volume("a", 4 * ES, "block").unwrap();
    let data = pattern(70, (2 * ES) as usize);
    pool.volume("a").unwrap().write_at(0, &data).unwrap();
    pool.flush().unwrap();
    pool.create_volume("b", 4 * ES, "block").unwrap();
    drop(pool);

    let newest = if copy_generation(&path, 0) > copy_generation(&path, 1) {
        0
    } else {
        1
    };
    // Damage the payload of the newest copy, as a write cut short would.
    common::corrupt(&path, 4096 + newest * META + 60, 16);
    let pool = reopen(&path);
    let names: Vec<_> = pool.list().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["a"], "the previous copy has no volume b");
    same(&read(&pool.volume("a").unwrap(), 0, data.len()), &data);

    // The pool keeps working: the next commit overwrites the damaged copy.
    pool.create_volume("c", ES, "block").unwrap();
    drop(pool);
    let pool = reopen(&path);
    let names: Vec<_> = pool.list().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["a", "c"]);
    drop(pool);

    // With both copies damaged nothing is guessed.
    common::corrupt(&path, 4096 + 60, 16);
    common::corrupt(&path, 4096 + META + 60, 16);
    match ThinPool::open(open_file(&path)) {
        Err(ThinError::MetadataCorrupt(reason)) => assert!(reason.contains("checksum"), "{reason}"),
        other => panic!("unexpected: {other:?}"),
    }
}

#[test]
fn metadata_space_runs_out_with_a_clear_error() {
    let dir = TempDir::new("thin-metafull");
    let (_path, pool) = new_pool(&dir, 128);
    pool.create_volume("v", 128 * ES, "block").unwrap();
    let v = pool.volume("v").unwrap();
    for i in 0..128 {
        v.write_at(i * ES, &[1u8; 512]).unwrap();
    }
    // Every snapshot repeats 128 mappings of 8 bytes; 64 KiB holds fewer than 64 of them.
    let mut made = 0;
    let err = loop {
        match pool.snapshot("v", &format!("s{made}")) {
            Ok(()) => made += 1,
            Err(e) => break e,
        }
        assert!(made < 100, "metadata never filled up");
    };
    match err {
        ThinError::MetadataFull { needed, capacity } => {
            assert_eq!(capacity, META);
            assert!(needed > capacity);
        }
        other => panic!("unexpected: {other}"),
    }
    assert!(err_text(&pool).contains("delete volumes or snapshots"));
    assert_eq!(
        pool.list().len(),
        made + 1,
        "the refused snapshot left nothing"
    );
    let usage = pool.usage();
    assert!(usage.metadata_used <= usage.metadata_capacity);
    pool.delete("s0").unwrap();
    pool.snapshot("v", "again").unwrap();
}

fn err_text(pool: &ThinPool) -> String {
    pool.snapshot("v", "one-more").unwrap_err().to_string()
}

#[test]
fn bad_input_is_refused() {
    let dir = TempDir::new("thin-bad");
    // Formatting.
    let small = dir.file("small", DATA_OFFSET);
    assert!(matches!(
        ThinPool::format(open_file(&small), &options()),
        Err(ThinError::DeviceTooSmall { .. })
    ));
    for es in [0, 4096, 32 << 10, 100_000, 2 << 30] {
        let opts = ThinOptions {
            extent_size: es,
            ..options()
        };
        assert!(matches!(
            ThinPool::format(open_file(&small), &opts),
            Err(ThinError::ExtentSize(e)) if e == es
        ));
    }
    let opts = ThinOptions {
        metadata_size: Some(65 << 10 | 1),
        ..options()
    };
    assert!(matches!(
        ThinPool::format(open_file(&small), &opts),
        Err(ThinError::MetadataSize(_))
    ));
    let blank = dir.file("blank", 1 << 20);
    assert!(matches!(
        ThinPool::open(open_file(&blank)),
        Err(ThinError::NotAPool)
    ));

    let (path, pool) = new_pool(&dir, 8);
    // Names and labels.
    let long = "x".repeat(65);
    for name in ["", long.as_str(), "a/b", "-a", ".hidden", "sp ace", "ünï"] {
        assert!(
            matches!(
                pool.create_volume(name, ES, "block"),
                Err(ThinError::InvalidName { .. })
            ),
            "{name:?} accepted"
        );
    }
    pool.create_volume(&"y".repeat(64), ES, "").unwrap();
    assert!(matches!(
        pool.create_volume("l", ES, &"z".repeat(65)),
        Err(ThinError::InvalidLabel { .. })
    ));
    assert!(matches!(
        pool.create_volume("l", ES, "bad\nlabel"),
        Err(ThinError::InvalidLabel { .. })
    ));
    // Sizes.
    for size in [0, 513, u64::MAX - 511] {
        assert!(matches!(
            pool.create_volume("s", size, "block"),
            Err(ThinError::InvalidSize { .. })
        ));
    }
    pool.create_volume("v", 2 * ES, "block").unwrap();
    assert!(matches!(
        pool.create_volume("v", ES, "block"),
        Err(ThinError::NameInUse(n)) if n == "v"
    ));
    assert!(matches!(
        pool.resize("v", 100),
        Err(ThinError::InvalidSize { .. })
    ));
    // Unknown volumes.
    assert!(matches!(
        pool.volume("nope"),
        Err(ThinError::NoSuchVolume(_))
    ));
    assert!(matches!(
        pool.delete("nope"),
        Err(ThinError::NoSuchVolume(_))
    ));
    assert!(matches!(
        pool.snapshot("nope", "s"),
        Err(ThinError::NoSuchVolume(_))
    ));
    assert!(matches!(
        pool.snapshot("v", "v"),
        Err(ThinError::NameInUse(_))
    ));
    assert!(matches!(
        pool.clone_volume("v", "a/b"),
        Err(ThinError::InvalidName { .. })
    ));
    // Out of range I/O.
    let v = pool.volume("v").unwrap();
    assert!(matches!(
        v.write_at(2 * ES - 1, b"xy"),
        Err(ThinError::OutOfRange { .. })
    ));
    assert!(matches!(
        v.discard(u64::MAX, 2),
        Err(ThinError::OutOfRange { .. })
    ));
    assert!(matches!(
        v.extents(0, 2 * ES + 1),
        Err(ThinError::OutOfRange { .. })
    ));
    // Restores.
    pool.create_volume("w", ES, "block").unwrap();
    pool.snapshot("w", "w.1").unwrap();
    assert!(matches!(
        pool.restore("v", "w"),
        Err(ThinError::NotASnapshot(_))
    ));
    assert!(matches!(
        pool.restore("v", "w.1"),
        Err(ThinError::ForeignSnapshot { .. })
    ));
    assert!(matches!(
        pool.restore("w.1", "w.1"),
        Err(ThinError::ReadOnly(_))
    ));
    // None of the refusals changed what is on disk.
    let before = pool.list();
    drop((v, pool));
    assert_eq!(reopen(&path).list(), before);
}

#[test]
fn volumes_are_written_from_many_threads() {
    let dir = TempDir::new("thin-threads");
    let (path, pool) = new_pool(&dir, 64);
    for t in 0..4 {
        pool.create_volume(&format!("t{t}"), 8 * ES, "block")
            .unwrap();
    }
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let pool = Arc::clone(&pool);
            s.spawn(move || {
                let v = pool.volume(&format!("t{t}")).unwrap();
                for i in 0..32u64 {
                    v.write_at((i * 16) << 10, &pattern(t * 100 + i, 16 << 10))
                        .unwrap();
                    if i == 16 {
                        pool.snapshot(&format!("t{t}"), &format!("t{t}.half"))
                            .unwrap();
                    }
                }
                v.flush().unwrap();
            });
        }
    });
    drop(pool);
    let pool = reopen(&path);
    for t in 0..4u64 {
        let v = pool.volume(&format!("t{t}")).unwrap();
        let half = pool.volume(&format!("t{t}.half")).unwrap();
        for i in 0..32u64 {
            let want = pattern(t * 100 + i, 16 << 10);
            same(&read(&v, (i * 16) << 10, 16 << 10), &want);
            let snap = read(&half, (i * 16) << 10, 16 << 10);
            if i <= 16 {
                assert_eq!(snap, want);
            } else {
                assert_eq!(snap, vec![0u8; 16 << 10]);
            }
        }
    }
}

/// A pool dropped without its destructor, as a killed process leaves it: written data is
/// in the file, nothing since the last commit is in the metadata.
fn crash(pool: Arc<ThinPool>) {
    std::mem::forget(pool);
}

#[test]
fn extents_released_since_the_last_commit_are_not_overwritten() {
    let dir = TempDir::new("thin-release");
    let (path, pool) = new_pool(&dir, 8);
    for name in ["v", "w", "x"] {
        pool.create_volume(name, 4 * ES, "block").unwrap();
    }
    let (v, w, x) = (
        pool.volume("v").unwrap(),
        pool.volume("w").unwrap(),
        pool.volume("x").unwrap(),
    );
    let a = pattern(80, ES as usize);
    let b = pattern(81, ES as usize);
    v.write_at(0, &a).unwrap();
    x.write_at(0, &b).unwrap();
    pool.clone_volume("x", "y").unwrap();
    pool.flush().unwrap();

    // v's extent is released but the committed metadata still names it: w must not get it.
    v.discard(0, ES).unwrap();
    w.write_at(0, &pattern(82, ES as usize)).unwrap();
    // x lets go of the extent it shares with y: y must still copy before writing, because
    // the committed metadata has x naming it.
    x.discard(0, ES).unwrap();
    let y = pool.volume("y").unwrap();
    y.write_at(0, &pattern(83, ES as usize)).unwrap();
    drop((v, w, x, y));
    crash(pool);

    let pool = reopen(&path);
    same(&read(&pool.volume("v").unwrap(), 0, a.len()), &a);
    same(
        &read(&pool.volume("w").unwrap(), 0, a.len()),
        &vec![0u8; a.len()],
    );
    same(&read(&pool.volume("x").unwrap(), 0, b.len()), &b);
    same(&read(&pool.volume("y").unwrap(), 0, b.len()), &b);
}

#[test]
fn unflushed_writes_never_surface_as_garbage_after_a_crash() {
    let dir = TempDir::new("thin-unflushed");
    let (path, pool) = new_pool(&dir, 16);
    pool.create_volume("v", 8 * ES, "block").unwrap();
    let v = pool.volume("v").unwrap();
    let old = pattern(90, (4 * ES) as usize);
    v.write_at(0, &old).unwrap();
    pool.snapshot("v", "s").unwrap();
    // Copies of shared extents and new extents, none committed.
    v.write_at(ES / 2, &pattern(91, (2 * ES) as usize)).unwrap();
    v.write_at(6 * ES, &pattern(92, 100)).unwrap();
    drop(v);
    crash(pool);

    let pool = reopen(&path);
    let v = pool.volume("v").unwrap();
    // The origin is as committed.
    same(&read(&v, 0, old.len()), &old);
    same(&read(&pool.volume("s").unwrap(), 0, old.len()), &old);
    assert_eq!(v.extents(4 * ES, 4 * ES).unwrap(), vec![(4 * ES, false)]);
    assert_eq!(
        used_extents(&pool),
        4,
        "uncommitted allocations are free again"
    );
}
