//! A typed, blocking QMP client.
//!
//! One reader thread owns the socket's read side: replies go to the caller waiting for that
//! command's `id`, events go to the caller's [`EventSink`] as they arrive, also while commands
//! run. Commands may be sent from several threads at once.
//!
//! ```no_run
//! # fn main() -> Result<(), vessel_vm::qmp::QmpError> {
//! use std::time::Duration;
//! use vessel_vm::qmp::{Qmp, QueryStatus};
//! let (qmp, events) = Qmp::connect_with_channel("/run/vm/qmp.sock".as_ref(), Duration::from_secs(5))?;
//! let status = qmp.execute(&QueryStatus)?;
//! println!("{:?}", status.status);
//! qmp.system_powerdown()?;
//! for e in events.iter() { println!("{:?}", e.kind); }
//! # Ok(()) }
//! ```

mod migration;
mod types;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use migration::*;
pub use types::*;

/// Receives QEMU's asynchronous events on the client's reader thread. It must not block for
/// long nor call the client (forward to a channel instead).
pub type EventSink = Box<dyn FnMut(QmpEvent) + Send>;

/// Errors of the QMP client.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected.
    #[error("cannot connect to QMP socket {path}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("QMP socket I/O failed")]
    Io(#[source] std::io::Error),
    /// QEMU sent something that is not QMP.
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    /// QEMU answered a command with an error.
    #[error("QMP command {command} failed: {desc} ({class})")]
    Command {
        /// The command.
        command: &'static str,
        /// QEMU's error class (`GenericError`, `CommandNotFound`, ...).
        class: String,
        /// QEMU's message.
        desc: String,
    },
    /// The connection closed before the reply came (QEMU exited).
    #[error("QMP connection closed while running {command}: QEMU has exited")]
    Disconnected {
        /// The command.
        command: &'static str,
    },
    /// QEMU accepted the connection but sent no greeting: another client holds the QMP
    /// socket (QEMU serves one at a time), or QEMU is hung.
    #[error(
        "QEMU sent no QMP greeting within {secs:.1} s: another client holds its QMP socket, or \
         QEMU is hung"
    )]
    NoGreeting {
        /// Seconds waited.
        secs: f64,
    },
    /// No reply in time.
    #[error("no reply to QMP command {command} within {secs:.1} s")]
    Timeout {
        /// The command.
        command: &'static str,
        /// Seconds waited.
        secs: f64,
    },
}

type Reply = std::result::Result<serde_json::Value, (String, String)>;

#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, SyncSender<Reply>>,
    closed: bool,
}

/// A connected QMP session, past capabilities negotiation.
pub struct Qmp {
    writer: Mutex<UnixStream>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
    greeting: Greeting,
    reader: Option<JoinHandle<()>>,
    timeout: Duration,
    path: PathBuf,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("path", &self.path)
            .field("qemu", &self.greeting.qmp.version.qemu)
            .finish()
    }
}

