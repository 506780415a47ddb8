//! Vessel's guest agent: runs commands inside a VM over the `org.vessel.agent` virtio-serial port.
//!
//! The host connects to the port's socket and sends one JSON line, a
//! [`vessel_api::ExecRequest`], then frames of `vessel_api::stream`
//! (`[kind u8][len u32 BE][payload]`). The agent answers with an empty `Stdout` frame once the
//! command started (so the host can tell a live agent from a silent port), then `Stdout` and
//! `Stderr` frames, and ends with `Exit` (the exit code, 128+N for signal N) or `Error` (the
//! command could not be started). One exec runs at a time; the next request may follow on the
//! same or a new connection. When the host disconnects, the running command is killed.
//!
//! Usage: `vessel-agent [PORT]` (default `$VESSEL_AGENT_PORT`, else
//! `/dev/virtio-ports/org.vessel.agent`), or `vessel-agent --stdio` to speak the protocol on
//! stdin/stdout until end-of-file.
//!
//! It must run in a busybox initramfs, so it is linked statically:
//! `cargo rustc -p vessel-agent --bin vessel-agent --release -- -C target-feature=+crt-static`.

mod parser;
mod port;
mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vessel_api::stream::FrameKind;
use vessel_api::ExecRequest;

use crate::parser::{Event, Parser};
use crate::port::{Input, Port, RECONNECT_POLL};
use crate::session::Session;

/// Where the kernel lists CPUs.
const CPUS: &str = "/sys/devices/system/cpu";

/// Brings online the CPUs the host plugs while the guest runs (the kernel adds them offline);
/// CPUs present when the agent started, and any the guest takes offline itself, are left as
/// they are.
fn online_plugged_cpus() {
    let present = || -> Vec<String> {
        std::fs::read_dir(CPUS)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| {
                        n.strip_prefix("cpu")
                            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut known = present();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        for cpu in present() {
            if known.contains(&cpu) {
                continue;
            }
            let online = format!("{CPUS}/{cpu}/online");
            match std::fs::write(&online, "1") {
                Ok(()) => eprintln!("vessel-agent: {cpu} plugged and online"),
                Err(e) => eprintln!("vessel-agent: bringing {cpu} online: {e}"),
            }
            known.push(cpu);
        }
    }
}

/// The port the init links for us, as udev would.
const DEFAULT_PORT: &str = "/dev/virtio-ports/org.vessel.agent";

fn main() {
    let arg = std::env::args().nth(1);
    if matches!(arg.as_deref(), Some("-h") | Some("--help")) {
        println!("usage: vessel-agent [PORT | --stdio]");
        return;
    }
    if matches!(arg.as_deref(), Some("-V") | Some("--version")) {
        println!("vessel-agent {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if arg.as_deref() != Some("--stdio") {
        std::thread::spawn(online_plugged_cpus);
    }
    let port = if arg.as_deref() == Some("--stdio") {
        Port::stdio()
    } else {
        let path = arg
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("VESSEL_AGENT_PORT").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PORT));
        open_port(&path)
    };
    match port {
        Ok(port) => {
            if let Err(e) = serve(Arc::new(port)) {
                eprintln!("vessel-agent: {e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("vessel-agent: {e}");
            std::process::exit(1);
        }
    }
}

/// Opens the port, waiting up to 10 s for it to appear (the driver may still be binding).
fn open_port(path: &std::path::Path) -> std::io::Result<Port> {
    let mut tries = 0;
    loop {
        match Port::open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("opening {}: {e}", path.display()),
                ))
            }
            Ok(p) => return Ok(p),
        }
    }
}

/// Reads requests and frames from the host until the input ends (stdio) or forever (port).
fn serve(port: Arc<Port>) -> std::io::Result<()> {
    let mut parser = Parser::default();
    let mut session: Option<Session> = None;
    let mut next_id: u64 = 1;
    let mut buf = vec![0u8; 65536];
    loop {
        if session.as_ref().is_some_and(Session::is_done) {
            session = None;
        }
        let n = match port.read(&mut buf)? {
            Input::Data(n) => n,
            Input::Disconnected => {
                // The host closed: whatever it was running goes, half-read input is dropped.
                if let Some(s) = session.take() {
                    s.abandon(&port);
                }
                parser = Parser::default();
                if port.is_stdio {
                    return Ok(());
                }
                std::thread::sleep(RECONNECT_POLL);
                continue;
            }
        };
        for event in parser.feed(&buf[..n]) {
            match event {
                Event::Request(line) => {
                    if let Some(s) = session.take() {
                        // One exec at a time: a new request replaces one still running.
                        s.abandon(&port);
                    }
                    let id = next_id;
                    next_id += 1;
                    session = start(&port, id, &line);
                }
                Event::Frame(kind, payload) => {
                    if let Some(s) = session.as_mut() {
                        s.frame(kind, payload);
                    }
                }
                Event::Garbage(what) => eprintln!("vessel-agent: ignoring {what}"),
            }
        }
    }
}

/// Parses a request and starts its command, answering with the acknowledgement or an error.
fn start(port: &Arc<Port>, id: u64, line: &[u8]) -> Option<Session> {
    port.begin(id);
    if let Some(nonce) = vessel_api::stream::parse_agent_ping(line) {
        // The host checks that it is heard before it sends a command.
        let _ = port.finish(id, FrameKind::Exit, &nonce.to_be_bytes());
        return None;
    }
    let req: ExecRequest = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("invalid exec request: {e}");
            let _ = port.finish(id, FrameKind::Error, msg.as_bytes());
            return None;
        }
    };
    // The acknowledgement goes first so that no output can precede it.
    if port.send(id, FrameKind::Stdout, &[]).is_err() {
        port.end(id);
        return None;
    }
    match Session::start(port, id, &req) {
        Ok(s) => Some(s),
        Err(msg) => {
            let _ = port.finish(id, FrameKind::Error, msg.as_bytes());
            None
        }
    }
}
