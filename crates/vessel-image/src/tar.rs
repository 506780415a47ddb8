//! A small, strict tar reader and writer for image layers: ustar, GNU long names and PAX.
//!
//! The reader never trusts a header: checksums are verified, sizes are returned for the caller
//! to bound before any data is read, the extension records of one entry (GNU long names, PAX
//! records, global headers) are capped together, and an archive that ends before its
//! end-of-archive marker or in the middle of an entry is reported as truncated.

use std::io::{self, Read, Write};

/// Most bytes of extension records (GNU long names and links, PAX and global records) read
/// for one entry, all of them together: names and xattrs live there, and they are held in
/// memory until the entry's header is returned. A cap per record alone let a stream of many
/// records before one entry grow without bound.
pub const MAX_ENTRY_METADATA: u64 = 1 << 20;
const BLOCK: usize = 512;

/// PAX records as (key, value).
type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// What a tar entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Regular file (with data).
    File,
    /// Hard link to an earlier entry.
    HardLink,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Directory.
    Directory,
    /// Named pipe.
    Fifo,
    /// Any other type flag (sparse files, volume labels...).
    Other(u8),
}

impl EntryKind {
    fn from_flag(flag: u8) -> Self {
        match flag {
            b'0' | 0 | b'7' => Self::File,
            b'1' => Self::HardLink,
            b'2' => Self::Symlink,
            b'3' => Self::CharDevice,
            b'4' => Self::BlockDevice,
            b'5' => Self::Directory,
            b'6' => Self::Fifo,
            other => Self::Other(other),
        }
    }

    fn flag(self) -> u8 {
        match self {
            Self::File => b'0',
            Self::HardLink => b'1',
            Self::Symlink => b'2',
            Self::CharDevice => b'3',
            Self::BlockDevice => b'4',
            Self::Directory => b'5',
            Self::Fifo => b'6',
            Self::Other(f) => f,
        }
    }

    /// Whether data blocks follow the header (as Go's archive/tar decides).
    pub fn has_data(self) -> bool {
        matches!(self, Self::File | Self::Other(_))
    }
}

