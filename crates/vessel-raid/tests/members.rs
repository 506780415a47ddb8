//! Member I/O: `O_DIRECT` where the file system takes it, buffered where it refuses.

mod common;

use std::path::Path;

use common::{Rng, TempDir, DATA_OFFSET};
use vessel_raid::member::Member;
use vessel_raid::{MemberIo, RaidArray, RaidConfig, RaidLevel};

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

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).expect("page size")
}

/// Pages of `path` in the host's page cache, and of all its pages.
fn cached_pages(path: &Path) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).expect("open");
    let len = f.metadata().expect("stat").len() as usize;
    let pages = len.div_ceil(page_size());
    // SAFETY: a read-only shared mapping of an open file, unmapped below; never touched,
    // only asked about with mincore.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED, "mmap {}", path.display());
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` has one byte per page of the mapping.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(addr, len) };
    assert_eq!(rc, 0, "mincore {}", path.display());
    (vec.iter().filter(|b| *b & 1 != 0).count(), pages)
}

/// A pool created through the page cache leaves nothing of its initial sync there: those
/// pages, read sequentially, would stay cached in large folios, and every later 4 KiB write
/// into one costs the file system a walk over all its blocks.
#[test]
fn creation_through_the_page_cache_leaves_the_members_uncached() {
    // On a disk file system: tmpfs pages are the files themselves and are never dropped.
    let var_tmp = Path::new("/var/tmp");
    // SAFETY: statfs is plain data; all zeroes is a valid value.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statfs the call fills.
    let rc = unsafe { libc::statfs(c"/var/tmp".as_ptr(), &mut fs) };
    assert_eq!(rc, 0, "statfs /var/tmp");
    assert_ne!(
        fs.f_type,
        libc::TMPFS_MAGIC,
        "/var/tmp is a tmpfs; this test needs a disk file system there"
    );
    let dir = TempDir::new_in(var_tmp, "uncached");
    let paths = dir.members("m", 3, DATA_OFFSET + (16 << 20));
    let config = RaidConfig::new(RaidLevel::Raid5).member_io(MemberIo::Cached);
    let array = RaidArray::create(&paths, &config).expect("create");
    assert!(array.status().iter().all(|m| !m.direct), "buffered members");
    for p in &paths {
        let (cached, pages) = cached_pages(p);
        assert!(
            cached * 50 < pages,
            "{}: {cached} of {pages} pages left in the page cache by the creation",
            p.display()
        );
    }
    // What is written afterwards is cached as usual (and seen so by this measure).
    let mut data = vec![0u8; 8 << 20];
    Rng::new(5).fill(&mut data);
    array.write_at(0, &data).expect("write");
    let cached: usize = paths.iter().map(|p| cached_pages(p).0).sum();
    assert!(
        cached >= data.len() / page_size(),
        "{cached} pages cached after writing 8 MiB through the page cache"
    );
}
