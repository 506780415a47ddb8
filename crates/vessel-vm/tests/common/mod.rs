//! Test fixtures: guests built from Debian's cloud kernel and busybox, the statically
//! linked agent, a hand-made boot sector and ISO, and guards that kill QEMU and remove
//! everything on drop (also when a test fails).

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// One QEMU boot at a time: the host's two cores are shared.
static BOOT: Mutex<()> = Mutex::new(());

/// Holds the boot lock for a test that starts QEMU.
pub fn boot_lock() -> MutexGuard<'static, ()> {
    BOOT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fails the test with the Debian package to install when a tool or file is missing.
pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package {package}"
    );
}

/// Checks what every QEMU test needs.
pub fn require_tools() {
    assert!(
        vessel_vm::host::QEMU.find().is_ok(),
        "qemu-system-x86_64 is missing: install the Debian package qemu-system-x86"
    );
    assert!(
        vessel_vm::host::QEMU_IMG.find().is_ok(),
        "qemu-img is missing: install the Debian package qemu-utils"
    );
    require("/bin/busybox", "busybox-static");
    assert!(
        is_static(Path::new("/bin/busybox")),
        "/bin/busybox is dynamically linked: install the Debian package busybox-static"
    );
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the VM tests run as root");
}

/// A temporary directory (mode 0755, so a QEMU running as nobody can reach its files),
/// removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "vvm-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills whatever QEMU a run directory's pid file names, and removes a cgroup, on drop.
pub struct QemuGuard {
    pub pidfile: PathBuf,
    pub cgroup: Option<String>,
    pid: Option<i32>,
}

impl QemuGuard {
    pub fn new(run_dir: &Path, cgroup: Option<&str>) -> QemuGuard {
        QemuGuard {
            pidfile: run_dir.join("qemu.pid"),
            cgroup: cgroup.map(String::from),
            pid: None,
        }
    }

    /// Remembers a pid too (the pid file disappears when QEMU exits).
    pub fn watch(&mut self, pid: i32) {
        self.pid = Some(pid);
    }
}

impl Drop for QemuGuard {
    fn drop(&mut self) {
        let from_file = std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        for pid in [from_file, self.pid].into_iter().flatten() {
            let is_qemu = vessel_vm::host::cmdline(pid)
                .is_some_and(|a| a.first().is_some_and(|p| p.contains("qemu-system")));
            if is_qemu {
                // SAFETY: kill(2) on a pid we just checked is a QEMU.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                if let Some(p) = vessel_vm::host::Process::watch(pid) {
                    p.wait_exit(Duration::from_secs(5));
                }
            }
        }
        if let Some(cg) = &self.cgroup {
            if let Ok(m) = vessel_cgroups::manager(cg) {
                let _ = m.destroy();
            }
        }
    }
}

/// The Debian cloud kernel and its modules directory, fetched the way the product fetches it
/// (`apt-get download` into a cache, never installed on the host): one cache for every test
/// run of the workspace, under cargo's target directory.
pub fn host_kernel() -> (PathBuf, PathBuf) {
    static KERNEL: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    KERNEL
        .get_or_init(|| {
            let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmimage-kernel-cache");
            let k = vessel_vmimage::fetch_debian_cloud_kernel(&cache).unwrap_or_else(|e| {
                panic!(
                    "fetching the Debian cloud kernel into {}: {e} (needs apt's package lists: \
                     `apt-get update`)",
                    cache.display()
                )
            });
            (k.vmlinuz, k.modules_dir)
        })
        .clone()
}

/// Modules the test guest loads, in dependency order, with their dependencies.
const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_console",
    "virtio_blk",
    "virtio_net",
    "virtio-rng",
    "button",
    "evdev",
];

/// Resolves `GUEST_MODULES` and their dependencies through `modules.dep`, in load order.
fn module_files(modules: &Path) -> Vec<String> {
    let dep = std::fs::read_to_string(modules.join("modules.dep")).expect("read modules.dep");
    let mut deps = std::collections::HashMap::new();
    for line in dep.lines() {
        if let Some((file, rest)) = line.split_once(':') {
            let name = file
                .rsplit('/')
                .next()
                .unwrap_or(file)
                .trim_end_matches(".ko")
                .to_string();
            deps.insert(
                name,
                (
                    file.to_string(),
                    rest.split_whitespace()
                        .map(String::from)
                        .collect::<Vec<_>>(),
                ),
            );
        }
    }
    let mut order: Vec<String> = Vec::new();
    fn visit(
        file: &str,
        deps: &std::collections::HashMap<String, (String, Vec<String>)>,
        order: &mut Vec<String>,
    ) {
        if order.iter().any(|f| f == file) {
            return;
        }
        let name = file
            .rsplit('/')
            .next()
            .unwrap_or(file)
            .trim_end_matches(".ko");
        if let Some((_, ds)) = deps.get(name) {
            // modules.dep lists dependencies deepest last; load those first.
            for d in ds.iter().rev() {
                visit(d, deps, order);
            }
        }
        order.push(file.to_string());
    }
    for m in GUEST_MODULES {
        let (file, _) = deps
            .get(*m)
            .unwrap_or_else(|| panic!("module {m} is not in {}/modules.dep", modules.display()));
        visit(file, &deps, &mut order);
    }
    order
}

