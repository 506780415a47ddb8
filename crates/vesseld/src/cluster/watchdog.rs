//! The fence's backstop for a daemon that is gone: instances outlive the daemon, so a
//! member whose daemon was killed would run its `cluster.ha` instances on while the others
//! take them for lost and start them elsewhere. A member's daemon therefore keeps a small
//! process of its own binary, `vesseld fence-watchdog ROOT`, in its own session, and tells it
//! through a pipe, a few times a second while it holds a confirmed lease and is not fenced,
//! which HA processes run and how long they may (three quarters of a TTL after the last
//! renewal etcd confirmed: after the daemon would have fenced itself, a quarter of a TTL
//! before the lease can expire). When that time passes without word (the daemon is dead,
//! hung, or cut off from etcd), the watchdog kills those processes, before the lease
//! expires and the others may start them. A daemon started again takes the watchdog's
//! place only once it holds a lease again (it ends the old one then; until then the old one
//! keeps its deadline).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use super::ClusterService;

/// The first argument that makes `vesseld` the watchdog.
pub const ARG: &str = "fence-watchdog";
/// How often the daemon tells its watchdog.
const TELL_EVERY: Duration = Duration::from_millis(300);
/// Where the daemon notes the watchdog that has its word (pid and start time).
const PID_FILE: &str = "cluster-watchdog.pid";

/// The daemon's end of its watchdog.
pub(super) struct Watchdog {
    stdin: ChildStdin,
    pid: i32,
}

impl Watchdog {
    /// Starts the watchdog (this binary, in a session of its own; the root directory on its
    /// command line says whose it is).
    pub(super) fn spawn(root: &Path) -> std::io::Result<Watchdog> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg(ARG)
            .arg(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: setsid is async-signal-safe; it detaches the child from the daemon's
        // session and process group, so signals meant for the daemon do not reach it.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child: Child = cmd.spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no pipe to the watchdog"))?;
        let pid = child.id() as i32;
        // Never blocking the daemon: a watchdog too busy to read misses a word, no more.
        let fd = stdin.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, with plain integer flags.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
        }
        // Reaped when it ends.
        std::thread::spawn(move || child.wait());
        Ok(Watchdog { stdin, pid })
    }

    /// Tells it that the processes `pids` (pid, start time) may run for `left` more.
    fn tell(&mut self, left: Duration, pids: &[(i32, u64)]) -> std::io::Result<()> {
        let mut line = format!("alive {}", left.as_millis());
        for (pid, start) in pids {
            line.push_str(&format!(" {pid}:{start}"));
        }
        line.push('\n');
        self.stdin.write_all(line.as_bytes())
    }
}

/// A request to tell the watchdog at once; answered with whether it was told.
pub(super) type TellNow = tokio::sync::oneshot::Sender<bool>;

impl ClusterService {
    /// Keeps the watchdog told while this member holds a lease and is not fenced: every
    /// `TELL_EVERY`, and at once when asked through `now` (an HA instance just started: the
    /// watchdog must know its process before the start is reported).
    pub(super) async fn keep_watchdog(
        self,
        mut dog: Watchdog,
        mut now: tokio::sync::mpsc::UnboundedReceiver<TellNow>,
    ) {
        let mut noted = false;
        loop {
            let asked = tokio::select! {
                _ = tokio::time::sleep(TELL_EVERY) => None,
                asked = now.recv() => asked,
            };
            let told = self.tell_watchdog(&mut dog, &mut noted).await;
            if let Some(asked) = asked {
                let _ = asked.send(told);
            }
        }
    }

    /// Tells the watchdog once; whether it was told (not while fenced or without a lease
    /// renewal confirmed recently).
    async fn tell_watchdog(&self, dog: &mut Watchdog, noted: &mut bool) -> bool {
        let ago = match self.inner.live.lock().await.as_ref() {
            Some(j) => j.beat.renewed_ago(),
            None => None,
        };
        // Not while fenced: the daemon stops its HA instances itself then, and the
        // watchdog kills what is left at its deadline.
        let left = ago
            .filter(|a| *a < vessel_cluster::fence_after(super::LEASE_TTL))
            .and_then(|a| vessel_cluster::kill_after(super::LEASE_TTL).checked_sub(a));
        let Some(left) = left else {
            return false;
        };
        let pids = self
            .inner
            .instances
            .get()
            .map(|i| i.ha_pids())
            .unwrap_or_default();
        if let Err(e) = dog.tell(left, &pids) {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                tracing::warn!("the fence watchdog is not reading; a word missed");
                return false;
            }
            tracing::error!(error = %e, "the fence watchdog is gone; starting another");
            match Watchdog::spawn(&self.inner.root) {
                Ok(d) => {
                    *dog = d;
                    *noted = false;
                }
                Err(e) => tracing::error!(error = %e, "no fence watchdog"),
            }
            return false;
        }
        if !*noted {
            // This member holds a lease again: a watchdog of an earlier daemon ends now.
            retire_earlier(&self.inner.root, dog.pid);
            *noted = true;
        }
        true
    }
}

