//! Crash consistency: a child process writes hard and is killed with SIGKILL at random
//! points; after every kill the array reassembles, every acknowledged (flushed) write reads
//! back, no slot holds a torn mix, and parity and checksums are consistent.
//!
//! The child is this same test binary re-executed with `VESSEL_RAID_CRASH_DIR` set; in a
//! normal run `crash_child` sees no such variable and returns at once.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Rng, TempDir, DATA_OFFSET};
use vessel_raid::{RaidArray, RaidConfig, RaidLevel};

const SLOT: usize = 12 << 10;
const CHUNK: u64 = 16 << 10;
const MEMBERS: usize = 4;
const ENV_DIR: &str = "VESSEL_RAID_CRASH_DIR";
const ENV_SEED: &str = "VESSEL_RAID_CRASH_SEED";

fn member_paths(dir: &Path) -> Vec<PathBuf> {
    (0..MEMBERS).map(|i| dir.join(format!("m{i}"))).collect()
}

/// Contents of write `id`: the id, then pseudo-random bytes derived from it.
fn contents(id: u64) -> Vec<u8> {
    let mut buf = vec![0u8; SLOT];
    Rng::new(id).fill(&mut buf);
    buf[..8].copy_from_slice(&id.to_le_bytes());
    buf
}

/// Slots are 12 KiB at 16 KiB steps so a slot never straddles a chunk and several slots
/// share a row (partial-stripe writes: the write hole's home ground).
fn slot_offset(slot: u64) -> u64 {
    slot * (16 << 10) + 2048
}

#[test]
fn crash_child() {
    let (Ok(dir), Ok(seed)) = (std::env::var(ENV_DIR), std::env::var(ENV_SEED)) else {
        return;
    };
    let seed: u64 = seed.parse().expect("seed");
    let dir = PathBuf::from(dir);
    let array = RaidArray::open(&member_paths(&dir)).expect("child open");
    let slots = array.size() / (16 << 10);
    let mut acks = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("acks"))
        .expect("acks");
    let mut rng = Rng::new(seed);
    for batch in 0..100_000u64 {
        let mut ids = Vec::new();
        for i in 0..6 {
            let id = seed * 1_000_000 + batch * 8 + i + 1;
            let slot = rng.below(slots);
            array
                .write_at(slot_offset(slot), &contents(id))
                .expect("write");
            ids.push((id, slot));
        }
        array.flush().expect("flush");
        let line: String = ids.iter().map(|(id, s)| format!("{id} {s}\n")).collect();
        acks.write_all(line.as_bytes()).expect("ack");
        acks.sync_data().expect("ack sync");
    }
}

/// Writer threads of the concurrent child; thread `t` owns the slots `s % THREADS == t`,
/// so each slot's newest acknowledged write is well defined.
const THREADS: u64 = 4;
const ENV_CONCURRENT: &str = "VESSEL_RAID_CRASH_CONCURRENT";

#[test]
fn crash_child_concurrent() {
    let (Ok(dir), Ok(seed), Ok(_)) = (
        std::env::var(ENV_DIR),
        std::env::var(ENV_SEED),
        std::env::var(ENV_CONCURRENT),
    ) else {
        return;
    };
    let seed: u64 = seed.parse().expect("seed");
    let dir = PathBuf::from(dir);
    let array = RaidArray::open(&member_paths(&dir)).expect("child open");
    let slots = array.size() / (16 << 10);
    let acks = std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("acks"))
            .expect("acks"),
    );
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (array, acks) = (&array, &acks);
            s.spawn(move || {
                let mut rng = Rng::new(seed * 31 + t);
                for batch in 0..100_000u64 {
                    let mut ids = Vec::new();
                    for i in 0..3 {
                        let id = (seed * 1_000_000 + batch * 8 + i + 1) * THREADS + t;
                        let slot = rng.below(slots / THREADS) * THREADS + t;
                        array
                            .write_at(slot_offset(slot), &contents(id))
                            .expect("write");
                        ids.push((id, slot));
                    }
                    array.flush().expect("flush");
                    let line: String = ids.iter().map(|(id, s)| format!("{id} {s}\n")).collect();
                    let mut f = acks.lock().expect("acks lock");
                    f.write_all(line.as_bytes()).expect("ack");
                    f.sync_data().expect("ack sync");
                }
            });
        }
    });
}

