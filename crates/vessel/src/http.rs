//! A small blocking HTTP/1.1 codec: request heads out, response heads and bodies in.
//!
//! Only what the daemon speaks is supported: one request per connection, bodies framed by
//! `Content-Length`, by `Transfer-Encoding: chunked` or by the end of the connection, and
//! `101 Switching Protocols` upgrades.

use std::fmt::Write as _;
use std::io::{self, BufRead, Read};

/// Largest response head (status line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Largest chunk-size line accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 1024;

/// Characters left as they are in a query value; everything else is percent-encoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/')
}

/// Percent-encodes a query value or a path segment (RFC 3986 unreserved set, plus `/`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if is_unreserved(b) {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Percent-encodes one path segment: like [`percent_encode`] but `/` is encoded too.
pub fn encode_segment(s: &str) -> String {
    percent_encode(s).replace('/', "%2F")
}

/// Builds `path?k=v&...` with every value percent-encoded.
pub fn with_query(path: &str, query: &[(&str, String)]) -> String {
    let mut out = path.to_string();
    for (i, (k, v)) in query.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&percent_encode(v));
    }
    out
}

/// The head of a request: method, target and extra headers; the body length is added here.
pub fn request_head(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body_len: Option<u64>,
) -> String {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: vessel\r\nUser-Agent: vessel/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    if let Some(n) = body_len {
        let _ = write!(head, "Content-Length: {n}\r\n");
    }
    head.push_str("\r\n");
    head
}

/// Status line and headers of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Headers in arrival order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// Value of the first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// How the body is framed.
    pub fn framing(&self) -> io::Result<Framing> {
        if self.status == 101 || self.status == 204 || self.status == 304 {
            return Ok(Framing::Length(0));
        }
        if let Some(te) = self.header("transfer-encoding") {
            if te
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
            {
                return Ok(Framing::Chunked);
            }
        }
        match self.header("content-length") {
            Some(v) => v
                .parse::<u64>()
                .map(Framing::Length)
                .map_err(|_| invalid(format!("invalid Content-Length '{v}'"))),
            None => Ok(Framing::UntilClose),
        }
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the peer closes the connection.
    UntilClose,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads one CRLF- (or LF-) terminated line of at most `limit` bytes, without the terminator.
fn read_line<R: BufRead>(r: &mut R, limit: usize) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = Read::take(&mut *r, limit as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n > limit {
            invalid(format!("response line longer than {limit} bytes"))
        } else {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection in the middle of a response",
            )
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| invalid("response head is not UTF-8"))
}

/// Reads the status line and headers of a response.
pub fn read_head<R: BufRead>(r: &mut R) -> io::Result<ResponseHead> {
    let mut budget = MAX_HEAD;
    let status_line = read_line(r, budget)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection without answering",
        )
    })?;
    budget = budget.saturating_sub(status_line.len() + 2);
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!(
            "not an HTTP/1.x response: '{status_line}'"
        )));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| invalid(format!("invalid status line '{status_line}'")))?;
    let reason = parts.next().unwrap_or_default().to_string();

    let mut headers = Vec::new();
    loop {
        if budget == 0 {
            return Err(invalid(format!("response head exceeds {MAX_HEAD} bytes")));
        }
        let line = read_line(r, budget)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection in the middle of the response headers",
            )
        })?;
        budget = budget.saturating_sub(line.len() + 2);
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("invalid header line '{line}'")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(ResponseHead {
        status,
        reason,
        headers,
    })
}

/// A response body reader that follows the response's framing.
pub enum Body<R> {
    /// A `Content-Length` body.
    Length(io::Take<R>),
    /// A chunked body.
    Chunked(ChunkedReader<R>),
    /// A body that lasts until the connection closes.
    UntilClose(R),
}

impl<R: BufRead> Body<R> {
    /// Wraps `r`, positioned just after the head, according to `framing`.
    pub fn new(r: R, framing: Framing) -> Self {
        match framing {
            Framing::Length(n) => Self::Length(r.take(n)),
            Framing::Chunked => Self::Chunked(ChunkedReader::new(r)),
            Framing::UntilClose => Self::UntilClose(r),
        }
    }
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Length(t) => {
                let wanted = t.limit();
                let n = t.read(buf)?;
                if n == 0 && wanted > 0 && !buf.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the daemon closed the connection {wanted} bytes before the end of the response"),
                    ));
                }
                Ok(n)
            }
            Self::Chunked(c) => c.read(buf),
            Self::UntilClose(r) => r.read(buf),
        }
    }
}

