//! An interactive session over an upgraded connection (`exec`, `console`): local input to
//! Stdin frames, Stdout/Stderr frames to local output, terminal size and signals forwarded.
//!
//! Three threads feed one channel: frames from the daemon, local input, and signals. The
//! first thread to see an end (exit code, detach, closed stream, error) decides the outcome;
//! the caller then restores the terminal and exits, leaving blocked threads behind.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{anyhow, Result};
use nix::sys::signal::{SigSet, Signal};
use vessel_api::stream::{self, FrameKind};

use crate::client::Upgraded;
use crate::terminal;

/// Ctrl-a, the first key of the console's detach sequence.
const CTRL_A: u8 = 0x01;

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The remote process exited with this code.
    Exit(i32),
    /// The user detached (console).
    Detached,
    /// The daemon closed the stream without an exit code.
    Closed,
    /// A local signal ended the session; the exit status is 128 + the signal number.
    Interrupted(i32),
}

/// What a session forwards besides input and output.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Send the terminal size at start and on SIGWINCH.
    pub resize: bool,
    /// Forward SIGINT, SIGTERM, SIGHUP and SIGQUIT to the remote process (exec); without it
    /// those signals end the session (console).
    pub forward_signals: bool,
    /// Handle signals at all (off in tests, which must not touch the process's signal mask).
    pub signals: bool,
    /// Watch the input for `Ctrl-a q` (console).
    pub detach_keys: bool,
}

/// How one of the threads ended the session.
enum End {
    Outcome(Outcome),
    Failed(anyhow::Error),
}

type SharedWriter = Arc<Mutex<UnixStream>>;

fn send_frame(writer: &SharedWriter, kind: FrameKind, payload: &[u8]) -> io::Result<()> {
    let mut w = writer
        .lock()
        .map_err(|_| io::Error::other("frame writer poisoned"))?;
    stream::write_frame(&mut *w, kind, payload)
}

/// Runs the session until it ends; local input, output and error are given so tests can
/// drive it.
pub fn run(
    conn: Upgraded,
    opts: Options,
    input: Box<dyn Read + Send>,
    stdout: Box<dyn Write + Send>,
    stderr: Box<dyn Write + Send>,
) -> Result<Outcome> {
    let writer: SharedWriter = Arc::new(Mutex::new(conn.writer));
    let (tx, rx) = mpsc::channel::<End>();

    if opts.signals {
        let mut set = SigSet::empty();
        for s in [
            Signal::SIGWINCH,
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            set.add(s);
        }
        // Blocked here, before the other threads start, so that they inherit the mask and
        // only the signal thread receives these signals (through sigwait).
        set.thread_block()?;
        let (w, tx) = (writer.clone(), tx.clone());
        thread::spawn(move || watch_signals(set, opts, &w, &tx));
    }
    if opts.resize {
        send_size(&writer);
    }

    let reader = conn.reader;
    let out_tx = tx.clone();
    thread::spawn(move || {
        let end = match pump_output(reader, stdout, stderr) {
            Ok(outcome) => End::Outcome(outcome),
            Err(e) => End::Failed(e),
        };
        let _ = out_tx.send(end);
    });

    let in_writer = writer.clone();
    thread::spawn(move || pump_input(input, &in_writer, opts.detach_keys, &tx));
    drop(writer);

    match rx.recv() {
        Ok(End::Outcome(o)) => Ok(o),
        Ok(End::Failed(e)) => Err(e),
        Err(_) => Ok(Outcome::Closed),
    }
}

/// Copies frames from the daemon to local output until the exit code or the end.
pub fn pump_output<R: Read>(
    mut reader: R,
    mut stdout: Box<dyn Write + Send>,
    mut stderr: Box<dyn Write + Send>,
) -> Result<Outcome> {
    // A closed local output (e.g. `| head`) must not end the remote process early: its
    // output is dropped from then on, and the exit code still comes through.
    let (mut out_open, mut err_open) = (true, true);
    loop {
        let frame = stream::read_frame(&mut reader)
            .map_err(|e| anyhow!("the stream from the daemon broke: {e}"))?;
        let Some((kind, payload)) = frame else {
            return Ok(Outcome::Closed);
        };
        match kind {
            FrameKind::Stdout => {
                out_open = out_open && stdout.write_all(&payload).and(stdout.flush()).is_ok();
            }
            FrameKind::Stderr => {
                err_open = err_open && stderr.write_all(&payload).and(stderr.flush()).is_ok();
            }
            FrameKind::Exit => {
                let code = stream::parse_i32(&payload)
                    .ok_or_else(|| anyhow!("the daemon sent a malformed exit frame"))?;
                return Ok(Outcome::Exit(code));
            }
            FrameKind::Error => {
                return Err(anyhow!("{}", String::from_utf8_lossy(&payload)));
            }
            // Frames meant for the daemon have no business here; skip them.
            FrameKind::Stdin | FrameKind::Resize | FrameKind::CloseStdin | FrameKind::Signal => {}
        }
    }
}

