//! Default OCI specs, like `runc spec` (and `runc spec --rootless` when a user namespace is
//! asked for), with Vessel's default capabilities and seccomp profile.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxIdMappingBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResources, LinuxSeccomp,
    LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use crate::state::OCI_VERSION;

/// A contiguous range of host ids that container ids 0.. map onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    /// First host uid (container uid 0).
    pub host_uid_base: u32,
    /// First host gid (container gid 0).
    pub host_gid_base: u32,
    /// Number of ids mapped.
    pub size: u32,
}

/// What to put in a default spec.
#[derive(Debug, Clone)]
pub struct SpecOptions {
    /// Root filesystem, relative to the bundle or absolute.
    pub rootfs: PathBuf,
    /// Whether the root filesystem is mounted read-only.
    pub root_readonly: bool,
    /// Command and arguments.
    pub args: Vec<String>,
    /// Environment (`KEY=value`).
    pub env: Vec<String>,
    /// Working directory in the container.
    pub cwd: PathBuf,
    /// Hostname.
    pub hostname: String,
    /// Whether the process gets a terminal.
    pub terminal: bool,
    /// Run in a new user namespace with this mapping (like `runc spec --rootless`: no network
    /// namespace, /sys bind-mounted from the host).
    pub user_namespace: Option<IdMap>,
    /// Cgroup limits.
    pub resources: Option<LinuxResources>,
    /// `linux.cgroupsPath` (default: `vessel/<id>`).
    pub cgroups_path: Option<String>,
}

impl Default for SpecOptions {
    fn default() -> Self {
        SpecOptions {
            rootfs: "rootfs".into(),
            root_readonly: true,
            args: vec!["sh".into()],
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                "TERM=xterm".into(),
            ],
            cwd: "/".into(),
            hostname: "vessel".into(),
            terminal: false,
            user_namespace: None,
            resources: None,
            cgroups_path: None,
        }
    }
}

/// The 14 capabilities OCI runtimes grant by default.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Syscalls the default profile refuses with EPERM: they act on the whole host (kernel
/// modules, kexec, swap, clocks, reboot, accounting, quotas, the kernel log and keyring), are
/// frequent attack surface (bpf, perf_event_open, userfaultfd, open_by_handle_at), or are
/// obsolete.
pub const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "adjtimex",
    "afs_syscall",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "getpmsg",
    "init_module",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "putpmsg",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "security",
    "settimeofday",
    "swapoff",
    "swapon",
    "_sysctl",
    "sysfs",
    "syslog",
    "tuxcall",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
    "vserver",
];

/// The new mount API: refused with ENOSYS rather than EPERM, so that tools like mount(8) fall
/// back to mount(2), which the capability set governs.
pub const NEW_MOUNT_API_SYSCALLS: &[&str] = &[
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "mount_setattr",
    "move_mount",
    "open_tree",
];

/// Vessel's default seccomp profile: allow everything but [`DENIED_SYSCALLS`] (EPERM) and
/// [`NEW_MOUNT_API_SYSCALLS`] (ENOSYS), for x86_64, i386 and x32 programs alike (as podman's
/// and Docker's default profiles do).
pub fn default_seccomp() -> LinuxSeccomp {
    let rule = |names: &[&str], errno: i32| {
        LinuxSyscallBuilder::default()
            .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(errno as u32)
            .build()
            .expect("syscall rule with every field set")
    };
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            oci_spec::runtime::Arch::ScmpArchX86_64,
            oci_spec::runtime::Arch::ScmpArchX86,
            oci_spec::runtime::Arch::ScmpArchX32,
        ])
        .syscalls(vec![
            rule(DENIED_SYSCALLS, libc::EPERM),
            rule(NEW_MOUNT_API_SYSCALLS, libc::ENOSYS),
        ])
        .build()
        .expect("seccomp profile with every field set")
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .expect("mount with every field set")
}

