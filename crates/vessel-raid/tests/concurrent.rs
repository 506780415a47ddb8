//! Concurrent requests: writer threads on overlapping and separate rows while a rebuild runs
//! (with its read-ahead) and while members fail; every byte ends as the last write left it,
//! the rebuilt member carries it, and scrub finds parity, mirrors and checksums consistent.

mod common;

use std::sync::{Arc, Mutex};

use common::{Rng, TempDir, DATA_OFFSET};
use vessel_raid::{RaidArray, RaidConfig, RaidLevel, SlotState};

const CHUNK: u64 = 16 << 10;
const PER_MEMBER: u64 = 6 << 20;
const THREADS: u64 = 4;

fn read_all(array: &RaidArray) -> Vec<u8> {
    let mut buf = vec![0u8; array.size() as usize];
    array.read_at(0, &mut buf).expect("read");
    buf
}

/// `THREADS` threads write random 4 KiB blocks (thread `t` owns the blocks `b % THREADS ==
/// t`, so writes of different threads share rows and stripes but no byte); each updates the
/// shared model after its write returns.
fn hammer(array: &Arc<RaidArray>, model: &Arc<Mutex<Vec<u8>>>, writes: u64, seed: u64) {
    let size = array.size();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (array, model) = (array.clone(), model.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed * 100 + t);
                for _ in 0..writes {
                    let blocks = size / 4096;
                    let b = rng.below(blocks / THREADS) * THREADS + t;
                    let mut data = vec![0u8; 4096];
                    rng.fill(&mut data);
                    array.write_at(b * 4096, &data).expect("concurrent write");
                    model.lock().expect("model")[(b * 4096) as usize..][..4096]
                        .copy_from_slice(&data);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer thread");
    }
}

#[test]
fn writers_during_a_rebuild_lose_nothing_and_the_rebuilt_member_carries_their_data() {
    for (level, n) in [
        (RaidLevel::Raid1, 2),
        (RaidLevel::Raid5, 4),
        (RaidLevel::Raid6, 5),
    ] {
        let dir = TempDir::new("concurrent");
        let paths = dir.members("m", n, DATA_OFFSET + PER_MEMBER);
        let array = Arc::new(
            RaidArray::create(&paths, &RaidConfig::new(level).chunk_size(CHUNK)).expect("create"),
        );
        let mut start = vec![0u8; array.size() as usize];
        Rng::new(5).fill(&mut start);
        array.write_at(0, &start).expect("fill");
        let model = Arc::new(Mutex::new(start));
        // Degraded writes from several threads, then a rebuild with writers running.
        array.fail_member(1).expect("fail");
        hammer(&array, &model, 150, 1);
        let fresh = dir.file("fresh", DATA_OFFSET + PER_MEMBER);
        array.replace_member(1, &fresh).expect("replace");
        let rebuild = {
            let array = array.clone();
            std::thread::spawn(move || array.rebuild(|_, _| {}))
        };
        hammer(&array, &model, 300, 2);
        rebuild.join().expect("rebuild thread").expect("rebuild");
        assert_eq!(array.status()[1].state, SlotState::Active, "{level:?}");
        let want = model.lock().expect("model").clone();
        assert!(
            read_all(&array) == want,
            "{level:?}: data differs after the rebuild"
        );
        let report = array.scrub(false).expect("scrub");
        assert!(report.is_clean(), "{level:?}: {report:?}");
        // The rebuilt member is read from: take out another one.
        array.fail_member(0).expect("fail another");
        assert!(
            read_all(&array) == want,
            "{level:?}: the rebuilt member is wrong"
        );
        // And after a clean close and reassembly.
        drop(array);
        let mut slots: Vec<Option<std::path::PathBuf>> = paths.iter().cloned().map(Some).collect();
        slots[1] = Some(fresh);
        let array = RaidArray::open_degraded(&slots).expect("reassemble");
        assert!(
            read_all(&array) == want,
            "{level:?}: data differs after reassembly"
        );
    }
}