/// Copies local input into Stdin frames; at its end sends CloseStdin. With `detach_keys`,
/// `Ctrl-a q` ends the session instead.
fn pump_input(
    mut input: Box<dyn Read + Send>,
    writer: &SharedWriter,
    detach_keys: bool,
    tx: &Sender<End>,
) {
    let mut detacher = Detacher::default();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let (data, detach) = if detach_keys {
            detacher.feed(&buf[..n])
        } else {
            (buf[..n].to_vec(), false)
        };
        if !data.is_empty() && send_frame(writer, FrameKind::Stdin, &data).is_err() {
            return;
        }
        if detach {
            let _ = tx.send(End::Outcome(Outcome::Detached));
            return;
        }
    }
    let _ = send_frame(writer, FrameKind::CloseStdin, &[]);
}

/// Sends the local terminal's size, when there is one.
fn send_size(writer: &SharedWriter) {
    let size = terminal::size(libc::STDOUT_FILENO).or_else(|| terminal::size(libc::STDIN_FILENO));
    if let Some((cols, rows)) = size {
        let _ = send_frame(
            writer,
            FrameKind::Resize,
            &stream::resize_payload(cols, rows),
        );
    }
}

/// Interrupts after which `exec` stops waiting for an unresponsive remote process.
const GIVE_UP_INTERRUPTS: usize = 3;

fn watch_signals(set: SigSet, opts: Options, writer: &SharedWriter, tx: &Sender<End>) {
    let mut interrupts = 0;
    loop {
        let Ok(sig) = set.wait() else {
            return;
        };
        if sig == Signal::SIGWINCH {
            if opts.resize {
                send_size(writer);
            }
            continue;
        }
        if !opts.forward_signals {
            let _ = tx.send(End::Outcome(Outcome::Interrupted(sig as i32)));
            return;
        }
        if sig == Signal::SIGINT {
            interrupts += 1;
            if interrupts >= GIVE_UP_INTERRUPTS {
                let _ = tx.send(End::Outcome(Outcome::Interrupted(sig as i32)));
                return;
            }
        }
        if send_frame(writer, FrameKind::Signal, &(sig as i32).to_be_bytes()).is_err() {
            let _ = tx.send(End::Outcome(Outcome::Interrupted(sig as i32)));
            return;
        }
    }
}

/// Finds `Ctrl-a q` in console input; `Ctrl-a Ctrl-a` sends one Ctrl-a.
#[derive(Debug, Default)]
pub struct Detacher {
    pending: bool,
}