/// The test guest's init: modules, the virtio console, hostname from `vessel.hostname=`,
/// the ACPI power button (busybox acpid, VESSEL-ACPI before it starts) powering off, the
/// agent on its port, VESSEL-READY, then a shell on the console.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run; mount -t devpts devpts /dev/pts
while read -r m; do insmod "/lib/modules/$m" || echo "vessel-test-init: insmod $m failed"; done </etc/modules.order
i=0; while [ ! -c /dev/hvc0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
exec </dev/hvc0 >/dev/hvc0 2>&1
for w in $(cat /proc/cmdline); do case "$w" in vessel.hostname=*) hostname "${w#*=}";; esac; done
mkdir -p /dev/virtio-ports
for p in /sys/class/virtio-ports/vport*; do ln -sf "../${p##*/}" "/dev/virtio-ports/$(cat "$p/name")"; done
trap 'echo VESSEL-SHUTDOWN; poweroff -f' USR2
echo VESSEL-ACPI
acpid -c /etc/acpi -l /run/acpid.log -p /run/acpid.pid
i=0; while [ ! -s /run/acpid.pid ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
(while :; do /usr/bin/vessel-agent /dev/virtio-ports/org.vessel.agent >>/run/agent.log 2>&1; sleep 1; done) &
echo "VESSEL-READY $(hostname)"
while :; do setsid sh </dev/hvc0 >/dev/hvc0 2>&1 & wait $!; done
"#;

/// Builds the test guest's initramfs (cpio newc + gzip) at `out`.
pub fn build_initramfs(out: &Path, modules_dir: &Path) {
    let agent = static_agent();
    let mut files: Vec<(String, u32, Vec<u8>)> = Vec::new();
    for d in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "etc",
        "etc/acpi",
        "etc/acpi/PWRF",
        "usr",
        "usr/bin",
        "lib",
        "lib/modules",
    ] {
        files.push((d.into(), 0o040755, Vec::new()));
    }
    files.push(("init".into(), 0o100755, INIT.as_bytes().to_vec()));
    files.push((
        "bin/busybox".into(),
        0o100755,
        std::fs::read("/bin/busybox").expect("read busybox"),
    ));
    files.push((
        "usr/bin/vessel-agent".into(),
        0o100755,
        std::fs::read(&agent).expect("read agent"),
    ));
    files.push((
        "etc/acpi/PWRF/00000080".into(),
        0o100755,
        b"#!/bin/sh\nkill -USR2 1\n".to_vec(),
    ));
    let mut order = String::new();
    for f in module_files(modules_dir) {
        let base = f.rsplit('/').next().unwrap_or(&f).to_string();
        let data =
            std::fs::read(modules_dir.join(&f)).unwrap_or_else(|e| panic!("read module {f}: {e}"));
        files.push((format!("lib/modules/{base}"), 0o100644, data));
        order.push_str(&base);
        order.push('\n');
    }
    files.push(("etc/modules.order".into(), 0o100644, order.into_bytes()));
    let file = std::fs::File::create(out).expect("create initramfs");
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    for (i, (name, mode, data)) in files.iter().enumerate() {
        write_cpio_entry(&mut gz, i as u32 + 1, name, *mode, data);
    }
    write_cpio_entry(&mut gz, 0, "TRAILER!!!", 0, &[]);
    gz.finish().expect("finish gzip");
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

fn write_cpio_entry(w: &mut impl Write, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let namesize = name.len() + 1;
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0, 0, 1, 0, data.len(), 0, 0, 0, 0, 0
    );
    let mut buf = header.into_bytes();
    buf.extend_from_slice(name.as_bytes());
    buf.push(0);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
    buf.extend_from_slice(data);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
    w.write_all(&buf).expect("write cpio");
}

