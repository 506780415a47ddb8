//! Chunks stored and read by several threads at once, in order: hashing, compressing and
//! checking cost more than reading, so they run on every core.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::chunk::{Chunks, Digest, Stored};
use crate::error::{BackupError, Result};
use crate::index::ChunkRef;

/// What a backup wrote and found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Bytes of data the backup holds.
    pub bytes: u64,
    /// Bytes it read from the source (files it could skip were not read).
    pub read: u64,
    /// Chunks it wrote.
    pub new_chunks: u64,
    /// Bytes those took in the store.
    pub new_bytes: u64,
    /// Chunks it found stored already.
    pub known_chunks: u64,
    /// Files taken unread from the backup before (unchanged since).
    pub files_reused: u64,
}

impl Stats {
    pub(crate) fn add(&mut self, o: &Stats) {
        self.bytes += o.bytes;
        self.read += o.read;
        self.new_chunks += o.new_chunks;
        self.new_bytes += o.new_bytes;
        self.known_chunks += o.known_chunks;
        self.files_reused += o.files_reused;
    }
}

fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

/// Stores chunks handed to it in order; [`Storer::finish`] gives their references, in the
/// order they were handed over.
pub struct Storer {
    jobs: Option<SyncSender<(usize, Vec<u8>)>>,
    results: Receiver<(usize, Result<(ChunkRef, Stored)>)>,
    threads: Vec<JoinHandle<()>>,
    next: usize,
    /// Chunks handed over by reference (stored already), by sequence number.
    known: Vec<(usize, ChunkRef)>,
}

impl Storer {
    pub fn new(chunks: &Chunks) -> Result<Storer> {
        let n = workers();
        let (jtx, jrx) = sync_channel::<(usize, Vec<u8>)>(n * 2);
        let (rtx, rrx) = std::sync::mpsc::channel();
        let jrx = Arc::new(Mutex::new(jrx));
        let mut threads = Vec::new();
        for _ in 0..n {
            let (jrx, rtx, chunks) = (jrx.clone(), rtx.clone(), chunks.clone());
            let lock = chunks.lock()?;
            threads.push(std::thread::spawn(move || loop {
                let job = jrx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((seq, data)) = job else { return };
                let d = Digest::of(&data);
                let r = chunks
                    .insert(&lock, &d, &data)
                    .map(|s| (ChunkRef(d, data.len() as u64), s));
                if rtx.send((seq, r)).is_err() {
                    return;
                }
            }));
        }
        Ok(Storer {
            jobs: Some(jtx),
            results: rrx,
            threads,
            next: 0,
            known: Vec::new(),
        })
    }

    /// Hands over the next chunk; returns its sequence number.
    pub fn push(&mut self, data: Vec<u8>) -> Result<usize> {
        let seq = self.next;
        self.next += 1;
        let jobs = self.jobs.as_ref().expect("not finished");
        if jobs.send((seq, data)).is_err() {
            return Err(BackupError::Invalid("the chunk writers stopped".into()));
        }
        Ok(seq)
    }

    /// Hands over, as the next chunk, one the store holds already (an earlier backup's,
    /// which the writer's base keeps from `gc`).
    pub fn push_ref(&mut self, c: ChunkRef) {
        self.known.push((self.next, c));
        self.next += 1;
    }

    /// The sequence number the next chunk gets.
    pub fn next_seq(&self) -> usize {
        self.next
    }

    /// Every chunk's reference, in order, and what storing them did.
    pub fn finish(mut self) -> Result<(Vec<ChunkRef>, Stats)> {
        drop(self.jobs.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut refs: Vec<Option<ChunkRef>> = vec![None; self.next];
        let mut stats = Stats::default();
        let mut first_err = None;
        for (seq, c) in self.known.drain(..) {
            refs[seq] = Some(c);
        }
        for (seq, r) in self.results.try_iter() {
            match r {
                Ok((c, s)) => {
                    match s {
                        Stored::Present => stats.known_chunks += 1,
                        Stored::Written(n) => {
                            stats.new_chunks += 1;
                            stats.new_bytes += n;
                        }
                    }
                    refs[seq] = Some(c);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let refs = refs
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| BackupError::Invalid("a chunk writer stopped early".into()))?;
        Ok((refs, stats))
    }
}

impl Drop for Storer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Reads chunks in order, several ahead on other threads, each checked against its name and
/// the length its reference gives.
pub struct Reader {
    jobs: Option<SyncSender<(usize, ChunkRef)>>,
    results: Receiver<(usize, Result<Vec<u8>>)>,
    threads: Vec<JoinHandle<()>>,
    pending: std::vec::IntoIter<ChunkRef>,
    sent: usize,
    next: usize,
    ready: BTreeMap<usize, Result<Vec<u8>>>,
    window: usize,
}

impl Reader {
    pub fn new(chunks: &Chunks, refs: Vec<ChunkRef>) -> Reader {
        let n = workers();
        let (jtx, jrx) = sync_channel::<(usize, ChunkRef)>(n * 4);
        let (rtx, rrx) = std::sync::mpsc::channel();
        let jrx = Arc::new(Mutex::new(jrx));
        let mut threads = Vec::new();
        for _ in 0..n {
            let (jrx, rtx, chunks) = (jrx.clone(), rtx.clone(), chunks.clone());
            threads.push(std::thread::spawn(move || loop {
                let job = jrx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((seq, c)) = job else { return };
                let r = chunks.read(&c.0).and_then(|data| {
                    if data.len() as u64 == c.1 {
                        Ok(data)
                    } else {
                        Err(BackupError::Corrupt(format!(
                            "chunk {} holds {} bytes, its reference says {}",
                            c.0,
                            data.len(),
                            c.1
                        )))
                    }
                });
                if rtx.send((seq, r)).is_err() {
                    return;
                }
            }));
        }
        let mut r = Reader {
            jobs: Some(jtx),
            results: rrx,
            threads,
            pending: refs.into_iter(),
            sent: 0,
            next: 0,
            ready: BTreeMap::new(),
            window: n * 2,
        };
        r.fill();
        r
    }

    fn fill(&mut self) {
        while self.sent < self.next + self.window {
            let Some(d) = self.pending.next() else { return };
            let jobs = self.jobs.as_ref().expect("open");
            if jobs.send((self.sent, d)).is_err() {
                return;
            }
            self.sent += 1;
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Vec<u8>>;
    fn next(&mut self) -> Option<Result<Vec<u8>>> {
        if self.next >= self.sent {
            return None;
        }
        loop {
            if let Some(r) = self.ready.remove(&self.next) {
                self.next += 1;
                self.fill();
                return Some(r);
            }
            match self.results.recv() {
                Ok((seq, r)) => {
                    self.ready.insert(seq, r);
                }
                Err(_) => {
                    return Some(Err(BackupError::Invalid(
                        "the chunk readers stopped".into(),
                    )))
                }
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        drop(self.jobs.take());
        // Results still coming are dropped with the channel; readers stop at their next job.
        while self.results.try_recv().is_ok() {}
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
