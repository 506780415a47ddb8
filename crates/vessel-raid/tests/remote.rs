//! A RAID 1 whose second member is an NBD export (a replicated volume's far copy, as on
//! another host): writes reach both copies before they are acknowledged; the far copy
//! going away leaves the array degraded, after the owner's failure hook confirmed it (and
//! writes held back while it does not); the copy coming back is re-added and only the
//! rows written meanwhile are copied to it; and the far copy alone, assembled where it is,
//! holds every acknowledged write and can take the near one back the same way.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::{Rng, TempDir, DATA_OFFSET};
use vessel_nbd::{BlockDevice, DeviceError, FileDevice, NbdExport, NbdServer, ServerHandle};
use vessel_raid::{RaidArray, RaidConfig, RaidError, RaidLevel, SlotState};

const CHUNK: u64 = 64 << 10;
/// 256 MiB of data per member (and room for the checksums): four of the bitmap's 64 MiB
/// marking groups (sparse files; what is written is the first 32 MiB).
const PER_MEMBER: u64 = 257 << 20;
/// What the tests fill with data.
const FILLED: usize = 32 << 20;

/// A file device that counts the bytes written to it.
struct Counting {
    inner: FileDevice,
    written: Arc<AtomicU64>,
}

impl BlockDevice for Counting {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DeviceError> {
        self.written.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> Result<(), DeviceError> {
        self.inner.flush()
    }
}

/// `file` exported as `far` on a unix socket in `dir`.
struct Far {
    handle: Option<ServerHandle>,
    written: Arc<AtomicU64>,
    socket: PathBuf,
    file: PathBuf,
}

impl Far {
    fn serve(dir: &Path, file: &Path) -> Far {
        let written = Arc::new(AtomicU64::new(0));
        let socket = dir.join("far.sock");
        let mut far = Far {
            handle: None,
            written,
            socket,
            file: file.to_path_buf(),
        };
        far.start();
        far
    }

    fn start(&mut self) {
        let dev = Counting {
            inner: FileDevice::open(&self.file, false).expect("far file"),
            written: self.written.clone(),
        };
        let server = NbdServer::new([NbdExport::new("far", Arc::new(dev))]).expect("server");
        self.handle = Some(server.serve_unix(&self.socket).expect("serve"));
    }

    /// The host of the far copy is gone (its connections close).
    fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }

    fn uri(&self) -> PathBuf {
        PathBuf::from(format!("nbd+unix:///far?socket={}", self.socket.display()))
    }
}

/// The data areas of two members are the same bytes.
fn same_data(a: &Path, b: &Path, size: u64) -> bool {
    let (a, b) = (std::fs::read(a).expect("a"), std::fs::read(b).expect("b"));
    let r = DATA_OFFSET as usize..(DATA_OFFSET + size) as usize;
    a[r.clone()] == b[r]
}

/// A RAID 1 over a file `near` and the file `far` exported over NBD, in a temp dir.
fn pair(tag: &str) -> (TempDir, PathBuf, PathBuf, Far, RaidArray) {
    let dir = TempDir::new(tag);
    let near = dir.file("near", DATA_OFFSET + PER_MEMBER);
    let far_file = dir.file("far", DATA_OFFSET + PER_MEMBER);
    let far = Far::serve(dir.path(), &far_file);
    let array = RaidArray::create(
        &[near.clone(), far.uri()],
        &RaidConfig::new(RaidLevel::Raid1).chunk_size(CHUNK),
    )
    .expect("create over a file and an NBD export");
    (dir, near, far_file, far, array)
}

fn read_all(array: &RaidArray) -> Vec<u8> {
    let mut buf = vec![0u8; array.size() as usize];
    array.read_at(0, &mut buf).expect("read");
    buf
}

