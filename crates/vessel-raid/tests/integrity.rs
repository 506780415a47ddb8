//! mdadm-style integrity: known data through every level, each member failed, replaced
//! and rebuilt in turn, and losses beyond the level's tolerance reported as data loss.

mod common;

use common::{Rng, TempDir, DATA_OFFSET};
use vessel_raid::{MemberIo, RaidArray, RaidConfig, RaidError, RaidLevel, SlotState};

/// Writes pseudo-random data over the whole array in unaligned pieces, then overwrites
/// random unaligned ranges; returns the expected contents.
fn fill(array: &RaidArray, rng: &mut Rng) -> Vec<u8> {
    let size = array.size() as usize;
    let mut model = vec![0u8; size];
    rng.fill(&mut model);
    let mut pos = 0;
    while pos < size {
        let len = (1 + rng.below(200_000) as usize).min(size - pos);
        array
            .write_at(pos as u64, &model[pos..pos + len])
            .expect("write");
        pos += len;
    }
    scribble(array, rng, &mut model, 40);
    array.flush().expect("flush");
    model
}

/// Overwrites `count` random unaligned ranges and updates the model.
fn scribble(array: &RaidArray, rng: &mut Rng, model: &mut [u8], count: usize) {
    let size = model.len() as u64;
    for _ in 0..count {
        let off = rng.below(size);
        let len = 1 + rng.below(100_000.min(size - off)) as usize;
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        array.write_at(off, &data).expect("overwrite");
        model[off as usize..off as usize + len].copy_from_slice(&data);
    }
}

/// Reads everything back: once in large unaligned pieces, and at random small spots.
fn verify(array: &RaidArray, model: &[u8], rng: &mut Rng, what: &str) {
    let mut pos = 0;
    while pos < model.len() {
        let len = (1 + rng.below(300_000) as usize).min(model.len() - pos);
        let mut buf = vec![0u8; len];
        array.read_at(pos as u64, &mut buf).expect("read");
        assert!(
            buf == model[pos..pos + len],
            "{what}: mismatch in {pos}+{len}"
        );
        pos += len;
    }
    for _ in 0..50 {
        let off = rng.below(model.len() as u64) as usize;
        let len = 1 + rng.below(9000.min((model.len() - off) as u64)) as usize;
        let mut buf = vec![0u8; len];
        array.read_at(off as u64, &mut buf).expect("read");
        assert!(
            buf == model[off..off + len],
            "{what}: mismatch in {off}+{len}"
        );
    }
}

/// Reads aligned requests from aligned buffers (the whole array, then `spans` spans of 1 to
/// 40 blocks anywhere): the path that reads into the caller's buffer and solves in place.
fn verify_aligned(array: &RaidArray, model: &[u8], rng: &mut Rng, spans: usize, what: &str) {
    use vessel_raid::member::AlignedBuf;
    let size = model.len();
    let mut back = AlignedBuf::new(size);
    array.read_at(0, back.as_mut_slice()).expect("read all");
    assert!(back.as_slice() == model, "{what}: whole aligned read");
    for _ in 0..spans {
        let blocks = 1 + rng.below(40) as usize;
        let off = rng.below((size / 4096 - blocks) as u64) as usize * 4096;
        let mut buf = AlignedBuf::new(blocks * 4096);
        array.read_at(off as u64, buf.as_mut_slice()).expect("read");
        assert!(
            buf.as_slice() == &model[off..off + buf.len()],
            "{what}: aligned read of {off}+{}",
            buf.len()
        );
    }
}

