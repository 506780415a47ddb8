//! The host side of the guest agent (`vessel-agent`): exec over the agent's socket.
//!
//! The agent socket is a QEMU chardev in server mode behind the `org.vessel.agent`
//! virtio-serial port. QEMU accepts one client at a time, so execs on one VM run one after
//! the other: a second caller's connection waits until the first closes (and gets
//! [`VmError::Agent`] if that takes longer than its acknowledgement timeout).
//!
//! Protocol: the host pings ([`vessel_api::stream::agent_ping`], answered with an `Exit`
//! frame of the ping's number), writes one JSON line (a [`vessel_api::ExecRequest`]), then frames of
//! [`vessel_api::stream`]. The agent answers with an empty `Stdout` frame (the
//! acknowledgement), then `Stdout`/`Stderr` frames, and ends with `Exit` or `Error`. Closing
//! the connection kills the command. The frames after the acknowledgement are exactly what a
//! `vessel exec` client expects, so the daemon may proxy them byte for byte
//! ([`AgentSession::into_stream`]).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vessel_api::stream::{self, FrameKind};
use vessel_api::ExecRequest;

use crate::error::{Result, VmError};

/// A frame from the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentFrame {
    /// Output on stdout (or the terminal).
    Stdout(Vec<u8>),
    /// Output on stderr.
    Stderr(Vec<u8>),
    /// The command exited with this code (128+N for signal N); the session is over.
    Exit(i32),
    /// The command could not run; the session is over.
    Error(String),
}

/// What a finished command printed and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Everything on stdout.
    pub stdout: Vec<u8>,
    /// Everything on stderr.
    pub stderr: Vec<u8>,
    /// Exit code (128+N for signal N).
    pub exit_code: i32,
}

/// One exec in progress.
#[derive(Debug)]
pub struct AgentSession {
    stream: UnixStream,
}

/// How long the first ping waits for the agent before the connection is made again (each
/// later one waits half as long again, within the acknowledgement timeout).
const FIRST_PING_WAIT: Duration = Duration::from_millis(1000);

/// How long the acknowledgement of a command may take once the agent answered the ping
/// (even past `ack_timeout`: the command has gone out, and its answer is worth a wait).
const MIN_ACK_WAIT: Duration = Duration::from_secs(2);

/// Connects to the agent socket, makes sure the agent hears this connection, sends `req` and
/// waits for the agent to acknowledge it, all within `ack_timeout` (the agent is not running,
/// or another exec holds the port, when it does not answer).
///
/// The agent is pinged before the command goes out, and the connection is made again while
/// it does not answer: right after a VM's state was loaded (a live move, a stateful snapshot
/// taken or restored) the guest may not yet know that a host is connected to the port and
/// cannot answer on it until the host connects again. Each ping carries its own number and
/// only the answer with that number counts (an answer to a ping of a connection given up can
/// arrive on the next one); a command is sent only on a connection the agent has answered
/// so, so it never runs twice. Connecting never waits past the deadline either (QEMU queues
/// few connections while another exec holds the port).
pub fn agent_exec(
    agent_socket: &Path,
    req: &ExecRequest,
    ack_timeout: Duration,
) -> Result<AgentSession> {
    if req.command.first().is_none_or(|c| c.is_empty()) {
        return Err(VmError::Agent("exec needs a command to run".into()));
    }
    let mut line = serde_json::to_vec(req).map_err(|e| VmError::Agent(format!("request: {e}")))?;
    line.push(b'\n');
    let no_answer = || {
        VmError::Agent(format!(
            "no answer within {:.1} s: vessel-agent is not running in the guest, or another exec \
             holds the agent port",
            ack_timeout.as_secs_f64()
        ))
    };
    let deadline = Instant::now() + ack_timeout;
    let (mut session, pings) = connect_heard(agent_socket, deadline).ok_or_else(no_answer)??;
    session
        .stream
        .write_all(&line)
        .map_err(VmError::io("write the exec request to", agent_socket))?;
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(MIN_ACK_WAIT);
    session
        .stream
        .set_read_timeout(Some(wait))
        .map_err(VmError::io("set a timeout on", agent_socket))?;
    loop {
        match session.recv_raw() {
            Ok(Some((FrameKind::Stdout, p))) if p.is_empty() => break,
            // A late answer to one of our pings.
            Ok(Some((FrameKind::Exit, p)))
                if stream::parse_i32(&p).is_some_and(|n| pings.contains(&n)) => {}
            Ok(Some((FrameKind::Error, p))) => {
                return Err(VmError::Agent(String::from_utf8_lossy(&p).into_owned()))
            }
            Ok(Some((kind, _))) => {
                return Err(VmError::Agent(format!(
                    "protocol error: {kind:?} frame before the acknowledgement"
                )))
            }
            Ok(None) => return Err(VmError::Agent("the agent socket closed".into())),
            Err(e) if is_timeout(&e) => return Err(no_answer()),
            Err(e) => return Err(VmError::Agent(format!("reading the acknowledgement: {e}"))),
        }
    }
    session
        .stream
        .set_read_timeout(None)
        .map_err(VmError::io("clear the timeout on", agent_socket))?;
    Ok(session)
}