/// One entry's header, with GNU and PAX extensions already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Path as bytes, as written (may be absolute, contain `..` or even NUL from PAX).
    pub path: Vec<u8>,
    /// Link target for hard and symbolic links.
    pub link: Vec<u8>,
    /// Entry type.
    pub kind: EntryKind,
    /// Permission bits (including setuid, setgid, sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Data size in bytes (zero for entries without data).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Extended attributes (from `SCHILY.xattr.*` PAX records).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Header {
    /// A header of `kind` for `path` with everything else zero.
    pub fn new(kind: EntryKind, path: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            link: Vec::new(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Why a tar stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// The stream ended early.
    #[error("archive is truncated at byte {offset}: {what}")]
    Truncated {
        /// Where the stream ended.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// A header failed its checksum or had an unreadable field.
    #[error("corrupt tar header at byte {offset}: {why}")]
    BadHeader {
        /// Header offset.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// Reading the underlying stream failed (including decompression errors).
    #[error("reading the archive stream")]
    Io(#[source] io::Error),
}

/// Reads headers and data of a tar stream, strictly.
pub struct TarReader<R> {
    inner: R,
    offset: u64,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    done: bool,
}

impl<R: Read> TarReader<R> {
    /// Reads a tar stream from `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            remaining: 0,
            padding: 0,
            done: false,
        }
    }

    /// Bytes consumed from the stream so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The underlying stream.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn read_exact_or_truncated(
        &mut self,
        buf: &mut [u8],
        what: &'static str,
    ) -> Result<(), TarError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(TarError::Truncated {
                        offset: self.offset + filled as u64,
                        what,
                    })
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TarError::Io(e)),
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, mut n: u64, what: &'static str) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let chunk = n.min(buf.len() as u64) as usize;
            self.read_exact_or_truncated(&mut buf[..chunk], what)?;
            n -= chunk as u64;
        }
        Ok(())
    }

    /// Reads one extension record; `used` is what the entry's earlier records took.
    fn read_extension(
        &mut self,
        size: u64,
        offset: u64,
        used: &mut u64,
    ) -> Result<Vec<u8>, TarError> {
        *used = used.saturating_add(size);
        if *used > MAX_ENTRY_METADATA {
            return Err(TarError::BadHeader {
                offset,
                why: format!(
                    "extension records of {used} bytes or more for one entry (at most \
                     {MAX_ENTRY_METADATA} bytes of long names, PAX records and xattrs together)"
                ),
            });
        }
        let mut v = vec![0u8; size as usize];
        self.read_exact_or_truncated(&mut v, "extension record")?;
        self.skip(pad(size), "padding")?;
        Ok(v)
    }

    /// The next entry's header, or `None` at the end-of-archive marker. Unread data of the
    /// previous entry is skipped.
    pub fn next_header(&mut self) -> Result<Option<Header>, TarError> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.remaining + self.padding, "entry data")?;
        self.remaining = 0;
        self.padding = 0;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: PaxRecords = Vec::new();
        let mut used = 0u64;
        loop {
            let offset = self.offset;
            let mut block = [0u8; BLOCK];
            match self.read_exact_or_truncated(&mut block, "header") {
                Err(TarError::Truncated { offset: o, .. }) if o == offset => {
                    return Err(TarError::Truncated {
                        offset,
                        what: "end-of-archive marker missing",
                    })
                }
                r => r?,
            }
            if block.iter().all(|&b| b == 0) {
                self.done = true;
                return Ok(None);
            }
            verify_checksum(&block, offset)?;
            let flag = block[156];
            let size = numeric(&block[124..136], offset, "size")?;
            match flag {
                b'L' => long_name = Some(trim_nul(self.read_extension(size, offset, &mut used)?)),
                b'K' => long_link = Some(trim_nul(self.read_extension(size, offset, &mut used)?)),
                b'x' => pax.extend(parse_pax(
                    &self.read_extension(size, offset, &mut used)?,
                    offset,
                )?),
                // Global records apply to every later entry; image layers do not use them.
                b'g' => drop(self.read_extension(size, offset, &mut used)?),
                _ => {
                    let mut h = parse_header(&block, offset)?;
                    if let Some(n) = long_name {
                        h.path = n;
                    }
                    if let Some(l) = long_link {
                        h.link = l;
                    }
                    apply_pax(&mut h, pax, offset)?;
                    if !h.kind.has_data() {
                        h.size = 0;
                    }
                    self.remaining = h.size;
                    self.padding = pad(h.size);
                    return Ok(Some(h));
                }
            }
        }
    }

    /// Reads the current entry's data; a stream ending inside it is an `UnexpectedEof` error.
    pub fn data(&mut self) -> EntryData<'_, R> {
        EntryData { tar: self }
    }
}

/// The data of the current entry (see [`TarReader::data`]).
pub struct EntryData<'a, R> {
    tar: &'a mut TarReader<R>,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tar.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.tar.remaining.min(usize::MAX as u64) as usize);
        let n = self.tar.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "archive is truncated at byte {}: entry data",
                    self.tar.offset
                ),
            ));
        }
        self.tar.remaining -= n as u64;
        self.tar.offset += n as u64;
        Ok(n)
    }
}

fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn field(b: &[u8]) -> Vec<u8> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b[..end].to_vec()
}

fn verify_checksum(block: &[u8; BLOCK], offset: u64) -> Result<(), TarError> {
    let stored = numeric(&block[148..156], offset, "checksum")?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
        Ok(())
    } else {
        Err(TarError::BadHeader {
            offset,
            why: format!("checksum {stored} does not match the header's {unsigned}"),
        })
    }
}

/// Parses an octal (or GNU base-256) numeric field.
fn numeric(b: &[u8], offset: u64, name: &str) -> Result<u64, TarError> {
    let bad = |why: &str| TarError::BadHeader {
        offset,
        why: format!("{name} field {why}"),
    };
    if b.first().is_some_and(|&c| c & 0x80 != 0) {
        if b[0] == 0xff {
            return Err(bad("is negative"));
        }
        let mut v: u64 = u64::from(b[0] & 0x7f);
        for &c in &b[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(c)))
                .ok_or_else(|| bad("overflows"))?;
        }
        return Ok(v);
    }
    let s: Vec<u8> = b
        .iter()
        .copied()
        .take_while(|&c| c != 0)
        .filter(|&c| c != b' ')
        .collect();
    if s.is_empty() {
        return Ok(0);
    }
    let mut v: u64 = 0;
    for c in s {
        if !(b'0'..=b'7').contains(&c) {
            return Err(bad("is not octal"));
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
            .ok_or_else(|| bad("overflows"))?;
    }
    Ok(v)
}