/// After losing too many members: every read is either right or `DataLoss`, never wrong
/// bytes, and at least one read reports the loss.
fn expect_loss(array: &RaidArray, model: &[u8], chunk: usize) {
    let mut losses = 0;
    for (i, want) in model.chunks(chunk).enumerate() {
        let mut buf = vec![0u8; want.len()];
        match array.read_at((i * chunk) as u64, &mut buf) {
            Ok(()) => assert!(buf == want, "wrong bytes returned at chunk {i}"),
            Err(RaidError::DataLoss { .. }) => losses += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert!(losses > 0, "losing too many members went unnoticed");
}

fn rebuild(array: &RaidArray) {
    let mut last = (0, 0);
    array
        .rebuild(|done, total| {
            assert!(done > last.0 && done <= total);
            last = (done, total);
        })
        .expect("rebuild");
    assert!(last.1 > 0 && last.0 == last.1, "progress ended at {last:?}");
    assert!(!array.is_degraded());
}

fn integrity(level: RaidLevel, n: usize, chunk: u64, data_per_member: u64, seed: u64) {
    integrity_with(level, n, chunk, data_per_member, seed, MemberIo::Direct);
}

fn integrity_with(
    level: RaidLevel,
    n: usize,
    chunk: u64,
    data_per_member: u64,
    seed: u64,
    io: MemberIo,
) {
    let dir = TempDir::new("integrity");
    let paths = dir.members("m", n, DATA_OFFSET + data_per_member);
    let config = RaidConfig::new(level).chunk_size(chunk).member_io(io);
    let array = RaidArray::create(&paths, &config).expect("create");
    // Through the page cache when asked (and O_DIRECT otherwise, where the file system
    // takes it: members.rs has the fallback).
    let cached = io == MemberIo::Cached;
    assert!(!cached || array.status().iter().all(|m| !m.direct));
    let mut rng = Rng::new(seed);
    let mut model = fill(&array, &mut rng);
    verify(&array, &model, &mut rng, "fresh");
    assert!(array.scrub(false).expect("scrub").is_clean());

    // Reassembly sees the same data.
    drop(array);
    let slots: Vec<_> = paths.iter().cloned().map(Some).collect();
    let array = RaidArray::open_with(&slots, io).expect("reopen");
    assert!(!cached || array.status().iter().all(|m| !m.direct));
    verify(&array, &model, &mut rng, "reopened");
    if io == MemberIo::Cached {
        // A member's bytes damaged behind the array's back (in the page cache it reads
        // through): the scrub names the member and repairs the row, the data reads right.
        common::corrupt(&paths[1], DATA_OFFSET + 8192, 100);
        let report = array.scrub(true).expect("scrub");
        assert_eq!(report.mismatches.len(), 1, "{report:?}");
        assert_eq!(report.mismatches[0].members, vec![1], "{report:?}");
        assert!(report.mismatches[0].repaired);
        assert!(array.scrub(false).expect("scrub").is_clean());
        verify(&array, &model, &mut rng, "repaired");
    }

    if level == RaidLevel::Raid0 {
        assert!(
            array.fail_member(n - 1).is_err(),
            "RAID 0 survives no failure"
        );
        array.fail_member_forced(n - 1).expect("fail");
        expect_loss(&array, &model, chunk as usize);
        return;
    }
    for victim in 0..n {
        array.fail_member(victim).expect("fail");
        assert_eq!(array.status()[victim].state, SlotState::Failed);
        verify(&array, &model, &mut rng, &format!("member {victim} failed"));
        scribble(&array, &mut rng, &mut model, 10);
        verify(
            &array,
            &model,
            &mut rng,
            &format!("written with {victim} failed"),
        );
        let fresh = dir.file(
            &format!("replacement{victim}"),
            DATA_OFFSET + data_per_member,
        );
        array.replace_member(victim, &fresh).expect("replace");
        assert!(
            !cached || !array.status()[victim].direct,
            "a replacement is opened alike"
        );
        rebuild(&array);
        verify(
            &array,
            &model,
            &mut rng,
            &format!("member {victim} rebuilt"),
        );
        let report = array.scrub(false).expect("scrub");
        assert!(
            report.is_clean(),
            "scrub after rebuild of {victim}: {report:?}"
        );
        assert_eq!(report.rows_skipped, 0);
    }

    // Lose one member more than the level tolerates.
    let lost = level.tolerated_failures(n) + 1;
    for m in 0..lost {
        array.fail_member_forced(m).expect("fail");
    }
    expect_loss(&array, &model, chunk as usize);
}

#[test]
fn raid0_integrity() {
    integrity(RaidLevel::Raid0, 3, 64 << 10, 2 << 20, 1);
}

#[test]
fn raid1_integrity() {
    integrity(RaidLevel::Raid1, 3, 64 << 10, 3 << 20, 2);
}

#[test]
fn raid5_integrity() {
    integrity(RaidLevel::Raid5, 4, 64 << 10, 2 << 20, 3);
}

#[test]
fn raid5_integrity_small_chunks() {
    integrity(RaidLevel::Raid5, 3, 4 << 10, 1 << 20, 4);
}

#[test]
fn raid6_integrity() {
    integrity(RaidLevel::Raid6, 5, 64 << 10, 2 << 20, 5);
}

/// Members through the host's page cache (`MemberIo::Cached`) keep every promise.
#[test]
fn raid5_integrity_through_the_page_cache() {
    integrity_with(RaidLevel::Raid5, 4, 64 << 10, 2 << 20, 7, MemberIo::Cached);
}

#[test]
fn raid6_integrity_through_the_page_cache() {
    integrity_with(RaidLevel::Raid6, 5, 16 << 10, 1 << 20, 8, MemberIo::Cached);
}

/// RAID 6 survives every pair of missing members: two data, data + P, data + Q, P + Q.
#[test]
fn raid6_every_pair_of_failures() {
    let dir = TempDir::new("raid6pairs");
    let n = 5;
    let per_member = 512 << 10;
    let paths = dir.members("m", n, DATA_OFFSET + per_member);
    let array = RaidArray::create(
        &paths,
        &RaidConfig::new(RaidLevel::Raid6).chunk_size(16 << 10),
    )
    .expect("create");
    let mut rng = Rng::new(6);
    let mut model = fill(&array, &mut rng);
    for a in 0..n {
        for b in a + 1..n {
            array.fail_member(a).expect("fail a");
            array.fail_member(b).expect("fail b");
            verify(&array, &model, &mut rng, &format!("members {a},{b} failed"));
            // Aligned: rows missing data and Q solved in place, the others generally.
            verify_aligned(
                &array,
                &model,
                &mut rng,
                30,
                &format!("members {a},{b} failed"),
            );
            scribble(&array, &mut rng, &mut model, 5);
            verify(
                &array,
                &model,
                &mut rng,
                &format!("written with {a},{b} failed"),
            );
            verify_aligned(
                &array,
                &model,
                &mut rng,
                30,
                &format!("written, {a},{b} failed"),
            );
            for m in [a, b] {
                let fresh = dir.file(&format!("r{a}{b}-{m}"), DATA_OFFSET + per_member);
                array.replace_member(m, &fresh).expect("replace");
            }
            rebuild(&array);
            verify(
                &array,
                &model,
                &mut rng,
                &format!("members {a},{b} rebuilt"),
            );
            assert!(array.scrub(false).expect("scrub").is_clean());
        }
    }
}

/// A degraded array reassembles with a slot empty, and a rebuild interrupted by a restart
/// resumes where it stopped.
#[test]
fn degraded_assembly_and_rebuild_resume() {
    let dir = TempDir::new("resume");
    let per_member = 4 << 20;
    let paths = dir.members("m", 3, DATA_OFFSET + per_member);
    let array = RaidArray::create(
        &paths,
        &RaidConfig::new(RaidLevel::Raid5).chunk_size(4 << 10),
    )
    .expect("create");
    let mut rng = Rng::new(7);
    let model = fill(&array, &mut rng);
    array.fail_member(1).expect("fail");
    drop(array);

    let mut slots: Vec<Option<std::path::PathBuf>> = paths.iter().cloned().map(Some).collect();
    slots[1] = None;
    let array = RaidArray::open_degraded(&slots).expect("assemble degraded");
    assert!(array.is_degraded());
    verify(&array, &model, &mut rng, "assembled degraded");
    let fresh = dir.file("fresh", DATA_OFFSET + per_member);
    array.replace_member(1, &fresh).expect("replace");
    // Stop the rebuild half-way by failing the progress callback's thread: run it on a
    // thread that panics once half is done.
    let array = std::sync::Arc::new(array);
    let a2 = array.clone();
    let res = std::thread::spawn(move || {
        a2.rebuild(|done, total| {
            assert!(done < total / 2, "stop the rebuild half-way");
        })
    })
    .join();
    assert!(res.is_err(), "the rebuild should have been interrupted");
    let status = array.status();
    assert_eq!(status[1].state, SlotState::Rebuilding);
    drop(array);

    slots[1] = Some(fresh);
    let array = RaidArray::open_degraded(&slots).expect("reassemble");
    let resumed_at = array.status()[1].rebuilt;
    assert!(resumed_at > 0, "checkpoint was not kept");
    let mut first = None;
    array
        .rebuild(|done, _| {
            first.get_or_insert(done);
        })
        .expect("resume");
    assert!(first.unwrap_or(0) > resumed_at, "rebuild started over");
    verify(&array, &model, &mut rng, "resumed rebuild");
    assert!(array.scrub(false).expect("scrub").is_clean());
}

/// A member whose I/O starts failing is taken out on its own, reads are reconstructed,
/// and a throttled rebuild onto a replacement respects its rate.
#[test]
fn io_errors_fail_the_member_and_throttled_rebuild() {
    let dir = TempDir::new("ioerr");
    let per_member = 1 << 20;
    let paths = dir.members("m", 3, DATA_OFFSET + per_member);
    let array = RaidArray::create(
        &paths,
        &RaidConfig::new(RaidLevel::Raid5).chunk_size(16 << 10),
    )
    .expect("create");
    let mut rng = Rng::new(8);
    let model = fill(&array, &mut rng);
    // The "disk" shrinks under the array: every read of its data area now fails.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&paths[2])
        .and_then(|f| f.set_len(DATA_OFFSET))
        .expect("truncate member");
    verify(&array, &model, &mut rng, "member 2 erroring");
    assert_eq!(array.status()[2].state, SlotState::Failed);
    assert!(array.is_degraded());
    // The failure is on record: reassembled with the broken member present, the slot
    // stays failed and its stale contents are never trusted.
    drop(array);
    let array = RaidArray::open(&paths).expect("reassemble");
    assert_eq!(array.status()[2].state, SlotState::Failed);
    verify(&array, &model, &mut rng, "reassembled without member 2");
    let fresh = dir.file("fresh", DATA_OFFSET + per_member);
    array.replace_member(2, &fresh).expect("replace");
    let start = std::time::Instant::now();
    let opts = vessel_raid::RebuildOptions {
        max_bytes_per_sec: Some(4 << 20),
    };
    array.rebuild_with(&opts, |_, _| {}).expect("rebuild");
    // About 1 MiB at 4 MiB/s.
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    verify(&array, &model, &mut rng, "rebuilt after I/O errors");
    assert!(array.scrub(false).expect("scrub").is_clean());
}

/// Requests aligned to 4 KiB from 4 KiB-aligned buffers go to and from the members without
/// a copy (one vectored I/O per member run, under `O_DIRECT`): whole rows, partial rows and
/// single blocks, written and read back at every level, whole and with a member failed.
#[test]
fn aligned_requests_from_aligned_buffers_read_back_right() {
    use vessel_raid::member::AlignedBuf;
    let chunk = 16u64 << 10;
    for (level, n) in [
        (RaidLevel::Raid0, 4),
        (RaidLevel::Raid1, 2),
        (RaidLevel::Raid5, 4),
        (RaidLevel::Raid6, 5),
    ] {
        let dir = TempDir::new("aligned");
        let paths = dir.members("m", n, DATA_OFFSET + (1 << 20));
        let config = RaidConfig::new(level).chunk_size(chunk);
        let array = RaidArray::create(&paths, &config).expect("create");
        let size = array.size() as usize;
        let mut rng = Rng::new(7 + n as u64);
        let mut model = vec![0u8; size];
        // The whole array, then aligned spans of 1 to 40 blocks anywhere.
        let mut whole = AlignedBuf::new(size);
        rng.fill(whole.as_mut_slice());
        array.write_at(0, whole.as_slice()).expect("write all");
        model.copy_from_slice(whole.as_slice());
        for _ in 0..60 {
            let blocks = 1 + rng.below(40) as usize;
            let off = rng.below((size / 4096 - blocks) as u64) as usize * 4096;
            let mut data = AlignedBuf::new(blocks * 4096);
            rng.fill(data.as_mut_slice());
            array.write_at(off as u64, data.as_slice()).expect("write");
            model[off..off + data.len()].copy_from_slice(data.as_slice());
        }
        array.flush().expect("flush");
        let check = |what: &str| {
            let what = format!("{level:?} {what}");
            verify_aligned(&array, &model, &mut Rng::new(99), 60, &what);
        };
        check("whole");
        assert!(array.scrub(false).expect("scrub").is_clean());
        if level != RaidLevel::Raid0 {
            array.fail_member(1).expect("fail");
            check("degraded");
        }
    }
}