/// A number for a ping: different for every ping of this process.
fn ping_nonce() -> i32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    ((t ^ std::process::id().rotate_left(16)).wrapping_add(n.wrapping_mul(2_654_435_761))
        & 0x7fff_ffff) as i32
}

/// A connection the agent has answered a ping on, with the numbers of every ping sent;
/// `None` when it did not by `deadline`.
fn connect_heard(
    agent_socket: &Path,
    deadline: Instant,
) -> Option<Result<(AgentSession, Vec<i32>)>> {
    let mut wait = FIRST_PING_WAIT;
    let mut pings = Vec::new();
    loop {
        let mut stream = match connect_by(agent_socket, deadline) {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => return Some(Err(VmError::io("connect to", agent_socket)(e))),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let attempt = wait.min(left).max(Duration::from_millis(1));
        let nonce = ping_nonce();
        pings.push(nonce);
        let sent = stream
            .write_all(&stream::agent_ping(nonce))
            .and_then(|()| stream.set_read_timeout(Some(attempt)));
        if let Err(e) = sent {
            return Some(Err(VmError::io("write to", agent_socket)(e)));
        }
        let mut session = AgentSession { stream };
        let answer = loop {
            match session.recv_raw() {
                Ok(Some((FrameKind::Exit, p))) => match stream::parse_i32(&p) {
                    Some(n) if n == nonce => break Ok(true),
                    // An answer to a ping of a connection given up.
                    Some(n) if pings.contains(&n) => continue,
                    _ => {
                        break Err(VmError::Agent(
                            "protocol error: an exit frame in answer to the ping".into(),
                        ))
                    }
                },
                // An agent older than the ping calls it an invalid request: heard all the same.
                Ok(Some((FrameKind::Error, _))) => break Ok(true),
                Ok(Some((kind, _))) => {
                    break Err(VmError::Agent(format!(
                        "protocol error: {kind:?} frame in answer to the ping"
                    )))
                }
                // QEMU let go of the connection: connect again.
                Ok(None) => {
                    tracing::info!(socket = %agent_socket.display(), "the guest agent's port closed; connecting again");
                    std::thread::sleep(Duration::from_millis(50).min(left));
                    break Ok(false);
                }
                Err(e) if is_timeout(&e) => {
                    tracing::info!(socket = %agent_socket.display(), wait_ms = attempt.as_millis() as u64, "the guest agent did not answer the ping; connecting again");
                    break Ok(false);
                }
                Err(e) => break Err(VmError::Agent(format!("reading from the agent: {e}"))),
            }
        };
        match answer {
            Ok(true) => return Some(Ok((session, pings))),
            Ok(false) => {}
            Err(e) => return Some(Err(e)),
        }
        wait = wait.saturating_mul(3) / 2;
    }
}

/// Connects to the unix socket `path`, trying again while its queue of connections is full
/// (another client holds QEMU's chardev), until `deadline`: `None` then.
fn connect_by(path: &Path, deadline: Instant) -> std::io::Result<Option<UnixStream>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: an all-zero sockaddr_un is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    loop {
        // SAFETY: socket takes plain integers and returns a new descriptor or -1.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: connect reads `len` bytes of the address on our stack.
        let r = unsafe {
            libc::connect(
                fd,
                (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
                len,
            )
        };
        if r == 0 {
            let stream = UnixStream::from(owned);
            stream.set_nonblocking(false)?;
            return Ok(Some(stream));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => return Err(e),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

impl AgentSession {
    /// Sends a raw frame (stdin, close-stdin, resize, signal).
    pub fn send(&mut self, kind: FrameKind, payload: &[u8]) -> Result<()> {
        stream::write_frame(&mut self.stream, kind, payload)
            .map_err(|e| VmError::Agent(format!("sending {kind:?}: {e}")))
    }

    /// Sends bytes to the command's stdin.
    pub fn send_stdin(&mut self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(64 * 1024) {
            self.send(FrameKind::Stdin, chunk)?;
        }
        Ok(())
    }

    /// Closes the command's stdin (^D on a terminal).
    pub fn close_stdin(&mut self) -> Result<()> {
        self.send(FrameKind::CloseStdin, &[])
    }

    /// Resizes the command's terminal.
    pub fn resize(&mut self, cols: u16, rows: u16) -> Result<()> {
        self.send(FrameKind::Resize, &stream::resize_payload(cols, rows))
    }

    /// Sends a signal to the command.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        self.send(FrameKind::Signal, &signal.to_be_bytes())
    }

    /// The next frame; `None` when the agent closed without `Exit` (the VM went away).
    pub fn recv(&mut self) -> Result<Option<AgentFrame>> {
        let frame = self
            .recv_raw()
            .map_err(|e| VmError::Agent(format!("reading from the agent: {e}")))?;
        Ok(match frame {
            None => None,
            Some((FrameKind::Stdout, p)) => Some(AgentFrame::Stdout(p)),
            Some((FrameKind::Stderr, p)) => Some(AgentFrame::Stderr(p)),
            Some((FrameKind::Exit, p)) => Some(AgentFrame::Exit(
                stream::parse_i32(&p)
                    .ok_or_else(|| VmError::Agent(format!("exit frame of {} bytes", p.len())))?,
            )),
            Some((FrameKind::Error, p)) => {
                Some(AgentFrame::Error(String::from_utf8_lossy(&p).into_owned()))
            }
            Some((kind, _)) => {
                return Err(VmError::Agent(format!(
                    "protocol error: unexpected {kind:?} frame from the agent"
                )))
            }
        })
    }

    /// Sends `stdin` (then closes it) and collects the output until the command exits, at
    /// most `timeout`; on timeout the connection is closed, which kills the command.
    pub fn output(mut self, stdin: &[u8], timeout: Duration) -> Result<ExecOutput> {
        if !stdin.is_empty() {
            self.send_stdin(stdin)?;
        }
        self.close_stdin()?;
        let deadline = Instant::now() + timeout;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(VmError::Timeout {
                    what: "the command in the guest to finish".into(),
                    secs: timeout.as_secs_f64(),
                });
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| VmError::Agent(e.to_string()))?;
            match self.recv() {
                Ok(Some(AgentFrame::Stdout(p))) => stdout.extend(p),
                Ok(Some(AgentFrame::Stderr(p))) => stderr.extend(p),
                Ok(Some(AgentFrame::Exit(exit_code))) => {
                    return Ok(ExecOutput {
                        stdout,
                        stderr,
                        exit_code,
                    })
                }
                Ok(Some(AgentFrame::Error(e))) => return Err(VmError::Agent(e)),
                Ok(None) => {
                    return Err(VmError::Agent(
                        "the agent closed the connection before the command exited".into(),
                    ))
                }
                Err(_) if Instant::now() >= deadline => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The connection itself, past the acknowledgement, to proxy frames byte for byte.
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    fn recv_raw(&mut self) -> std::io::Result<Option<(FrameKind, Vec<u8>)>> {
        read_frame(&mut self.stream)
    }
}

/// Like [`stream::read_frame`], but a timeout before the first byte is reported as such
/// rather than as a truncated frame.
fn read_frame(r: &mut UnixStream) -> std::io::Result<Option<(FrameKind, Vec<u8>)>> {
    let mut head = [0u8; 5];
    if r.read(&mut head[..1])? == 0 {
        return Ok(None);
    }
    r.read_exact(&mut head[1..])?;
    let (kind, len) = stream::parse_header(&head)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}
