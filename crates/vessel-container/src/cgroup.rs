//! The container's cgroup: its path from `linux.cgroupsPath`, and the `vessel-cgroups` manager
//! for it. When the host has no usable cgroup backend, containers run without a cgroup and the
//! state records why (pause, resume, stats then fail with that reason).

use vessel_cgroups::{CgroupError, CgroupManager};

use crate::error::{Error, Result};

/// Resolves `linux.cgroupsPath` to a path relative to each hierarchy's root.
///
/// - absolute (`/machine/c1`) and relative (`machine/c1`) paths are both taken from the
///   hierarchy root;
/// - the systemd form `slice:prefix:name` becomes `<expanded slice>/<prefix>-<name>.scope`,
///   with the slice expanded the way systemd nests it (`a-b.slice` is `a.slice/a-b.slice`);
/// - no path gives `vessel/<id>`.
pub(crate) fn resolve_path(spec_path: Option<&str>, id: &str) -> Result<String> {
    let raw = match spec_path.map(str::trim).filter(|p| !p.is_empty()) {
        None => return Ok(format!("vessel/{id}")),
        Some(p) => p,
    };
    let path = if !raw.starts_with('/') && raw.split(':').count() == 3 {
        let mut parts = raw.split(':');
        let (slice, prefix, name) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let slice = expand_slice(if slice.is_empty() {
            "system.slice"
        } else {
            slice
        })?;
        let unit = if name.ends_with(".slice") {
            name.to_string()
        } else if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        if slice.is_empty() {
            unit
        } else {
            format!("{slice}/{unit}")
        }
    } else {
        raw.trim_start_matches('/').to_string()
    };
    if path.is_empty() || path.split('/').any(|c| c == ".." || c == ".") {
        return Err(Error::InvalidSpec(format!(
            "linux.cgroupsPath {raw:?} is not a usable cgroup path: use /parent/name or \
             slice:prefix:name"
        )));
    }
    Ok(path)
}

/// `a-b-c.slice` → `a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root.
fn expand_slice(slice: &str) -> Result<String> {
    let bad = || {
        Error::InvalidSpec(format!(
            "systemd slice {slice:?} is invalid: it must end in .slice and contain no '/'"
        ))
    };
    let base = slice.strip_suffix(".slice").ok_or_else(bad)?;
    if slice.contains('/') {
        return Err(bad());
    }
    if base == "-" {
        return Ok(String::new());
    }
    if base.starts_with('-') || base.ends_with('-') || base.contains("--") {
        return Err(bad());
    }
    let mut out = Vec::new();
    let mut prefix = String::new();
    for comp in base.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(comp);
        out.push(format!("{prefix}.slice"));
    }
    Ok(out.join("/"))
}

/// The manager for `path`, or why there is none. An `Unsupported` error from the backend (no
/// cgroup support on this host, or the backend not built yet) is returned as `Ok(Err(reason))`
/// so the container can run without a cgroup; other errors are real failures.
pub(crate) fn open(path: &str) -> Result<std::result::Result<Box<dyn CgroupManager>, String>> {
    match vessel_cgroups::manager(path) {
        Ok(m) => Ok(Ok(m)),
        Err(CgroupError::Unsupported(reason)) => Ok(Err(reason)),
        Err(source) => Err(Error::Cgroup {
            op: "open",
            path: path.to_string(),
            source,
        }),
    }
}

/// The manager of an existing container's cgroup, or [`Error::NoCgroup`].
pub(crate) fn of_state(state: &crate::State) -> Result<Box<dyn CgroupManager>> {
    let no_cgroup = |reason: String| Error::NoCgroup {
        id: state.id.clone(),
        reason,
    };
    let path = state.cgroup_path.as_deref().ok_or_else(|| {
        no_cgroup(
            state
                .cgroup_error
                .clone()
                .unwrap_or_else(|| "none was created".into()),
        )
    })?;
    open(path)?.map_err(no_cgroup)
}

/// Wraps a cgroup error.
pub(crate) fn err(op: &'static str, path: &str) -> impl FnOnce(CgroupError) -> Error {
    let path = path.to_string();
    move |source| Error::Cgroup { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(resolve_path(None, "c1").unwrap(), "vessel/c1");
        assert_eq!(
            resolve_path(Some("/machine/c1"), "x").unwrap(),
            "machine/c1"
        );
        assert_eq!(resolve_path(Some("libpod/c1"), "x").unwrap(), "libpod/c1");
        assert_eq!(
            resolve_path(Some("machine.slice:libpod:abc"), "x").unwrap(),
            "machine.slice/libpod-abc.scope"
        );
        assert_eq!(
            resolve_path(Some("user-1000.slice:podman:abc"), "x").unwrap(),
            "user.slice/user-1000.slice/podman-abc.scope"
        );
        assert_eq!(
            resolve_path(Some(":vessel:abc"), "x").unwrap(),
            "system.slice/vessel-abc.scope"
        );
        assert!(resolve_path(Some("/a/../b"), "x").is_err());
        assert!(resolve_path(Some("bad:p:n"), "x").is_err());
    }
}