/// Kills children at random points and checks what they acknowledged; `concurrent` runs the
/// child with several writer threads.
fn kill_and_check(level: RaidLevel, iterations: u64, concurrent: bool) {
    let dir = TempDir::new("crash");
    let paths = dir.members("m", MEMBERS, DATA_OFFSET + (1 << 20));
    let array =
        RaidArray::create(&paths, &RaidConfig::new(level).chunk_size(CHUNK)).expect("create");
    let slots = array.size() / (16 << 10);
    drop(array);
    std::fs::write(dir.path().join("acks"), b"").expect("acks");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = Rng::new(99);
    let mut total_acked = 0;
    let child_test = if concurrent {
        "crash_child_concurrent"
    } else {
        "crash_child"
    };
    for iteration in 1..=iterations {
        let mut cmd = Command::new(&exe);
        cmd.args([child_test, "--exact", "--nocapture", "--test-threads=1"])
            .env(ENV_DIR, dir.path())
            .env(ENV_SEED, iteration.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if concurrent {
            cmd.env(ENV_CONCURRENT, "1");
        }
        let mut child = cmd.spawn().expect("spawn child");
        std::thread::sleep(Duration::from_millis(20 + rng.below(120)));
        child.kill().expect("kill child");
        child.wait().expect("reap child");

        // Newest acknowledged write of every slot.
        let acks = std::fs::read_to_string(dir.path().join("acks")).expect("acks");
        let mut last = vec![0u64; slots as usize];
        let mut count = 0;
        for line in acks.lines() {
            let mut it = line.split(' ').map(|v| v.parse::<u64>());
            // A line cut by the kill is not an acknowledgement.
            if let (Some(Ok(id)), Some(Ok(slot)), None) = (it.next(), it.next(), it.next()) {
                if (slot as usize) < last.len() {
                    last[slot as usize] = last[slot as usize].max(id);
                    count += 1;
                }
            }
        }
        total_acked = count;

        let array = RaidArray::open(&paths).expect("reassemble after kill");
        let report = array.scrub(false).expect("scrub");
        assert!(
            report.is_clean(),
            "{level:?} iteration {iteration}: {report:?}"
        );
        for (slot, &acked) in last.iter().enumerate() {
            let mut buf = vec![0u8; SLOT];
            array
                .read_at(slot_offset(slot as u64), &mut buf)
                .expect("read slot");
            let mut id = [0u8; 8];
            id.copy_from_slice(&buf[..8]);
            let id = u64::from_le_bytes(id);
            if id == 0 && acked == 0 && buf.iter().all(|b| *b == 0) {
                continue;
            }
            assert!(
                id >= acked,
                "{level:?} iteration {iteration}: slot {slot} holds write {id}, older than acknowledged {acked}"
            );
            assert!(
                buf == contents(id),
                "{level:?} iteration {iteration}: slot {slot} is torn"
            );
        }
    }
    assert!(total_acked > 0, "the children never acknowledged a write");
}

/// Several writer threads at once, killed 200 times (RAID 6 and RAID 5: partial-stripe
/// writes from different threads into the same rows).
#[test]
fn killed_concurrent_writers_lose_no_acknowledged_write() {
    kill_and_check(RaidLevel::Raid6, 120, true);
    kill_and_check(RaidLevel::Raid5, 80, true);
}

/// One writer, killed at random points.
#[test]
fn killed_writers_lose_no_acknowledged_write() {
    kill_and_check(RaidLevel::Raid6, 15, false);
}
