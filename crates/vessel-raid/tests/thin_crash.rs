//! Crash consistency of thin volumes over RAID 5: a child process writes to and discards
//! extents of two thin volumes, flushes, records what was acknowledged and takes
//! snapshots, and is killed with
//! SIGKILL at random points. After every kill the array must reassemble with parity clean,
//! the pool must open, every acknowledged write must read back untorn, and every recorded
//! snapshot must still hold exactly what it held when it was taken.
//!
//! The child is this same test binary re-executed with `VESSEL_THIN_CRASH_DIR` set; in a
//! normal run `thin_crash_child` sees no such variable and returns at once.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Rng, TempDir, DATA_OFFSET};
use vessel_raid::thin::{ThinOptions, ThinPool, Volume};
use vessel_raid::{RaidArray, RaidConfig, RaidLevel};

const MEMBERS: usize = 3;
const CHUNK: u64 = 16 << 10;
const EXTENT: u64 = 64 << 10;
const VOLUME_SIZE: u64 = 1 << 20;
const SLOT: usize = 12 << 10;
/// Slots are 12 KiB at 16 KiB steps: four share an extent, so copy-on-write of one slot
/// must carry its neighbours along.
const SLOTS: u64 = VOLUME_SIZE / (16 << 10);
const SLOTS_PER_EXTENT: u64 = EXTENT / (16 << 10);
const VOLUMES: [&str; 2] = ["a", "b"];
const ENV_DIR: &str = "VESSEL_THIN_CRASH_DIR";
const ENV_SEED: &str = "VESSEL_THIN_CRASH_SEED";

fn member_paths(dir: &Path) -> Vec<PathBuf> {
    (0..MEMBERS).map(|i| dir.join(format!("m{i}"))).collect()
}

fn slot_offset(slot: u64) -> u64 {
    slot * (16 << 10) + 2048
}

/// Contents of write `id` to `slot` of volume `vol`: the id, the volume, the slot, then
/// pseudo-random bytes derived from the id. Data landing in the wrong place shows.
fn contents(id: u64, vol: u64, slot: u64) -> Vec<u8> {
    let mut buf = vec![0u8; SLOT];
    Rng::new(id).fill(&mut buf);
    buf[..8].copy_from_slice(&id.to_le_bytes());
    buf[8..16].copy_from_slice(&vol.to_le_bytes());
    buf[16..24].copy_from_slice(&slot.to_le_bytes());
    buf
}

fn volume_index(name: &str) -> u64 {
    VOLUMES.iter().position(|v| *v == name).expect("volume") as u64
}

/// The write id a slot holds (0 for zeroes), checking it is whole and its own.
fn slot_id(vol: &Volume, origin: &str, slot: u64, what: &str) -> u64 {
    let mut buf = vec![0u8; SLOT];
    vol.read_at(slot_offset(slot), &mut buf)
        .unwrap_or_else(|e| panic!("{what}: read slot {slot}: {e}"));
    let id = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    if id == 0 {
        assert!(buf.iter().all(|b| *b == 0), "{what}: slot {slot} is torn");
    } else {
        assert!(
            buf == contents(id, volume_index(origin), slot),
            "{what}: slot {slot} is torn or holds another slot's data (id {id})"
        );
    }
    id
}

/// One recorded snapshot: what each slot held when it was taken, and what had been
/// acknowledged by then.
struct Snap {
    name: String,
    volume: String,
    ids: Vec<u64>,
    acked: Vec<u64>,
    zero_ok: Vec<bool>,
}

/// What the acknowledgement log says, taking only complete lines.
#[derive(Default)]
struct Log {
    /// Newest acknowledged write or discard per (volume, slot).
    acked: HashMap<(String, u64), u64>,
    /// Newest discard started (acknowledged or not) per (volume, slot).
    discarding: HashMap<(String, u64), u64>,
    snaps: Vec<Snap>,
    /// Snapshots whose deletion was started: they may or may not exist.
    deleting: HashSet<String>,
}

