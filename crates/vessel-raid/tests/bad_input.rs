//! Refusals: every bad request fails with an error naming the problem, and nothing is
//! written to any member.

mod common;

use std::path::PathBuf;

use common::{snapshot, TempDir, DATA_OFFSET};
use vessel_raid::member::Member;
use vessel_raid::{RaidArray, RaidConfig, RaidError, RaidLevel};

const SIZE: u64 = DATA_OFFSET + (1 << 20);

#[test]
fn wrong_member_count_is_refused() {
    let dir = TempDir::new("count");
    for (level, n, min) in [
        (RaidLevel::Raid1, 1, 2),
        (RaidLevel::Raid5, 2, 3),
        (RaidLevel::Raid6, 3, 4),
    ] {
        let paths = dir.members(&format!("l{level}-"), n, SIZE);
        let before = snapshot(&paths);
        let err = RaidArray::create(&paths, &RaidConfig::new(level)).expect_err("must refuse");
        match err {
            RaidError::MemberCount { count, min: m, .. } => assert_eq!((count, m), (n, min)),
            e => panic!("unexpected error: {e}"),
        }
        assert!(err_text(level, n).contains(&format!("at least {min}")));
        assert_eq!(snapshot(&paths), before, "members were written");
    }
}

fn err_text(level: RaidLevel, n: usize) -> String {
    RaidError::MemberCount {
        level,
        count: n,
        min: level.min_members(),
    }
    .to_string()
}

#[test]
fn member_too_small_is_refused() {
    let dir = TempDir::new("small");
    let mut paths = dir.members("m", 3, SIZE);
    paths.push(dir.file("tiny", DATA_OFFSET + 8192));
    let before = snapshot(&paths);
    let config = RaidConfig::new(RaidLevel::Raid5).member_size(512 << 10);
    match RaidArray::create(&paths, &config) {
        Err(RaidError::MemberTooSmall { path, .. }) => assert_eq!(path, paths[3]),
        other => panic!("unexpected result: {other:?}"),
    }
    assert_eq!(snapshot(&paths), before, "members were written");
    // A file too small even for the header and one chunk.
    let tiny = vec![dir.file("a", 4096), dir.file("b", 4096)];
    let err = RaidArray::create(&tiny, &RaidConfig::new(RaidLevel::Raid1)).expect_err("refuse");
    assert!(err.to_string().contains("needs at least"), "{err}");

    // A replacement smaller than the array's members.
    let good = dir.members("g", 3, SIZE);
    let array = RaidArray::create(&good, &RaidConfig::new(RaidLevel::Raid5)).expect("create");
    array.fail_member(0).expect("fail");
    let small = dir.file("small-replacement", SIZE - (128 << 10));
    let err = array.replace_member(0, &small).expect_err("refuse");
    assert!(
        matches!(&err, RaidError::MemberTooSmall { path, .. } if *path == small),
        "{err}"
    );
}

#[test]
fn bad_chunk_size_and_duplicates_are_refused() {
    let dir = TempDir::new("chunk");
    let paths = dir.members("m", 3, SIZE);
    let before = snapshot(&paths);
    for chunk in [0, 1000, 2048, 12288] {
        let err = RaidArray::create(&paths, &RaidConfig::new(RaidLevel::Raid5).chunk_size(chunk))
            .expect_err("refuse");
        assert!(
            matches!(err, RaidError::ChunkSize(c) if c == chunk),
            "{err}"
        );
    }
    let dup = vec![paths[0].clone(), paths[1].clone(), paths[0].clone()];
    let err = RaidArray::create(&dup, &RaidConfig::new(RaidLevel::Raid5)).expect_err("refuse");
    assert!(matches!(err, RaidError::DuplicateMember { .. }), "{err}");
    assert_eq!(snapshot(&paths), before, "members were written");
}

