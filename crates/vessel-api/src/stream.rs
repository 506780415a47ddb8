//! Framing of the bidirectional streams behind `exec` and `console`.
//!
//! After the HTTP upgrade (`Connection: Upgrade`, `Upgrade: vessel-stream/1`) both sides send
//! frames: one byte of [`FrameKind`], a big-endian `u32` payload length, then the payload.
//! The same framing is used between the daemon and each instance's monitor.

use std::io::{self, Read, Write};

/// Value of the `Upgrade:` header.
pub const PROTOCOL: &str = "vessel-stream/1";

/// Value of the `Upgrade:` header for connections that carry another protocol's bytes as they
/// are (a VM's VNC display), without frames.
pub const RAW_PROTOCOL: &str = "vessel-raw/1";

/// The line a host sends the guest agent to learn that it hears it on this connection,
/// before any command is sent: `{"ping":N}`. The agent answers with an `Exit` frame of `N`,
/// so that an answer to an earlier ping (of a connection given up) is not taken for it; an
/// agent older than the ping answers with an `Error` frame, which tells the same.
pub fn agent_ping(nonce: i32) -> Vec<u8> {
    format!("{{\"ping\":{nonce}}}\n").into_bytes()
}

/// The `N` of a ping line (without its newline), if it is one.
pub fn parse_agent_ping(line: &[u8]) -> Option<i32> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let o = v.as_object()?;
    if o.len() != 1 {
        return None;
    }
    i32::try_from(o.get("ping")?.as_i64()?).ok()
}

/// Largest payload a peer accepts in one frame.
pub const MAX_FRAME: usize = 1 << 20;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Client to server: bytes for the process's stdin (or the terminal).
    Stdin = 0,
    /// Server to client: bytes the process wrote to stdout (or the terminal).
    Stdout = 1,
    /// Server to client: bytes the process wrote to stderr.
    Stderr = 2,
    /// Client to server: terminal size, `u16` columns then `u16` rows, big-endian.
    Resize = 3,
    /// Server to client: the process exited; `i32` exit code, big-endian (128+N for signal N).
    Exit = 4,
    /// Client to server: no more stdin.
    CloseStdin = 5,
    /// Server to client: an error message in UTF-8; the stream ends after it.
    Error = 6,
    /// Client to server: send this signal number (`i32`, big-endian) to the process.
    Signal = 7,
}

impl FrameKind {
    /// Parses the kind byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Stdin,
            1 => Self::Stdout,
            2 => Self::Stderr,
            3 => Self::Resize,
            4 => Self::Exit,
            5 => Self::CloseStdin,
            6 => Self::Error,
            7 => Self::Signal,
            _ => return None,
        })
    }
}

/// Encodes one frame into a new buffer.
pub fn encode(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(5 + payload.len());
    buf.push(kind as u8);
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    buf
}

/// Writes one frame.
pub fn write_frame<W: Write>(w: &mut W, kind: FrameKind, payload: &[u8]) -> io::Result<()> {
    w.write_all(&encode(kind, payload))?;
    w.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame<R: Read>(r: &mut R) -> io::Result<Option<(FrameKind, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..])?;
    let (kind, len) = parse_header(&head)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}

/// Parses a 5-byte frame header into its kind and payload length.
pub fn parse_header(head: &[u8; 5]) -> io::Result<(FrameKind, usize)> {
    let kind = FrameKind::from_u8(head[0]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame kind {}", head[0]),
        )
    })?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"),
        ));
    }
    Ok((kind, len))
}

/// Payload of a [`FrameKind::Resize`] frame.
pub fn resize_payload(cols: u16, rows: u16) -> [u8; 4] {
    let c = cols.to_be_bytes();
    let r = rows.to_be_bytes();
    [c[0], c[1], r[0], r[1]]
}

/// Reads a [`FrameKind::Resize`] payload as (columns, rows).
pub fn parse_resize(p: &[u8]) -> Option<(u16, u16)> {
    (p.len() == 4).then(|| {
        (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        )
    })
}

/// Reads an `i32` payload ([`FrameKind::Exit`], [`FrameKind::Signal`]).
pub fn parse_i32(p: &[u8]) -> Option<i32> {
    (p.len() == 4).then(|| i32::from_be_bytes([p[0], p[1], p[2], p[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_carry_their_number_and_nothing_else_is_one() {
        for n in [0, 7, i32::MAX] {
            let line = agent_ping(n);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(parse_agent_ping(line.trim_ascii_end()), Some(n));
        }
        assert_eq!(parse_agent_ping(br#"{"ping":true}"#), None);
        assert_eq!(parse_agent_ping(br#"{"ping":1,"command":["x"]}"#), None);
        assert_eq!(parse_agent_ping(br#"{"command":["ping"]}"#), None);
        assert_eq!(parse_agent_ping(br#"{"ping":4294967296}"#), None);
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, FrameKind::Stdout, b"hello").unwrap();
        write_frame(&mut buf, FrameKind::Exit, &7i32.to_be_bytes()).unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((FrameKind::Stdout, b"hello".to_vec()))
        );
        let (k, p) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!((k, parse_i32(&p)), (FrameKind::Exit, Some(7)));
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }

    #[test]
    fn rejects_oversized_and_unknown() {
        let mut head = [1u8, 0xff, 0xff, 0xff, 0xff];
        assert!(parse_header(&head).is_err());
        head = [99, 0, 0, 0, 0];
        assert!(parse_header(&head).is_err());
    }

    #[test]
    fn truncated_frame_is_an_error() {
        let buf = encode(FrameKind::Stdout, b"hello");
        let mut r = &buf[..7];
        assert!(read_frame(&mut r).is_err());
    }
}
