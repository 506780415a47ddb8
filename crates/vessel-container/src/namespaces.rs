//! Namespaces: which ones a spec creates or joins, joining by path, and the user namespace's
//! id maps (written by the runtime for its child).

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::error::{Error, Result, SysContext};

/// The clone flag of a namespace type.
pub(crate) fn flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The name of a namespace type under `/proc/<pid>/ns/`.
pub(crate) fn proc_name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// The OCI name of a namespace type, as used in the state's `namespace_paths`.
pub(crate) fn oci_name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Network => "network",
        other => proc_name(other),
    }
}

/// Every namespace type, user first: the order to join them in.
pub(crate) const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Mount,
];

/// What a spec asks for.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Namespaces to join, user first.
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
    /// Whether to create a new user namespace.
    pub new_user: bool,
    /// The other namespaces to create.
    pub new: CloneFlags,
    /// Every namespace type in the spec.
    pub types: Vec<LinuxNamespaceType>,
}

impl Plan {
    /// Reads `linux.namespaces`.
    pub(crate) fn from_spec(spec: &Spec) -> Result<Plan> {
        let mut plan = Plan {
            join: Vec::new(),
            new_user: false,
            new: CloneFlags::empty(),
            types: Vec::new(),
        };
        let namespaces = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        let offsets = spec
            .linux()
            .as_ref()
            .and_then(|l| l.time_offsets().as_ref());
        if offsets.is_some_and(|o| !o.is_empty()) {
            return Err(Error::InvalidSpec(
                "linux.timeOffsets (time namespace offsets) is not supported".into(),
            ));
        }
        for typ in JOIN_ORDER {
            let mut entries = namespaces.iter().filter(|n| n.typ() == typ);
            let Some(ns) = entries.next() else { continue };
            if entries.next().is_some() {
                return Err(Error::InvalidSpec(format!(
                    "namespace {} is listed twice in linux.namespaces",
                    oci_name(typ)
                )));
            }
            plan.types.push(typ);
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => plan.join.push((typ, p.clone())),
                _ if typ == LinuxNamespaceType::User => plan.new_user = true,
                _ => plan.new |= flag(typ),
            }
        }
        Ok(plan)
    }

    /// Whether the container runs in a user namespace (new or joined).
    pub(crate) fn has_user(&self) -> bool {
        self.types.contains(&LinuxNamespaceType::User)
    }

    /// Whether the container has namespace `typ` (new or joined).
    pub(crate) fn has(&self, typ: LinuxNamespaceType) -> bool {
        self.types.contains(&typ)
    }
}

/// Checks what a spec without a mount namespace asks for. The container then shares the
/// runtime's mount namespace (a namespace not listed is inherited, as the runtime spec says):
/// its mounts are made there, under a bind mount of the rootfs, and it is chrooted into the
/// rootfs instead of pivot_root. Refused, as runc refuses them, or because they would change
/// the host's own mounts: masked and read-only paths, `rootfsPropagation`, and a user
/// namespace (which may not mount in a mount namespace it does not own).
pub(crate) fn check_shared_mount_namespace(spec: &Spec, plan: &Plan) -> Result<()> {
    if plan.has(LinuxNamespaceType::Mount) {
        return Ok(());
    }
    let linux = spec.linux().as_ref();
    let masked = linux.and_then(|l| l.masked_paths().as_ref());
    let readonly = linux.and_then(|l| l.readonly_paths().as_ref());
    if masked.is_some_and(|m| !m.is_empty()) || readonly.is_some_and(|r| !r.is_empty()) {
        return Err(Error::InvalidSpec(
            "unable to restrict sys entries without a private mount namespace: add a mount \
             namespace to linux.namespaces or drop linux.maskedPaths and linux.readonlyPaths"
                .into(),
        ));
    }
    if linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .is_some_and(|p| !p.is_empty())
    {
        return Err(Error::InvalidSpec(
            "linux.rootfsPropagation needs a mount namespace (without one it would change the \
             propagation of the host's root): add a mount namespace or drop it"
                .into(),
        ));
    }
    if plan.has_user() {
        return Err(Error::InvalidSpec(
            "a user namespace needs a mount namespace too: without one the container's mounts \
             would be made in the runtime's mount namespace, which a user namespace may not \
             change; add a mount namespace to linux.namespaces"
                .into(),
        ));
    }
    Ok(())
}

/// Joins namespaces given by path, in order. All files are opened first, since joining the
/// mount namespace changes what paths mean. Namespaces the caller is already in are skipped
/// (joining one's own user namespace is an error).
pub(crate) fn join(namespaces: &[(LinuxNamespaceType, PathBuf)]) -> Result<()> {
    let mut opened: Vec<(LinuxNamespaceType, &Path, OwnedFd)> = Vec::new();
    for (typ, path) in namespaces {
        let fd = open(
            path.as_path(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .sys(|| format!("open {} namespace {}", oci_name(*typ), path.display()))?;
        // SAFETY: `open` returned a fresh descriptor that nothing else owns.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        opened.push((*typ, path, fd));
    }
    for (typ, path, fd) in opened {
        if same_namespace(typ, path) {
            continue;
        }
        setns(fd.as_fd(), flag(typ)).sys(|| {
            format!(
                "join {} namespace {} (setns)",
                oci_name(typ),
                path.display()
            )
        })?;
    }
    Ok(())
}

fn same_namespace(typ: LinuxNamespaceType, path: &Path) -> bool {
    let own = format!("/proc/self/ns/{}", proc_name(typ));
    match (fs::metadata(own), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Creates the namespaces in `flags` for the calling process (pid and time take effect for its
/// children).
pub(crate) fn create(flags: CloneFlags) -> Result<()> {
    if flags.is_empty() {
        return Ok(());
    }
    unshare(flags).sys(|| format!("create namespaces {flags:?} (unshare)"))
}

/// Writes the uid and gid maps of the user namespace of `pid` (the runtime runs as root, so
/// any map is allowed and `setgroups` stays usable).
pub(crate) fn write_id_maps(pid: Pid, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let uid = linux
        .and_then(|l| l.uid_mappings().clone())
        .unwrap_or_default();
    let gid = linux
        .and_then(|l| l.gid_mappings().clone())
        .unwrap_or_default();
    write_map(pid, "uid_map", &uid)?;
    write_map(pid, "gid_map", &gid)
}

fn write_map(pid: Pid, file: &'static str, map: &[LinuxIdMapping]) -> Result<()> {
    if map.is_empty() {
        return Err(Error::InvalidSpec(format!(
            "a new user namespace needs linux.{}Mappings",
            &file[..3]
        )));
    }
    let text: String = map
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    let path = format!("/proc/{pid}/{file}");
    fs::write(&path, text).map_err(|e| Error::io("write id map", path, e))
}

/// Maps a container uid or gid to the host through `map` (identity without a map).
pub fn to_host_id(map: Option<&[LinuxIdMapping]>, id: u32) -> Option<u32> {
    let Some(map) = map.filter(|m| !m.is_empty()) else {
        return Some(id);
    };
    map.iter().find_map(|m| {
        let offset = id.checked_sub(m.container_id())?;
        (offset < m.size()).then(|| m.host_id() + offset)
    })
}
