//! Silent corruption found by scrub, and crash consistency through the write-intent
//! bitmap.

mod common;

use common::{corrupt, Rng, TempDir, DATA_OFFSET};
use vessel_raid::{RaidArray, RaidConfig, RaidLevel};

const CHUNK: u64 = 64 << 10;
const PER_MEMBER: u64 = 2 << 20;

fn setup(level: RaidLevel, n: usize, seed: u64) -> (TempDir, Vec<std::path::PathBuf>, Vec<u8>) {
    setup_sized(level, n, seed, PER_MEMBER)
}

fn setup_sized(
    level: RaidLevel,
    n: usize,
    seed: u64,
    per_member: u64,
) -> (TempDir, Vec<std::path::PathBuf>, Vec<u8>) {
    let dir = TempDir::new("scrub");
    let paths = dir.members("m", n, DATA_OFFSET + per_member);
    let array =
        RaidArray::create(&paths, &RaidConfig::new(level).chunk_size(CHUNK)).expect("create");
    let mut model = vec![0u8; array.size() as usize];
    Rng::new(seed).fill(&mut model);
    array.write_at(0, &model).expect("write");
    // Closed cleanly: no write-intent bit is left set.
    drop(array);
    (dir, paths, model)
}

fn read_all(array: &RaidArray) -> Vec<u8> {
    let mut buf = vec![0u8; array.size() as usize];
    array.read_at(0, &mut buf).expect("read");
    buf
}

/// Member and member offset holding data chunk `d` of `row`.
fn data_location(array: &RaidArray, row: u64, d: usize) -> (usize, u64) {
    let geo = array.geometry();
    (geo.data_member(row, d), geo.member_offset(row))
}

#[test]
fn raid6_scrub_finds_and_repairs_the_lying_member() {
    let (_dir, paths, model) = setup(RaidLevel::Raid6, 5, 11);
    let array = RaidArray::open(&paths).expect("open");
    let (m, off) = data_location(&array, 5, 1);
    corrupt(&paths[m], off + 1000, 300);
    let report = array.scrub(false).expect("scrub");
    assert_eq!(report.mismatches.len(), 1, "{report:?}");
    assert_eq!(report.mismatches[0].row, 5);
    assert_eq!(report.mismatches[0].members, vec![m]);
    let report = array.scrub(true).expect("repair");
    assert!(report.mismatches[0].repaired);
    assert!(array.scrub(false).expect("scrub").is_clean());
    assert!(read_all(&array) == model, "repair restored wrong data");

    // Corrupt parity alone: P then Q.
    let geo = array.geometry();
    for member in [geo.p_member(2), geo.q_member(7)].into_iter().flatten() {
        let row = if Some(member) == geo.p_member(2) {
            2
        } else {
            7
        };
        corrupt(&paths[member], geo.member_offset(row) + 8192, 10);
        let report = array.scrub(true).expect("repair");
        assert_eq!(report.mismatches.len(), 1, "{report:?}");
        assert_eq!(report.mismatches[0].members, vec![member]);
        assert!(array.scrub(false).expect("scrub").is_clean());
    }
    assert!(read_all(&array) == model);
}

#[test]
fn raid5_scrub_names_and_repairs_the_lying_member() {
    let (_dir, paths, model) = setup(RaidLevel::Raid5, 4, 12);
    let array = RaidArray::open(&paths).expect("open");
    let (m, off) = data_location(&array, 9, 2);
    corrupt(&paths[m], off + 4096, 1);
    let report = array.scrub(false).expect("scrub");
    assert_eq!(report.mismatches.len(), 1, "{report:?}");
    assert_eq!(report.mismatches[0].row, 9);
    assert_eq!(report.mismatches[0].offset, 9 * 3 * CHUNK);
    assert_eq!(report.mismatches[0].members, vec![m]);
    assert!(!report.mismatches[0].repaired);
    let report = array.scrub(true).expect("repair");
    assert!(report.mismatches[0].repaired);
    assert!(array.scrub(false).expect("scrub").is_clean());
    assert!(read_all(&array) == model, "repair restored wrong data");
    // Parity corrupted instead: named and recomputed.
    let p = array.geometry().p_member(4).expect("P");
    corrupt(&paths[p], array.geometry().member_offset(4) + 100, 3);
    let report = array.scrub(true).expect("repair");
    assert_eq!(report.mismatches[0].members, vec![p]);
    assert!(array.scrub(false).expect("scrub").is_clean());
    // Lose a data member: reconstruction through the repaired parity is right.
    array.fail_member((p + 1) % 4).expect("fail");
    assert!(read_all(&array) == model);
}

#[test]
fn two_way_mirror_scrub_names_and_repairs_the_lying_copy() {
    let (_dir, paths, model) = setup(RaidLevel::Raid1, 2, 15);
    let array = RaidArray::open(&paths).expect("open");
    // Corrupt the first copy, which reads are served from.
    corrupt(&paths[0], DATA_OFFSET + 5 * CHUNK, 4096);
    let report = array.scrub(true).expect("repair");
    assert_eq!(report.mismatches.len(), 1, "{report:?}");
    assert_eq!(report.mismatches[0].members, vec![0]);
    assert!(array.scrub(false).expect("scrub").is_clean());
    assert!(read_all(&array) == model, "repair copied the wrong mirror");
}