impl Detacher {
    /// Returns the bytes to send and whether the user asked to detach.
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.pending {
                self.pending = false;
                match b {
                    b'q' => return (out, true),
                    CTRL_A => out.push(CTRL_A),
                    _ => out.extend_from_slice(&[CTRL_A, b]),
                }
            } else if b == CTRL_A {
                self.pending = true;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;
    use crate::client::Client;
    use crate::testutil::FakeServer;

    /// A writer whose bytes the test can read afterwards.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn bytes(&self) -> Vec<u8> {
            self.0.lock().unwrap().clone()
        }
    }

    fn frames(list: &[(FrameKind, &[u8])]) -> Vec<u8> {
        list.iter()
            .flat_map(|(k, p)| stream::encode(*k, p))
            .collect()
    }

    fn decode_all(mut bytes: &[u8]) -> Vec<(FrameKind, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(f) = stream::read_frame(&mut bytes).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn output_frames_and_exit_code() {
        let raw = frames(&[
            (FrameKind::Stdout, b"hello "),
            (FrameKind::Stderr, b"warning\n"),
            (FrameKind::Stdout, b"world\n"),
            (FrameKind::Exit, &42i32.to_be_bytes()),
            (FrameKind::Stdout, b"after exit"),
        ]);
        let (out, err) = (Captured::default(), Captured::default());
        let got = pump_output(&raw[..], Box::new(out.clone()), Box::new(err.clone())).unwrap();
        assert_eq!(got, Outcome::Exit(42));
        assert_eq!(out.bytes(), b"hello world\n");
        assert_eq!(err.bytes(), b"warning\n");
    }

    #[test]
    fn error_frame_and_closed_stream() {
        let raw = frames(&[(FrameKind::Error, b"no such file: /bin/nope")]);
        let err = pump_output(&raw[..], Box::new(io::sink()), Box::new(io::sink())).unwrap_err();
        assert_eq!(err.to_string(), "no such file: /bin/nope");

        let raw = frames(&[(FrameKind::Stdout, b"x")]);
        let got = pump_output(&raw[..], Box::new(io::sink()), Box::new(io::sink())).unwrap();
        assert_eq!(got, Outcome::Closed);

        let raw = &frames(&[(FrameKind::Stdout, b"xyz")])[..6];
        assert!(pump_output(raw, Box::new(io::sink()), Box::new(io::sink())).is_err());
        let raw = frames(&[(FrameKind::Exit, b"\x01")]);
        assert!(pump_output(&raw[..], Box::new(io::sink()), Box::new(io::sink())).is_err());
    }

    #[test]
    fn exec_session_against_fake_daemon() {
        let mut response = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                             Upgrade: vessel-stream/1\r\n\r\n"
            .to_vec();
        response.extend(frames(&[
            (FrameKind::Stdout, b"out"),
            (FrameKind::Stderr, b"err"),
            (FrameKind::Exit, &3i32.to_be_bytes()),
        ]));
        let server = FakeServer::start(vec![response]);
        let client = Client::new(server.path());
        let req = vessel_api::ExecRequest {
            command: vec!["cat".into()],
            environment: Default::default(),
            cwd: None,
            tty: false,
            width: None,
            height: None,
            uid: None,
            gid: None,
            user: None,
        };
        let conn = client
            .upgrade("POST", "/1.0/instances/c1/exec", Some(&req))
            .unwrap();
        let (out, err) = (Captured::default(), Captured::default());
        let outcome = run(
            conn,
            Options::default(),
            Box::new(BufReader::new(&b"input data"[..])),
            Box::new(out.clone()),
            Box::new(err.clone()),
        )
        .unwrap();
        assert_eq!(outcome, Outcome::Exit(3));
        assert_eq!(out.bytes(), b"out");
        assert_eq!(err.bytes(), b"err");

        let rec = &server.finish()[0];
        assert_eq!(rec.method, "POST");
        assert_eq!(rec.header("upgrade"), Some("vessel-stream/1"));
        assert_eq!(rec.header("connection"), Some("Upgrade"));
        let sent: vessel_api::ExecRequest = serde_json::from_slice(&rec.body).unwrap();
        assert_eq!(sent, req);
        assert_eq!(
            decode_all(&rec.after),
            vec![
                (FrameKind::Stdin, b"input data".to_vec()),
                (FrameKind::CloseStdin, Vec::new()),
            ]
        );
    }

    #[test]
    fn upgrade_refused_gives_daemon_error() {
        let server = FakeServer::start(vec![crate::testutil::json_response(
            409,
            r#"{"error":"instance 'c1' is not running","code":409}"#,
        )]);
        let err = Client::new(server.path())
            .upgrade::<()>("GET", "/1.0/instances/c1/console", None)
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "instance 'c1' is not running");
        server.finish();
    }

    #[test]
    fn detach_keys() {
        let mut d = Detacher::default();
        assert_eq!(d.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(d.feed(b"ab\x01"), (b"ab".to_vec(), false));
        assert_eq!(d.feed(b"x"), (b"\x01x".to_vec(), false));
        assert_eq!(d.feed(b"\x01\x01"), (b"\x01".to_vec(), false));
        assert_eq!(d.feed(b"z\x01q rest"), (b"z".to_vec(), true));
        let mut d = Detacher::default();
        assert_eq!(d.feed(b"\x01"), (Vec::new(), false));
        assert_eq!(d.feed(b"q"), (Vec::new(), true));
    }
}