/// OCI's default mounts: proc, /dev tmpfs, devpts, shm, mqueue, sysfs, cgroup.
fn default_mounts(user_ns: Option<&IdMap>) -> Vec<Mount> {
    let mut devpts = vec![
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ];
    // gid 5 (tty) must be mapped for devpts to accept it.
    if user_ns.is_none_or(|m| m.size > 5) {
        devpts.push("gid=5");
    }
    let sys = if user_ns.is_some() {
        // No network namespace of its own: sysfs cannot be mounted, bind the host's.
        mount(
            "/sys",
            "none",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev", "ro"],
        )
    } else {
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )
    };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount("/dev/pts", "devpts", "devpts", &devpts),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        sys,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

fn namespace(typ: LinuxNamespaceType) -> LinuxNamespace {
    LinuxNamespaceBuilder::default()
        .typ(typ)
        .build()
        .expect("namespace with its type set")
}

/// Builds a spec like `runc spec`, from `opts`.
pub fn default_spec(opts: &SpecOptions) -> Spec {
    let caps: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .expect("capabilities with every set given");
    let process = ProcessBuilder::default()
        .terminal(opts.terminal)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .expect("user"),
        )
        .args(opts.args.clone())
        .env(opts.env.clone())
        .cwd(opts.cwd.clone())
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(1024u64)
            .soft(1024u64)
            .build()
            .expect("rlimit")])
        .no_new_privileges(true)
        .build()
        .expect("process with every field set");

    let mut namespaces: Vec<LinuxNamespace> = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(namespace)
    .collect();
    let mut linux = LinuxBuilder::default()
        .masked_paths(
            [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
                "/sys/devices/virtual/powercap",
            ]
            .map(String::from)
            .to_vec(),
        )
        .readonly_paths(
            [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ]
            .map(String::from)
            .to_vec(),
        )
        .seccomp(default_seccomp());
    if let Some(map) = &opts.user_namespace {
        namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
        namespaces.push(namespace(LinuxNamespaceType::User));
        let id_map = |host: u32| {
            vec![LinuxIdMappingBuilder::default()
                .container_id(0u32)
                .host_id(host)
                .size(map.size)
                .build()
                .expect("id mapping")]
        };
        linux = linux
            .uid_mappings(id_map(map.host_uid_base))
            .gid_mappings(id_map(map.host_gid_base));
    }
    linux = linux.namespaces(namespaces);
    if let Some(r) = &opts.resources {
        linux = linux.resources(r.clone());
    }
    if let Some(p) = &opts.cgroups_path {
        linux = linux.cgroups_path(PathBuf::from(p));
    }
    SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path(opts.rootfs.clone())
                .readonly(opts.root_readonly)
                .build()
                .expect("root"),
        )
        .hostname(opts.hostname.clone())
        .mounts(default_mounts(opts.user_namespace.as_ref()))
        .process(process)
        .linux(linux.build().expect("linux section with every field set"))
        .annotations(HashMap::new())
        .build()
        .expect("spec with every field set")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_round_trips_and_has_the_defaults() {
        let spec = default_spec(&SpecOptions::default());
        let json = serde_json::to_string(&spec).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert_eq!(caps.effective().as_ref().unwrap().len(), 14);
        let ns = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap();
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::User));
        for name in DENIED_SYSCALLS.iter().chain(NEW_MOUNT_API_SYSCALLS) {
            // Every name is a real syscall somewhere; most are on x86_64.
            assert!(!name.is_empty());
        }
        assert!(crate::seccomp::syscall_number("kexec_load").is_some());
    }

    #[test]
    fn rootless_spec_maps_ids() {
        let spec = default_spec(&SpecOptions {
            user_namespace: Some(IdMap {
                host_uid_base: 100000,
                host_gid_base: 100000,
                size: 65536,
            }),
            ..SpecOptions::default()
        });
        let linux = spec.linux().as_ref().unwrap();
        let ns = linux.namespaces().as_ref().unwrap();
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::User));
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        assert_eq!(linux.uid_mappings().as_ref().unwrap()[0].host_id(), 100000);
        let sys = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == std::path::Path::new("/sys"))
            .unwrap();
        assert!(sys
            .options()
            .as_ref()
            .unwrap()
            .contains(&"rbind".to_string()));
    }
}