/// Reads never return bytes that fail their checksums: they are read around, served from
/// the redundancy and rewritten on the lying member, which scrub then finds clean.
#[test]
fn reads_route_around_and_heal_silent_corruption() {
    for (level, n) in [
        (RaidLevel::Raid1, 2),
        (RaidLevel::Raid5, 3),
        (RaidLevel::Raid6, 4),
    ] {
        let (_dir, paths, model) = setup(level, n, 17);
        let array = RaidArray::open(&paths).expect("open");
        let geo = array.geometry();
        // Data chunk 0 of row 3, and the P chunk of row 6 (read when row 6 is degraded).
        let (m, off) = data_location(&array, 3, 0);
        corrupt(&paths[m], off + 8192, 700);
        assert!(
            read_all(&array) == model,
            "{level}: corrupt bytes were returned"
        );
        assert_eq!(array.checksum_errors(), 1, "{level}");
        assert!(
            array.scrub(false).expect("scrub").is_clean(),
            "{level}: not healed"
        );
        // Corrupt parity while a data member is missing: RAID 6 still has Q; RAID 5 has
        // nothing left and must say so rather than use the bad parity.
        if let Some(p) = geo.p_member(6) {
            corrupt(&paths[p], geo.member_offset(6), 4096);
            array.fail_member(geo.data_member(6, 0)).expect("fail");
            if level == RaidLevel::Raid6 {
                assert!(read_all(&array) == model, "{level}: bad parity used");
            } else {
                let mut buf = vec![0u8; 4096];
                let err = array
                    .read_at(6 * geo.row_bytes(), &mut buf)
                    .expect_err("bad parity and a missing member");
                assert!(
                    matches!(err, vessel_raid::RaidError::DataLoss { .. }),
                    "{err}"
                );
            }
        }
    }
}

/// Without redundancy a corrupt block is an error, never wrong bytes.
#[test]
fn raid0_read_of_corrupt_block_is_data_loss() {
    let (_dir, paths, _model) = setup(RaidLevel::Raid0, 2, 18);
    let array = RaidArray::open(&paths).expect("open");
    corrupt(&paths[1], DATA_OFFSET + 4 * CHUNK, 1);
    let mut buf = vec![0u8; 4096];
    // Row 4, data chunk 1 is on member 1.
    let err = array
        .read_at(4 * 2 * CHUNK + CHUNK, &mut buf)
        .expect_err("corrupt block");
    assert!(
        matches!(&err, vessel_raid::RaidError::DataLoss { missing, .. } if *missing == vec![1]),
        "{err}"
    );
}

#[test]
fn raid0_scrub_detects_corruption() {
    let (_dir, paths, _model) = setup(RaidLevel::Raid0, 2, 16);
    let array = RaidArray::open(&paths).expect("open");
    corrupt(&paths[1], DATA_OFFSET + 7 * CHUNK + 9, 1);
    let report = array.scrub(true).expect("scrub");
    assert_eq!(report.mismatches.len(), 1, "{report:?}");
    assert_eq!(report.mismatches[0].members, vec![1]);
    assert!(
        !report.mismatches[0].repaired,
        "RAID 0 has nothing to repair from"
    );
}

#[test]
fn raid1_scrub_outvotes_the_lying_mirror() {
    let (_dir, paths, model) = setup(RaidLevel::Raid1, 3, 13);
    let array = RaidArray::open(&paths).expect("open");
    corrupt(&paths[0], DATA_OFFSET + 3 * CHUNK + 77, 5);
    let report = array.scrub(true).expect("repair");
    assert_eq!(report.mismatches.len(), 1, "{report:?}");
    assert_eq!(report.mismatches[0].members, vec![0]);
    assert!(array.scrub(false).expect("scrub").is_clean());
    assert!(read_all(&array) == model, "repair restored wrong data");
}

