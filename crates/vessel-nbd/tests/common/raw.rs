//! A minimal raw NBD client: the bytes real clients do not send, and requests pipelined
//! without reading their replies.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use vessel_nbd::proto::*;

use super::Fixture;

/// A minimal raw NBD client over the fixture's unix socket.
pub struct Raw(pub UnixStream);

impl Raw {
    /// Connect and read the greeting; sends fixed newstyle + no zeroes.
    pub fn connect(fx: &Fixture) -> Raw {
        let mut s = UnixStream::connect(fx.socket()).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        let mut greet = [0u8; 18];
        s.read_exact(&mut greet).expect("greeting");
        assert_eq!(
            u64::from_be_bytes(greet[0..8].try_into().expect("8")),
            NBDMAGIC
        );
        assert_eq!(
            u64::from_be_bytes(greet[8..16].try_into().expect("8")),
            IHAVEOPT
        );
        let flags = u16::from_be_bytes([greet[16], greet[17]]);
        assert_eq!(flags, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
            .expect("flags");
        Raw(s)
    }

    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.read_exact(&mut b).expect("u32");
        u32::from_be_bytes(b)
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.read_exact(&mut b).expect("u64");
        u64::from_be_bytes(b)
    }

    pub fn option(&mut self, option: u32, data: &[u8]) {
        let mut m = IHAVEOPT.to_be_bytes().to_vec();
        m.extend_from_slice(&option.to_be_bytes());
        m.extend_from_slice(&(data.len() as u32).to_be_bytes());
        m.extend_from_slice(data);
        self.0.write_all(&m).expect("send option");
    }

    /// Read one option reply: (type, data).
    pub fn option_reply(&mut self, option: u32) -> (u32, Vec<u8>) {
        assert_eq!(self.u64(), OPT_REPLY_MAGIC);
        assert_eq!(self.u32(), option);
        let kind = self.u32();
        let len = self.u32();
        let mut data = vec![0u8; len as usize];
        self.0.read_exact(&mut data).expect("reply data");
        (kind, data)
    }

    /// NBD_OPT_GO to `name`, optionally after structured replies + base:allocation.
    pub fn go(&mut self, name: &str, structured: bool) {
        if structured {
            self.option(OPT_STRUCTURED_REPLY, &[]);
            assert_eq!(self.option_reply(OPT_STRUCTURED_REPLY).0, REP_ACK);
            let mut q = (name.len() as u32).to_be_bytes().to_vec();
            q.extend_from_slice(name.as_bytes());
            q.extend_from_slice(&1u32.to_be_bytes());
            q.extend_from_slice(&(META_BASE_ALLOCATION.len() as u32).to_be_bytes());
            q.extend_from_slice(META_BASE_ALLOCATION.as_bytes());
            self.option(OPT_SET_META_CONTEXT, &q);
            assert_eq!(self.option_reply(OPT_SET_META_CONTEXT).0, REP_META_CONTEXT);
            assert_eq!(self.option_reply(OPT_SET_META_CONTEXT).0, REP_ACK);
        }
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&0u16.to_be_bytes());
        self.option(OPT_GO, &d);
        loop {
            let (kind, _) = self.option_reply(OPT_GO);
            if kind == REP_ACK {
                return;
            }
            assert_eq!(kind, REP_INFO, "NBD_OPT_GO to {name} failed");
        }
    }

    pub fn request(&mut self, kind: u16, flags: u16, offset: u64, len: u32, payload: &[u8]) {
        let mut m = REQUEST_MAGIC.to_be_bytes().to_vec();
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&kind.to_be_bytes());
        m.extend_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
        m.extend_from_slice(&offset.to_be_bytes());
        m.extend_from_slice(&len.to_be_bytes());
        m.extend_from_slice(payload);
        self.0.write_all(&m).expect("send request");
    }

    /// Read a simple reply and return its error code.
    pub fn simple_error(&mut self) -> u32 {
        assert_eq!(self.u32(), SIMPLE_REPLY_MAGIC);
        let error = self.u32();
        assert_eq!(self.u64(), 0x1234_5678_9abc_def0);
        error
    }

    /// Read one structured chunk header: (flags, type, payload).
    pub fn chunk(&mut self) -> (u16, u16, Vec<u8>) {
        assert_eq!(self.u32(), STRUCTURED_REPLY_MAGIC);
        let mut b = [0u8; 4];
        self.0.read_exact(&mut b).expect("chunk flags");
        assert_eq!(self.u64(), 0x1234_5678_9abc_def0);
        let len = self.u32();
        let mut data = vec![0u8; len as usize];
        self.0.read_exact(&mut data).expect("chunk data");
        (
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
            data,
        )
    }
}
