//! `kill`, `pause` and `resume`, and finding a container's processes.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::signal::{kill as send, Signal};
use nix::unistd::Pid;

use crate::cgroup;
use crate::error::{Error, Result};
use crate::state::{State, Status};

/// Sends `signal` to the init of container `id`, or with `all` to every process in it.
pub fn kill(root: &Path, id: &str, signal: Signal, all: bool) -> Result<()> {
    let (state, _) = State::load(root, id)?;
    if state.status == Status::Stopped {
        return Err(Error::WrongState {
            id: id.to_string(),
            status: state.status,
            hint: "there is no process to signal",
        });
    }
    signal_container(&state, signal, all)
}

/// Signals the init or every process; thaws a paused container after SIGKILL so it can die.
pub(crate) fn signal_container(state: &State, signal: Signal, all: bool) -> Result<()> {
    let pids = if all { pids(state)? } else { vec![state.pid] };
    for pid in pids {
        match send(Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::Error::ESRCH) => {}
            Err(e) => return Err(Error::sys(format!("kill {pid} with {signal}"), e)),
        }
    }
    if signal == Signal::SIGKILL && state.status == Status::Paused {
        if let Ok(cg) = cgroup::of_state(state) {
            cg.thaw().map_err(cgroup::err("thaw", cg.path()))?;
        }
    }
    Ok(())
}

/// Pids (in the caller's pid namespace) of every process of the container: from the cgroup,
/// or, for a container without one, every process sharing the init's pid namespace (just the
/// init when that namespace is the host's).
pub(crate) fn pids(state: &State) -> Result<Vec<i32>> {
    if state.cgroup_path.is_some() {
        let cg = cgroup::of_state(state)?;
        return cg.pids().map_err(cgroup::err("list processes", cg.path()));
    }
    if !state.init_alive() {
        return Ok(Vec::new());
    }
    let own = fs::metadata("/proc/self/ns/pid").map(|m| m.ino()).ok();
    let init_ns = fs::metadata(format!("/proc/{}/ns/pid", state.pid))
        .map_err(|e| Error::io("stat", format!("/proc/{}/ns/pid", state.pid), e))?
        .ino();
    if Some(init_ns) == own {
        return Ok(vec![state.pid]);
    }
    let mut out: Vec<i32> = fs::read_dir("/proc")
        .map_err(|e| Error::io("read directory", "/proc", e))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::metadata(format!("/proc/{pid}/ns/pid")).is_ok_and(|m| m.ino() == init_ns))
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Processes of container `id`.
pub fn ps(root: &Path, id: &str) -> Result<Vec<i32>> {
    let (state, _) = State::load(root, id)?;
    pids(&state)
}

/// Usage figures of container `id` from its cgroup.
pub fn stats(root: &Path, id: &str) -> Result<vessel_cgroups::CgroupStats> {
    let (state, _) = State::load(root, id)?;
    let cg = cgroup::of_state(&state)?;
    cg.stats().map_err(cgroup::err("read stats", cg.path()))
}

/// Freezes every process of running container `id`.
pub fn pause(root: &Path, id: &str) -> Result<()> {
    let (state, _) = State::load(root, id)?;
    if state.status != Status::Running {
        return Err(Error::WrongState {
            id: id.to_string(),
            status: state.status,
            hint: "only a running container can be paused",
        });
    }
    let cg = cgroup::of_state(&state)?;
    cg.freeze().map_err(cgroup::err("freeze", cg.path()))
}

/// Thaws paused container `id`.
pub fn resume(root: &Path, id: &str) -> Result<()> {
    let (state, _) = State::load(root, id)?;
    if state.status != Status::Paused {
        return Err(Error::WrongState {
            id: id.to_string(),
            status: state.status,
            hint: "only a paused container can be resumed",
        });
    }
    let cg = cgroup::of_state(&state)?;
    cg.thaw().map_err(cgroup::err("thaw", cg.path()))
}