fn parse_header(b: &[u8; BLOCK], offset: u64) -> Result<Header, TarError> {
    let small = |r: std::ops::Range<usize>, name| -> Result<u32, TarError> {
        u32::try_from(numeric(&b[r], offset, name)?).map_err(|_| TarError::BadHeader {
            offset,
            why: format!("{name} field out of range"),
        })
    };
    let mut path = field(&b[0..100]);
    // POSIX ustar splits long names into prefix + name; GNU headers use that space otherwise.
    if &b[257..263] == b"ustar\0" {
        let prefix = field(&b[345..500]);
        if !prefix.is_empty() {
            path = [prefix, b"/".to_vec(), path].concat();
        }
    }
    Ok(Header {
        path,
        link: field(&b[157..257]),
        kind: EntryKind::from_flag(b[156]),
        mode: small(100..108, "mode")? & 0o7777,
        uid: numeric(&b[108..116], offset, "uid")?,
        gid: numeric(&b[116..124], offset, "gid")?,
        size: numeric(&b[124..136], offset, "size")?,
        mtime: i64::try_from(numeric(&b[136..148], offset, "mtime")?).unwrap_or(i64::MAX),
        dev_major: small(329..337, "devmajor")?,
        dev_minor: small(337..345, "devminor")?,
        xattrs: Vec::new(),
    })
}

fn parse_pax(data: &[u8], offset: u64) -> Result<PaxRecords, TarError> {
    let bad = |why: &str| TarError::BadHeader {
        offset,
        why: format!("PAX record {why}"),
    };
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&c| c == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&c| c == b' ')
            .ok_or_else(|| bad("has no length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("length is not a number"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("length does not fit"));
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&c| c == b'=')
            .ok_or_else(|| bad("has no '='"))?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

fn apply_pax(h: &mut Header, pax: PaxRecords, offset: u64) -> Result<(), TarError> {
    let num = |v: &[u8], name: &str| -> Result<u64, TarError> {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| TarError::BadHeader {
                offset,
                why: format!("PAX {name} is not a number"),
            })
    };
    for (k, v) in pax {
        match k.as_slice() {
            b"path" => h.path = v,
            b"linkpath" => h.link = v,
            b"size" => h.size = num(&v, "size")?,
            b"uid" => h.uid = num(&v, "uid")?,
            b"gid" => h.gid = num(&v, "gid")?,
            b"mtime" => {
                let secs = v.split(|&c| c == b'.').next().unwrap_or_default();
                let neg = secs.first() == Some(&b'-');
                let n = num(if neg { &secs[1..] } else { secs }, "mtime")?;
                let n = i64::try_from(n).unwrap_or(i64::MAX);
                h.mtime = if neg { -n } else { n };
            }
            k if k.starts_with(b"SCHILY.xattr.") => h.xattrs.push((k[13..].to_vec(), v)),
            k if k.starts_with(b"GNU.sparse.") => h.kind = EntryKind::Other(b'S'),
            _ => {}
        }
    }
    Ok(())
}

/// Writes a tar stream: ustar headers, with a PAX record when a value does not fit.
pub struct TarWriter<W: Write> {
    inner: W,
}

impl<W: Write> TarWriter<W> {
    /// Writes to `inner`.
    pub fn new(inner: W) -> Self {
        Self { inner }
    }

    /// Appends one entry; `data` must yield exactly `h.size` bytes for entries with data.
    pub fn append(&mut self, h: &Header, data: &mut dyn Read) -> io::Result<()> {
        let mut pax: PaxRecords = Vec::new();
        let (name, prefix) = split_name(&h.path).unwrap_or_else(|| {
            pax.push((b"path".to_vec(), h.path.clone()));
            (h.path[..h.path.len().min(99)].to_vec(), Vec::new())
        });
        if h.link.len() > 100 {
            pax.push((b"linkpath".to_vec(), h.link.clone()));
        }
        let fits = |v: u64, width: usize| v < 8u64.pow(width as u32 - 1);
        for (key, v, w) in [
            (&b"uid"[..], h.uid, 8),
            (b"gid", h.gid, 8),
            (b"size", h.size, 12),
        ] {
            if !fits(v, w) {
                pax.push((key.to_vec(), v.to_string().into_bytes()));
            }
        }
        for (k, v) in &h.xattrs {
            pax.push(([&b"SCHILY.xattr."[..], k].concat(), v.clone()));
        }
        if !pax.is_empty() {
            let body = pax_records(&pax);
            let mut ph = Header::new(EntryKind::Other(b'x'), b"././@PaxHeader".to_vec());
            ph.size = body.len() as u64;
            self.inner
                .write_all(&ustar_block(&ph, b"././@PaxHeader", b""))?;
            self.inner.write_all(&body)?;
            self.inner.write_all(&vec![0u8; pad(ph.size) as usize])?;
        }
        self.inner.write_all(&ustar_block(h, &name, &prefix))?;
        if h.kind.has_data() {
            let copied = io::copy(&mut data.take(h.size), &mut self.inner)?;
            if copied != h.size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file changed size while it was archived",
                ));
            }
            self.inner.write_all(&vec![0u8; pad(h.size) as usize])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(&[0u8; BLOCK * 2])?;
        Ok(self.inner)
    }
}