#[test]
fn member_of_another_pool_is_refused() {
    let dir = TempDir::new("foreign");
    let a = dir.members("a", 3, SIZE);
    let b = dir.members("b", 3, SIZE);
    let pool_a = RaidArray::create(&a, &RaidConfig::new(RaidLevel::Raid5))
        .expect("create a")
        .pool_id();
    let pool_b = RaidArray::create(&b, &RaidConfig::new(RaidLevel::Raid5))
        .expect("create b")
        .pool_id();
    let mixed = vec![a[0].clone(), b[1].clone(), a[2].clone()];
    let before = snapshot(&mixed);
    match RaidArray::open(&mixed) {
        Err(RaidError::ForeignMember {
            path,
            expected,
            found,
        }) => {
            assert_eq!((path, expected, found), (b[1].clone(), pool_a, pool_b));
        }
        other => panic!("unexpected result: {other:?}"),
    }
    assert_eq!(snapshot(&mixed), before, "members were written");

    // Creating over a member of a live pool is refused unless forced.
    let reuse = vec![dir.file("n0", SIZE), dir.file("n1", SIZE), b[2].clone()];
    let before = snapshot(&reuse);
    let err = RaidArray::create(&reuse, &RaidConfig::new(RaidLevel::Raid5)).expect_err("refuse");
    assert!(
        matches!(&err, RaidError::MemberInUse { path, pool } if *path == b[2] && *pool == pool_b),
        "{err}"
    );
    assert_eq!(snapshot(&reuse), before, "members were written");
    // A member of another pool as a replacement is refused too.
    let array = RaidArray::open(&a).expect("open a");
    array.fail_member(1).expect("fail");
    let err = array.replace_member(1, &b[0]).expect_err("refuse");
    assert!(matches!(err, RaidError::MemberInUse { .. }), "{err}");
}

#[test]
fn member_in_wrong_slot_is_refused() {
    let dir = TempDir::new("slot");
    let paths = dir.members("m", 4, SIZE);
    RaidArray::create(&paths, &RaidConfig::new(RaidLevel::Raid6)).expect("create");
    let swapped = vec![
        paths[0].clone(),
        paths[2].clone(),
        paths[1].clone(),
        paths[3].clone(),
    ];
    let before = snapshot(&swapped);
    match RaidArray::open(&swapped) {
        Err(RaidError::WrongSlot {
            path,
            expected,
            found,
        }) => assert_eq!((path, expected, found), (paths[2].clone(), 1, 2)),
        other => panic!("unexpected result: {other:?}"),
    }
    assert_eq!(snapshot(&swapped), before, "members were written");
}

#[test]
fn mismatched_chunk_sizes_are_refused() {
    let dir = TempDir::new("geometry");
    let paths = dir.members("m", 3, SIZE);
    RaidArray::create(
        &paths,
        &RaidConfig::new(RaidLevel::Raid5).chunk_size(64 << 10),
    )
    .expect("create");
    // Rewrite member 2's superblock with another chunk size (a member from an array of
    // the same pool id but another geometry).
    let m = Member::open(&paths[2]).expect("open member");
    let mut sb = m.read_superblock().expect("read").expect("decode");
    sb.chunk_size = 128 << 10;
    m.write_superblock(&sb).expect("write");
    drop(m);
    let before = snapshot(&paths);
    match RaidArray::open(&paths) {
        Err(RaidError::Geometry {
            path,
            what,
            expected,
            found,
        }) => {
            assert_eq!(path, paths[2]);
            assert_eq!((what, expected, found), ("chunk size", 64 << 10, 128 << 10));
        }
        other => panic!("unexpected result: {other:?}"),
    }
    assert_eq!(snapshot(&paths), before, "members were written");
}

/// A file that is no member (no magic: a wrong path, most likely) is refused; a member whose
/// superblock is damaged is assembled around (see tests/gaps.rs).
#[test]
fn blank_members_are_refused() {
    let dir = TempDir::new("blank");
    let paths = dir.members("m", 3, SIZE);
    let blank = vec![paths[0].clone(), paths[1].clone(), dir.file("blank", SIZE)];
    RaidArray::create(&paths, &RaidConfig::new(RaidLevel::Raid5)).expect("create");
    let err = RaidArray::open(&blank).expect_err("refuse");
    assert!(
        matches!(&err, RaidError::NotAMember { path } if *path == blank[2]),
        "{err}"
    );
    let missing: Vec<PathBuf> = vec![dir.path().join("nope"), paths[1].clone(), paths[2].clone()];
    let err = RaidArray::open(&missing).expect_err("refuse");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn requests_outside_the_array_are_refused() {
    let dir = TempDir::new("range");
    let paths = dir.members("m", 2, SIZE);
    let array = RaidArray::create(&paths, &RaidConfig::new(RaidLevel::Raid1)).expect("create");
    let size = array.size();
    assert!(size > 0 && size <= 1 << 20);
    let mut buf = [0u8; 10];
    assert!(matches!(
        array.read_at(size - 5, &mut buf),
        Err(RaidError::OutOfRange { .. })
    ));
    assert!(matches!(
        array.write_at(u64::MAX - 2, &buf),
        Err(RaidError::OutOfRange { .. })
    ));
}
