//! TLS after `NBD_OPT_STARTTLS`: the handshake on the client's socket, then a pump thread
//! that moves bytes between the TLS session and a socket pair whose other end the
//! connection's threads use as they use a plain socket (so the option haggling and the
//! transmission phase, with their reader, workers and reply writer, are the same code with
//! or without TLS).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::JoinHandle;

use rustls::{ServerConfig, ServerConnection};

use crate::server::{NbdError, Stream};

/// Decrypted bytes held for the connection at most; past it the client's socket is not
/// read until the connection takes them.
const INBOUND_LIMIT: usize = 1 << 20;

/// A connection's TLS session: the plain end the connection uses, the client's certificate
/// and the pump thread (joined once the plain end is dropped).
pub(crate) struct Tls {
    pub plain: UnixStream,
    /// The DER of the client's certificate, if it gave one.
    pub peer: Option<Vec<u8>>,
    pub pump: JoinHandle<()>,
    /// Shuts the client's socket down: ends the pump even while it waits to send to a
    /// client that reads nothing.
    pub hang_up: Arc<dyn Fn() + Send + Sync>,
}

/// Runs the server side of the TLS handshake on `socket` (blocking; its read timeout and
/// the connection's handshake deadline bound it), then starts the pump, which ends the
/// session when the client takes none of what waits for it for `stall`.
pub(crate) fn start<S: Stream>(
    mut socket: S,
    config: Arc<ServerConfig>,
    stall: std::time::Duration,
) -> Result<Tls, NbdError> {
    let mut conn = ServerConnection::new(config)
        .map_err(|e| NbdError::Io(io::Error::other(format!("TLS: {e}"))))?;
    while conn.is_handshaking() {
        // On a bad certificate rustls sends its alert and returns the error.
        conn.complete_io(&mut socket)?;
    }
    let peer = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    let (plain, theirs) = UnixStream::pair()?;
    let client = std::sync::Mutex::new(socket.clone_stream()?);
    let hang_up = Arc::new(move || {
        client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .shutdown_both()
    });
    socket.set_nonblocking(true)?;
    theirs.set_nonblocking(true)?;
    let pump = std::thread::Builder::new()
        .name("nbd-tls".into())
        .spawn(move || {
            if let Err(e) = pump(socket, conn, theirs, stall) {
                tracing::debug!(error = %e, "nbd TLS session ended with an error");
            }
        })?;
    Ok(Tls {
        plain,
        peer,
        pump,
        hang_up,
    })
}