impl Log {
    fn read(dir: &Path) -> Log {
        let text = std::fs::read_to_string(dir.join("acks")).expect("read acks");
        let mut log = Log::default();
        for line in text.split_inclusive('\n') {
            let Some(line) = line.strip_suffix('\n') else {
                break; // cut by the kill: not an acknowledgement
            };
            let f: Vec<&str> = line.split(' ').collect();
            match f[..] {
                ["w", vol, id, slot] => {
                    let id: u64 = id.parse().expect("id");
                    let e = log
                        .acked
                        .entry((vol.to_string(), slot.parse().expect("slot")))
                        .or_default();
                    *e = (*e).max(id);
                }
                [kind @ ("z" | "Z"), vol, id, extent] => {
                    let id: u64 = id.parse().expect("id");
                    let extent: u64 = extent.parse().expect("extent");
                    let map = if kind == "z" {
                        &mut log.acked
                    } else {
                        &mut log.discarding
                    };
                    for slot in extent * SLOTS_PER_EXTENT..(extent + 1) * SLOTS_PER_EXTENT {
                        let e = map.entry((vol.to_string(), slot)).or_default();
                        *e = (*e).max(id);
                    }
                }
                ["s", name, vol, ids] => {
                    let ids: Vec<u64> = ids.split(',').map(|i| i.parse().expect("id")).collect();
                    assert_eq!(ids.len() as u64, SLOTS);
                    let acked = (0..SLOTS).map(|s| log.acked_id(vol, s)).collect();
                    let zero_ok = (0..SLOTS).map(|s| log.zero_ok(vol, s)).collect();
                    log.snaps.push(Snap {
                        name: name.to_string(),
                        volume: vol.to_string(),
                        ids,
                        acked,
                        zero_ok,
                    });
                }
                ["d", name] => {
                    log.deleting.insert(name.to_string());
                }
                _ => panic!("bad log line {line:?}"),
            }
        }
        log
    }

    fn acked_id(&self, vol: &str, slot: u64) -> u64 {
        self.acked
            .get(&(vol.to_string(), slot))
            .copied()
            .unwrap_or(0)
    }

    /// Whether a slot may read as zeroes: nothing acknowledged, or a discard started after
    /// the newest acknowledgement.
    fn zero_ok(&self, vol: &str, slot: u64) -> bool {
        let acked = self.acked_id(vol, slot);
        let discard = self
            .discarding
            .get(&(vol.to_string(), slot))
            .copied()
            .unwrap_or(0);
        acked == 0 || discard >= acked
    }

    /// Recorded snapshots not being deleted.
    fn live_snaps(&self) -> impl Iterator<Item = &Snap> {
        self.snaps
            .iter()
            .filter(|s| !self.deleting.contains(&s.name))
    }
}

fn open_pool(dir: &Path) -> (Arc<RaidArray>, Arc<ThinPool>) {
    let array = Arc::new(RaidArray::open(&member_paths(dir)).expect("assemble"));
    let pool = Arc::new(ThinPool::open(array.clone()).expect("open pool"));
    (array, pool)
}

#[test]
fn thin_crash_child() {
    let (Ok(dir), Ok(seed)) = (std::env::var(ENV_DIR), std::env::var(ENV_SEED)) else {
        return;
    };
    let seed: u64 = seed.parse().expect("seed");
    let dir = PathBuf::from(dir);
    let (_array, pool) = open_pool(&dir);
    let log = Log::read(&dir);
    let mut acks = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("acks"))
        .expect("acks");
    // A line the last child was killed in the middle of is no acknowledgement (`Log::read`
    // stops there): cut it, or this child's first line would be appended to it.
    let text = std::fs::read(dir.join("acks")).expect("read acks");
    let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        acks.set_len(whole as u64).expect("cut a partial line");
    }
    let mut append = |line: String| {
        acks.write_all(line.as_bytes()).expect("ack");
        acks.sync_data().expect("ack sync");
    };
    // Snapshots a killed child made but did not record, or was deleting, go first.
    let recorded: HashSet<&str> = log.live_snaps().map(|s| s.name.as_str()).collect();
    for v in pool.list().into_iter().filter(|v| v.read_only) {
        if !recorded.contains(v.name.as_str()) {
            pool.delete(&v.name).expect("delete stray snapshot");
        }
    }
    let mut kept: HashMap<&str, Vec<String>> = HashMap::new();
    for s in log.live_snaps() {
        let vol = VOLUMES.iter().find(|v| **v == s.volume).expect("volume");
        kept.entry(vol).or_default().push(s.name.clone());
    }
    let volumes: Vec<Volume> = VOLUMES
        .iter()
        .map(|v| pool.volume(v).expect("volume"))
        .collect();
    let mut rng = Rng::new(seed);
    for batch in 0..100_000u64 {
        let mut line = String::new();
        for i in 0..6 {
            let id = seed * 1_000_000 + batch * 8 + i + 1;
            let v = rng.below(2) as usize;
            if rng.below(8) == 0 {
                // Discard a whole extent; its release must not let a later write in this
                // batch overwrite what the committed metadata still names.
                let extent = rng.below(VOLUME_SIZE / EXTENT);
                append(format!("Z {} {id} {extent}\n", VOLUMES[v]));
                volumes[v]
                    .discard(extent * EXTENT, EXTENT)
                    .expect("discard");
                line += &format!("z {} {id} {extent}\n", VOLUMES[v]);
                continue;
            }
            let slot = rng.below(SLOTS);
            volumes[v]
                .write_at(slot_offset(slot), &contents(id, v as u64, slot))
                .expect("write");
            line += &format!("w {} {id} {slot}\n", VOLUMES[v]);
        }
        volumes[0].flush().expect("flush");
        append(line);

        if batch % 4 == 3 {
            let v = rng.below(2) as usize;
            let vol = VOLUMES[v];
            let names = kept.entry(vol).or_default();
            if names.len() >= 2 {
                let oldest = names.remove(0);
                append(format!("d {oldest}\n"));
                pool.delete(&oldest).expect("delete snapshot");
            }
            let name = format!("{vol}-{seed}-{batch}");
            pool.snapshot(vol, &name).expect("snapshot");
            let snap = pool.volume(&name).expect("snapshot handle");
            let ids: Vec<String> = (0..SLOTS)
                .map(|s| slot_id(&snap, vol, s, "child").to_string())
                .collect();
            append(format!("s {name} {vol} {}\n", ids.join(",")));
            names.push(name);
        }
    }
}

