//! The message channel between the runtime and the processes it forks (a `SOCK_SEQPACKET`
//! socket pair, so every message arrives whole). Both ends are close-on-exec: when the
//! container process execs successfully its end closes, which the runtime sees as end of file.
//!
//! The intermediate process and the process it forks (the init, or an exec'd process) share
//! the child end, so their messages are ordered by construction: the intermediate sends
//! `Child(pid)` as its last act and never reads again, and the forked process sends nothing
//! before it has read `Pid`, which the runtime sends only once it has `Child` and has reaped
//! the intermediate. Every message after that comes from the forked process alone.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, SysContext};

/// A message between the runtime and a child.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Msg {
    /// Runtime to child: the child has been placed in its cgroup; go on.
    Go,
    /// Child to runtime: the child made a user namespace; write its uid and gid maps.
    NeedIdMaps,
    /// Runtime to child: the maps are written.
    IdMapsDone,
    /// Intermediate child to runtime: the final process was forked with this pid (its last
    /// message; it exits without reading again).
    Child(i32),
    /// Runtime to the final process: the runtime has its pid (this one, as the host sees it)
    /// and has reaped the intermediate. The final process sends nothing before this.
    Pid(i32),
    /// Container init to runtime: the namespaces and mounts are made (pivot_root is not done
    /// yet); run the prestart and createRuntime hooks. Sent only when the spec has some.
    Hooks,
    /// Runtime to init: the hooks ran; go on.
    HooksDone,
    /// Container init to runtime: set up, now waiting for start.
    Ready,
    /// Child to runtime: setup failed with this message.
    Failed(String),
    /// Exec'd process to runtime: the executable path about to be exec'd (a failure to exec
    /// follows as `Failed`, success closes the channel).
    Execing,
}

/// One end of the channel.
#[derive(Debug)]
pub(crate) struct Channel(OwnedFd);

/// Largest message: error messages are short, this leaves ample room.
const MAX_MSG: usize = 64 * 1024;

impl Channel {
    /// A connected pair: `(runtime end, child end)`.
    pub(crate) fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .sys(|| "socketpair for the runtime/child channel".into())?;
        Ok((Channel(a), Channel(b)))
    }

    /// Sends one message.
    pub(crate) fn send(&self, msg: &Msg) -> Result<()> {
        let bytes = serde_json::to_vec(msg).map_err(|e| Error::Init(e.to_string()))?;
        loop {
            match send(self.0.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
                Err(nix::Error::EINTR) => continue,
                r => {
                    r.sys(|| "send on the runtime/child channel".into())?;
                    return Ok(());
                }
            }
        }
    }

    /// Receives one message; `None` when the other side closed its end.
    pub(crate) fn recv(&self) -> Result<Option<Msg>> {
        let mut buf = vec![0u8; MAX_MSG];
        let n = loop {
            match recv(self.0.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Err(nix::Error::EINTR) => continue,
                r => break r.sys(|| "receive on the runtime/child channel".into())?,
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(Some)
            .map_err(|e| Error::Init(format!("garbled message from child: {e}")))
    }

    /// Reports a failure to the other side (best effort: the sender is about to exit).
    pub(crate) fn fail(&self, err: &Error) {
        let _ = self.send(&Msg::Failed(err.chain()));
    }

    /// In the final process: waits for the runtime's [`Msg::Pid`] and returns the pid.
    pub(crate) fn wait_for_pid(&self) -> Result<i32> {
        match self.recv()? {
            Some(Msg::Pid(pid)) => Ok(pid),
            other => Err(Error::Init(format!(
                "expected the runtime to acknowledge the pid, got {other:?}"
            ))),
        }
    }

    /// In a forked child: closes the copy of the runtime's end it inherited, so that the child
    /// sees end of file when the runtime goes away instead of waiting forever.
    pub(crate) fn close_inherited(&self) {
        // SAFETY: called in a forked child, where this `Channel` is a copy of the parent's that
        // is never used or dropped again (the child ends with `_exit`), so closing its
        // descriptor cannot affect another owner.
        unsafe {
            libc::close(self.0.as_raw_fd());
        }
    }
}
