//! One exec: the command (pipes, or a pseudo-terminal with `tty`), threads that carry its
//! output to the host as frames, and a waiter that sends its exit code.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use vessel_api::stream::{self, FrameKind};
use vessel_api::ExecRequest;

use crate::port::Port;

/// How long output still buffered in pipes or the terminal is waited for after the command
/// exits (a background process may hold them open forever).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// A running exec.
pub struct Session {
    id: u64,
    pid: i32,
    /// Input for the command; dropping it closes the pipe (pipes) or sends ^D (terminal).
    stdin: Option<SyncSender<Vec<u8>>>,
    /// The terminal's master, for resizes.
    master: Option<Arc<OwnedFd>>,
    tty: bool,
    done: Arc<AtomicBool>,
    waiter: Option<thread::JoinHandle<()>>,
}

impl Session {
    /// Starts the command of `req` as session `id`; the caller has called `port.begin(id)`.
    pub fn start(port: &Arc<Port>, id: u64, req: &ExecRequest) -> Result<Session, String> {
        let Some(program) = req.command.first().filter(|p| !p.is_empty()) else {
            return Err("exec needs a command to run".into());
        };
        let mut cmd = Command::new(program);
        cmd.args(&req.command[1..]);
        cmd.current_dir(req.cwd.as_deref().unwrap_or("/"));
        if std::env::var_os("HOME").is_none() {
            cmd.env("HOME", "/root");
        }
        for (k, v) in &req.environment {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(format!("invalid environment variable {k:?}"));
            }
            cmd.env(k, v);
        }
        if let Some(gid) = req.gid {
            cmd.gid(gid);
        }
        if let Some(uid) = req.uid {
            cmd.uid(uid);
        }
        let (tx_out, rx_out) = mpsc::channel::<()>();
        let mut pumps = 0;
        let (child, stdin_sink, master): (Child, Box<dyn Write + Send>, Option<Arc<OwnedFd>>) =
            if req.tty {
                if !req.environment.contains_key("TERM") {
                    cmd.env("TERM", "xterm");
                }
                let (master, slave) = open_pty(req.width.unwrap_or(80), req.height.unwrap_or(24))
                    .map_err(|e| format!("allocating a terminal: {e}"))?;
                let stdio = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
                let setup = || -> io::Result<(Stdio, Stdio, Stdio)> {
                    Ok((stdio(&slave)?, stdio(&slave)?, stdio(&slave)?))
                };
                let (i, o, e) = setup().map_err(|e| format!("allocating a terminal: {e}"))?;
                cmd.stdin(i).stdout(o).stderr(e);
                // SAFETY: the closure only calls async-signal-safe functions (setsid, ioctl).
                unsafe {
                    cmd.pre_exec(|| {
                        if libc::setsid() < 0 {
                            return Err(io::Error::last_os_error());
                        }
                        if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                            return Err(io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                let child = spawn(&mut cmd, program)?;
                drop(slave);
                let master = Arc::new(master);
                let reader = dup_file(&master).map_err(|e| format!("terminal: {e}"))?;
                pump(port, id, reader, FrameKind::Stdout, tx_out.clone());
                pumps += 1;
                let writer = dup_file(&master).map_err(|e| format!("terminal: {e}"))?;
                (child, Box::new(writer), Some(master))
            } else {
                cmd.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .process_group(0);
                let mut child = spawn(&mut cmd, program)?;
                let (Some(i), Some(o), Some(e)) =
                    (child.stdin.take(), child.stdout.take(), child.stderr.take())
                else {
                    return Err("the command has no pipes".into());
                };
                pump(port, id, o, FrameKind::Stdout, tx_out.clone());
                pump(port, id, e, FrameKind::Stderr, tx_out.clone());
                pumps += 2;
                (child, Box::new(i), None)
            };
        drop(tx_out);
        let pid = child.id() as i32;
        let stdin = feed_stdin(stdin_sink, req.tty);
        let done = Arc::new(AtomicBool::new(false));
        let waiter = {
            let port = port.clone();
            let done = done.clone();
            thread::spawn(move || wait_and_report(port, id, child, rx_out, pumps, done))
        };
        Ok(Session {
            id,
            pid,
            stdin: Some(stdin),
            master,
            tty: req.tty,
            done,
            waiter: Some(waiter),
        })
    }

    /// Handles one frame from the host.
    pub fn frame(&mut self, kind: FrameKind, payload: Vec<u8>) {
        match kind {
            FrameKind::Stdin => {
                if let Some(tx) = &self.stdin {
                    if tx.send(payload).is_err() {
                        self.stdin = None;
                    }
                }
            }
            FrameKind::CloseStdin => {
                if self.tty {
                    // End of input on a terminal is ^D.
                    if let Some(tx) = &self.stdin {
                        let _ = tx.send(vec![4]);
                    }
                } else {
                    self.stdin = None;
                }
            }
            FrameKind::Resize => {
                if let (Some(m), Some((c, r))) = (&self.master, stream::parse_resize(&payload)) {
                    let _ = set_winsize(m, c, r);
                }
            }
            FrameKind::Signal => {
                if let Some(sig) = stream::parse_i32(&payload) {
                    if !self.is_done() {
                        // SAFETY: kill(2) with a pid we spawned and have not yet reaped.
                        unsafe { libc::kill(self.pid, sig) };
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether the exit code was sent (or the session abandoned).
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// The host went away: nothing more is sent, the command and its process group are
    /// killed, and the waiter is joined.
    pub fn abandon(mut self, port: &Port) {
        port.end(self.id);
        self.stdin = None;
        if !self.is_done() {
            // SAFETY: kill(2) on the process group we created (pid == pgid) and the pid
            // itself; the pid is not reaped before the waiter below is joined.
            unsafe {
                libc::kill(-self.pid, libc::SIGKILL);
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
        if let Some(w) = self.waiter.take() {
            let _ = w.join();
        }
    }
}

fn spawn(cmd: &mut Command, program: &str) -> Result<Child, String> {
    cmd.spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("executable file not found: {program}"),
        _ => format!("cannot run {program}: {e}"),
    })
}

/// Copies a reader to the host as frames of `kind` until end-of-file (or EIO, which is how
/// a terminal's master reports that every slave is closed).
fn pump<R: Read + Send + 'static>(
    port: &Arc<Port>,
    id: u64,
    mut r: R,
    kind: FrameKind,
    done: mpsc::Sender<()>,
) {
    let port = port.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 16384];
        let mut sending = true;
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // Once the host is gone, keep draining so the command never blocks.
                    if sending && port.send(id, kind, &buf[..n]).is_err() {
                        sending = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
}

/// Feeds stdin from a bounded queue so that a command that does not read never blocks the
/// agent's reader; dropping the sender closes the command's stdin (pipes).
fn feed_stdin(mut sink: Box<dyn Write + Send>, tty: bool) -> SyncSender<Vec<u8>> {
    let (tx, rx): (SyncSender<Vec<u8>>, Receiver<Vec<u8>>) = mpsc::sync_channel(16);
    thread::spawn(move || {
        while let Ok(data) = rx.recv() {
            if sink.write_all(&data).and_then(|_| sink.flush()).is_err() && !tty {
                break;
            }
        }
    });
    tx
}

fn wait_and_report(
    port: Arc<Port>,
    id: u64,
    mut child: Child,
    outputs: Receiver<()>,
    pumps: usize,
    done: Arc<AtomicBool>,
) {
    let status = child.wait();
    let deadline = Instant::now() + OUTPUT_GRACE;
    let mut finished = 0;
    while finished < pumps {
        let left = deadline.saturating_duration_since(Instant::now());
        match outputs.recv_timeout(left) {
            Ok(()) => finished += 1,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => 255,
    };
    // Done before the host hears of it: the host's next request may replace this session
    // at once, and a session not done has its process group killed, with whatever the
    // command left running in the background that had not yet left the group (a
    // `setsid … &` not yet past its setsid). Seen as an HA test's guest writer gone.
    done.store(true, Ordering::SeqCst);
    let _ = port.finish(id, FrameKind::Exit, &code.to_be_bytes());
}

fn dup_file(fd: &OwnedFd) -> io::Result<File> {
    Ok(File::from(fd.try_clone()?))
}

/// A new pseudo-terminal pair (both close-on-exec) with the given size.
fn open_pty(cols: u16, rows: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into our locals; name and termios are null and
    // the winsize is read from our stack.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, so both are open descriptors that nothing else owns.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&m, &s] {
        // SAFETY: F_SETFD on a descriptor we own.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((m, s))
}

fn set_winsize(fd: &OwnedFd, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct that lives on our stack.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