/// Splits a path into ustar (name, prefix), or `None` when it needs a PAX record.
fn split_name(path: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    if !path.is_ascii() || path.contains(&0) {
        return None;
    }
    if path.len() <= 100 {
        return Some((path.to_vec(), Vec::new()));
    }
    let cut = path
        .iter()
        .enumerate()
        .filter(|&(i, &c)| c == b'/' && i <= 155 && path.len() - i - 1 <= 100 && i > 0)
        .map(|(i, _)| i)
        .next()?;
    Some((path[cut + 1..].to_vec(), path[..cut].to_vec()))
}

fn pax_records(recs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in recs {
        let base = k.len() + v.len() + 3; // space, '=', newline
        let mut len = base + 1;
        while base + len.to_string().len() != len {
            len = base + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} ").as_bytes());
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

fn octal(dst: &mut [u8], v: u64) {
    let w = dst.len() - 1;
    let v = v.min(8u64.pow(w as u32) - 1);
    let s = format!("{v:0w$o}");
    dst[..w].copy_from_slice(s.as_bytes());
    dst[w] = 0;
}

fn ustar_block(h: &Header, name: &[u8], prefix: &[u8]) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    octal(&mut b[108..116], h.uid);
    octal(&mut b[116..124], h.gid);
    octal(&mut b[124..136], h.size);
    octal(&mut b[136..148], u64::try_from(h.mtime).unwrap_or(0));
    b[156] = h.kind.flag();
    if h.link.len() <= 100 {
        b[157..157 + h.link.len()].copy_from_slice(&h.link);
    }
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    octal(&mut b[329..337], u64::from(h.dev_major));
    octal(&mut b[337..345], u64::from(h.dev_minor));
    b[345..345 + prefix.len()].copy_from_slice(prefix);
    b[148..156].copy_from_slice(b"        ");
    let sum: u64 = b.iter().map(|&c| u64::from(c)).sum();
    octal(&mut b[148..155], sum);
    b[155] = b' ';
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back_long_names_and_xattrs() {
        let mut w = TarWriter::new(Vec::new());
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
        let mut h = Header::new(EntryKind::File, long.clone());
        h.size = 5;
        h.uid = 1 << 40;
        h.xattrs
            .push((b"security.capability".to_vec(), vec![1, 0, 0, 2]));
        w.append(&h, &mut &b"hello"[..]).unwrap();
        let mut l = Header::new(EntryKind::Symlink, "l");
        l.link = vec![b'x'; 150];
        w.append(&l, &mut io::empty()).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = TarReader::new(&bytes[..]);
        let got = r.next_header().unwrap().unwrap();
        assert_eq!(got, h);
        let mut data = Vec::new();
        r.data().read_to_end(&mut data).unwrap();
        assert_eq!(data, b"hello");
        assert_eq!(r.next_header().unwrap().unwrap(), l);
        assert!(r.next_header().unwrap().is_none());
    }

    #[test]
    fn truncation_and_bad_checksums_are_errors() {
        let mut w = TarWriter::new(Vec::new());
        let mut h = Header::new(EntryKind::File, "f");
        h.size = 1000;
        w.append(&h, &mut &[7u8; 1000][..]).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = TarReader::new(&bytes[..700]);
        r.next_header().unwrap().unwrap();
        assert!(io::copy(&mut r.data(), &mut io::sink()).is_err());
        let mut r = TarReader::new(&bytes[..1536]);
        r.next_header().unwrap().unwrap();
        assert!(matches!(r.next_header(), Err(TarError::Truncated { .. })));
        let mut bad = bytes.clone();
        bad[3] ^= 1;
        assert!(matches!(
            TarReader::new(&bad[..]).next_header(),
            Err(TarError::BadHeader { .. })
        ));
    }
}
