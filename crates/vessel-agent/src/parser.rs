//! Splits the host's byte stream into request lines and frames.
//!
//! A request line starts with `{` and a frame with its kind byte (0–7), so at a boundary the
//! first byte says which follows. That lets the agent resynchronise: frames a host sent after
//! a command ended (late stdin) are skipped, and the next request is still found.

use vessel_api::stream::{self, FrameKind, MAX_FRAME};

/// Longest request line accepted.
const MAX_REQUEST: usize = 1 << 20;

/// Something complete read from the host.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A JSON request line, without its newline.
    Request(Vec<u8>),
    /// One frame.
    Frame(FrameKind, Vec<u8>),
    /// Bytes that were skipped, described.
    Garbage(String),
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Boundary,
    Line(Vec<u8>),
    /// Skipping the rest of an overlong request line.
    SkipLine,
    Header(Vec<u8>),
    Payload(FrameKind, usize, Vec<u8>),
}

/// The incremental parser.
#[derive(Debug, Default)]
pub struct Parser {
    state: State,
}

impl Parser {
    /// Consumes bytes, returning what they completed.
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        while !data.is_empty() {
            match &mut self.state {
                State::Boundary => {
                    let b = data[0];
                    if b == b'{' {
                        self.state = State::Line(Vec::new());
                    } else if b == b'\n' || b == b'\r' || b == b' ' {
                        data = &data[1..];
                    } else if FrameKind::from_u8(b).is_some() {
                        self.state = State::Header(Vec::with_capacity(5));
                    } else {
                        out.push(Event::Garbage(format!("byte {b:#04x}")));
                        data = &data[1..];
                    }
                }
                State::Line(line) => {
                    let (chunk, rest, complete) = match data.iter().position(|&b| b == b'\n') {
                        Some(i) => (&data[..i], &data[i + 1..], true),
                        None => (data, &data[data.len()..], false),
                    };
                    line.extend_from_slice(chunk);
                    data = rest;
                    if complete {
                        out.push(Event::Request(std::mem::take(line)));
                        self.state = State::Boundary;
                    } else if line.len() > MAX_REQUEST {
                        out.push(Event::Garbage("an overlong request line".into()));
                        self.state = State::SkipLine;
                    }
                }
                State::SkipLine => match data.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        data = &data[i + 1..];
                        self.state = State::Boundary;
                    }
                    None => data = &data[data.len()..],
                },
                State::Header(head) => {
                    let take = (5 - head.len()).min(data.len());
                    head.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if head.len() == 5 {
                        let mut h = [0u8; 5];
                        h.copy_from_slice(head);
                        match stream::parse_header(&h) {
                            Ok((kind, 0)) => {
                                out.push(Event::Frame(kind, Vec::new()));
                                self.state = State::Boundary;
                            }
                            Ok((kind, len)) => {
                                self.state = State::Payload(kind, len, Vec::with_capacity(len))
                            }
                            Err(e) => {
                                out.push(Event::Garbage(e.to_string()));
                                self.state = State::Boundary;
                            }
                        }
                    }
                }
                State::Payload(kind, len, payload) => {
                    let take = (*len - payload.len()).min(data.len());
                    payload.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if payload.len() == *len {
                        out.push(Event::Frame(*kind, std::mem::take(payload)));
                        self.state = State::Boundary;
                    }
                }
            }
        }
        debug_assert!(MAX_FRAME <= u32::MAX as usize);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_then_frames_in_pieces() {
        let mut bytes = b"{\"command\":[\"true\"]}\n".to_vec();
        bytes.extend(stream::encode(FrameKind::Stdin, b"abc"));
        bytes.extend(stream::encode(FrameKind::CloseStdin, b""));
        let mut p = Parser::default();
        let mut events = Vec::new();
        for b in &bytes {
            events.extend(p.feed(std::slice::from_ref(b)));
        }
        assert_eq!(
            events,
            vec![
                Event::Request(b"{\"command\":[\"true\"]}".to_vec()),
                Event::Frame(FrameKind::Stdin, b"abc".to_vec()),
                Event::Frame(FrameKind::CloseStdin, vec![]),
            ]
        );
    }

    #[test]
    fn resynchronises_on_the_next_request() {
        let mut bytes = vec![0xffu8, 0xfe];
        bytes.extend(stream::encode(FrameKind::Stdin, b"late"));
        bytes.extend(b"{}\n");
        let events = Parser::default().feed(&bytes);
        assert_eq!(events.len(), 4);
        assert_eq!(events[3], Event::Request(b"{}".to_vec()));
    }

    #[test]
    fn oversized_frame_is_skipped() {
        let events = Parser::default().feed(&[1, 0xff, 0xff, 0xff, 0xff, b'{', b'}', b'\n']);
        assert!(matches!(events[0], Event::Garbage(_)));
        assert_eq!(events[1], Event::Request(b"{}".to_vec()));
    }
}