impl Qmp {
    /// Connects to `path` (retrying until `timeout` while the socket does not exist yet or
    /// refuses), reads the greeting, negotiates capabilities and starts delivering events to
    /// `sink`. `timeout` also bounds each command's wait for its reply.
    pub fn connect(
        path: &Path,
        timeout: Duration,
        sink: Option<EventSink>,
    ) -> Result<Qmp, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e)
                    if Instant::now() < deadline
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                        ) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(QmpError::Connect {
                        path: path.into(),
                        source,
                    })
                }
            }
        };
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        stream.set_read_timeout(Some(left)).map_err(QmpError::Io)?;
        let mut reader = BufReader::new(stream.try_clone().map_err(QmpError::Io)?);
        let mut line = String::new();
        let n = reader.read_line(&mut line).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => QmpError::NoGreeting {
                secs: left.as_secs_f64(),
            },
            _ => QmpError::Io(e),
        })?;
        if n == 0 {
            return Err(QmpError::Disconnected {
                command: "greeting",
            });
        }
        let greeting: Greeting = serde_json::from_str(&line)
            .map_err(|e| QmpError::Protocol(format!("bad greeting {:?}: {e}", line.trim())))?;
        stream.set_read_timeout(None).map_err(QmpError::Io)?;
        let pending = Arc::new(Mutex::new(Pending::default()));
        let reader = {
            let pending = pending.clone();
            std::thread::Builder::new()
                .name("qmp-reader".into())
                .spawn(move || read_loop(reader, pending, sink))
                .map_err(QmpError::Io)?
        };
        let qmp = Qmp {
            writer: Mutex::new(stream),
            pending,
            next_id: AtomicU64::new(1),
            greeting,
            reader: Some(reader),
            timeout,
            path: path.into(),
        };
        qmp.execute(&QmpCapabilities)?;
        Ok(qmp)
    }

    /// Like [`Qmp::connect`], delivering events to a channel.
    pub fn connect_with_channel(
        path: &Path,
        timeout: Duration,
    ) -> Result<(Qmp, Receiver<QmpEvent>), QmpError> {
        let (tx, rx) = mpsc::channel();
        let sink: EventSink = Box::new(move |e| {
            let _ = tx.send(e);
        });
        Ok((Qmp::connect(path, timeout, Some(sink))?, rx))
    }

    /// What QEMU said when we connected (its version).
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// Runs one command and waits for its reply.
    pub fn execute<C: QmpCommand>(&self, cmd: &C) -> Result<C::Reply, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut p = lock(&self.pending);
            if p.closed {
                return Err(QmpError::Disconnected { command: C::NAME });
            }
            p.waiting.insert(id, tx);
        }
        let mut msg = serde_json::Map::new();
        msg.insert("execute".into(), C::NAME.into());
        if C::HAS_ARGUMENTS {
            let args = serde_json::to_value(cmd)
                .map_err(|e| QmpError::Protocol(format!("arguments of {}: {e}", C::NAME)))?;
            msg.insert("arguments".into(), args);
        }
        msg.insert("id".into(), id.into());
        let mut line = serde_json::Value::Object(msg).to_string();
        line.push('\n');
        let written = {
            let mut w = lock(&self.writer);
            w.write_all(line.as_bytes()).and_then(|_| w.flush())
        };
        if let Err(e) = written {
            lock(&self.pending).waiting.remove(&id);
            return Err(match e.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                    QmpError::Disconnected { command: C::NAME }
                }
                _ => QmpError::Io(e),
            });
        }
        match rx.recv_timeout(self.timeout) {
            Ok(Ok(value)) => serde_json::from_value(value.clone()).map_err(|e| {
                QmpError::Protocol(format!("unexpected reply to {}: {value}: {e}", C::NAME))
            }),
            Ok(Err((class, desc))) => Err(QmpError::Command {
                command: C::NAME,
                class,
                desc,
            }),
            Err(RecvTimeoutError::Timeout) => {
                lock(&self.pending).waiting.remove(&id);
                Err(QmpError::Timeout {
                    command: C::NAME,
                    secs: self.timeout.as_secs_f64(),
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(QmpError::Disconnected { command: C::NAME }),
        }
    }

    /// `query-status`.
    pub fn query_status(&self) -> Result<StatusInfo, QmpError> {
        self.execute(&QueryStatus)
    }

    /// `system_powerdown`: presses the ACPI power button.
    pub fn system_powerdown(&self) -> Result<(), QmpError> {
        self.execute(&SystemPowerdown).map(drop)
    }

    /// `stop`: pauses the vCPUs.
    pub fn stop(&self) -> Result<(), QmpError> {
        self.execute(&Stop).map(drop)
    }

    /// `cont`: resumes the vCPUs.
    pub fn cont(&self) -> Result<(), QmpError> {
        self.execute(&Cont).map(drop)
    }

    /// `system_reset`.
    pub fn system_reset(&self) -> Result<(), QmpError> {
        self.execute(&SystemReset).map(drop)
    }

    /// `quit`: QEMU exits; the connection closing before the reply counts as success.
    pub fn quit(&self) -> Result<(), QmpError> {
        match self.execute(&Quit) {
            Ok(_) | Err(QmpError::Disconnected { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `query-vnc`.
    pub fn query_vnc(&self) -> Result<VncInfo, QmpError> {
        self.execute(&QueryVnc)
    }

    /// Whether the connection is still open (QEMU alive and talking).
    pub fn is_connected(&self) -> bool {
        !lock(&self.pending).closed
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        let _ = lock(&self.writer).shutdown(std::net::Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read_loop(
    mut reader: BufReader<UnixStream>,
    pending: Arc<Mutex<Pending>>,
    mut sink: Option<EventSink>,
) {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            tracing::warn!(line = %line.trim(), "ignoring a QMP line that is not JSON");
            continue;
        };
        if let Some(name) = msg.get("event").and_then(|v| v.as_str()) {
            let data = msg.get("data").cloned().unwrap_or(serde_json::Value::Null);
            let ts = msg.get("timestamp").cloned().unwrap_or_default();
            let event = QmpEvent::from_wire(name, data, &ts);
            if let Some(sink) = sink.as_mut() {
                sink(event);
            }
            continue;
        }
        let Some(id) = msg.get("id").and_then(|v| v.as_u64()) else {
            tracing::warn!(line = %line.trim(), "ignoring a QMP reply without an id");
            continue;
        };
        let reply = if let Some(ret) = msg.get("return") {
            Ok(ret.clone())
        } else if let Some(err) = msg.get("error") {
            let s = |k: &str| {
                err.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            Err((s("class"), s("desc")))
        } else {
            continue;
        };
        if let Some(tx) = lock(&pending).waiting.remove(&id) {
            let _ = tx.send(reply);
        }
    }
    {
        let mut p = lock(&pending);
        p.closed = true;
        p.waiting.clear();
    }
    if let Some(sink) = sink.as_mut() {
        sink(QmpEvent {
            kind: EventKind::Closed,
            timestamp_us: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        });
    }
}
