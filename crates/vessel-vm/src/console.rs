//! The VM's console: everything the console prints goes to `console.log` (also while nobody
//! is connected; through the log sink, which keeps it and `console.log.1` at 1 MiB each, when
//! the definition has one) and QEMU serves the console itself on `console.sock`.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Result, VmError};
use crate::vm::RunningVm;

impl RunningVm {
    /// The console log's current length: pass it to [`RunningVm::wait_for_console`] to wait
    /// for output printed after now.
    pub fn console_offset(&self) -> u64 {
        std::fs::metadata(&self.console_log).map_or(0, |m| m.len())
    }

    /// Waits until the console log, from byte `from` on, contains `needle`; returns the log's
    /// text from `from` up to and including the line with it. Fails early when QEMU exits.
    pub fn wait_for_console(&self, from: u64, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = read_from(&self.console_log, from)?;
            if let Some(i) = text.find(needle) {
                let end = text[i..].find('\n').map_or(text.len(), |n| i + n + 1);
                return Ok(text[..end].to_string());
            }
            if !self.is_alive() {
                return Err(VmError::NotRunning(format!(
                    "{} (exited before printing {needle:?}; console: {:?})",
                    self.name,
                    tail(&text, 300)
                )));
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    what: format!(
                        "{needle:?} on the console of {} (last output: {:?})",
                        self.name,
                        tail(&text, 300)
                    ),
                    secs: timeout.as_secs_f64(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Connects to the console: what is read is the console's output, what is written is
    /// typed on it. QEMU serves one client at a time.
    pub fn connect_console(&self) -> Result<UnixStream> {
        UnixStream::connect(&self.console_socket)
            .map_err(VmError::io("connect to", &self.console_socket))
    }
}

fn read_from(path: &Path, from: u64) -> Result<String> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(VmError::io("open", path)(e)),
    };
    // A log shorter than `from` was rotated (the sink keeps 1 MiB per file): read it all.
    let len = f.metadata().map_or(0, |m| m.len());
    f.seek(SeekFrom::Start(if from <= len { from } else { 0 }))
        .map_err(VmError::io("seek", path))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(VmError::io("read", path))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