/// Builds `vessel-agent` statically linked (once per test run) and returns its path.
pub fn static_agent() -> PathBuf {
    static AGENT: OnceLock<PathBuf> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vessel-agent/Cargo.toml");
            let started = std::time::Instant::now();
            let out = Command::new(cargo)
                .args([
                    "rustc",
                    "--release",
                    "--bin",
                    "vessel-agent",
                    "--message-format=json",
                    "--manifest-path",
                ])
                .arg(&manifest)
                .args(["--", "-C", "target-feature=+crt-static"])
                .output()
                .expect("run cargo to build vessel-agent");
            assert!(
                out.status.success(),
                "building the static vessel-agent failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let exe = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| {
                    v["reason"] == "compiler-artifact" && v["target"]["name"] == "vessel-agent"
                })
                .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
                .next_back()
                .expect("cargo reported no vessel-agent executable");
            assert!(
                is_static(&exe),
                "{} is not statically linked",
                exe.display()
            );
            eprintln!(
                "static vessel-agent built in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            exe
        })
        .clone()
}

/// Whether an ELF file has no program interpreter (PT_INTERP), i.e. is statically linked.
pub fn is_static(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return false;
    }
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap_or([0; 8]));
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]);
    let (phoff, phentsize, phnum) = (
        u64_at(32) as usize,
        u16_at(54) as usize,
        u16_at(56) as usize,
    );
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= data.len()
            && u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]) != 3
    })
}

/// A 512-byte x86 boot sector that writes `msg` to COM1 (port 0x3f8) and halts.
pub fn boot_sector(msg: &str) -> Vec<u8> {
    let mut s = vec![
        0xFA, // cli
        0x31, 0xC0, // xor ax, ax
        0x8E, 0xD8, // mov ds, ax
        0xBE, 0x16, 0x7C, // mov si, 0x7c16 (the message)
        0xBA, 0xF8, 0x03, // mov dx, 0x3f8
        0xAC, // loop: lodsb
        0x84, 0xC0, // test al, al
        0x74, 0x03, // jz done
        0xEE, // out dx, al
        0xEB, 0xF8, // jmp loop
        0xF4, // done: hlt
        0xEB, 0xFD, // jmp done
    ];
    assert_eq!(s.len(), 0x16);
    s.extend_from_slice(msg.as_bytes());
    s.push(0);
    assert!(s.len() <= 510, "message too long for a boot sector");
    s.resize(510, 0);
    s.extend_from_slice(&[0x55, 0xAA]);
    s
}

/// A minimal El Torito ISO (no emulation) whose boot image is [`boot_sector`]`(msg)`.
pub fn boot_iso(msg: &str) -> Vec<u8> {
    const S: usize = 2048;
    let total = 21;
    let mut iso = vec![0u8; total * S];
    let both32 = |v: u32| {
        let mut b = v.to_le_bytes().to_vec();
        b.extend_from_slice(&v.to_be_bytes());
        b
    };
    // Primary volume descriptor.
    let pvd = &mut iso[16 * S..17 * S];
    pvd[0] = 1;
    pvd[1..6].copy_from_slice(b"CD001");
    pvd[6] = 1;
    pvd[40..72].copy_from_slice(&[b' '; 32]);
    pvd[40..46].copy_from_slice(b"VESSEL");
    pvd[80..88].copy_from_slice(&both32(total as u32));
    pvd[120..124].copy_from_slice(&[1, 0, 0, 1]);
    pvd[124..128].copy_from_slice(&[1, 0, 0, 1]);
    pvd[128..132].copy_from_slice(&[0x00, 0x08, 0x08, 0x00]);
    let root = &mut pvd[156..190];
    root[0] = 34;
    root[2..10].copy_from_slice(&both32(22));
    root[10..18].copy_from_slice(&both32(0));
    root[25] = 2;
    root[28..32].copy_from_slice(&[1, 0, 0, 1]);
    root[32] = 1;
    pvd[881] = 1;
    // Boot record volume descriptor: the boot catalog is at sector 19.
    let br = &mut iso[17 * S..18 * S];
    br[1..6].copy_from_slice(b"CD001");
    br[6] = 1;
    br[7..30].copy_from_slice(b"EL TORITO SPECIFICATION");
    br[71..75].copy_from_slice(&19u32.to_le_bytes());
    // Terminator.
    let t = &mut iso[18 * S..19 * S];
    t[0] = 255;
    t[1..6].copy_from_slice(b"CD001");
    t[6] = 1;
    // Boot catalog: validation entry (words sum to 0) and the default entry.
    let cat = &mut iso[19 * S..20 * S];
    cat[0] = 1;
    cat[30] = 0x55;
    cat[31] = 0xAA;
    let sum = (0..16)
        .map(|i| u16::from_le_bytes([cat[2 * i], cat[2 * i + 1]]))
        .fold(0u16, |a, w| a.wrapping_add(w));
    cat[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    cat[32] = 0x88; // bootable
    cat[33] = 0; // no emulation
    cat[38..40].copy_from_slice(&4u16.to_le_bytes()); // 4 virtual sectors = 2048 bytes
    cat[40..44].copy_from_slice(&20u32.to_le_bytes());
    iso[20 * S..20 * S + 512].copy_from_slice(&boot_sector(msg));
    iso
}
