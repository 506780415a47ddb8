//! `kill`, `pause` and `resume`, and finding a container's processes.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::signal::Signal;

use crate::cgroup;
use crate::error::{Error, Result};
use crate::state::{State, Status};

/// The number of a signal given by number (`9`, `37`) or name, with or without `SIG`, in any
/// case (`TERM`, `SIGKILL`, `hup`), real-time signals included (`SIGRTMIN+3`, which stops
/// systemd, `RTMAX-2`); `None` for anything else. Real-time signals are what `nix::Signal`
/// cannot name, hence numbers.
pub fn parse_signal(s: &str) -> Option<i32> {
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if let Ok(n) = s.parse::<i32>() {
        return (1..=max).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let offset = |rest: &str| -> Option<i32> {
        match rest {
            "" => Some(0),
            _ => rest.parse::<i32>().ok(),
        }
    };
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        min + offset(rest.strip_prefix('+').unwrap_or(rest))?
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        max - offset(rest.strip_prefix('-').unwrap_or(rest))?
    } else {
        return name
            .parse::<Signal>()
            .ok()
            .or_else(|| format!("SIG{name}").parse::<Signal>().ok())
            .map(|s| s as i32);
    };
    (min..=max).contains(&n).then_some(n)
}

/// Sends signal number `signal` (see [`parse_signal`]) to the init of container `id`, or with
/// `all` to every process in it.
pub fn kill(root: &Path, id: &str, signal: i32, all: bool) -> Result<()> {
    if !(1..=libc::SIGRTMAX()).contains(&signal) {
        return Err(Error::InvalidSpec(format!(
            "{signal} is not a signal number (1 to {})",
            libc::SIGRTMAX()
        )));
    }
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
pub(crate) fn signal_container(state: &State, signal: i32, all: bool) -> Result<()> {
    let pids = if all { pids(state)? } else { vec![state.pid] };
    for pid in pids {
        // SAFETY: kill takes plain integers and touches no memory of ours.
        if unsafe { libc::kill(pid, signal) } != 0 {
            match nix::Error::last() {
                nix::Error::ESRCH => {}
                e => return Err(Error::sys(format!("kill {pid} with signal {signal}"), e)),
            }
        }
    }
    if signal == libc::SIGKILL && state.status == Status::Paused {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_number_and_name_real_time_included() {
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("SIGKILL"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("kill"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("9"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("rtmin+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("37"), Some(37));
        assert_eq!(parse_signal("SIGRTMIN"), Some(libc::SIGRTMIN()));
        assert_eq!(parse_signal("RTMAX-2"), Some(libc::SIGRTMAX() - 2));
        assert_eq!(parse_signal("RTMAX"), Some(libc::SIGRTMAX()));
        for bad in [
            "NOPE", "0", "65", "-1", "RTMIN+40", "RTMAX-40", "RTMIN+x", "",
        ] {
            assert_eq!(parse_signal(bad), None, "{bad}");
        }
    }
}
