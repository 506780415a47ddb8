//! The container state kept under the state root (`<root>/<id>/state.json`), and the live
//! status computed from the init pid, the exec fifo and the freezer.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default state root, like runc's `/run/runc`.
pub const DEFAULT_STATE_ROOT: &str = "/run/vessel/runtime";

/// File in the state directory holding [`State`].
const STATE_FILE: &str = "state.json";
/// Copy of the spec the container was created with (exec reads it).
pub(crate) const CONFIG_FILE: &str = "config.json";
/// Fifo the init blocks on until `start`.
pub(crate) const EXEC_FIFO: &str = "exec.fifo";

/// OCI runtime-spec version reported in states.
pub const OCI_VERSION: &str = "1.0.2";

/// Lifecycle status of a container, as in the OCI runtime spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created (not yet ready).
    Creating,
    /// Created: the init is set up and waits for start.
    Created,
    /// The user process runs.
    Running,
    /// Frozen through the cgroup freezer.
    Paused,
    /// The init process has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The state of a container: the OCI state fields plus what the runtime needs to operate on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// OCI runtime-spec version.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Live status (computed when the state is read).
    pub status: Status,
    /// Pid of the container's init process, in the runtime's pid namespace.
    pub pid: i32,
    /// Absolute path of the bundle.
    pub bundle: PathBuf,
    /// Absolute path of the root filesystem on the host.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339, UTC.
    pub created: String,
    /// Annotations from the spec.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    /// Cgroup path (relative to each hierarchy's root); `None` when the container runs without
    /// a cgroup because the cgroup backend was unavailable at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<String>,
    /// Why the container has no cgroup, when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_error: Option<String>,
    /// Namespaces of the container by OCI type name (`pid`, `network`, ...), as
    /// `/proc/<pid>/ns/*` paths.
    #[serde(default)]
    pub namespace_paths: BTreeMap<String, PathBuf>,
    /// Start time of the init process (field 22 of `/proc/<pid>/stat`), to tell it from a
    /// later process that reuses the pid.
    #[serde(default)]
    pub init_start_time: u64,
    /// For a container without a mount namespace of its own: the id of the bind mount of its
    /// rootfs in the runtime's mount namespace, under which all its mounts were made (`delete`
    /// detaches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_mount_id: Option<u64>,
}

/// Checks that `id` is safe as a directory name.
pub(crate) fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

/// The state directory of container `id`, which must exist.
pub(crate) fn container_dir(root: &Path, id: &str) -> Result<PathBuf> {
    validate_id(id)?;
    let dir = root.join(id);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(Error::NotFound {
            id: id.to_string(),
            root: root.to_path_buf(),
        })
    }
}

impl State {
    /// Writes the state atomically into `dir`.
    pub(crate) fn save(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(".state.json.tmp");
        let path = dir.join(STATE_FILE);
        let data = serde_json::to_vec_pretty(self).map_err(|source| Error::StateFile {
            path: path.clone(),
            source,
        })?;
        let mut f = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(&data)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename into place", &path, e))
    }

    /// Reads the stored state of `id` and computes its live status.
    pub(crate) fn load(root: &Path, id: &str) -> Result<(State, PathBuf)> {
        let dir = container_dir(root, id)?;
        let path = dir.join(STATE_FILE);
        let data = match fs::read(&path) {
            Ok(d) => d,
            // A directory without state is a container still being created.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::WrongState {
                    id: id.to_string(),
                    status: Status::Creating,
                    hint: "it is still being created (or its creation was interrupted: delete it \
                           with --force)",
                })
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let mut state: State =
            serde_json::from_slice(&data).map_err(|source| Error::StateFile { path, source })?;
        state.status = state.live_status(&dir);
        if state.status == Status::Stopped {
            state.pid = 0;
        }
        Ok((state, dir))
    }

    /// Whether the init process still exists (and is not a zombie).
    pub fn init_alive(&self) -> bool {
        process_start_time(self.pid).is_some_and(|t| t == self.init_start_time)
    }

    fn live_status(&self, dir: &Path) -> Status {
        if self.pid <= 0 || !self.init_alive() {
            return Status::Stopped;
        }
        if dir.join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        if let Some(path) = &self.cgroup_path {
            if let Ok(m) = vessel_cgroups::manager(path) {
                if m.is_frozen().unwrap_or(false) {
                    return Status::Paused;
                }
            }
        }
        Status::Running
    }
}

/// Start time of a live (non-zombie) process, from `/proc/<pid>/stat`.
pub(crate) fn process_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | None) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// States of every container under `root`, sorted by id. Entries that cannot be read are
/// reported as errors in place.
pub fn list(root: &Path) -> Result<Vec<Result<State>>> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read directory", root, e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| validate_id(id).is_ok())
        .collect();
    ids.sort();
    Ok(ids
        .into_iter()
        .map(|id| State::load(root, &id).map(|(s, _)| s))
        .collect())
}

/// The current state of container `id` under `root`.
pub fn state(root: &Path, id: &str) -> Result<State> {
    State::load(root, id).map(|(s, _)| s)
}

/// Current UTC time in RFC 3339.
pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("abc-1_2.3").is_ok());
        for bad in ["", ".hidden", "a/b", "..", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn own_start_time_is_readable() {
        let pid = std::process::id() as i32;
        assert!(process_start_time(pid).is_some());
        assert!(process_start_time(-1).is_none());
    }
}
