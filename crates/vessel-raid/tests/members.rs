//! Member I/O: `O_DIRECT` where the file system takes it, buffered where it refuses.

mod common;

use std::path::Path;

use common::{Rng, TempDir, DATA_OFFSET};
use vessel_raid::member::Member;
use vessel_raid::{RaidArray, RaidConfig, RaidLevel};

fn round_trip(paths: &[std::path::PathBuf]) {
    let array = RaidArray::create(paths, &RaidConfig::new(RaidLevel::Raid5)).expect("create");
    let mut data = vec![0u8; 300_001];
    Rng::new(21).fill(&mut data);
    array.write_at(777, &data).expect("write");
    array.flush().expect("flush");
    drop(array);
    let array = RaidArray::open(paths).expect("reopen");
    let mut back = vec![0u8; data.len()];
    array.read_at(777, &mut back).expect("read");
    assert!(back == data);
}

#[test]
fn members_on_ext4_use_direct_io() {
    let dir = TempDir::new("direct");
    let paths = dir.members("m", 3, DATA_OFFSET + (1 << 20));
    assert!(
        Member::open(&paths[0]).expect("open").is_direct(),
        "{} refused O_DIRECT; the test expects a file system that takes it",
        dir.path().display()
    );
    round_trip(&paths);
}

/// tmpfs takes `O_DIRECT` since Linux 6.6 and refused it before; either way the array
/// works on it (the buffered path itself is covered by the unit tests in `member.rs`).
#[test]
fn members_on_tmpfs_work() {
    let shm = Path::new("/dev/shm");
    assert!(shm.is_dir(), "/dev/shm (tmpfs) is needed for this test");
    let dir = TempDir::new_in(shm, "tmpfs");
    let paths = dir.members("m", 3, DATA_OFFSET + (1 << 20));
    round_trip(&paths);
}
