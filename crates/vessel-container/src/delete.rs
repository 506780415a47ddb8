//! `delete`: kills what is left of a container, removes its cgroup and its state directory.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cgroup;
use crate::error::{Error, Result};
use crate::hooks::{self, HookState, Kind};
use crate::kill::signal_container;
use crate::state::{container_dir, State, Status};

/// How long to wait for killed processes to go.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Deletes container `id`. A running or paused container is refused unless `force`, which
/// kills it; a created one is killed (it never ran its process). Deleting a container whose
/// state cannot be read needs `force` and removes its directory. The poststop hooks run once
/// the container is gone; their failures are logged as warnings.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<()> {
    let state = match State::load(root, id) {
        Ok((state, _)) => state,
        Err(e @ (Error::WrongState { .. } | Error::StateFile { .. } | Error::Io { .. })) => {
            if !force {
                return Err(e);
            }
            tracing::warn!(container = %id, error = %e.chain(), "removing unreadable state");
            let dir = container_dir(root, id)?;
            return fs::remove_dir_all(&dir).map_err(|e| Error::io("remove", dir, e));
        }
        Err(e) => return Err(e),
    };
    match state.status {
        Status::Running | Status::Paused if !force => {
            return Err(Error::WrongState {
                id: id.to_string(),
                status: state.status,
                hint: "stop it first, or delete it with force",
            })
        }
        Status::Stopped => {}
        _ => {
            signal_container(&state, libc::SIGKILL, true)?;
            let deadline = Instant::now() + KILL_TIMEOUT;
            while state.init_alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if state.init_alive() {
                return Err(Error::Timeout {
                    id: id.to_string(),
                    what: format!(
                        "init {} survived SIGKILL for {}s",
                        state.pid,
                        KILL_TIMEOUT.as_secs()
                    ),
                });
            }
        }
    }
    if let Some(path) = &state.cgroup_path {
        match cgroup::open(path)? {
            Ok(cg) => cg.destroy().map_err(cgroup::err("destroy", path))?,
            Err(reason) => tracing::warn!(container = %id, %reason, "cgroup left in place"),
        }
    }
    if let Some(mount_id) = state.host_mount_id {
        detach_host_mounts(&state.rootfs, mount_id);
    }
    let dir = container_dir(root, id)?;
    // Read before the state directory goes: the poststop hooks run once it is gone.
    let spec = match crate::exec::container_spec(root, id) {
        Ok(spec) => Some(spec),
        Err(e) => {
            tracing::warn!(container = %id, error = %e.chain(), "no spec: poststop hooks not run");
            None
        }
    };
    fs::remove_dir_all(&dir).map_err(|e| Error::io("remove", &dir, e))?;
    tracing::info!(container = %id, "deleted");
    if let Some(spec) = spec {
        let hook_state = HookState::new(&spec, id, &state.bundle, Status::Stopped, 0);
        hooks::run_warn(&spec, Kind::Poststop, &hook_state);
    }
    Ok(())
}

/// Detaches the bind mount of the rootfs (and every mount below it) that a container without
/// its own mount namespace made in the runtime's, if it is still the topmost mount there.
fn detach_host_mounts(rootfs: &Path, mount_id: u64) {
    if crate::mounts::top_mount_id(rootfs) != Some(mount_id) {
        tracing::warn!(
            rootfs = %rootfs.display(),
            mount_id,
            "the container's mounts are not in this mount namespace (or were unmounted); left alone"
        );
        return;
    }
    if let Err(e) = nix::mount::umount2(rootfs, nix::mount::MntFlags::MNT_DETACH) {
        tracing::warn!(rootfs = %rootfs.display(), error = %e, "detaching the container's mounts");
    }
}
