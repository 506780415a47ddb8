//! Watching the daemon while hostile input runs: its memory (VmRSS, VmHWM) and the disk its
//! directory takes, sampled in a thread; and snapshots of directories that must not change.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
pub fn status_bytes(pid: i32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Descriptors the process has open.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Bytes the files below `dir` take on disk (not following symlinks, not crossing mounts).
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let dev = top.dev();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            total += md.blocks() * 512;
            if md.is_dir() && md.dev() == dev {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Samples the daemon's memory and its directory's disk use until dropped.
pub struct Watch {
    stop: Arc<AtomicBool>,
    peak_rss: Arc<AtomicU64>,
    peak_disk: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    pid: i32,
}

impl Watch {
    pub fn start(pid: i32, dir: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_rss = Arc::new(AtomicU64::new(0));
        let peak_disk = Arc::new(AtomicU64::new(0));
        let (s, r, d) = (stop.clone(), peak_rss.clone(), peak_disk.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: the test drops the watch, which sets `stop`.
            while !s.load(Ordering::Relaxed) {
                r.fetch_max(status_bytes(pid, "VmRSS"), Ordering::Relaxed);
                d.fetch_max(disk_usage(&dir), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            stop,
            peak_rss,
            peak_disk,
            thread: Some(thread),
            pid,
        }
    }

    /// The highest disk use seen since the last call, and starts a new window at `now`.
    pub fn take_peak_disk(&self, now: u64) -> u64 {
        self.peak_disk.swap(now, Ordering::Relaxed)
    }

    /// The highest VmRSS sampled, and the kernel's own high-water mark (VmHWM).
    pub fn memory(&self) -> (u64, u64) {
        (
            self.peak_rss.load(Ordering::Relaxed),
            status_bytes(self.pid, "VmHWM"),
        )
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a snapshot records of a file: type and mode, owner, size, mtime, link target, and
/// the content's digest for small regular files.
pub type Snapshot = BTreeMap<PathBuf, String>;

pub fn snapshot(dir: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let mut v = format!(
            "{:o} {}:{} {} {}",
            md.mode(),
            md.uid(),
            md.gid(),
            md.size(),
            md.mtime()
        );
        if md.file_type().is_symlink() {
            v.push_str(&format!(" -> {:?}", std::fs::read_link(&p).ok()));
        } else if md.is_file() && md.size() <= 1 << 20 {
            if let Ok(b) = std::fs::read(&p) {
                v.push_str(&format!(" {}", super::corpus::sha(&b)));
            }
        } else if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
        out.insert(p, v);
    }
    out
}

/// Panics with every difference between two snapshots.
pub fn assert_unchanged(before: &Snapshot, after: &Snapshot, what: &str) {
    let mut diffs = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => diffs.push(format!("removed: {}", k.display())),
            Some(w) if w != v => diffs.push(format!("changed: {} ({v} -> {w})", k.display())),
            _ => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        diffs.push(format!("added: {}", k.display()));
    }
    assert!(diffs.is_empty(), "{what} changed:\n{}", diffs.join("\n"));
}
