//! Console logs with a bounded size: the current file and one rotated `<file>.1`, each at most
//! [`LOG_LIMIT`] bytes, so an instance that prints without end cannot fill the host's disk.
//!
//! Containers' monitors write their terminal through [`RotatingLog`]; for VMs,
//! `vessel-monitor --console-log PATH` is the sink QEMU's console log is piped to
//! ([`run_sink`]), so the same bound holds while the daemon is down.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A log file is rotated to `<file>.1` before it would grow past this size.
pub const LOG_LIMIT: u64 = 1 << 20;

/// The name a log is rotated to: `console.log` → `console.log.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// An append-only log of at most `limit` bytes, plus the previous `limit` bytes in
/// [`rotated_path`]. Write errors (a full disk) drop the data: a log never blocks its writer.
pub struct RotatingLog {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    limit: u64,
}

impl RotatingLog {
    /// Opens (creating) `path` for appending; what it holds already counts against the limit.
    pub fn open(path: &Path, limit: u64) -> Self {
        let mut log = Self {
            path: path.to_path_buf(),
            file: None,
            written: 0,
            limit: limit.max(1),
        };
        log.reopen();
        log
    }

    fn reopen(&mut self) {
        // Its writer and root only: what an instance prints is its own business.
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .ok();
        self.written = self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
    }

    fn rotate(&mut self) {
        self.file = None;
        let _ = std::fs::rename(&self.path, rotated_path(&self.path));
        self.reopen();
    }

    /// Appends `data`, rotating first whenever the current file would pass the limit. What
    /// cannot be written (full disk, rotation impossible) is dropped rather than kept.
    pub fn write(&mut self, mut data: &[u8]) {
        if self.file.is_none() {
            self.reopen();
        }
        while !data.is_empty() {
            if self.written >= self.limit {
                self.rotate();
                if self.written >= self.limit {
                    return;
                }
            }
            let n = ((self.limit - self.written) as usize).min(data.len());
            let (now, rest) = data.split_at(n);
            let Some(f) = &mut self.file else {
                return;
            };
            if f.write_all(now).is_err() {
                // Count what did land, so that the bound holds after a partial write.
                self.written = f.metadata().map_or(self.limit, |m| m.len());
                return;
            }
            self.written += n as u64;
            data = rest;
        }
    }
}

/// The VM console log sink: copies `input` (QEMU's console log, through a pipe) into a
/// [`RotatingLog`] at `path` until end-of-file (QEMU exited). It never stops reading, so QEMU
/// never waits on the disk for longer than one write of the sink.
pub fn run_sink(mut input: impl Read, path: &Path, limit: u64) -> std::io::Result<()> {
    let mut log = RotatingLog::open(path, limit);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => log.write(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vessel-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn size(p: &Path) -> u64 {
        std::fs::metadata(p).map_or(0, |m| m.len())
    }

    #[test]
    fn total_stays_within_two_files_of_the_limit() {
        let d = dir("bound");
        let path = d.join("console.log");
        // 10 MB in odd-sized writes, some larger than the limit itself.
        let data = vec![b'x'; 10_000_000];
        let mut log = RotatingLog::open(&path, 4096);
        for chunk in data.chunks(5000) {
            log.write(chunk);
            assert!(size(&path) <= 4096, "{}", size(&path));
            assert!(size(&rotated_path(&path)) <= 4096);
        }
        assert_eq!(size(&path), 10_000_000 % 4096);
        assert_eq!(size(&rotated_path(&path)), 4096);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn sink_keeps_the_newest_bytes_and_counts_what_is_there() {
        let d = dir("sink");
        let path = d.join("console.log");
        std::fs::write(&path, b"old run\n").unwrap();
        let mut input: Vec<u8> = Vec::new();
        for i in 0..1000 {
            input.extend(format!("line {i:04}\n").as_bytes());
        }
        run_sink(&input[..], &path, 1000).unwrap();
        let cur = std::fs::read_to_string(&path).unwrap();
        let prev = std::fs::read_to_string(rotated_path(&path)).unwrap();
        assert!(cur.ends_with("0999\n"), "{cur}");
        assert!(cur.len() <= 1000 && prev.len() == 1000);
        // The two files hold the newest bytes, in order, after what the file held before.
        let all = format!("{prev}{cur}");
        let want = format!("old run\n{}", String::from_utf8(input).unwrap());
        assert!(want.ends_with(&all));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
