//! One daemon per root directory, until its process is gone: a daemon that was told to stop
//! may still be finishing blocking work (a VM start) after its socket is gone, and a second
//! daemon reconciling the same instances meanwhile would race it.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a daemon waits for the previous one on its root directory to exit.
const WAIT: Duration = Duration::from_secs(30);

/// Takes the root directory's lock (`flock` on `<root>/vesseld.lock`), waiting up to 30 s for
/// a previous daemon to exit. The lock is held until this process exits: the kernel releases
/// it only then, whatever is still running in it.
pub fn hold_until_exit(path: &Path) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let deadline = Instant::now() + WAIT;
    let mut told = false;
    loop {
        // SAFETY: flock on a descriptor we own; LOCK_NB makes it return at once.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err).with_context(|| format!("locking {}", path.display()));
        }
        let holder = std::fs::read_to_string(path).unwrap_or_default();
        let holder = holder.trim();
        if Instant::now() >= deadline {
            bail!(
                "another vesseld (pid {holder}) still runs on this root directory; stop it first \
                 or pick another --root-dir"
            );
        }
        if !told {
            tracing::info!(pid = holder, "waiting for the previous vesseld to exit");
            told = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    file.set_len(0).context("writing the lock file")?;
    writeln!(file, "{}", std::process::id()).context("writing the lock file")?;
    // The descriptor (close-on-exec, so no child inherits it) stays open until the process
    // exits.
    std::mem::forget::<File>(file);
    Ok(())
}
