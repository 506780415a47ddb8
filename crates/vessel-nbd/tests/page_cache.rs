//! What the file export leaves in the host's page cache: a large write's pages in small
//! folios, so that later 4 KiB writes into them stay cheap.
//!
//! The page cache keeps a buffered write's pages in folios as large as the write (on kernels
//! whose file system takes large folios, ext4 since Linux 6.16 or so), and ext4 walks every
//! block of a folio on each later write into it. Measured here with the folio sizes the
//! kernel reports for the file's cached pages (`/proc/kpageflags`, read as root).

use std::fs::File;
use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use vessel_nbd::{BlockDevice as _, FileDevice};

/// A file removed on drop, also when the test fails.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).expect("page size")
}

/// Reads the 8-byte entry `index` of a `/proc` table (`pagemap`, `kpageflags`).
fn entry(table: &File, index: u64) -> u64 {
    let mut b = [0u8; 8];
    table
        .read_exact_at(&mut b, index * 8)
        .expect("read /proc table");
    u64::from_ne_bytes(b)
}

/// A folio holding cached pages of a file.
struct Folio {
    /// Its first page's index in the file.
    first: usize,
    /// Its size in pages.
    pages: usize,
    /// Its first page's `/proc/kpageflags` entry.
    flags: u64,
}

/// `/proc/kpageflags`: the page is dirty (not yet written back).
const KPF_DIRTY: u64 = 1 << 4;

/// The sizes, in pages, of the folios holding `path`'s cached pages, in file order.
fn folio_sizes(path: &Path) -> Vec<usize> {
    cached_folios(path).iter().map(|f| f.pages).collect()
}

/// The folios holding `path`'s cached pages, in file order.
fn cached_folios(path: &Path) -> Vec<Folio> {
    const PRESENT: u64 = 1 << 63;
    const PFN: u64 = (1 << 55) - 1;
    const COMPOUND_TAIL: u64 = 1 << 16;
    let pg = page_size();
    let file = File::open(path).expect("open");
    let len = usize::try_from(file.metadata().expect("stat").len()).expect("size");
    let pages = len.div_ceil(pg);
    // SAFETY: a new shared read-only mapping of a file this test owns, unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap");
    let mut resident = vec![0u8; pages];
    assert_eq!(
        // SAFETY: the mapping is `len` bytes; the vector has one byte per page.
        unsafe { libc::mincore(map, len, resident.as_mut_ptr()) },
        0,
        "mincore"
    );
    let pagemap = File::open("/proc/self/pagemap").expect("open /proc/self/pagemap");
    let kpageflags = File::open("/proc/kpageflags")
        .expect("open /proc/kpageflags (the test runs as root: the folio sizes come from there)");
    let mut folios: Vec<Folio> = Vec::new();
    for (i, r) in resident.iter().enumerate() {
        if r & 1 == 0 {
            continue;
        }
        let addr = map as usize + i * pg;
        // SAFETY: a page of the mapping that is in the page cache; reading it maps it
        // without reading the disk.
        unsafe { std::ptr::read_volatile(addr as *const u8) };
        let e = entry(&pagemap, (addr / pg) as u64);
        assert!(e & PRESENT != 0, "page {i} cached but not mapped");
        let pfn = e & PFN;
        assert_ne!(
            pfn, 0,
            "/proc/self/pagemap hides frame numbers (needs root)"
        );
        let flags = entry(&kpageflags, pfn);
        match folios.last_mut() {
            Some(f) if flags & COMPOUND_TAIL != 0 => f.pages += 1,
            _ => folios.push(Folio {
                first: i,
                pages: 1,
                flags,
            }),
        }
    }
    // SAFETY: the mapping made above, no longer used.
    unsafe { libc::munmap(map, len) };
    folios
}

/// A path in `/var/tmp` for a file of this test, on a disk file system (tmpfs has folios of
/// its own, and no writeback).
fn disk_temp(name: &str) -> TempFile {
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
    TempFile(var_tmp.join(format!("vessel-nbd-{name}-{}", std::process::id())))
}

fn random(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    File::open("/dev/urandom")
        .and_then(|mut r| r.read_exact(&mut data))
        .expect("random data");
    data
}

