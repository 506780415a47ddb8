//! The container's cgroup: its path from `linux.cgroupsPath`, and the `vessel-cgroups` manager
//! for it. When the host has no usable cgroup backend, containers run without a cgroup and the
//! state records why (pause, resume, stats then fail with that reason).

use nix::sched::CloneFlags;
use oci_spec::runtime::Spec;
use vessel_cgroups::{CgroupError, CgroupManager};

use crate::error::{Error, Result};
use crate::namespaces::{to_host_id, Plan};

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

/// Who the container's cgroup is delegated to (host uid and gid), if anyone: the container
/// process's user, as the host sees it, when the container has a user namespace, a cgroup
/// namespace of its own and a writable `/sys/fs/cgroup` (the runtime spec's conditions for
/// cgroup ownership, and runc's). Such a container may then make cgroups below its own and
/// move its processes between them (systemd needs that), never change its own limits.
pub(crate) fn delegation_owner(spec: &Spec, plan: &Plan) -> Option<(u32, u32)> {
    if !plan.has_user() || !plan.new.contains(CloneFlags::CLONE_NEWCGROUP) {
        return None;
    }
    let writable_cgroupfs = spec
        .mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|m| {
            m.destination() == std::path::Path::new("/sys/fs/cgroup")
                && matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2"))
                && !m
                    .options()
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|o| o == "ro")
        });
    if !writable_cgroupfs {
        return None;
    }
    let linux = spec.linux().as_ref()?;
    let user = spec.process().as_ref()?.user();
    let uid_map = linux.uid_mappings().as_deref().filter(|m| !m.is_empty())?;
    let gid_map = linux.gid_mappings().as_deref().filter(|m| !m.is_empty())?;
    Some((
        to_host_id(Some(uid_map), user.uid())?,
        to_host_id(Some(gid_map), user.gid())?,
    ))
}

/// Puts an exec'd process `pid` into the container's cgroup. On cgroup v2 a container whose
/// init (systemd) made sub-cgroups and enabled controllers in its own has no room for
/// processes at its top (the kernel answers EBUSY: no internal processes); the process then
/// joins the init's cgroup, as runc does.
pub(crate) fn add_exec_process(
    cg: &dyn CgroupManager,
    pid: i32,
    init: i32,
) -> std::result::Result<(), CgroupError> {
    let err = match cg.add_process(pid) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let busy = matches!(&err, CgroupError::Io { source, .. } if source.raw_os_error() == Some(libc::EBUSY));
    if !busy || cg.version() != vessel_cgroups::CgroupVersion::V2 {
        return Err(err);
    }
    let Some(rel) = std::fs::read_to_string(format!("/proc/{init}/cgroup"))
        .ok()
        .and_then(|text| unified_path(&text))
    else {
        return Err(err);
    };
    let procs = std::path::Path::new(vessel_cgroups::CGROUP_ROOT)
        .join(rel.trim_start_matches('/'))
        .join("cgroup.procs");
    tracing::debug!(pid, cgroup = %procs.display(), "the container's cgroup is busy; joining the init's");
    std::fs::write(&procs, pid.to_string()).map_err(|source| CgroupError::Io {
        path: procs,
        op: "add a process to the init's cgroup",
        source,
    })
}

/// The cgroup v2 path (`0::/path`) in the text of `/proc/<pid>/cgroup`; `None` when it is
/// missing or climbs out (`..`).
fn unified_path(text: &str) -> Option<String> {
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    (path.starts_with('/') && !path.split('/').any(|c| c == "..")).then(|| path.to_string())
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

    #[test]
    fn the_inits_unified_cgroup_is_read_from_proc() {
        let text = "12:pids:/vessel/c1\n1:name=systemd:/vessel/c1/init.scope\n\
                    0::/vessel/c1/init.scope\n";
        assert_eq!(unified_path(text).as_deref(), Some("/vessel/c1/init.scope"));
        assert_eq!(unified_path("0::/\n").as_deref(), Some("/"));
        assert_eq!(unified_path("1:name=systemd:/x\n"), None);
        assert_eq!(unified_path("0::/../etc\n"), None);
        assert_eq!(unified_path("0::relative\n"), None);
    }

    fn spec_with(user_ns: bool, cgroup_ro: bool, uid: u32) -> Spec {
        let mut spec = crate::spec::default_spec(&crate::spec::SpecOptions {
            user_namespace: user_ns.then_some(crate::spec::IdMap {
                host_uid_base: 100_000,
                host_gid_base: 200_000,
                size: 65_536,
            }),
            ..Default::default()
        });
        let mut mounts = spec.mounts().clone().unwrap();
        for m in mounts.iter_mut() {
            if m.destination() == std::path::Path::new("/sys/fs/cgroup") {
                let opts = if cgroup_ro { "ro" } else { "rw" };
                m.set_options(Some(vec!["nosuid".into(), opts.into()]));
            }
        }
        spec.set_mounts(Some(mounts));
        let mut process = spec.process().clone().unwrap();
        let mut user = process.user().clone();
        user.set_uid(uid);
        user.set_gid(uid);
        process.set_user(user);
        spec.set_process(Some(process));
        spec
    }

    fn owner(spec: &Spec) -> Option<(u32, u32)> {
        delegation_owner(spec, &Plan::from_spec(spec).unwrap())
    }

    #[test]
    fn the_cgroup_is_delegated_only_to_an_isolated_container_with_a_writable_cgroupfs() {
        // User namespace, cgroup namespace, rw cgroupfs: the container's root, as mapped.
        assert_eq!(owner(&spec_with(true, false, 0)), Some((100_000, 200_000)));
        // The process's user, not always root.
        assert_eq!(
            owner(&spec_with(true, false, 1000)),
            Some((101_000, 201_000))
        );
        // A read-only cgroupfs (podman's and Vessel's default) delegates nothing.
        assert_eq!(owner(&spec_with(true, true, 0)), None);
        // Without a user namespace the container's root is the host's: nothing to hand over.
        assert_eq!(owner(&spec_with(false, false, 0)), None);
        // Without a cgroup namespace of its own, nor with a joined one.
        let mut spec = spec_with(true, false, 0);
        let mut linux = spec.linux().clone().unwrap();
        let ns: Vec<_> = linux
            .namespaces()
            .clone()
            .unwrap()
            .into_iter()
            .filter(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Cgroup)
            .collect();
        linux.set_namespaces(Some(ns.clone()));
        spec.set_linux(Some(linux.clone()));
        assert_eq!(owner(&spec), None);
        let mut joined = ns;
        joined.push(
            oci_spec::runtime::LinuxNamespaceBuilder::default()
                .typ(oci_spec::runtime::LinuxNamespaceType::Cgroup)
                .path("/proc/1/ns/cgroup")
                .build()
                .unwrap(),
        );
        linux.set_namespaces(Some(joined));
        spec.set_linux(Some(linux));
        assert_eq!(owner(&spec), None);
        // A process user outside the map has no host id to own it.
        assert_eq!(owner(&spec_with(true, false, 70_000)), None);
    }
}
