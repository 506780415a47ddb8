//! `logs`: an instance's recorded console output, whole, its last lines, or followed as it
//! grows until the instance stops.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use vessel_api::InstanceType;

use super::InstanceService;
use crate::error::Result;

/// How often a followed log is looked at for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Most bytes sent in one chunk of a followed log.
const FOLLOW_CHUNK: u64 = 64 * 1024;

impl InstanceService {
    /// The current log file of an instance (a container's monitor log, a VM's console log);
    /// the one before it is the same path with `.1` appended to the extension.
    fn log_path(&self, name: &str, vm: bool) -> PathBuf {
        if vm {
            self.vms.console_log_path(name)
        } else {
            self.driver.log(name)
        }
    }

    /// Recorded output of an instance: all of it that is kept (the rotated file, then the
    /// current one), or its last `tail` lines.
    pub fn logs(&self, name: &str, tail: Option<usize>) -> Result<Vec<u8>> {
        let inst = self.get_stored(name)?;
        let log = self.log_path(name, inst.instance_type == InstanceType::Vm);
        let mut out = std::fs::read(rotated(&log)).unwrap_or_default();
        out.extend(std::fs::read(&log).unwrap_or_default());
        Ok(match tail {
            Some(n) => last_lines(&out, n).to_vec(),
            None => out,
        })
    }

    /// Follows an instance's log from its current end: new output is sent on `tx` as it is
    /// written (also across a rotation) until the instance is no longer running, when the
    /// rest is sent and the stream ends; it also ends when the receiver goes away.
    pub fn follow_logs(
        &self,
        name: &str,
        tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let inst = self.get_stored(name)?;
        let path = self.log_path(name, inst.instance_type == InstanceType::Vm);
        let mut pos = std::fs::metadata(&path).map_or(0, |m| m.len());
        let svc = self.clone();
        let name = name.to_string();
        Ok(tokio::spawn(async move {
            loop {
                let running = svc.get_stored(&name).is_ok_and(|i| {
                    matches!(
                        i.status,
                        vessel_api::InstanceStatus::Running
                            | vessel_api::InstanceStatus::Frozen
                            | vessel_api::InstanceStatus::Starting
                            | vessel_api::InstanceStatus::Stopping
                    )
                });
                loop {
                    let (chunk, next) = read_new(&path, pos);
                    pos = next;
                    if chunk.is_empty() {
                        break;
                    }
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
                if !running {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_POLL) => {}
                    _ = tx.closed() => return,
                }
            }
        }))
    }
}

/// The rotated log beside `log` (`console.log` → `console.log.1`).
fn rotated(log: &Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// What was written to `log` after byte `pos`, at most [`FOLLOW_CHUNK`], and the position
/// after it. A log that became shorter was rotated: the rest of the rotated file comes first,
/// then the new file from its start.
fn read_new(log: &Path, pos: u64) -> (Vec<u8>, u64) {
    let len = std::fs::metadata(log).map_or(0, |m| m.len());
    if len < pos {
        let old = rotated(log);
        let (rest, _) = read_range(&old, pos);
        if !rest.is_empty() {
            // Resume in the new file at 0 next time: `rest` ends the old one.
            return (rest, 0);
        }
        return read_range(log, 0);
    }
    read_range(log, pos)
}

fn read_range(path: &Path, pos: u64) -> (Vec<u8>, u64) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return (Vec::new(), pos);
    };
    if f.seek(SeekFrom::Start(pos)).is_err() {
        return (Vec::new(), pos);
    }
    let mut buf = Vec::new();
    let n = f
        .take(FOLLOW_CHUNK)
        .read_to_end(&mut buf)
        .map_or(0, |n| n as u64);
    (buf, pos + n)
}

/// The last `n` lines of `data` (a final line without a newline counts as one).
pub fn last_lines(data: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
        .map_or(0, |(i, _)| i + 1);
    &data[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_of_a_log() {
        let log = b"a\nb\nc\n";
        assert_eq!(last_lines(log, 1), b"c\n");
        assert_eq!(last_lines(log, 2), b"b\nc\n");
        assert_eq!(last_lines(log, 9), log);
        assert_eq!(last_lines(log, 0), b"");
        assert_eq!(last_lines(b"a\nb", 1), b"b");
        assert_eq!(last_lines(b"", 3), b"");
        assert_eq!(last_lines(b"\n\n", 1), b"\n");
    }

    #[test]
    fn a_followed_log_survives_its_rotation() {
        let dir = std::env::temp_dir().join(format!("vessel-logs-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("console.log");
        std::fs::write(&log, b"one\n").unwrap();
        let (got, pos) = read_new(&log, 0);
        assert_eq!((got.as_slice(), pos), (&b"one\n"[..], 4));
        std::fs::write(&log, b"one\ntwo\n").unwrap();
        let (got, pos) = read_new(&log, pos);
        assert_eq!((got.as_slice(), pos), (&b"two\n"[..], 8));
        // Rotated: the old file got "three\n" before it moved; the new one has "four\n".
        std::fs::write(&log, b"one\ntwo\nthree\n").unwrap();
        std::fs::rename(&log, rotated(&log)).unwrap();
        std::fs::write(&log, b"four\n").unwrap();
        let (got, pos) = read_new(&log, pos);
        assert_eq!((got.as_slice(), pos), (&b"three\n"[..], 0));
        let (got, pos) = read_new(&log, pos);
        assert_eq!((got.as_slice(), pos), (&b"four\n"[..], 5));
        let (got, _) = read_new(&log, pos);
        assert!(got.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
