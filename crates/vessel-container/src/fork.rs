//! Forking helpers. The library forks without exec'ing in between, which is only sound when the
//! calling process is single-threaded (see the crate documentation).

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Runs `body` in a child process (plain fork) and returns the child's pid. The child exits with
/// the code `body` returns; a panic in `body` exits with 255 instead of unwinding into the
/// caller's code.
pub(crate) fn fork(body: impl FnOnce() -> i32) -> Result<Pid> {
    // SAFETY: the crate requires single-threaded callers, so the child has no locks held by
    // other threads; it runs `body` and then `_exit`s without returning into the caller.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(child),
        Ok(nix::unistd::ForkResult::Child) => run_child(body),
        Err(e) => Err(Error::sys("fork", e)),
    }
}

/// Like [`fork`], but the child becomes a child of the caller's parent (`CLONE_PARENT`). Used so
/// that the container's processes are direct children of the runtime's caller although they
/// must be forked after joining or creating the pid namespace.
pub(crate) fn fork_as_sibling(body: impl FnOnce() -> i32) -> Result<Pid> {
    // SAFETY: a raw clone with a NULL stack behaves like fork (the child continues on a copy of
    // the stack); the other pointer arguments are unused without the flags that read them. The
    // process is single-threaded, and the child never returns into the caller's code.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match ret {
        -1 => Err(Error::sys("clone(CLONE_PARENT)", nix::Error::last())),
        0 => run_child(body),
        pid => Ok(Pid::from_raw(pid as i32)),
    }
}

fn run_child(body: impl FnOnce() -> i32) -> ! {
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(255);
    // SAFETY: _exit ends the child without running the caller's atexit handlers or destructors,
    // which belong to the parent.
    unsafe { libc::_exit(code) }
}

/// Restores default signal handling (dispositions and an empty mask) so the container process
/// does not inherit the runtime caller's blocked signals or handlers.
pub(crate) fn reset_signals() {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code in a handler context.
        let _ = unsafe { sigaction(sig, &default) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}