#[test]
fn a_far_copy_over_nbd_is_written_synchronously_dropped_and_resynced_by_its_bitmap() {
    let (dir, near, far_file, mut far, array) = pair("remote");
    let size = array.size();
    assert!(size >= 250 << 20, "{size}");
    let failed_seen = Arc::new(Mutex::new(Vec::new()));
    let confirm = Arc::new(AtomicBool::new(true));
    {
        let (seen, confirm) = (failed_seen.clone(), confirm.clone());
        array.on_member_failed(move |m| {
            seen.lock().unwrap().push(m);
            if confirm.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("the cluster does not answer".into())
            }
        });
    }
    let mut model = vec![0u8; size as usize];
    Rng::new(5).fill(&mut model[..FILLED]);
    array.write_at(0, &model[..FILLED]).expect("write");
    // Idle now: the bitmap forgets the regions written so far.
    array.settle().expect("settle");
    // Acknowledged means on both copies.
    assert!(same_data(&near, &far_file, size), "the far copy differs");

    // The far host goes away: a write is held back while the owner cannot record that
    // the far copy is out of date, and goes through once it can.
    confirm.store(false, Ordering::SeqCst);
    far.stop();
    let piece = vec![0x5au8; 256 << 10];
    let at = 4 << 20;
    let e = array.write_at(at, &piece).expect_err("held back");
    assert!(
        matches!(e, RaidError::FailureUnconfirmed { index: 1, .. }),
        "{e}"
    );
    assert_eq!(array.status()[1].state, SlotState::Failed);
    let e = array.flush().expect_err("flush held back too");
    assert!(matches!(e, RaidError::FailureUnconfirmed { .. }), "{e}");
    confirm.store(true, Ordering::SeqCst);
    array
        .write_at(at, &piece)
        .expect("write, degraded, confirmed");
    model[at as usize..at as usize + piece.len()].copy_from_slice(&piece);
    // More writes while it is out, in two other places, across a flush interval: the
    // bitmap keeps their regions while the array is degraded.
    let at2 = 20 << 20;
    let piece2 = vec![0xa7u8; 64 << 10];
    array.write_at(at2, &piece2).expect("write 2");
    model[at2 as usize..at2 as usize + piece2.len()].copy_from_slice(&piece2);
    array.flush().expect("flush degraded");
    assert!(failed_seen.lock().unwrap().iter().all(|m| *m == 1));
    assert!(!failed_seen.lock().unwrap().is_empty());
    assert_eq!(read_all(&array), model);

    // Back: re-added, only the marked rows go over.
    far.start();
    let before = far.written.load(Ordering::Relaxed);
    array.readd_member(1, far.uri()).expect("re-add");
    assert_eq!(array.status()[1].state, SlotState::Rebuilding);
    array.rebuild(|_, _| {}).expect("resync");
    assert_eq!(array.status()[1].state, SlotState::Active);
    let sent = far.written.load(Ordering::Relaxed) - before;
    // The one 64 MiB marking group both writes fell in (a write marks its region's whole
    // group), the header and checksums: a quarter of a whole copy.
    assert!(sent < size / 3, "{sent} bytes sent to re-add, of {size}");
    eprintln!("re-add: {} MiB sent of {} MiB", sent >> 20, size >> 20);
    array.flush().expect("flush");
    assert!(
        same_data(&near, &far_file, size),
        "the far copy was not resynced"
    );
    assert_eq!(read_all(&array), model);
    // Both copies agree row by row, checksums included (scrub reads them from the members).
    let report = array.scrub(false).expect("scrub");
    assert!(report.is_clean(), "{:?}", report.mismatches);
    assert_eq!(report.rows_skipped, 0);

    // A member of another slot, or of another pool, is refused.
    array.fail_member(1).expect("fail far");
    let e = array
        .readd_member(1, &near)
        .expect_err("slot 0's member in slot 1");
    assert!(matches!(e, RaidError::NotThisMember { .. }), "{e}");
    let other = dir.file("other", DATA_OFFSET + PER_MEMBER);
    let other2 = dir.file("other2", DATA_OFFSET + PER_MEMBER);
    drop(
        RaidArray::create(&[other.clone(), other2], &RaidConfig::new(RaidLevel::Raid1))
            .expect("other"),
    );
    let e = array
        .readd_member(1, &other)
        .expect_err("another pool's member");
    assert!(matches!(e, RaidError::NotThisMember { .. }), "{e}");
    array.readd_member(1, far.uri()).expect("re-add again");
    array.rebuild(|_, _| {}).expect("resync again");
    drop(array);
    far.stop();
}