/// A client's 1 MiB write (as `nbdcopy` or a guest's large write) is cached in folios of at
/// most 64 KiB; a 4 KiB write into a 256 KiB folio cost the server 15–18 µs of CPU, into a
/// 64 KiB one 11–12.6 (measured in alternating rounds).
#[test]
fn a_large_write_is_cached_in_small_folios() {
    let path = disk_temp("folios");
    let dev = FileDevice::create(&path.0, 4 << 20).expect("create");
    let data = random(1 << 20);
    dev.write_at(&data, 1 << 20).expect("write");
    let sizes = folio_sizes(&path.0);
    let cached: usize = sizes.iter().sum();
    assert_eq!(
        cached * page_size(),
        1 << 20,
        "the written MiB is in the page cache, and only it"
    );
    let largest = sizes.iter().max().copied().unwrap_or(0) * page_size();
    // The same write made in one piece, for comparison: on a kernel whose ext4 takes large
    // folios, folios as large as the write.
    let control = disk_temp("folios-one-piece");
    let f = File::create(&control.0).expect("create");
    f.set_len(4 << 20).expect("size");
    f.write_all_at(&data, 1 << 20).expect("write");
    let one_piece = folio_sizes(&control.0).into_iter().max().unwrap_or(0) * page_size();
    assert!(
        largest <= 64 << 10,
        "a folio of {largest} bytes after a 1 MiB write (folios: {sizes:?} pages; the same \
         write in one piece: folios up to {one_piece} bytes)"
    );
    if one_piece <= 64 << 10 {
        eprintln!(
            "note: this kernel caches even a 1 MiB write made in one piece in folios of at \
             most {one_piece} bytes; the pieces make no difference here"
        );
    }
}

/// Measurements taken at most, 100 ms apart, while something else writes the file system back.
const TRIES: usize = 50;

/// A copy's stream of large writes has the kernel start writing its pages back once per
/// 4 MiB written, not after every request: what is written back is no longer dirty, and
/// the stream's last, partial batch still is (a flush, or the kernel, writes it later).
#[test]
fn a_stream_of_large_writes_goes_to_writeback_in_batches() {
    let pg = page_size();
    let batch = (4 << 20) / pg;
    // Dirty pages of `path` before and from page `batch`, and cached pages in all.
    let dirty = |path: &Path| {
        let (mut before, mut after, mut cached) = (0, 0, 0);
        for f in cached_folios(path) {
            cached += f.pages;
            if f.flags & KPF_DIRTY == 0 {
                continue;
            }
            for page in f.first..f.first + f.pages {
                if page < batch {
                    before += 1;
                } else {
                    after += 1;
                }
            }
        }
        (before, after, cached)
    };
    let data = random(6 << 20);
    // Something else may write the whole file system back meanwhile (another test's
    // `syncfs`, the kernel's flusher): a file written in small pieces first, which this
    // device leaves to the page cache, shows it when it is no longer all dirty after the
    // measurement; then the measurement is taken again.
    for _ in 0..TRIES {
        let path = disk_temp("writeback");
        let control = disk_temp("writeback-control");
        let small = FileDevice::create(&control.0, 8 << 20).expect("create");
        let dev = FileDevice::create(&path.0, 8 << 20).expect("create");
        for (i, piece) in data.chunks(32 << 10).enumerate() {
            small.write_at(piece, i as u64 * (32 << 10)).expect("write");
        }
        for (i, piece) in data.chunks(256 << 10).enumerate() {
            dev.write_at(piece, i as u64 * (256 << 10)).expect("write");
        }
        let (before, after, cached) = dirty(&path.0);
        let (c_before, c_after, _) = dirty(&control.0);
        if (c_before + c_after) * pg != 6 << 20 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        }
        assert_eq!(cached * pg, 6 << 20, "the written 6 MiB are cached");
        assert_eq!(
            before, 0,
            "pages of the first 4 MiB still dirty: their writeback did not start"
        );
        assert_eq!(
            after * pg,
            2 << 20,
            "of the last 2 MiB, only {after} pages are dirty: writeback started before the \
             batch was complete"
        );
        return;
    }
    panic!(
        "in {TRIES} tries, the file written in 32 KiB pieces (no early writeback) was written back \
         from outside before it could be measured: something keeps syncing /var/tmp"
    );
}