#[test]
fn killed_thin_writers_lose_no_acknowledged_write_or_snapshot() {
    let dir = TempDir::new("thin-crash");
    let paths = dir.members("m", MEMBERS, DATA_OFFSET + (6 << 20));
    let array = RaidArray::create(&paths, &RaidConfig::new(RaidLevel::Raid5).chunk_size(CHUNK))
        .expect("create array");
    let options = ThinOptions {
        extent_size: EXTENT,
        metadata_size: Some(64 << 10),
    };
    let pool = ThinPool::format(Arc::new(array), &options).expect("format");
    for v in VOLUMES {
        pool.create_volume(v, VOLUME_SIZE, "block").expect("create");
    }
    drop(pool);
    std::fs::write(dir.path().join("acks"), b"").expect("acks");

    let exe = std::env::current_exe().expect("test binary");
    let mut rng = Rng::new(7);
    let mut checked_snaps = 0;
    for iteration in 1..=25u64 {
        let mut child = Command::new(&exe)
            .args([
                "thin_crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_DIR, dir.path())
            .env(ENV_SEED, iteration.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        std::thread::sleep(Duration::from_millis(50 + rng.below(250)));
        let early = child.try_wait().expect("poll child");
        assert!(
            early.is_none(),
            "iteration {iteration}: the child stopped on its own: {early:?}"
        );
        child.kill().expect("kill child");
        child.wait().expect("reap child");

        let log = Log::read(dir.path());
        let (array, pool) = open_pool(dir.path());
        let report = array.scrub(false).expect("scrub");
        assert!(report.is_clean(), "iteration {iteration}: {report:?}");
        let usage = pool.usage();
        assert!(usage.used <= usage.total);

        for vol in VOLUMES {
            let v = pool.volume(vol).expect("volume survives");
            for slot in 0..SLOTS {
                let what = format!("iteration {iteration}: volume {vol}");
                let id = slot_id(&v, vol, slot, &what);
                let acked = log.acked_id(vol, slot);
                if id == 0 {
                    assert!(
                        log.zero_ok(vol, slot),
                        "{what}: slot {slot} reads zeroes, acknowledged {acked}"
                    );
                } else {
                    assert!(
                        id >= acked,
                        "{what}: slot {slot} holds write {id}, older than acknowledged {acked}"
                    );
                }
            }
        }
        let existing: HashSet<String> = pool.list().into_iter().map(|v| v.name).collect();
        for snap in log.live_snaps() {
            let what = format!("iteration {iteration}: snapshot {}", snap.name);
            assert!(existing.contains(&snap.name), "{what} is gone");
            let s = pool.volume(&snap.name).expect("snapshot");
            for slot in 0..SLOTS {
                let id = slot_id(&s, &snap.volume, slot, &what);
                assert_eq!(id, snap.ids[slot as usize], "{what}: slot {slot} changed");
                let acked = snap.acked[slot as usize];
                assert!(
                    if id == 0 {
                        snap.zero_ok[slot as usize]
                    } else {
                        id >= acked
                    },
                    "{what}: slot {slot} holds {id}, missing acknowledged {acked}"
                );
            }
            checked_snaps += 1;
        }
    }
    let log = Log::read(dir.path());
    assert!(
        !log.acked.is_empty(),
        "the children never acknowledged a write"
    );
    assert!(checked_snaps > 0, "the children never recorded a snapshot");
}
