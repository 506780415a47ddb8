//! Helpers shared by the integration tests: temp dirs, member files, pseudo-random data.

#![allow(dead_code)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes before the data area on every member (mirrors the engine's layout).
pub const DATA_OFFSET: u64 = vessel_raid::layout::DATA_OFFSET;

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        Self::new_in(&std::env::temp_dir(), tag)
    }

    /// A directory under `parent`.
    pub fn new_in(parent: &Path, tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = parent.join(format!(
            "vessel-raid-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Creates `n` sparse member files of `size` bytes named `<prefix><i>`.
    pub fn members(&self, prefix: &str, n: usize, size: u64) -> Vec<PathBuf> {
        (0..n)
            .map(|i| self.file(&format!("{prefix}{i}"), size))
            .collect()
    }

    /// Creates one sparse file.
    pub fn file(&self, name: &str, size: u64) -> PathBuf {
        let p = self.0.join(name);
        let f = File::create(&p).expect("create member");
        f.set_len(size).expect("size member");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Flips bytes of a member file directly, behind the engine's back.
pub fn corrupt(path: &Path, offset: u64, len: usize) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open member");
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).expect("read member");
    for b in &mut buf {
        *b ^= 0x5a;
    }
    f.write_all_at(&buf, offset).expect("write member");
    f.sync_all().expect("sync member");
}

/// Contents of every file, to prove nothing was written.
pub fn snapshot(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| fs::read(p).expect("read file"))
        .collect()
}
