//! The reply side of a connection. A thread that has a whole reply sends it straight to the
//! socket if nothing is queued before it and the socket takes it without waiting
//! (`send` with `MSG_DONTWAIT`), the cheap path a client waiting for each reply takes.
//! Otherwise the reply (or what the socket did not take) is queued and written by a
//! thread of its own, so that the server keeps reading requests while a client that
//! pipelines many of them has not read the replies yet (with one thread both would wait on
//! each other once the socket buffers fill). The queue is bounded in bytes ([`MAX_QUEUED`]
//! per connection): past that the serving thread waits for the client to read, as a
//! client that pipelines more than that without reading deserves.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::bufs::Buf;

/// Reply bytes queued at most before the serving thread waits (one reply of any size is
/// always taken when nothing waits).
pub const MAX_QUEUED: usize = 32 << 20;

#[derive(Default)]
struct Queue {
    items: VecDeque<Buf>,
    bytes: usize,
    /// The writing thread holds an item it has not finished writing.
    writing: bool,
    closed: bool,
    /// Why writing stopped.
    failed: Option<io::ErrorKind>,
}

struct Shared {
    q: Mutex<Queue>,
    changed: Condvar,
    fd: RawFd,
    /// Sent replies' buffers, for the export's next ones.
    bufs: crate::bufs::Pool,
}

/// The serving thread's end: a `Write` whose `flush` sends what was written as one reply.
pub(crate) struct Replies {
    buf: Vec<u8>,
    shared: Arc<Shared>,
}

/// Another thread's way to send whole replies on the same connection.
#[derive(Clone)]
pub(crate) struct ReplyQueue {
    shared: Arc<Shared>,
}

impl ReplyQueue {
    /// Sends or queues one whole reply, waiting while the queue is full.
    pub(crate) fn send(&self, item: Buf) -> io::Result<()> {
        send(&self.shared, item)
    }

    /// The export's buffers (a sent reply's come back here).
    pub(crate) fn bufs(&self) -> &crate::bufs::Pool {
        &self.shared.bufs
    }
}

/// Writes as much of `buf` as the socket takes now; the bytes taken.
fn send_now(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the live slice `buf[done..]`.
        let n = unsafe {
            libc::send(
                fd,
                buf[done..].as_ptr().cast(),
                buf.len() - done,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(done),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
        done += n as usize;
    }
    Ok(done)
}

/// Ends a connection whose replies cannot be written: a thread waiting in `recv` for the
/// client's next request gets the end of the stream instead of waiting for a client that
/// may send nothing more (one that shut down its reading side).
fn hang_up(fd: RawFd) {
    // SAFETY: a plain system call on the connection's socket. The reply thread holds it
    // open until it ends, which is after its own call here, and after any serving thread's
    // (it ends on `failed`, set under the same lock first, or once every serving thread is
    // done); a failure (shut down already) changes nothing.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

fn send(shared: &Shared, mut item: Buf) -> io::Result<()> {
    if item.is_empty() {
        return Ok(());
    }
    let mut q = shared.q.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(kind) = q.failed {
        return Err(io::Error::new(kind, "writing replies failed"));
    }
    if q.items.is_empty() && !q.writing {
        // Nothing before it: straight out, if the socket has room. The lock keeps any
        // other reply from slipping in between.
        match send_now(shared.fd, &item) {
            Ok(n) if n == item.len() => {
                drop(q);
                shared.bufs.give(item);
                return Ok(());
            }
            Ok(n) => item.advance(n),
            Err(e) => {
                q.failed = Some(e.kind());
                shared.changed.notify_all();
                hang_up(shared.fd);
                return Err(e);
            }
        }
    }
    loop {
        if let Some(kind) = q.failed {
            return Err(io::Error::new(kind, "writing replies failed"));
        }
        if q.bytes == 0 || q.bytes + item.len() <= MAX_QUEUED {
            break;
        }
        q = shared
            .changed
            .wait(q)
            .unwrap_or_else(PoisonError::into_inner);
    }
    q.bytes += item.len();
    q.items.push_back(item);
    shared.changed.notify_all();
    Ok(())
}

/// The writing thread.
pub(crate) struct Sender(JoinHandle<io::Result<()>>);

impl Sender {
    /// Waits for every queued reply to be written.
    pub(crate) fn join(self) -> io::Result<()> {
        self.0
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the reply thread panicked")))
    }
}

impl Replies {
    /// A handle for other threads to send replies.
    pub(crate) fn queue(&self) -> ReplyQueue {
        ReplyQueue {
            shared: self.shared.clone(),
        }
    }

    /// Starts the thread writing to `out` (a socket, written unbuffered).
    pub(crate) fn start<W: Write + AsRawFd + Send + 'static>(
        mut out: W,
        bufs: crate::bufs::Pool,
    ) -> io::Result<(Replies, Sender)> {
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            fd: out.as_raw_fd(),
            bufs,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("nbd-replies".into())
            .spawn(move || -> io::Result<()> {
                loop {
                    let item = {
                        let mut q = s.q.lock().unwrap_or_else(PoisonError::into_inner);
                        q.writing = false;
                        s.changed.notify_all();
                        loop {
                            if let Some(item) = q.items.pop_front() {
                                q.bytes -= item.len();
                                q.writing = true;
                                s.changed.notify_all();
                                break Some(item);
                            }
                            if q.closed || q.failed.is_some() {
                                break None;
                            }
                            q = s.changed.wait(q).unwrap_or_else(PoisonError::into_inner);
                        }
                    };
                    let Some(item) = item else {
                        return out.flush();
                    };
                    let written = out.write_all(&item).and_then(|()| out.flush());
                    s.bufs.give(item);
                    if let Err(e) = written {
                        hang_up(s.fd);
                        let mut q = s.q.lock().unwrap_or_else(PoisonError::into_inner);
                        q.failed = Some(e.kind());
                        q.items.clear();
                        q.bytes = 0;
                        q.writing = false;
                        s.changed.notify_all();
                        return Err(e);
                    }
                }
            })?;
        Ok((
            Replies {
                buf: Vec::new(),
                shared,
            },
            Sender(thread),
        ))
    }
}

impl Write for Replies {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let item = std::mem::take(&mut self.buf);
        send(&self.shared, item.into())
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        let _ = self.flush();
        let mut q = self.shared.q.lock().unwrap_or_else(PoisonError::into_inner);
        q.closed = true;
        self.shared.changed.notify_all();
    }
}