/// Decodes `Transfer-Encoding: chunked`.
pub struct ChunkedReader<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: u64,
    /// Whether the last (zero-sized) chunk and the trailers were read.
    done: bool,
}

impl<R: BufRead> ChunkedReader<R> {
    /// Decodes the chunked body that `inner` is positioned at.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            left: 0,
            done: false,
        }
    }

    fn unexpected_eof() -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection in the middle of a chunked response",
        )
    }

    /// Reads the next chunk-size line; at the last chunk, reads the trailers too.
    fn next_chunk(&mut self) -> io::Result<()> {
        let line = read_line(&mut self.inner, MAX_CHUNK_LINE)?.ok_or_else(Self::unexpected_eof)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("invalid chunk size line '{line}'")))?;
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let line =
                    read_line(&mut self.inner, MAX_CHUNK_LINE)?.ok_or_else(Self::unexpected_eof)?;
                if line.is_empty() {
                    break;
                }
            }
            self.done = true;
        }
        self.left = size;
        Ok(())
    }
}

impl<R: BufRead> Read for ChunkedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.left == 0 {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(Self::unexpected_eof());
        }
        self.left -= n as u64;
        if self.left == 0 {
            // Each chunk's data is followed by CRLF.
            let end = read_line(&mut self.inner, 2)?.ok_or_else(Self::unexpected_eof)?;
            if !end.is_empty() {
                return Err(invalid("chunk data not followed by CRLF"));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;

    fn parse(raw: &[u8]) -> io::Result<(ResponseHead, Vec<u8>)> {
        let mut r = BufReader::new(raw);
        let head = read_head(&mut r)?;
        let mut body = Vec::new();
        Body::new(r, head.framing()?).read_to_end(&mut body)?;
        Ok((head, body))
    }

    #[test]
    fn content_length_body() {
        let (head, body) = parse(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhelloEXTRA",
        )
        .unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.reason, "OK");
        assert_eq!(head.header("content-type"), Some("application/json"));
        assert_eq!(body, b"hello");
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let (_, body) = parse(raw).unwrap();
        assert_eq!(body, b"Wikipedia in \r\n\r\nchunks.");
    }

    #[test]
    fn chunked_body_read_in_small_pieces() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
            a\r\n{\"a\":1}\n{\"\r\n5\r\nb\":2}\r\n0\r\n\r\n";
        let mut r = BufReader::new(&raw[..]);
        let head = read_head(&mut r).unwrap();
        let mut lines = BufReader::new(Body::new(r, head.framing().unwrap())).lines();
        assert_eq!(lines.next().unwrap().unwrap(), r#"{"a":1}"#);
        assert_eq!(lines.next().unwrap().unwrap(), r#"{"b":2}"#);
        assert!(lines.next().is_none());
    }

    #[test]
    fn truncated_bodies_are_errors() {
        let err = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err =
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(parse(b"").is_err());
    }

    #[test]
    fn malformed_heads_are_errors() {
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 abc Nope\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(parse(huge.as_bytes()).is_err());
    }

    #[test]
    fn body_until_close_and_error_status() {
        let (head, body) =
            parse(b"HTTP/1.1 404 Not Found\r\n\r\n{\"error\":\"no\",\"code\":404}").unwrap();
        assert_eq!(head.status, 404);
        assert!(!head.is_success());
        assert_eq!(body, br#"{"error":"no","code":404}"#);
    }

    #[test]
    fn upgrade_has_no_body() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: vessel-stream/1\r\n\r\n\x01\x00";
        let mut r = BufReader::new(&raw[..]);
        let head = read_head(&mut r).unwrap();
        assert_eq!(head.framing().unwrap(), Framing::Length(0));
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"\x01\x00");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            with_query(
                "/1.0/instances/c1/files",
                &[("path", "/tmp/a b&c=d%é".into()), ("mode", "0644".into())]
            ),
            "/1.0/instances/c1/files?path=/tmp/a%20b%26c%3Dd%25%C3%A9&mode=0644"
        );
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn request_head_shape() {
        let head = request_head(
            "PUT",
            "/1.0/x",
            &[("Content-Type", "application/json")],
            Some(3),
        );
        assert!(head.starts_with("PUT /1.0/x HTTP/1.1\r\nHost: vessel\r\n"));
        assert!(head.contains("Content-Type: application/json\r\n"));
        assert!(head.ends_with("Content-Length: 3\r\n\r\n"));
    }
}
