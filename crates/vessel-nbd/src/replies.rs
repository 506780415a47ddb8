//! The reply side of a connection: replies are queued by the thread serving requests and
//! written by a thread of their own, so that the server keeps reading requests while a
//! client that pipelines many of them has not read the replies yet (with one thread both
//! would wait on each other once the socket buffers fill). The queue is bounded in bytes
//! ([`MAX_QUEUED`] per connection): past that the serving thread waits for the client to
//! read, as a client that pipelines more than that without reading deserves.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Reply bytes queued at most before the serving thread waits (one reply of any size is
/// always taken when nothing waits).
pub const MAX_QUEUED: usize = 32 << 20;

#[derive(Default)]
struct Queue {
    items: VecDeque<Vec<u8>>,
    bytes: usize,
    closed: bool,
    /// Why writing stopped.
    failed: Option<io::ErrorKind>,
}

struct Shared {
    q: Mutex<Queue>,
    changed: Condvar,
}

/// The serving thread's end: a `Write` whose `flush` queues what was written as one reply.
pub(crate) struct Replies {
    buf: Vec<u8>,
    shared: Arc<Shared>,
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
    /// Starts the thread writing to `out`.
    pub(crate) fn start<W: Write + Send + 'static>(mut out: W) -> io::Result<(Replies, Sender)> {
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue::default()),
            changed: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("nbd-replies".into())
            .spawn(move || -> io::Result<()> {
                loop {
                    let item = {
                        let mut q = s.q.lock().unwrap_or_else(PoisonError::into_inner);
                        loop {
                            if let Some(item) = q.items.pop_front() {
                                q.bytes -= item.len();
                                s.changed.notify_all();
                                break Some((item, q.items.is_empty()));
                            }
                            if q.closed {
                                break None;
                            }
                            q = s.changed.wait(q).unwrap_or_else(PoisonError::into_inner);
                        }
                    };
                    let Some((item, last)) = item else {
                        return out.flush();
                    };
                    let r = out
                        .write_all(&item)
                        .and_then(|()| if last { out.flush() } else { Ok(()) });
                    if let Err(e) = r {
                        let mut q = s.q.lock().unwrap_or_else(PoisonError::into_inner);
                        q.failed = Some(e.kind());
                        q.items.clear();
                        q.bytes = 0;
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
        if self.buf.is_empty() {
            return Ok(());
        }
        let item = std::mem::take(&mut self.buf);
        let mut q = self.shared.q.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(kind) = q.failed {
                return Err(io::Error::new(kind, "writing replies failed"));
            }
            if q.bytes == 0 || q.bytes + item.len() <= MAX_QUEUED {
                break;
            }
            q = self
                .shared
                .changed
                .wait(q)
                .unwrap_or_else(PoisonError::into_inner);
        }
        q.bytes += item.len();
        q.items.push_back(item);
        self.shared.changed.notify_all();
        Ok(())
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
