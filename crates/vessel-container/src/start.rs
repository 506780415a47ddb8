//! `start`: releases the init of a created container by opening its exec fifo.

use std::fs;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;

use crate::error::{Error, Result, SysContext};
use crate::hooks::{self, HookState, Kind};
use crate::init::{FIFO_FAILED, FIFO_GO};
use crate::state::{State, Status, EXEC_FIFO};

/// How long `start` waits for an init that is alive but does not answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts the user process of created container `id`: its init, blocked on the exec fifo, runs
/// the startContainer hooks and goes on to execve. Returns once the user process is executed
/// and the poststart hooks have run; a failed startContainer hook fails the start (the init
/// then exits, so the container is stopped).
pub fn start(root: &Path, id: &str) -> Result<()> {
    let (state, dir) = State::load(root, id)?;
    if state.status != Status::Created {
        return Err(Error::WrongState {
            id: id.to_string(),
            status: state.status,
            hint: "only a created container can be started",
        });
    }
    let fifo_path = dir.join(EXEC_FIFO);
    // Non-blocking: the open succeeds at once, and the init's blocked open for writing returns.
    let fd = open(
        &fifo_path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .sys(|| format!("open {}", fifo_path.display()))?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let deadline = Instant::now() + START_TIMEOUT;
    let mut buf = [0u8; libc::PIPE_BUF];
    // Until the init's answer, end of file only means it has not opened its end yet; after
    // it, end of file means the user process is executed (the init's end is close-on-exec) or
    // the init is gone.
    let mut released = false;
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut buf) {
            Ok(0) if released => break,
            Ok(n) if n > 0 && !released => {
                if buf[0] != FIFO_GO {
                    let reason = String::from_utf8_lossy(&buf[1..n]).into_owned();
                    return Err(Error::Start {
                        id: id.to_string(),
                        reason: if buf[0] == FIFO_FAILED {
                            reason
                        } else {
                            "garbled answer from the init".into()
                        },
                    });
                }
                released = true;
                continue;
            }
            Ok(_) | Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(Error::sys("read the exec fifo", e)),
        }
        if released {
            if Instant::now() > deadline {
                tracing::warn!(container = %id, "the init was released but has not executed the user process yet");
                break;
            }
            continue;
        }
        if !state.init_alive() {
            return Err(Error::Start {
                id: id.to_string(),
                reason: "the init process exited before it was started; see the container's \
                         output for why"
                    .into(),
            });
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                id: id.to_string(),
                what: format!(
                    "the init did not answer within {}s",
                    START_TIMEOUT.as_secs()
                ),
            });
        }
    }
    fs::remove_file(&fifo_path).map_err(|e| Error::io("remove", &fifo_path, e))?;
    tracing::info!(container = %id, pid = state.pid, "started");
    match crate::exec::container_spec(root, id) {
        Ok(spec) => {
            let hook_state = HookState::new(&spec, id, &state.bundle, Status::Running, state.pid);
            hooks::run_warn(&spec, Kind::Poststart, &hook_state);
        }
        Err(e) => {
            tracing::warn!(container = %id, error = %e.chain(), "no spec: poststart hooks not run")
        }
    }
    Ok(())
}
