//! A client held open by libnbd's Python shell, for tests that change an export under a
//! connected client. Used by `vessel-nbd`'s tests and, through `#[path]`, by `vesseld`'s.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// An `nbdsh` session on a URI (`nbdsh` is `python3 -m nbd`; Debian's python3, the one
/// with Debian's modules): it connects and reads a block, then at each
/// [`NbdSession::again`] reads it again and says "read" or "closed: ERROR".
pub struct NbdSession {
    child: Child,
    lines: Receiver<String>,
}

impl NbdSession {
    pub fn open(uri: &str) -> NbdSession {
        // libnbd reads a URI's tls-certificates directory only when allowed to.
        let script = format!(
            "import sys\n\
             h.set_uri_allow_local_file(True)\n\
             h.connect_uri('{uri}')\n\
             h.pread(512, 0)\n\
             print('open', flush=True)\n\
             for _ in sys.stdin:\n    \
                 try:\n        h.pread(512, 0)\n        print('read', flush=True)\n    \
                 except nbd.Error as e:\n        print('closed:', e, flush=True)\n"
        );
        let mut child = Command::new("/usr/bin/python3")
            .args(["-m", "nbd", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 -m nbd (Debian's python3-libnbd)");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line.trim().to_string()).is_err() {
                    break;
                }
            }
        });
        let mut s = NbdSession { child, lines };
        assert_eq!(s.line(), "open", "nbdsh on {uri}");
        s
    }

    fn line(&mut self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("nbdsh said nothing within 30 s ({e})"))
    }

    /// Reads again; what the session says.
    pub fn again(&mut self) -> String {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(b"\n")
            .and_then(|()| stdin.flush())
            .expect("to nbdsh");
        self.line()
    }
}

impl Drop for NbdSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