fn pid_file(root: &Path) -> PathBuf {
    root.join(PID_FILE)
}

/// Ends the watchdog noted in the pid file if it is not `mine`, and notes `mine`.
fn retire_earlier(root: &Path, mine: i32) {
    let file = pid_file(root);
    if let Ok(text) = std::fs::read_to_string(&file) {
        let mut w = text.split_whitespace();
        let pid: Option<i32> = w.next().and_then(|p| p.parse().ok());
        let start: Option<u64> = w.next().and_then(|s| s.parse().ok());
        if let (Some(pid), Some(start)) = (pid, start) {
            let same = vessel_vm::host::start_time(pid) == Some(start)
                && vessel_vm::host::cmdline(pid).is_some_and(|a| a.iter().any(|x| x == ARG));
            if pid != mine && same {
                tracing::info!(pid, "ending the fence watchdog of an earlier daemon");
                // SAFETY: a signal to a process checked to be that watchdog.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
    }
    if let Some(start) = vessel_vm::host::start_time(mine) {
        if let Err(e) = std::fs::write(&file, format!("{mine} {start}\n")) {
            tracing::warn!(path = %file.display(), error = %e, "the watchdog's pid not noted");
        }
    }
}

/// What the watchdog was told last.
#[derive(Debug, Default, PartialEq)]
struct Word {
    left: Duration,
    pids: Vec<(i32, u64)>,
}

/// Parses `alive MILLIS PID:START...`.
fn parse(line: &str) -> Option<Word> {
    let mut w = line.split_whitespace();
    if w.next()? != "alive" {
        return None;
    }
    let left = Duration::from_millis(w.next()?.parse().ok()?);
    let pids = w
        .map(|p| {
            let (pid, start) = p.split_once(':')?;
            Some((pid.parse().ok()?, start.parse().ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Word { left, pids })
}

/// Kills the processes still running as noted.
fn fence(pids: &[(i32, u64)]) {
    for &(pid, start) in pids {
        if vessel_vm::host::start_time(pid) == Some(start) {
            eprintln!(
                "vesseld fence-watchdog: no word from the daemon in time: killing HA process {pid}"
            );
            // SAFETY: a signal to a process whose start time says it is the one noted.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The watchdog's life: reads the daemon's word from stdin; kills the HA processes when
/// the time it was given passes without new word; ends when the daemon is gone and nothing
/// is left to watch.
pub fn run() -> ! {
    let fd = std::io::stdin().as_raw_fd();
    let mut deadline: Option<Instant> = None;
    let mut pids: Vec<(i32, u64)> = Vec::new();
    let mut pending = Vec::new();
    let mut open = true;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            fence(&pids);
            pids.clear();
            deadline = None;
        }
        if !open && deadline.is_none() {
            std::process::exit(0);
        }
        let timeout = deadline.map_or(-1, |d| {
            d.saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(1, i32::MAX as u128) as i32
        });
        if !open {
            std::thread::sleep(Duration::from_millis(timeout.max(1) as u64));
            continue;
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on our stack.
        let n = unsafe { libc::poll(&mut p, 1, timeout) };
        if n <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        // SAFETY: reads into our buffer, at most its length (unbuffered, so that poll sees
        // every byte not read yet).
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            n if n < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            n if n <= 0 => open = false,
            n => {
                pending.extend_from_slice(&buf[..n as usize]);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if let Some(word) = parse(&String::from_utf8_lossy(&line)) {
                        deadline = Some(Instant::now() + word.left);
                        pids = word.pids;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_is_parsed() {
        assert_eq!(
            parse("alive 2500 12:345 678:9\n"),
            Some(Word {
                left: Duration::from_millis(2500),
                pids: vec![(12, 345), (678, 9)],
            })
        );
        assert_eq!(
            parse("alive 100"),
            Some(Word {
                left: Duration::from_millis(100),
                pids: vec![],
            })
        );
        assert_eq!(parse("alive x"), None);
        assert_eq!(parse("alive 1 12"), None);
        assert_eq!(parse("hello"), None);
    }
}
