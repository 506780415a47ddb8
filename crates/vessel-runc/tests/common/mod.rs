//! Shared helpers for the integration tests: a busybox bundle in a temporary directory, a
//! private state root, and guards that clean up containers, cgroups and directories even when
//! a test fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const RUNC: &str = env!("CARGO_BIN_EXE_vessel-runc");

/// Fails (does not skip) when a prerequisite is missing.
pub fn require_root_and_busybox() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create namespaces, mounts and cgroups: run them as root"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
}

/// A temporary directory removed on drop (after unmounting anything left below it).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let template = std::env::temp_dir().join(format!("vessel-runc-{tag}-XXXXXX"));
        let path = nix::unistd::mkdtemp(&template).expect("mkdtemp");
        // Searchable by the root of a user namespace (a mapped, unprivileged host uid).
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Lazily unmount anything a failed test left mounted below the directory.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| Path::new(p).starts_with(&self.0))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies busybox into `rootfs/bin` with a symlink per applet.
pub fn busybox_rootfs(rootfs: &Path) {
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp", "data"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let out = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .unwrap();
}

/// A bundle with a busybox rootfs, a private state root, and the containers created in it
/// (force-deleted on drop).
pub struct Bundle {
    pub dir: TempDir,
    pub root: PathBuf,
    ids: std::cell::RefCell<Vec<String>>,
}

impl Bundle {
    /// A bundle whose config.json comes from `vessel-runc spec` plus `edit`.
    pub fn new(tag: &str, spec_args: &[&str], edit: impl FnOnce(&mut Value)) -> Bundle {
        require_root_and_busybox();
        let dir = TempDir::new(tag);
        busybox_rootfs(&dir.0.join("rootfs"));
        let root = dir.0.join("state");
        let b = Bundle {
            dir,
            root,
            ids: Default::default(),
        };
        let mut args = vec!["spec", "--bundle"];
        let bundle = b.dir.0.to_string_lossy().to_string();
        args.push(&bundle);
        args.extend_from_slice(spec_args);
        let out = Command::new(RUNC).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "spec failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = b.dir.0.join("config.json");
        let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        cfg["process"]["terminal"] = false.into();
        cfg["root"]["readonly"] = false.into();
        edit(&mut cfg);
        std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        b
    }

    pub fn path(&self) -> &Path {
        &self.dir.0
    }

    /// Changes config.json (for settings that need the bundle's path).
    pub fn edit(&self, edit: impl FnOnce(&mut Value)) {
        let path = self.dir.0.join("config.json");
        let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut cfg);
        std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    }

    /// Runs vessel-runc with this bundle's state root.
    pub fn runc(&self, args: &[&str]) -> Output {
        Command::new(RUNC)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs vessel-runc and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.runc(args);
        assert!(
            out.status.success(),
            "vessel-runc {args:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates container `id`; its stdout and stderr go to `<bundle>/<id>.log`.
    pub fn create(&self, id: &str) {
        let status = self.create_command(id).status().unwrap();
        assert!(status.success(), "create failed: {}", self.output(id));
    }

    /// Runs `create` for container `id` whether it succeeds or not, with its output in
    /// `<bundle>/<id>.log` (a created init keeps its stdio, so reading it through a pipe would
    /// wait for the container); returns the exit code and what was printed.
    pub fn try_create(&self, id: &str) -> (Option<i32>, String) {
        let status = self.create_command(id).status().unwrap();
        (status.code(), self.output(id))
    }

    /// The `create` command for container `id` (stdout and stderr to `<bundle>/<id>.log`),
    /// not yet run; the container is deleted when the bundle is dropped.
    pub fn create_command(&self, id: &str) -> Command {
        self.track(id);
        let log = std::fs::File::create(self.dir.0.join(format!("{id}.log"))).unwrap();
        let mut cmd = Command::new(RUNC);
        cmd.arg("--root")
            .arg(&self.root)
            .args(["create", "--bundle"])
            .arg(&self.dir.0)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd
    }

    /// Deletes container `id` (with force) when the bundle is dropped.
    pub fn track(&self, id: &str) {
        self.ids.borrow_mut().push(id.to_string());
    }

    /// What container `id`'s processes printed so far.
    pub fn output(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.0.join(format!("{id}.log"))).unwrap_or_default()
    }

    /// Waits until the output of `id` contains `needle`.
    pub fn wait_output(&self, id: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.output(id);
            if out.contains(needle) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never appeared; output: {out}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    /// Waits until container `id` has `status`.
    pub fn wait_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.state(id);
            if s["status"] == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "status stays {}, want {status}",
                s["status"]
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            let state = self.runc(&["state", id]);
            let cgroup = serde_json::from_slice::<Value>(&state.stdout)
                .ok()
                .and_then(|v| v["cgroup_path"].as_str().map(String::from));
            let _ = self.runc(&["delete", "--force", id]);
            if let Some(path) = cgroup {
                for dir in cgroup_dirs(&path) {
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
    }
}

/// The directories of cgroup `path` that exist, in every hierarchy.
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let mut candidates = vec![Path::new("/sys/fs/cgroup").join(path)];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            candidates.push(e.path().join(path));
        }
    }
    candidates.into_iter().filter(|p| p.is_dir()).collect()
}

/// i386 assembly: getpid (its result must be a pid, not -errno), write "i386 ok", exit 0, all
/// through `int $0x80`; exit 3 if getpid failed.
const I386_PROGRAM: &str = r#"
.globl _start
.text
_start:
    movl $20, %eax          # getpid
    int $0x80
    cmpl $0, %eax           # a pid, not an error (-errno) or a kill
    jle fail
    movl $4, %eax           # write(1, msg, len)
    movl $1, %ebx
    movl $msg, %ecx
    movl $len, %edx
    int $0x80
    movl $1, %eax           # exit(0)
    xorl %ebx, %ebx
    int $0x80
fail:
    movl $1, %eax           # exit(3)
    movl $3, %ebx
    int $0x80
.data
msg: .ascii "i386 ok\n"
len = . - msg
"#;

/// Builds a static i386 program at `path` (with binutils, no 32-bit libraries needed) that
/// calls getpid and write through `int $0x80`, prints "i386 ok" and exits 0.
pub fn build_i386_program(path: &Path) {
    let dir = path.parent().unwrap();
    let src = dir.join("i386.s");
    let obj = dir.join("i386.o");
    std::fs::write(&src, I386_PROGRAM).unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("{cmd:?}: {e}: the i386 test program needs binutils (apt-get install binutils)")
        });
        assert!(
            out.status.success(),
            "{cmd:?} failed (binutils without i386 support?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("as").arg("--32").arg("-o").arg(&obj).arg(&src));
    run(Command::new("ld")
        .args(["-m", "elf_i386", "-o"])
        .arg(path)
        .arg(&obj));
    let _ = std::fs::remove_file(src);
    let _ = std::fs::remove_file(obj);
}

/// Pids of live processes whose command line contains `needle` (a container id, say).
pub fn processes_mentioning(needle: &str) -> Vec<i64> {
    let own = std::process::id() as i64;
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i64>().ok())
        .filter(|pid| *pid != own && alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// Whether a process exists (zombies count as gone).
pub fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next())
        })
        .is_some_and(|c| c != 'Z' && c != 'X')
}
