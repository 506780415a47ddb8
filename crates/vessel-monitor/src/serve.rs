//! The monitor's event loop: terminal output to the log and to attached clients, client input
//! to the terminal, and the init's exit.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use vessel_api::stream::{self, FrameKind};
use vessel_monitor::log::{RotatingLog, LOG_LIMIT};
use vessel_monitor::{ExitStatus, MonitorConfig};

/// How often a hung-up terminal is tried again, at first and at most: the slave may be opened
/// again (systemd closes its console between messages, then reopens `/dev/console`).
const HUP_RETRY_FIRST: Duration = Duration::from_millis(50);
const HUP_RETRY_MAX: Duration = Duration::from_secs(1);

/// The terminal's master side, as the monitor last found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pty {
    /// Readable when there is output: polled.
    Open,
    /// No process has the slave open (reads fail with EIO, poll reports a hang-up at once):
    /// not polled, read again after a while.
    HungUp,
    /// Gone for good.
    Closed,
}

struct Client {
    sock: UnixStream,
    buf: Vec<u8>,
}

/// The signals the monitor takes through its signalfd.
fn handled_signals() -> SigSet {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGHUP);
    mask.add(Signal::SIGPIPE);
    mask
}

/// Blocks the monitor's signals. Called first thing, before any child exists: a SIGCHLD of an
/// init that exits at once then stays pending until the signalfd reads it, where an unblocked
/// SIGCHLD (ignored by default) would be lost and the init left a zombie nobody reaps. Children
/// do not inherit the mask (the standard library clears it before exec).
pub fn block_signals() -> nix::Result<()> {
    handled_signals().thread_block()
}

/// Binds the socket clients attach through (root's only). The monitor does it before it
/// says the container runs, so that an attach right after the start finds it.
pub fn bind(c: &MonitorConfig) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(&c.socket);
    let listener = UnixListener::bind(&c.socket)?;
    let _ = std::fs::set_permissions(&c.socket, std::fs::Permissions::from_mode(0o600));
    Ok(listener)
}