#[test]
fn interrupted_stripe_write_is_resynced_at_assembly() {
    // Members of 66 MiB: 1056 rows, so rows 2 and 1040 lie in different groups of
    // write-intent regions (64 MiB of member data each).
    let (_dir, paths, mut model) = setup_sized(RaidLevel::Raid5, 3, 14, 66 << 20);
    let array = RaidArray::open(&paths).expect("open");
    let geo = array.geometry();
    // A write that "crashes" after the data reached its member but before parity did:
    // the array is abandoned without a flush (forgotten: no clean close, as in a crash), so
    // its region stays marked, and the parity chunk is reverted to stale contents behind
    // the engine's back.
    let row = 1040;
    let p = geo.p_member(row).expect("raid5 has P");
    let stale_p = std::fs::read(&paths[p]).expect("read member");
    let at = geo.member_offset(row) as usize;
    let stale_p = stale_p[at..at + CHUNK as usize].to_vec();
    let data = vec![0xabu8; 5000];
    let off = row * geo.row_bytes() + 123;
    array.write_at(off, &data).expect("write");
    model[off as usize..off as usize + data.len()].copy_from_slice(&data);
    std::mem::forget(array);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&paths[p])
            .expect("open member");
        f.write_all_at(&stale_p, at as u64).expect("revert parity");
    }
    // A row in a region that was flushed clean is not touched by the resync: corrupt its
    // parity too and expect scrub, not assembly, to find it.
    let clean_row = 2;
    let cp = geo.p_member(clean_row).expect("P");
    corrupt(&paths[cp], geo.member_offset(clean_row), 16);

    let array = RaidArray::open(&paths).expect("reassemble");
    let report = array.scrub(false).expect("scrub");
    assert_eq!(
        report.mismatches.iter().map(|m| m.row).collect::<Vec<_>>(),
        vec![clean_row],
        "the interrupted row was not resynced: {report:?}"
    );
    assert!(read_all(&array) == model);
    array.scrub(true).expect("repair the clean row's parity");
    // The resynced parity is right: lose the data member and read through parity.
    let dm = geo.data_member(row, 0);
    array.fail_member(dm).expect("fail");
    assert!(
        read_all(&array) == model,
        "parity of the interrupted row is stale"
    );
}

/// A rebuild checks what the survivors return against their checksums before it computes
/// the new member from it: a survivor that lies is read around (and repaired), and the new
/// member gets exactly what the old one held. The lies are in the first span (read before
/// the pipeline starts), the third (checked while the clean second span is written) and
/// the last row (the span written at the end).
#[test]
fn a_rebuild_reads_around_a_survivor_that_lies() {
    let per_member = 4 << 20;
    let (dir, paths, model) = setup_sized(RaidLevel::Raid6, 5, 17, per_member);
    let old = std::fs::read(&paths[0]).expect("read member 0");
    let data = DATA_OFFSET as usize..(DATA_OFFSET + per_member) as usize;
    let array = RaidArray::open(&paths).expect("open");
    array.fail_member(0).expect("fail");
    let fresh = dir.file("fresh", DATA_OFFSET + per_member);
    array.replace_member(0, &fresh).expect("replace");
    let geo = array.geometry();
    assert_eq!(geo.rows(), 63, "the spans this test means");
    // Spans of 16 rows: rows 3 (first span), 40 (third), 62 (the last row); the second is
    // clean.
    for (row, d) in [(3, 0), (40, 2), (62, 0)] {
        let (mut m, mut off) = data_location(&array, row, d);
        if m == 0 {
            (m, off) = data_location(&array, row, d + 1);
        }
        corrupt(&paths[m], off + 4096 * (row % 8) + 100, 64);
    }
    array.rebuild(|_, _| {}).expect("rebuild");
    assert!(!array.is_degraded());
    let new = std::fs::read(&fresh).expect("read the new member");
    assert!(
        new[data.clone()] == old[data],
        "the new member differs from what the old one held"
    );
    // What the rebuild read around, it repaired on the way (as any read does).
    let report = array.scrub(false).expect("scrub");
    assert!(report.is_clean(), "{report:?}");
    assert!(read_all(&array) == model, "reads after the rebuild");
}

/// A member that fails while it is rebuilt and is replaced again (here from the rebuild's
/// own progress report, between two spans) is rebuilt from the start: the rebuild does
/// not carry on from where it was on the old replacement, and the new one ends up holding
/// exactly what the first member held.
#[test]
fn a_replacement_swapped_during_a_rebuild_is_rebuilt_from_the_start() {
    let per_member = 4 << 20;
    let (dir, paths, model) = setup_sized(RaidLevel::Raid5, 4, 23, per_member);
    let old = std::fs::read(&paths[1]).expect("read member 1");
    let data = DATA_OFFSET as usize..(DATA_OFFSET + per_member) as usize;
    let array = RaidArray::open(&paths).expect("open");
    array.fail_member(1).expect("fail");
    let first = dir.file("first", DATA_OFFSET + per_member);
    let second = dir.file("second", DATA_OFFSET + per_member);
    array.replace_member(1, &first).expect("replace");
    let mut swapped = false;
    array
        .rebuild(|done, total| {
            if !swapped && done >= total / 2 {
                swapped = true;
                array.fail_member(1).expect("fail the replacement");
                array.replace_member(1, &second).expect("replace again");
            }
        })
        .expect("rebuild");
    assert!(swapped, "the rebuild reported no progress half-way");
    assert!(!array.is_degraded());
    let new = std::fs::read(&second).expect("read the second replacement");
    assert!(
        new[data.clone()] == old[data],
        "the second replacement differs from the member it replaces"
    );
    assert!(read_all(&array) == model);
    assert!(array.scrub(false).expect("scrub").is_clean());
}
