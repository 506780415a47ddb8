//! Which accelerator works on this host, found by booting the kernel for real.
//!
//! `/dev/kvm` existing (or even opening) does not mean KVM can run a Linux guest: on nested
//! hosts it may fault, spin or hang on the first instructions of the kernel. So the probe boots
//! the given kernel under KVM with a serial console and waits a few seconds for a line the
//! kernel prints only after it has set itself up; anything else (an error, silence, a hang)
//! means TCG, with the reason. QEMU is killed on every path. The answer is cached in a file
//! keyed by the kernel's and QEMU's versions, since it only changes when they do.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Result, VmError};
use crate::host::QEMU;
use crate::machine::Accel;

/// The probe's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelProbe {
    /// The accelerator to use.
    pub accel: Accel,
    /// Why: what KVM did, or why it was not tried.
    pub reason: String,
    /// How long the probe took (of the original probe, for a cached answer).
    #[serde(with = "duration_ms")]
    pub took: Duration,
    /// Whether the answer came from the cache file.
    #[serde(default)]
    pub cached: bool,
}

/// Console lines that prove the kernel got through its own set-up: it starts the init, or
/// fails to find a root (still proof that the CPU runs it), or an init says it is ready.
const ALIVE_MARKERS: &[&str] = &[
    "Run /init as init process",
    "Run /sbin/init as init process",
    "Unable to mount root fs",
    "VESSEL-READY",
];

/// Probes KVM by booting `kernel` (and `initrd`) with `-accel kvm`; answers [`Accel::Tcg`]
/// with the reason when /dev/kvm cannot be opened, QEMU fails, or no proof of life appears on
/// the console within `timeout`. With `cache`, a previous answer for the same kernel and QEMU
/// versions is returned at once, and a new answer is stored there.
pub fn probe_accel(
    kernel: &Path,
    initrd: Option<&Path>,
    timeout: Duration,
    cache: Option<&Path>,
) -> Result<AccelProbe> {
    crate::host::check_readable("kernel", kernel)?;
    if let Some(i) = initrd {
        crate::host::check_readable("initrd", i)?;
    }
    let qemu = QEMU.find()?;
    // KVM's behaviour depends on the host kernel too: an upgrade there invalidates the answer.
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let key = format!(
        "{} | {} | host {}",
        kernel_version(kernel)?,
        qemu_version(&qemu)?,
        host.trim()
    );
    if let Some(cache) = cache {
        if let Some(mut hit) = read_cache(cache).remove(&key) {
            hit.cached = true;
            return Ok(hit);
        }
    }
    let started = Instant::now();
    let (accel, reason) = match open_kvm() {
        Err(reason) => (Accel::Tcg, reason),
        Ok(()) => match boot_probe(
            &qemu,
            &["-accel", "kvm", "-cpu", "host"],
            kernel,
            initrd,
            timeout,
        )? {
            Ok(proof) => (
                Accel::Kvm,
                format!("the kernel booted under KVM and printed {proof:?}"),
            ),
            Err(why) => (Accel::Tcg, format!("KVM unusable: {why}")),
        },
    };
    let probe = AccelProbe {
        accel,
        reason,
        took: started.elapsed(),
        cached: false,
    };
    tracing::info!(accel = %probe.accel, reason = %probe.reason, took_ms = probe.took.as_millis() as u64, "accelerator probed");
    if let Some(cache) = cache {
        let mut all = read_cache(cache);
        all.insert(key, probe.clone());
        write_cache(cache, &all)?;
    }
    Ok(probe)
}

/// Opens /dev/kvm and checks the API version (12, stable since Linux 2.6.22).
fn open_kvm() -> std::result::Result<(), String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    // SAFETY: KVM_GET_API_VERSION takes no argument and returns an int.
    let v = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if v != 12 {
        return Err(format!("/dev/kvm reports API version {v}, expected 12"));
    }
    Ok(())
}

