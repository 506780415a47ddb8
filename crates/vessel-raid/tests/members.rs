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

/// Pages of all of `paths` in the host's page cache, and of all their pages.
fn cached_in(paths: &[std::path::PathBuf]) -> (usize, usize) {
    paths
        .iter()
        .map(|p| cached_pages(p))
        .fold((0, 0), |(c, n), (c1, n1)| (c + c1, n + n1))
}

/// A scratch directory under `/var/tmp`, on a disk file system: tmpfs pages are the files
/// themselves, never dropped nor read past.
fn on_disk(name: &str) -> TempDir {
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
    TempDir::new_in(Path::new("/var/tmp"), name)
}

/// Drops `path`'s clean pages from the page cache.
fn drop_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).expect("open");
    // SAFETY: an open descriptor; the advice only drops clean cached pages.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise {}", path.display());
}

/// A scrub of members read and written through the page cache reads them past it: it
/// checks what is on the disk, leaves nothing new cached (instances' cached data stays,
/// and no large folios of a sequential read are left behind), and still sees every write
/// made through the cache, flushed or not (the kernel writes a range's dirty pages back
/// before an `O_DIRECT` read of it).
#[test]
fn a_scrub_of_page_cached_members_reads_them_past_the_cache() {
    let dir = on_disk("scrub-cache");
    let paths = dir.members("m", 3, DATA_OFFSET + (16 << 20));
    let config = RaidConfig::new(RaidLevel::Raid5).member_io(MemberIo::Cached);
    let array = RaidArray::create(&paths, &config).expect("create");
    // Written, not flushed: in the page cache only. A scrub that missed it would find the
    // checksums of the new data against the zeroes on the disk.
    let mut data = vec![0u8; 8 << 20];
    Rng::new(9).fill(&mut data);
    array.write_at(0, &data).expect("write");
    let report = array.scrub(false).expect("scrub");
    assert!(report.is_clean() && report.rows_checked > 0, "{report:?}");
    array.flush().expect("flush");
    for p in &paths {
        drop_cache(p);
    }
    let before = cached_in(&paths).0;
    let report = array.scrub(false).expect("scrub");
    assert!(report.is_clean(), "{report:?}");
    let (after, pages) = cached_in(&paths);
    // Not one page more: the checksum blocks it checks against are read past the cache too.
    assert!(
        after <= before,
        "the scrub left {after} pages cached ({before} before, of {pages})"
    );
    // A member's bytes changed behind the array (through the cache, not yet on the disk):
    // the scrub sees them.
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&paths[1])
        .expect("open");
    f.write_all_at(&[0x5a; 4096], DATA_OFFSET + 8192)
        .expect("write");
    let report = array.scrub(false).expect("scrub");
    assert!(
        report.mismatches.iter().any(|m| m.members == vec![1]),
        "{report:?}"
    );
}

/// A rebuild of a member read and written through the page cache reads the survivors past
/// it: their cached pages stay as they were; the rebuilt member is right.
#[test]
fn a_rebuild_of_page_cached_members_reads_the_survivors_past_the_cache() {
    let dir = on_disk("rebuild-cache");
    let size = DATA_OFFSET + (16 << 20);
    let paths = dir.members("m", 3, size);
    let config = RaidConfig::new(RaidLevel::Raid5).member_io(MemberIo::Cached);
    let array = RaidArray::create(&paths, &config).expect("create");
    let mut data = vec![0u8; array.size() as usize];
    Rng::new(10).fill(&mut data);
    array.write_at(0, &data).expect("write");
    array.flush().expect("flush");
    for p in &paths {
        drop_cache(p);
    }
    array.fail_member(2).expect("fail");
    let new = dir.file("new2", size);
    array.replace_member(2, &new).expect("replace");
    let before = cached_in(&paths[..2]).0;
    array.rebuild(|_, _| {}).expect("rebuild");
    let (after, pages) = cached_in(&paths[..2]);
    // A margin of a few pages: the superblocks the rebuild writes to every member.
    assert!(
        after <= before + 8,
        "the rebuild left {after} survivor pages cached ({before} before, of {pages})"
    );
    // The new member, written whole and synced, is not left in the cache either.
    let (cached, pages) = cached_pages(&new);
    assert!(
        cached <= pages / 256,
        "the rebuild left {cached} of the new member's {pages} pages cached"
    );
    assert!(array.scrub(false).expect("scrub").is_clean());
    drop(array);
    let mut fixed = paths.clone();
    fixed[2] = new;
    let fixed: Vec<Option<std::path::PathBuf>> = fixed.into_iter().map(Some).collect();
    let array = RaidArray::open_with(&fixed, MemberIo::Cached).expect("reopen");
    array.fail_member(0).expect("fail");
    let mut back = vec![0u8; data.len()];
    array.read_at(0, &mut back).expect("read");
    assert!(back == data, "the rebuilt member's data is wrong");
}

/// A pool created through the page cache leaves nothing of its initial sync there: those
/// pages, read sequentially, would stay cached in large folios, and every later 4 KiB write
/// into one costs the file system a walk over all its blocks.
#[test]
fn creation_through_the_page_cache_leaves_the_members_uncached() {
    let dir = on_disk("uncached");
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
    let cached = cached_in(&paths).0;
    assert!(
        cached >= data.len() / page_size(),
        "{cached} pages cached after writing 8 MiB through the page cache"
    );
}