/// Moves bytes until both sides are done: records from the client are decrypted and
/// written to `plain`; what the connection writes to `plain` is encrypted and sent. The
/// client closing makes `plain` read end-of-file once every byte before the close is
/// through; the connection closing its end sends `close_notify` and closes the socket.
fn pump<S: Stream>(
    mut socket: S,
    mut conn: ServerConnection,
    mut plain: UnixStream,
    stall: std::time::Duration,
) -> io::Result<()> {
    // When the client last took bytes (or had none waiting): records it leaves unread for
    // `stall` end the session, and the connection's replies held for it go.
    let mut last_taken = std::time::Instant::now();
    let mut inbound: Vec<u8> = Vec::new();
    let mut outbound: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // `socket_eof`: nothing more will come from the client's socket (end of file, or its
    // close_notify read); `client_done`: and every byte rustls decrypted before it is taken
    // (a close_notify often comes in the same read as the last request: a disconnect).
    let (mut socket_eof, mut client_done) = (false, false);
    let (mut server_done, mut told_server) = (false, false);
    loop {
        // What the client sent, decrypted (the first of it may have come with the end of
        // the handshake, before any poll).
        while !client_done && inbound.len() < INBOUND_LIMIT {
            match conn.reader().read(&mut buf) {
                Ok(0) => client_done = true,
                Ok(n) => pass_on(&mut plain, &mut inbound, &buf[..n], told_server),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // All that came is taken; at the socket's end that is all there is.
                    client_done = socket_eof;
                    break;
                }
                // Closed without close_notify: what came before still counts.
                Err(_) => client_done = true,
            }
        }
        // What the connection wrote, into records and onto the socket, as far as each
        // takes it now (rustls takes more once its records are sent).
        loop {
            let mut moved = false;
            if !outbound.is_empty() {
                let n = conn.writer().write(&outbound)?;
                outbound.drain(..n);
                moved |= n > 0;
            }
            if conn.wants_write() {
                match conn.write_tls(&mut socket) {
                    Ok(n) => {
                        moved |= n > 0;
                        if n > 0 {
                            last_taken = std::time::Instant::now();
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            if !moved {
                break;
            }
        }
        while !inbound.is_empty() && !told_server {
            match plain.write(&inbound) {
                Ok(n) => {
                    inbound.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The connection stopped reading: what the client sends is dropped from
                // now on, and what the connection wrote still goes out, with close_notify.
                Err(_) => {
                    inbound.clear();
                    (socket_eof, client_done, told_server) = (true, true, true);
                }
            }
        }
        if client_done && inbound.is_empty() && !told_server {
            let _ = plain.shutdown(std::net::Shutdown::Write);
            told_server = true;
        }
        if server_done && outbound.is_empty() && !conn.wants_write() {
            socket.shutdown_both();
            return Ok(());
        }
        // A side that needs nothing is left out of the poll (an end-of-file or hang-up
        // would otherwise wake it at once, forever).
        let socket_events = if !socket_eof && inbound.len() < INBOUND_LIMIT {
            libc::POLLIN
        } else {
            0
        } | if conn.wants_write() { libc::POLLOUT } else { 0 };
        let plain_events = if !server_done && outbound.is_empty() {
            libc::POLLIN
        } else {
            0
        } | if inbound.is_empty() || told_server {
            0
        } else {
            libc::POLLOUT
        };
        if socket_events == 0 && plain_events == 0 {
            // Nothing can move any more (both ends closed with data left): done.
            return Ok(());
        }
        let mut fds = [
            libc::pollfd {
                fd: if socket_events == 0 {
                    -1
                } else {
                    socket.as_raw_fd()
                },
                events: socket_events,
                revents: 0,
            },
            libc::pollfd {
                fd: if plain_events == 0 {
                    -1
                } else {
                    plain.as_raw_fd()
                },
                events: plain_events,
                revents: 0,
            },
        ];
        let timeout = if conn.wants_write() {
            let left = stall.saturating_sub(last_taken.elapsed());
            if left.is_zero() {
                socket.shutdown_both();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client took no replies for the stall timeout",
                ));
            }
            i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1)
        } else {
            last_taken = std::time::Instant::now();
            -1
        };
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let ready = libc::POLLIN | libc::POLLHUP | libc::POLLERR;
        if fds[0].revents & ready != 0 {
            // Records as they come, until the socket has no more now (each read takes at
            // most what one buffer of rustls holds), decrypted as they are read.
            while !socket_eof && inbound.len() < INBOUND_LIMIT {
                match conn.read_tls(&mut socket) {
                    Ok(0) => socket_eof = true,
                    Ok(_) => match conn.process_new_packets() {
                        Ok(state) => socket_eof |= state.peer_has_closed(),
                        Err(e) => {
                            // Send the alert rustls queued, then give up.
                            let _ = conn.write_tls(&mut socket);
                            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                        }
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
                while inbound.len() < INBOUND_LIMIT {
                    match conn.reader().read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => pass_on(&mut plain, &mut inbound, &buf[..n], told_server),
                        Err(_) => break,
                    }
                }
            }
        }
        if fds[1].revents & ready != 0 && outbound.is_empty() && !server_done {
            match plain.read(&mut buf) {
                Ok(0) => {
                    server_done = true;
                    conn.send_close_notify();
                }
                // Straight into records; only what rustls does not take now is kept.
                Ok(n) => {
                    let took = conn.writer().write(&buf[..n])?;
                    outbound.extend_from_slice(&buf[took..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    server_done = true;
                    conn.send_close_notify();
                }
            }
        }
    }
}

/// Writes decrypted bytes to the connection's end straight away when nothing is queued
/// before them, and queues what it does not take now (all of it if something is queued, or
/// on an error, which the next write of the queue meets again).
fn pass_on(plain: &mut UnixStream, inbound: &mut Vec<u8>, bytes: &[u8], told_server: bool) {
    let took = if inbound.is_empty() && !told_server {
        plain.write(bytes).unwrap_or(0)
    } else {
        0
    };
    inbound.extend_from_slice(&bytes[took..]);
}
