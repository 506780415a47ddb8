//! Podman drives vessel-runc as its OCI runtime (through conmon), with a private storage
//! directory so the host's podman state is untouched.
//!
//! Each run passes `--ulimit nofile=1024:1024 --ulimit nproc=1024:1024`: podman asks for
//! 1048576 open files and processes by default, which needs CAP_SYS_RESOURCE to raise the hard
//! limits, and the sandbox these tests run in drops that capability from every process
//! (crun and runc fail the same way without the flags). The podman state root is left at the
//! runtime's default: podman 4.3 forgets `--runtime-flag` on `delete`.

mod common;

use std::process::{Command, Output, Stdio};

use common::{require_root_and_busybox, TempDir, RUNC};

const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

struct Podman {
    dir: TempDir,
}

/// runc, the reference these tests compare vessel-runc with.
const REFERENCE: &str = "runc";

impl Podman {
    fn new(tag: &str) -> Podman {
        Podman::with_image(tag, |_| {})
    }

    /// Like [`Podman::new`], with `extra` adding files to the image's rootfs.
    fn with_image(tag: &str, extra: impl FnOnce(&std::path::Path)) -> Podman {
        require_root_and_busybox();
        for (tool, package) in [
            ("podman", "podman"),
            ("conmon", "conmon"),
            (REFERENCE, "runc"),
        ] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap();
            assert!(
                found.status.success(),
                "{tool} is missing: apt-get install {package}"
            );
        }
        let dir = TempDir::new(&format!("podman-{tag}"));
        let p = Podman { dir };
        let rootfs = p.dir.0.join("rootfs");
        common::busybox_rootfs(&rootfs);
        extra(&rootfs);
        let tar = p.dir.0.join("busybox.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let out = p.podman(&[
            "import",
            tar.to_str().unwrap(),
            "localhost/vessel-busybox:test",
        ]);
        assert!(
            out.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        p
    }

    fn podman(&self, args: &[&str]) -> Output {
        self.podman_with(RUNC, args)
    }

    /// Runs podman with OCI runtime `runtime`.
    fn podman_with(&self, runtime: &str, args: &[&str]) -> Output {
        let d = &self.dir.0;
        Command::new("timeout")
            .arg("120")
            .arg("podman")
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(["--runtime", runtime])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn run(&self, extra: &[&str], cmd: &[&str]) -> Output {
        self.run_with(RUNC, extra, cmd)
    }

    /// `podman run` of the test image with OCI runtime `runtime`.
    fn run_with(&self, runtime: &str, extra: &[&str], cmd: &[&str]) -> Output {
        let mut args = vec!["run", "--network", "none"];
        args.extend(ULIMITS);
        args.extend(extra);
        args.push("localhost/vessel-busybox:test");
        args.extend(cmd);
        self.podman_with(runtime, &args)
    }

    /// The same `podman run` with runc and with vessel-runc: `(runc, vessel-runc)`.
    fn run_both(&self, extra: &[&str], cmd: &[&str]) -> (Output, Output) {
        (
            self.run_with(REFERENCE, extra, cmd),
            self.run_with(RUNC, extra, cmd),
        )
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.podman(&["rmi", "--all", "--force"]);
        // TempDir's drop unmounts what is left under the directory and removes it.
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn podman_run_echo() {
    let p = Podman::new("echo");
    let out = p.run(&["--rm"], &["echo", "hello"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    // With a terminal the init's pty comes from the container's devpts and is /dev/console.
    let out = p.run(
        &["--rm", "-t"],
        &["sh", "-c", "tty; [ -c /dev/console ] && echo console-ok"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("/dev/pts/0") && stdout.contains("console-ok"),
        "{}",
        text(&out)
    );
}

#[test]
fn podman_detached_exec_stop_rm() {
    let p = Podman::new("detached");
    let out = p.run(&["-d", "--name", "vessel-detached"], &["sleep", "1000"]);
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let out = p.podman(&[
        "exec",
        "vessel-detached",
        "sh",
        "-c",
        "echo in-exec; cat /proc/1/cmdline; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("in-exec\nsleep"), "{}", text(&out));

    let out = p.podman(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.Pid}}",
        "vessel-detached",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("running "),
        "{}",
        text(&out)
    );

    let out = p.podman(&["stop", "--time", "1", "vessel-detached"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = p.podman(&["rm", "vessel-detached"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !std::path::Path::new(vessel_container::DEFAULT_STATE_ROOT)
            .join(&id)
            .exists(),
        "the runtime state is deleted"
    );
    assert!(
        common::cgroup_dirs(&format!("libpod_parent/libpod-{id}")).is_empty(),
        "the cgroup is removed"
    );
}

#[test]
fn podman_shows_our_error_for_a_missing_command() {
    let p = Podman::new("error");
    let out = p.run(&["--rm"], &["no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exec: \"no-such-command\": executable file not found in $PATH"),
        "{}",
        text(&out)
    );
    assert!(err.contains("vessel-runc"), "{}", text(&out));
}

/// Asserts that runc and vessel-runc gave the same exit code and that both outputs contain
/// `needle`.
fn same_code_and(both: &(Output, Output), needle: &str) {
    let (reference, ours) = both;
    let report = format!("runc: {}\nvessel-runc: {}", text(reference), text(ours));
    assert_eq!(reference.status.code(), ours.status.code(), "{report}");
    for o in [reference, ours] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(all.contains(needle), "{needle:?} missing; {report}");
    }
}

/// Files that exist but cannot be run, in the image of the exit-code tests.
fn unrunnable_files(rootfs: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for (name, content, mode) in [
        ("notexec", "echo hi\n", 0o644),
        ("garbage", "this is no program\n", 0o755),
        ("badshebang", "#!/nonexistent/interpreter\necho hi\n", 0o755),
    ] {
        let path = rootfs.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[test]
fn exit_codes_of_unrunnable_commands_match_runc() {
    let p = Podman::with_image("exitcodes", unrunnable_files);
    // Not executable: refused at create, "permission denied", which podman turns into 126.
    let both = p.run_both(&["--rm"], &["/notexec"]);
    same_code_and(&both, "exec: \"/notexec\": permission denied");
    assert_eq!(both.1.status.code(), Some(126));
    // A directory is no executable either.
    same_code_and(&p.run_both(&["--rm"], &["/bin"]), "permission denied");
    // A missing path: 127, with stat's reason.
    let both = p.run_both(&["--rm"], &["/nonexistent"]);
    same_code_and(
        &both,
        "exec: \"/nonexistent\": stat /nonexistent: no such file or directory",
    );
    assert_eq!(both.1.status.code(), Some(127));
    // execve fails after start: the container says why and exits with 1.
    for (cmd, why) in [
        ("/garbage", "exec /garbage: exec format error\n"),
        (
            "/badshebang",
            "exec /badshebang: no such file or directory\n",
        ),
    ] {
        let (reference, ours) = p.run_both(&["--rm"], &[cmd]);
        assert_eq!(ours.status.code(), Some(1), "{}", text(&ours));
        assert_eq!(
            reference.status.code(),
            ours.status.code(),
            "{}",
            text(&reference)
        );
        assert_eq!(
            String::from_utf8_lossy(&ours.stderr),
            why,
            "{}",
            text(&ours)
        );
        assert_eq!(reference.stderr, ours.stderr, "{}", text(&reference));
    }
    // The same through podman exec in a running container.
    for (runtime, name) in [(REFERENCE, "codes-runc"), (RUNC, "codes-vessel")] {
        let out = p.run_with(runtime, &["-d", "--name", name], &["sleep", "1000"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    for (cmd, code, needle) in [
        ("/notexec", 126, "exec: \"/notexec\": permission denied"),
        ("/garbage", 1, "exec /garbage: exec format error"),
        (
            "/badshebang",
            1,
            "exec /badshebang: no such file or directory",
        ),
        ("no-such-command", 127, "executable file not found in $PATH"),
    ] {
        let both = (
            p.podman_with(REFERENCE, &["exec", "codes-runc", cmd]),
            p.podman_with(RUNC, &["exec", "codes-vessel", cmd]),
        );
        same_code_and(&both, needle);
        assert_eq!(both.1.status.code(), Some(code), "{}", text(&both.1));
    }
}

/// What a container sees of its cgroups, with the container id replaced by ID: its
/// /proc/self/cgroup, the cgroup mounts (root, mount point, options), /sys/fs/cgroup's entries
/// with their modes, its memory limit and the files of its memory cgroup.
const CGROUP_VIEW: &str = "sed 's/libpod-[0-9a-f]*/libpod-ID/' /proc/self/cgroup; \
    awk 'index($5, \"/sys/fs/cgroup\") == 1' /proc/self/mountinfo | cut -d' ' -f4- \
        | sed 's/libpod-[0-9a-f]*/libpod-ID/'; \
    stat -c '%n %a %F' /sys/fs/cgroup /sys/fs/cgroup/*; \
    cat /sys/fs/cgroup/memory/memory.limit_in_bytes; ls /sys/fs/cgroup/memory";

/// Runs `script` under runc and vessel-runc and asserts both succeed with the same output,
/// which is returned.
fn same_output(p: &Podman, extra: &[&str], script: &str) -> String {
    let (reference, ours) = p.run_both(extra, &["sh", "-c", script]);
    assert!(reference.status.success(), "runc: {}", text(&reference));
    assert!(ours.status.success(), "vessel-runc: {}", text(&ours));
    let out = String::from_utf8_lossy(&ours.stdout).into_owned();
    assert_eq!(
        String::from_utf8_lossy(&reference.stdout),
        out,
        "runc (left) and vessel-runc (right) differ for {extra:?}"
    );
    out
}

#[test]
fn cgroups_seen_from_inside_match_runc() {
    let p = Podman::new("cgroups");
    // The host cgroup namespace (podman's default on cgroup v1): only the container's own
    // cgroup is mounted, read-only, in every hierarchy; it is in name=systemd and the hybrid
    // cgroup2 hierarchy too.
    let out = same_output(&p, &["--rm", "--memory", "64m"], CGROUP_VIEW);
    assert!(
        out.contains("\n67108864\n"),
        "the container's own limit: {out}"
    );
    assert!(
        !out.contains("libpod_parent\n"),
        "no other cgroups listed: {out}"
    );
    assert!(
        out.contains("name=systemd:/libpod_parent/libpod-ID\n"),
        "{out}"
    );
    if std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        assert!(out.contains("0::/libpod_parent/libpod-ID\n"), "{out}");
    }
    // Privileged: read-write, and a cgroup made inside is below the container's own.
    let made = "vessel-podman-made-inside";
    let script = format!(
        "{CGROUP_VIEW}; mkdir /sys/fs/cgroup/memory/{made} && echo made; \
         touch /sys/fs/cgroup/file && echo tmpfs-rw"
    );
    let out = same_output(&p, &["--rm", "--privileged"], &script);
    let at_host_root = std::path::Path::new("/sys/fs/cgroup/memory").join(made);
    let leaked = at_host_root.exists();
    let _ = std::fs::remove_dir(&at_host_root);
    assert!(
        !leaked,
        "a cgroup made inside a privileged container landed at the host's root"
    );
    assert!(out.contains("made\ntmpfs-rw\n"), "{out}");
    // systemd mode (podman adds the host's name=systemd hierarchy) and a cgroup namespace.
    same_output(&p, &["--rm", "--systemd=always"], CGROUP_VIEW);
    same_output(
        &p,
        &["--rm", "--cgroupns=private", "--memory", "64m"],
        CGROUP_VIEW,
    );
}

#[test]
fn podman_update_changes_limits_like_with_runc() {
    let p = Podman::new("update");
    let read = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.shares \
        /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us";
    let mut seen = Vec::new();
    for (runtime, name) in [(REFERENCE, "update-runc"), (RUNC, "update-vessel")] {
        let out = p.run_with(
            runtime,
            &["-d", "--name", name, "--memory", "64m"],
            &["sleep", "1000"],
        );
        assert!(out.status.success(), "{}", text(&out));
        let out = p.podman_with(
            runtime,
            &[
                "update",
                "--memory",
                "128m",
                "--cpu-shares",
                "512",
                "--cpus",
                "1.5",
                name,
            ],
        );
        assert!(out.status.success(), "{runtime}: {}", text(&out));
        let out = p.podman_with(runtime, &["exec", name, "sh", "-c", read]);
        assert!(out.status.success(), "{}", text(&out));
        seen.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    assert_eq!(seen[0], "134217728\n512\n150000\n100000\n", "runc");
    assert_eq!(seen[1], seen[0], "vessel-runc");
}

#[test]
fn i386_programs_run_under_the_default_profile_like_with_runc() {
    // podman's profile lists the x86 and x32 architectures; their syscalls are allowed.
    let p = Podman::with_image("i386", |rootfs| {
        common::build_i386_program(&rootfs.join("i386"))
    });
    let (reference, ours) = p.run_both(&["--rm"], &["/i386"]);
    assert_eq!(
        String::from_utf8_lossy(&reference.stdout),
        "i386 ok\n",
        "runc: {}",
        text(&reference)
    );
    assert_eq!(
        ours.status.code(),
        Some(0),
        "killed by seccomp? {}",
        text(&ours)
    );
    assert_eq!(ours.stdout, reference.stdout);
}