#[test]
fn the_far_copy_alone_holds_every_acknowledged_write_and_takes_the_near_one_back() {
    let (_dir, near, far_file, mut far, array) = pair("remote-failover");
    let size = array.size();
    let mut model = vec![0u8; size as usize];
    Rng::new(9).fill(&mut model[..FILLED]);
    array.write_at(0, &model[..FILLED]).expect("write");
    array.flush().expect("flush");
    let tail = vec![0x11u8; 128 << 10];
    let at = 7 << 20;
    array.write_at(at, &tail).expect("last write");
    array.flush().expect("acknowledged");
    model[at as usize..at as usize + tail.len()].copy_from_slice(&tail);
    // The near host dies (no clean close: the process is gone, its bitmap as it was).
    std::mem::forget(array);
    far.stop();

    // Where the far copy is, it is assembled alone (its own file), and has it all.
    let survivor = RaidArray::open_degraded(&[None, Some(far_file.clone())]).expect("alone");
    assert!(survivor.is_degraded());
    assert_eq!(read_all(&survivor), model);
    // It goes on there.
    let news = vec![0x77u8; 512 << 10];
    let at2 = 15 << 20;
    survivor.write_at(at2, &news).expect("write there");
    survivor.flush().expect("flush there");
    model[at2 as usize..at2 as usize + news.len()].copy_from_slice(&news);
    drop(survivor);

    // Reopened later (still alone), the near copy comes back as the one to resync.
    let survivor = RaidArray::open_degraded(&[None, Some(far_file.clone())]).expect("again");
    survivor
        .readd_member(0, &near)
        .expect("the old near copy re-added");
    survivor.rebuild(|_, _| {}).expect("resync");
    survivor.flush().expect("flush");
    assert!(
        same_data(&near, &far_file, size),
        "the near copy was not brought up to date"
    );
    assert_eq!(read_all(&survivor), model);
    let report = survivor.scrub(false).expect("scrub");
    assert!(report.is_clean(), "{:?}", report.mismatches);
    drop(survivor);
    // Whole again, from both.
    let whole = RaidArray::open(&[near, far_file]).expect("whole");
    assert!(!whole.is_degraded());
    assert_eq!(read_all(&whole), model);
}

#[test]
fn a_member_that_left_in_the_middle_of_its_first_copy_is_rebuilt_whole_when_re_added() {
    let dir = TempDir::new("readd-whole");
    let a = dir.file("a", DATA_OFFSET + PER_MEMBER);
    let b = dir.file("b", DATA_OFFSET + PER_MEMBER);
    let array = RaidArray::create(
        &[a.clone(), b],
        &RaidConfig::new(RaidLevel::Raid1).chunk_size(CHUNK),
    )
    .expect("create");
    let size = array.size();
    let mut model = vec![0u8; size as usize];
    Rng::new(21).fill(&mut model[..FILLED]);
    array.write_at(0, &model[..FILLED]).expect("write");
    array.flush().expect("flush");
    // A replacement joins (its superblock says: rebuilding), and the array stops before its
    // first copy is made (a daemon stopped then); it is assembled again without it (a far
    // copy's relay is not there at a start).
    array.fail_member(1).expect("fail");
    let c = dir.file("c", DATA_OFFSET + PER_MEMBER);
    array.replace_member(1, &c).expect("replace");
    drop(array);
    let array = RaidArray::open_degraded(&[Some(a.clone()), None]).expect("without it");
    // Back, it is rebuilt whole: the bitmap does not know what it lacks.
    array.readd_member(1, &c).expect("re-add");
    array.rebuild(|_, _| {}).expect("rebuild");
    array.flush().expect("flush");
    assert_eq!(read_all(&array), model);
    // Every row of it agrees with the other copy, checksums included.
    let report = array.scrub(false).expect("scrub");
    assert!(
        report.is_clean(),
        "{} rows differ: the re-added member lacks rows its first copy never reached",
        report.mismatches.len()
    );
}
