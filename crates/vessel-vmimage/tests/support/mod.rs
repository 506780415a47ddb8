//! Test support: temporary directories, the kernel cache, and QEMU driven over unix sockets
//! (serial or virtio console, QMP), killed on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a TCG boot may take until the ready line (2 shared cores are slow).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a command typed on the console may take to answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A directory under Cargo's test scratch space, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory named after `label`.
    pub fn new(label: &str) -> TempDir {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_stale);
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("vmimage-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test directory");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// Removes directories left by test processes that were killed (`vmimage-LABEL-PID-N`).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("vmimage-") else {
            continue;
        };
        let mut parts = rest.rsplitn(3, '-');
        let (Some(_n), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The kernel cache shared by all test runs: the Debian kernel is downloaded once.
pub fn kernel_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmimage-kernel-cache")
}

/// A line on the test's stderr that `cargo test` does not capture (boot times).
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Fails the test with the Debian package to install when `program` is missing.
pub fn require(program: &str, package: &str) -> PathBuf {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{program}` is not installed: install the Debian package {package}")
        })
}

/// Everything the console has printed, shared with the thread that reads it.
#[derive(Default)]
struct Transcript {
    text: Mutex<String>,
    changed: Condvar,
}

/// A console (serial or virtio) reached through a QEMU unix socket.
pub struct Console {
    writer: UnixStream,
    transcript: Arc<Transcript>,
    /// Where the next `wait_for` starts looking.
    cursor: usize,
    label: String,
}

impl Console {
    fn attach(socket: &Path, label: &str, child: &mut Child) -> Console {
        let stream = connect(socket, child);
        let reader = stream.try_clone().expect("clone console socket");
        let transcript = Arc::new(Transcript::default());
        let shared = Arc::clone(&transcript);
        std::thread::spawn(move || pump(reader, shared));
        Console {
            writer: stream,
            transcript,
            cursor: 0,
            label: label.to_string(),
        }
    }

    /// Waits for `needle` after the previous match and returns the line from it on, without
    /// a kernel message the console put after it on the same line (the kernel's printk and
    /// the init share the console: `VESSEL-AGENT started ...[    3.947085] IPv6: ...`).
    pub fn wait_for_message(&mut self, needle: &str, timeout: Duration) -> String {
        let line = self.wait_for(needle, timeout);
        let from = &line[line.find(needle).unwrap_or(0)..];
        let printk = from.char_indices().find(|(i, c)| {
            *c == '[' && {
                let rest = from[i + 1..].trim_start_matches(' ');
                let (secs, tail) =
                    rest.split_at(rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(0));
                !secs.is_empty() && tail.starts_with('.')
            }
        });
        from[..printk.map_or(from.len(), |(i, _)| i)]
            .trim_end()
            .to_string()
    }

    /// Waits for `needle` after the previous match and returns the whole line it is on.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut text = self.transcript.text.lock().expect("transcript lock");
        loop {
            // Only whole lines count: the rest of the line may still be on its way.
            let found = text[self.cursor.min(text.len())..]
                .find(needle)
                .map(|i| i + self.cursor);
            if let Some((at, end)) =
                found.and_then(|at| text[at..].find('\n').map(|i| (at, at + i)))
            {
                let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                self.cursor = at + needle.len();
                return text[start..end].trim_end_matches('\r').to_string();
            }
            let now = Instant::now();
            if now >= deadline {
                let tail_start = text.len().saturating_sub(4000);
                let tail_start = (tail_start..text.len())
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                panic!(
                    "{}: {needle:?} did not appear within {timeout:?}; console so far:\n{}",
                    self.label,
                    &text[tail_start..]
                );
            }
            text = self
                .transcript
                .changed
                .wait_timeout(text, deadline - now)
                .expect("transcript lock")
                .0;
        }
    }

    /// Types `line` and a newline.
    pub fn send_line(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to the console");
    }

    /// Everything printed so far.
    pub fn transcript(&self) -> String {
        self.transcript
            .text
            .lock()
            .expect("transcript lock")
            .clone()
    }
}

fn pump(mut reader: UnixStream, transcript: Arc<Transcript>) {
    let mut buffer = [0u8; 4096];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut text = transcript.text.lock().expect("transcript lock");
                text.push_str(&String::from_utf8_lossy(&buffer[..n]));
                transcript.changed.notify_all();
            }
        }
    }
}

/// Connects to a socket QEMU is about to create, failing if QEMU exits first.
fn connect(socket: &Path, child: &mut Child) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(stream) = UnixStream::connect(socket) {
            return stream;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("qemu exited ({status}) before opening {}", socket.display());
        }
        assert!(
            Instant::now() < deadline,
            "qemu did not open {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A QEMU process and its sockets; killed (and waited for) on drop.
pub struct Qemu {
    child: Child,
    pub started: Instant,
    pub name: String,
    dir: PathBuf,
    stderr_log: PathBuf,
}

/// A guest console device as QEMU sees it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ConsoleDevice {
    /// `-serial` (ttyS0 in the guest).
    Serial,
    /// A `virtconsole` port on a virtio-serial bus (hvc0 in the guest).
    Virtio,
}

impl Qemu {
    /// Starts `qemu-system-x86_64` under TCG on q35 with `extra` arguments and the console on
    /// a unix socket in `dir` (QEMU waits for the test to connect before starting the guest).
    pub fn start(
        name: &str,
        dir: &Path,
        kernel: &Path,
        initrd: &Path,
        cmdline: &str,
        console: ConsoleDevice,
        extra: &[String],
    ) -> (Qemu, Console) {
        let qemu = require("qemu-system-x86_64", "qemu-system-x86");
        let console_socket = dir.join(format!("{name}-console.sock"));
        let qmp_socket = dir.join(format!("{name}-qmp.sock"));
        let stderr_log = dir.join(format!("{name}-qemu.log"));
        let mut args: Vec<String> = [
            "-accel",
            "tcg",
            "-M",
            "q35",
            "-m",
            "256",
            "-smp",
            "1",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ]
        .map(String::from)
        .to_vec();
        args.extend(["-kernel".into(), kernel.display().to_string()]);
        args.extend(["-initrd".into(), initrd.display().to_string()]);
        args.extend(["-append".into(), cmdline.to_string()]);
        args.extend([
            "-chardev".into(),
            format!(
                "socket,id=console0,path={},server=on,wait=on",
                console_socket.display()
            ),
        ]);
        match console {
            ConsoleDevice::Serial => args.extend(["-serial".into(), "chardev:console0".into()]),
            ConsoleDevice::Virtio => {
                let log = dir.join(format!("{name}-serial.log"));
                args.extend(["-serial".into(), format!("file:{}", log.display())]);
                args.extend(["-device".into(), "virtio-serial-pci,id=vser0".into()]);
                args.extend([
                    "-device".into(),
                    "virtconsole,chardev=console0,bus=vser0.0".into(),
                ]);
            }
        }
        args.extend([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp_socket.display()),
        ]);
        args.extend(extra.iter().cloned());
        let log = std::fs::File::create(&stderr_log).expect("create qemu log");
        let mut child = Command::new(qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start qemu-system-x86_64");
        let console = Console::attach(&console_socket, name, &mut child);
        let qemu = Qemu {
            child,
            started: Instant::now(),
            name: name.to_string(),
            dir: dir.to_path_buf(),
            stderr_log,
        };
        (qemu, console)
    }

    /// Waits for QEMU to exit on its own (the guest powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for qemu") {
                return status;
            }
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
                panic!(
                    "{}: qemu still running {timeout:?} after power-off; its output: {log}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one QMP command (after the capabilities handshake) and returns its reply line.
    pub fn qmp(&self, command: &str) -> String {
        let socket = self.dir.join(format!("{}-qmp.sock", self.name));
        let stream = UnixStream::connect(&socket).expect("connect to QMP");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("QMP timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone QMP socket"));
        let mut writer = stream;
        let mut line = String::new();
        reader.read_line(&mut line).expect("QMP greeting");
        assert!(line.contains("QMP"), "unexpected QMP greeting {line}");
        let mut reply = |cmd: &str| -> String {
            writer
                .write_all(format!("{{\"execute\":\"{cmd}\"}}\n").as_bytes())
                .expect("QMP write");
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("QMP reply");
                if line.contains("\"return\"") || line.contains("\"error\"") {
                    return line;
                }
            }
        };
        reply("qmp_capabilities");
        reply(command)
    }

    /// Connects to a unix socket QEMU serves (a chardev), waiting until it exists.
    pub fn connect(&mut self, socket: &Path) -> UnixStream {
        connect(socket, &mut self.child)
    }

    /// How long since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
