//! Regression tests for integrity gaps found by outside testing: damage to the checksum area
//! found by scrub (which reads what the members hold) and repaired there, so that a later
//! member failure and restart leave the data readable; a damaged superblock assembled around
//! (degraded, replaceable) instead of taking the pool offline; failing more members than
//! the level survives refused unless forced, and a forced failure of the last member
//! remembered across a restart; checksum errors counted on the member that gave them.

mod common;

use common::{corrupt, Rng, TempDir, DATA_OFFSET};
use vessel_raid::{RaidArray, RaidConfig, RaidError, RaidLevel, SlotState};

const CHUNK: u64 = 64 << 10;
const PER_MEMBER: u64 = 2 << 20;

fn setup(level: RaidLevel, n: usize, seed: u64) -> (TempDir, Vec<std::path::PathBuf>, Vec<u8>) {
    let dir = TempDir::new("gaps");
    let paths = dir.members("m", n, DATA_OFFSET + PER_MEMBER);
    let array =
        RaidArray::create(&paths, &RaidConfig::new(level).chunk_size(CHUNK)).expect("create");
    let mut model = vec![0u8; array.size() as usize];
    Rng::new(seed).fill(&mut model);
    array.write_at(0, &model).expect("write");
    array.flush().expect("flush");
    array.flush().expect("flush");
    (dir, paths, model)
}

fn read_all(array: &RaidArray) -> Vec<u8> {
    let mut buf = vec![0u8; array.size() as usize];
    array.read_at(0, &mut buf).expect("read");
    buf
}

#[test]
fn scrub_finds_damaged_checksums_on_disk_and_rewrites_them() {
    for level in [RaidLevel::Raid1, RaidLevel::Raid5] {
        let n = if level == RaidLevel::Raid1 { 2 } else { 3 };
        let (_dir, paths, model) = setup(level, n, 21);
        let array = RaidArray::open(&paths).expect("open");
        // The array has just read and written every checksum: they are in its memory.
        assert!(read_all(&array) == model);
        let geo = array.geometry();
        let row = 3;
        let victim = 0;
        // The checksums of member 0's chunk of `row` (4 bytes per 4 KiB block).
        let first = (geo.member_offset(row) - DATA_OFFSET) / 4096;
        corrupt(&paths[victim], geo.csum_offset() + first * 4 + 8, 16);
        let report = array.scrub(false).expect("scrub");
        assert_eq!(report.mismatches.len(), 1, "{level:?}: {report:?}");
        let m = &report.mismatches[0];
        assert_eq!(
            (m.row, m.members.clone(), m.checksums),
            (row, vec![victim], true),
            "{level:?}"
        );
        let report = array.scrub(true).expect("repair");
        assert!(report.mismatches[0].repaired, "{level:?}: {report:?}");
        assert!(array.scrub(false).expect("scrub").is_clean(), "{level:?}");
        // Another member dies, the daemon restarts: member 0's data is read with its
        // checksums, which are right again.
        array.fail_member(1).expect("fail");
        drop(array);
        let array = RaidArray::open(&paths).expect("reopen");
        assert!(
            read_all(&array) == model,
            "{level:?}: data lost after the restart"
        );
    }
}

#[test]
fn a_damaged_superblock_leaves_a_redundant_pool_degraded_and_replaceable() {
    let (dir, paths, model) = setup(RaidLevel::Raid5, 3, 22);
    // Member 1's superblock (the first 4 KiB) damaged.
    corrupt(&paths[1], 64, 32);
    let array = RaidArray::open(&paths).expect("open degraded");
    assert!(array.is_degraded());
    let states: Vec<SlotState> = array.status().iter().map(|s| s.state).collect();
    assert_eq!(states[1], SlotState::Failed, "{states:?}");
    assert!(read_all(&array) == model);
    let new = dir.file("new1", DATA_OFFSET + PER_MEMBER);
    array.replace_member(1, &new).expect("replace");
    array.rebuild(|_, _| {}).expect("rebuild");
    assert!(!array.is_degraded());
    drop(array);
    let mut fixed = paths.clone();
    fixed[1] = new;
    let array = RaidArray::open(&fixed).expect("reopen");
    assert!(read_all(&array) == model);
    // A two-way mirror with one damaged superblock: the other alone cannot show it is
    // current (it may have dropped out long ago), so nothing is assembled nor written.
    let (_d2, mirror, _) = setup(RaidLevel::Raid1, 2, 25);
    corrupt(&mirror[0], 64, 32);
    match RaidArray::open(&mirror) {
        Err(RaidError::SuperblockChecksum { path }) => assert_eq!(path, mirror[0]),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a lone mirror assembled around a damaged one"),
    }
    // Every superblock damaged: nothing to assemble, said plainly.
    drop(array);
    for p in &fixed {
        corrupt(p, 64, 32);
    }
    match RaidArray::open(&fixed) {
        Err(RaidError::SuperblockChecksum { .. }) => {}
        Err(e) => panic!("assembled from damaged superblocks: {e}"),
        Ok(_) => panic!("assembled from damaged superblocks"),
    }
}

#[test]
fn failing_past_what_the_level_survives_is_refused_unless_forced_and_then_remembered() {
    let (_dir, paths, model) = setup(RaidLevel::Raid1, 2, 23);
    let array = RaidArray::open(&paths).expect("open");
    array.fail_member(0).expect("the first of two mirrors");
    match array.fail_member(1) {
        Err(RaidError::TooManyFailures {
            index: 1,
            failed: 2,
            tolerated: 1,
            ..
        }) => {}
        other => panic!("the last mirror failed: {other:?}"),
    }
    assert!(read_all(&array) == model, "still served by member 1");
    array.fail_member_forced(1).expect("forced");
    let mut buf = vec![0u8; 4096];
    assert!(
        array.read_at(0, &mut buf).is_err(),
        "no member left, yet data"
    );
    drop(array);
    // After a restart the last member is still out: nothing is served from it.
    let array = RaidArray::open(&paths).expect("reopen");
    let states: Vec<SlotState> = array.status().iter().map(|s| s.state).collect();
    assert_eq!(states, vec![SlotState::Failed, SlotState::Failed]);
    assert!(
        array.read_at(0, &mut buf).is_err(),
        "a failed member served again"
    );
}

#[test]
fn checksum_errors_are_counted_on_the_member_that_gave_them() {
    let (_dir, paths, model) = setup(RaidLevel::Raid5, 3, 24);
    let array = RaidArray::open(&paths).expect("open");
    let geo = array.geometry();
    let m = geo.data_member(2, 0);
    corrupt(&paths[m], geo.member_offset(2) + 100, 4);
    assert!(read_all(&array) == model);
    let counts: Vec<u64> = array.status().iter().map(|s| s.checksum_errors).collect();
    let want: Vec<u64> = (0..3).map(|i| u64::from(i == m)).collect();
    assert_eq!(counts, want);
}