/// Serves until the init exits; returns the monitor's own exit code. The signals must be
/// blocked already ([`block_signals`]); `listener` is [`bind`]'s.
pub fn run(c: &MonitorConfig, init: i32, master: OwnedFd, listener: UnixListener) -> i32 {
    let mask = handled_signals();
    let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vessel-monitor: signalfd: {e}");
            return 1;
        }
    };
    let _ = listener.set_nonblocking(true);
    let _ = nix::fcntl::fcntl(
        master.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut master = File::from(master);
    let mut log = RotatingLog::open(&c.log, LOG_LIMIT);
    let mut clients: Vec<Client> = Vec::new();
    let mut pty = Pty::Open;
    let mut hup_retry = HUP_RETRY_FIRST;
    // The init may be gone already: its SIGCHLD is pending and wakes the first poll, and a
    // reap now makes that certain whatever happened before.
    let mut exit: Option<ExitStatus> = reap(init);

    while exit.is_none() {
        let mut fds = vec![
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        if pty == Pty::Open {
            fds.push(PollFd::new(master.as_fd(), PollFlags::POLLIN));
        }
        let polled_clients = clients.len();
        for cl in &clients {
            fds.push(PollFd::new(cl.sock.as_fd(), PollFlags::POLLIN));
        }
        let timeout = match pty {
            Pty::HungUp => PollTimeout::try_from(hup_retry).unwrap_or(PollTimeout::MAX),
            _ => PollTimeout::NONE,
        };
        if let Err(e) = poll(&mut fds, timeout) {
            if e == nix::errno::Errno::EINTR {
                continue;
            }
            eprintln!("vessel-monitor: poll: {e}");
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            while let Ok(Some(_)) = sfd.read_signal() {}
            exit = reap(init);
        }
        if ready[1] {
            while let Ok((sock, _)) = listener.accept() {
                let _ = sock.set_write_timeout(Some(Duration::from_secs(2)));
                let _ = sock.set_nonblocking(true);
                clients.push(Client {
                    sock,
                    buf: Vec::new(),
                });
            }
        }
        let mut idx = 2;
        match pty {
            Pty::Open => {
                if ready[idx] {
                    pty = pump_output(&mut master, &mut log, &mut clients);
                }
                idx += 1;
            }
            Pty::HungUp => {
                pty = pump_output(&mut master, &mut log, &mut clients);
                hup_retry = match pty {
                    Pty::HungUp => (hup_retry * 2).min(HUP_RETRY_MAX),
                    _ => HUP_RETRY_FIRST,
                };
            }
            Pty::Closed => {}
        }
        // Clients accepted in this round were not polled yet: only look at the others.
        let mut gone = Vec::new();
        for (i, cl) in clients.iter_mut().enumerate().take(polled_clients) {
            if ready[idx + i] && !handle_client(cl, &mut master, init) {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            clients.remove(i);
        }
    }
    // Drain what the init's last words left in the terminal.
    if pty != Pty::Closed {
        pump_output(&mut master, &mut log, &mut clients);
    }
    let status = exit.unwrap_or(ExitStatus {
        exit_code: -1,
        signal: None,
        finished_at: now(),
    });
    for cl in &mut clients {
        let _ = cl.sock.set_nonblocking(false);
        let _ = stream::write_frame(
            &mut cl.sock,
            FrameKind::Exit,
            &status.exit_code.to_be_bytes(),
        );
    }
    write_exit(c, &status);
    0
}

/// Reaps every child that ended; returns the init's status once it has.
fn reap(init: i32) -> Option<ExitStatus> {
    let mut out = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == init => {
                out = Some(ExitStatus {
                    exit_code: code,
                    signal: None,
                    finished_at: now(),
                })
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == init => {
                out = Some(ExitStatus {
                    exit_code: 128 + sig as i32,
                    signal: Some(sig as i32),
                    finished_at: now(),
                })
            }
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

/// Moves terminal output to the log and clients; says what the terminal is like afterwards.
fn pump_output(master: &mut File, log: &mut RotatingLog, clients: &mut Vec<Client>) -> Pty {
    let mut buf = [0u8; 16384];
    loop {
        match master.read(&mut buf) {
            Ok(0) => return Pty::Closed,
            Ok(n) => {
                log.write(&buf[..n]);
                let frame = stream::encode(FrameKind::Stdout, &buf[..n]);
                clients.retain_mut(|cl| {
                    let _ = cl.sock.set_nonblocking(false);
                    let ok = cl.sock.write_all(&frame).is_ok();
                    let _ = cl.sock.set_nonblocking(true);
                    ok
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Pty::Open,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // EIO: every process closed the terminal's slave side, for now: a process of the
            // container may open it again through /dev/console or /dev/pts.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return Pty::HungUp,
            Err(_) => return Pty::Closed,
        }
    }
}

/// Applies a client's frames; false when the client is gone.
fn handle_client(cl: &mut Client, master: &mut File, init: i32) -> bool {
    let mut tmp = [0u8; 16384];
    loop {
        match cl.sock.read(&mut tmp) {
            Ok(0) => return false,
            Ok(n) => cl.buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    while cl.buf.len() >= 5 {
        let head: [u8; 5] = [cl.buf[0], cl.buf[1], cl.buf[2], cl.buf[3], cl.buf[4]];
        let Ok((kind, len)) = stream::parse_header(&head) else {
            return false;
        };
        if cl.buf.len() < 5 + len {
            break;
        }
        let payload: Vec<u8> = cl.buf.drain(..5 + len).skip(5).collect();
        match kind {
            FrameKind::Stdin => {
                let _ = write_all_retry(master, &payload);
            }
            FrameKind::Resize => {
                if let Some((cols, rows)) = stream::parse_resize(&payload) {
                    let ws = libc::winsize {
                        ws_row: rows,
                        ws_col: cols,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCSWINSZ reads one winsize struct that lives on our stack.
                    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                }
            }
            FrameKind::Signal => {
                if let Some(sig) = stream::parse_i32(&payload) {
                    // SAFETY: kill takes plain integers.
                    unsafe { libc::kill(init, sig) };
                }
            }
            _ => {}
        }
    }
    true
}

fn write_all_retry(f: &mut File, mut data: &[u8]) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !data.is_empty() {
        match f.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_exit(c: &MonitorConfig, status: &ExitStatus) {
    let tmp = c.exit_file.with_extension("tmp");
    let body = serde_json::to_vec(status).unwrap_or_default();
    if std::fs::write(&tmp, body).is_ok() {
        let _ = std::fs::rename(&tmp, &c.exit_file);
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
