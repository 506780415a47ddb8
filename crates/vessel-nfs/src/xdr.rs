//! XDR (RFC 4506) encoding and decoding over byte buffers.
//!
//! The decoder never trusts a length field: every variable-length item is checked against
//! the bytes actually left in the message (and against a caller-given maximum) before
//! anything is allocated, so a hostile length costs nothing.

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XdrError {
    /// The message ended in the middle of an item.
    #[error("message truncated")]
    Truncated,
    /// A length field is larger than the protocol allows for that item.
    #[error("length {len} exceeds the limit of {max} bytes")]
    TooLong {
        /// The length the peer sent.
        len: u32,
        /// The most this item may hold.
        max: u32,
    },
    /// A boolean or discriminant has a value the protocol does not define.
    #[error("invalid value {0} for an enum or bool")]
    BadValue(u32),
    /// A string is not valid UTF-8.
    #[error("string is not UTF-8")]
    NotUtf8,
}

/// Reads XDR items from a borrowed message.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder positioned at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    /// Bytes not yet decoded.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The undecoded rest of the message.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        if n > self.remaining() {
            return Err(XdrError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// An unsigned 32-bit integer.
    pub fn u32(&mut self) -> Result<u32, XdrError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A signed 32-bit integer.
    pub fn i32(&mut self) -> Result<i32, XdrError> {
        Ok(self.u32()? as i32)
    }

    /// An unsigned 64-bit integer (hyper).
    pub fn u64(&mut self) -> Result<u64, XdrError> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok(hi << 32 | lo)
    }

    /// A boolean: exactly 0 or 1.
    pub fn bool(&mut self) -> Result<bool, XdrError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(XdrError::BadValue(v)),
        }
    }

    /// Fixed-length opaque data of `n` bytes plus padding.
    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        let data = self.take(n)?;
        self.take(pad(n))?;
        Ok(data)
    }

    /// Variable-length opaque data of at most `max` bytes.
    pub fn opaque(&mut self, max: u32) -> Result<&'a [u8], XdrError> {
        let len = self.u32()?;
        if len > max {
            return Err(XdrError::TooLong { len, max });
        }
        self.fixed(len as usize)
    }

    /// A UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, max: u32) -> Result<&'a str, XdrError> {
        std::str::from_utf8(self.opaque(max)?).map_err(|_| XdrError::NotUtf8)
    }

    /// A string of at most `max` bytes, kept as raw bytes (file names need not be UTF-8).
    pub fn bytes_string(&mut self, max: u32) -> Result<&'a [u8], XdrError> {
        self.opaque(max)
    }
}

/// Padding needed after `n` bytes to reach a four-byte boundary.
pub fn pad(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Builds an XDR message.
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty message.
    pub fn new() -> Self {
        Encoder::default()
    }

    /// An empty message with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Encoder {
            buf: Vec::with_capacity(n),
        }
    }

    /// Bytes encoded so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was encoded yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The encoded message.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The encoded bytes so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Append an unsigned 32-bit integer.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Append a signed 32-bit integer.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.u32(v as u32)
    }

    /// Append an unsigned 64-bit integer.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Append a boolean.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u32(u32::from(v))
    }

    /// Append fixed-length opaque data plus padding.
    pub fn fixed(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(&[0u8; 3][..pad(data.len())]);
        self
    }

    /// Append variable-length opaque data (length, bytes, padding).
    pub fn opaque(&mut self, data: &[u8]) -> &mut Self {
        // Every caller bounds its data far below 4 GiB (names, paths, 1 MiB reads).
        self.u32(data.len() as u32);
        self.fixed(data)
    }

    /// Append a string.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.opaque(s.as_bytes())
    }

    /// Append already-encoded XDR bytes.
    pub fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_every_item() {
        let mut e = Encoder::new();
        e.u32(7)
            .i32(-2)
            .u64(0x0102_0304_0506_0708)
            .bool(true)
            .opaque(b"abcde")
            .string("xy")
            .fixed(b"z");
        let bytes = e.into_bytes();
        assert_eq!(bytes.len() % 4, 0);
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.u32(), Ok(7));
        assert_eq!(d.i32(), Ok(-2));
        assert_eq!(d.u64(), Ok(0x0102_0304_0506_0708));
        assert_eq!(d.bool(), Ok(true));
        assert_eq!(d.opaque(16), Ok(&b"abcde"[..]));
        assert_eq!(d.string(16), Ok("xy"));
        assert_eq!(d.fixed(1), Ok(&b"z"[..]));
        assert_eq!(d.remaining(), 0);
    }

    #[test]
    fn opaque_is_padded_to_four_bytes() {
        let mut e = Encoder::new();
        e.opaque(b"abcde");
        assert_eq!(e.as_bytes(), b"\0\0\0\x05abcde\0\0\0");
    }

    #[test]
    fn truncated_input_is_an_error_at_every_cut() {
        let mut e = Encoder::new();
        e.u32(1).u64(2).opaque(b"hello").bool(false);
        let bytes = e.into_bytes();
        for cut in 0..bytes.len() {
            let mut d = Decoder::new(&bytes[..cut]);
            let r = (|| {
                d.u32()?;
                d.u64()?;
                d.opaque(64)?;
                d.bool()
            })();
            assert_eq!(r, Err(XdrError::Truncated), "cut at {cut}");
        }
    }

    #[test]
    fn huge_length_fields_are_refused_without_allocating() {
        let msg = [0xff, 0xff, 0xff, 0xf0, 1, 2, 3, 4];
        assert_eq!(
            Decoder::new(&msg).opaque(1024),
            Err(XdrError::TooLong {
                len: 0xffff_fff0,
                max: 1024
            })
        );
        // A length within the limit but beyond the message is a truncation.
        let msg = [0, 0, 0, 100, 1, 2, 3, 4];
        assert_eq!(Decoder::new(&msg).opaque(1024), Err(XdrError::Truncated));
        // Missing padding is a truncation too.
        let msg = [0, 0, 0, 1, 9];
        assert_eq!(Decoder::new(&msg).opaque(1024), Err(XdrError::Truncated));
    }

    #[test]
    fn bad_bool_and_utf8_are_errors() {
        assert_eq!(
            Decoder::new(&[0, 0, 0, 2]).bool(),
            Err(XdrError::BadValue(2))
        );
        assert_eq!(
            Decoder::new(&[0, 0, 0, 1, 0xff, 0, 0, 0]).string(8),
            Err(XdrError::NotUtf8)
        );
    }
}