/// Kills and reaps the probe's QEMU however the probe ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots `kernel` with the accelerator arguments `accel` and watches the serial console:
/// `Ok(line)` with the proof-of-life line, or `Err(why)` when QEMU failed, exited or stayed
/// silent for `timeout`. QEMU is killed and reaped before this returns.
fn boot_probe(
    qemu: &Path,
    accel: &[&str],
    kernel: &Path,
    initrd: Option<&Path>,
    timeout: Duration,
) -> Result<std::result::Result<String, String>> {
    let mut cmd = Command::new(qemu);
    cmd.args(["-machine", "q35", "-m", "256"])
        .args(accel)
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(kernel)
        .args([
            "-append",
            "console=ttyS0 earlyprintk=serial panic=-1 no_timer_check",
        ]);
    if let Some(i) = initrd {
        cmd.arg("-initrd").arg(i);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The guard below cannot run if the caller's process ends during the probe (a daemon
    // shutting down abandons its blocking work): the probe's QEMU must end with it.
    // SAFETY: prctl is async-signal-safe and allocates nothing.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = KillOnDrop(
        cmd.spawn()
            .map_err(|e| VmError::StartFailed(format!("cannot run {}: {e}", qemu.display())))?,
    );
    let (Some(stdout), Some(mut stderr)) = (child.0.stdout.take(), child.0.stderr.take()) else {
        return Err(VmError::StartFailed(
            "the probe's QEMU has no output pipes".into(),
        ));
    };
    let (tx, rx) = mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(Some(line)).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Some(line)) => {
                if ALIVE_MARKERS.iter().any(|m| line.contains(m)) {
                    break Ok(line.trim().to_string());
                }
                if !line.trim().is_empty() {
                    last = line.trim().to_string();
                }
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => break Err(None),
            Err(mpsc::RecvTimeoutError::Timeout) => break Err(Some(timeout)),
        }
    };
    drop(child);
    let stderr = errors.join().unwrap_or_default();
    let qemu_said = stderr
        .lines()
        .filter(|l| !l.contains("terminating on signal") && !l.trim().is_empty())
        .find(|l| l.contains("KVM") || l.contains("kvm") || l.contains("error"))
        .map(|l| l.trim().to_string());
    let last = if last.is_empty() {
        "none".to_string()
    } else {
        format!("{last:?}")
    };
    Ok(outcome.map_err(|timed_out| {
        let what = match timed_out {
            Some(t) => format!(
                "no kernel start-up line on the console within {} s",
                t.as_secs_f64()
            ),
            None => "QEMU exited before the kernel started up".to_string(),
        };
        match qemu_said {
            Some(q) => format!("{what}; QEMU said {q:?}; last console line {last}"),
            None => format!("{what}; last console line {last}"),
        }
    }))
}

/// The version string in a bzImage's setup header ("6.1.0-56-cloud-amd64 (...) #1 SMP ...").
pub fn kernel_version(kernel: &Path) -> Result<String> {
    let mut f = std::fs::File::open(kernel).map_err(|e| VmError::BadFile {
        what: "kernel",
        path: kernel.into(),
        reason: e.to_string(),
    })?;
    let mut head = vec![0u8; 64 * 1024];
    let n = read_up_to(&mut f, &mut head).map_err(VmError::io("read", kernel))?;
    head.truncate(n);
    let bad = |reason: &str| VmError::BadFile {
        what: "kernel",
        path: kernel.into(),
        reason: reason.into(),
    };
    if head.len() < 0x210 || &head[0x202..0x206] != b"HdrS" {
        return Err(bad("not a Linux bzImage (no HdrS setup header)"));
    }
    let ptr = u16::from_le_bytes([head[0x20E], head[0x20F]]) as usize + 0x200;
    let s = head
        .get(ptr..)
        .and_then(|rest| rest.split(|&b| b == 0).next())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("the setup header has no version string"))?;
    Ok(String::from_utf8_lossy(s).trim().to_string())
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// First line of `qemu-system-x86_64 --version`.
pub fn qemu_version(qemu: &Path) -> Result<String> {
    let out = Command::new(qemu)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Command {
            command: format!("{} --version", qemu.display()),
            message: e.to_string(),
        })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

fn read_cache(path: &Path) -> BTreeMap<String, AccelProbe> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_cache(path: &Path, all: &BTreeMap<String, AccelProbe>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let data = serde_json::to_vec_pretty(all).map_err(|e| VmError::Io {
        op: "serialise",
        path: path.into(),
        source: e.into(),
    })?;
    std::fs::write(&tmp, data).map_err(VmError::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(VmError::io("rename", path))
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's cloud kernel, fetched as the product fetches it into the cache that the
    /// workspace's integration tests share (`target/tmp`, next to this test's `target/debug`).
    fn host_kernel() -> std::path::PathBuf {
        let exe = std::env::current_exe().expect("the test's own path");
        let target = exe
            .ancestors()
            .nth(3)
            .expect("the test runs from target/<profile>/deps");
        let cache = target.join("tmp").join("vmimage-kernel-cache");
        vessel_vmimage::fetch_debian_cloud_kernel(&cache)
            .unwrap_or_else(|e| panic!("fetching the Debian cloud kernel into {cache:?}: {e}"))
            .vmlinuz
    }

    /// The probe's boot never hangs: silence ends it at the timeout with QEMU killed, and the
    /// proof-of-life line is recognised (both under TCG, which works everywhere).
    #[test]
    fn probe_boot_times_out_and_recognises_the_kernel() {
        let qemu = QEMU
            .find()
            .expect("install the Debian package qemu-system-x86");
        let kernel = host_kernel();
        let t = Instant::now();
        let silent = boot_probe(
            &qemu,
            &["-accel", "tcg"],
            &kernel,
            None,
            Duration::from_millis(300),
        )
        .expect("probe");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "bounded: {:?}",
            t.elapsed()
        );
        let why = silent.expect_err("no proof within 0.3 s");
        assert!(why.contains("within 0.3 s"), "{why}");
        let alive = boot_probe(
            &qemu,
            &["-accel", "tcg"],
            &kernel,
            None,
            Duration::from_secs(60),
        )
        .expect("probe");
        assert!(alive
            .expect("the kernel starts")
            .contains("Unable to mount root fs"));
        assert!(kernel_version(&kernel).expect("version").contains("amd64"));
    }
}
