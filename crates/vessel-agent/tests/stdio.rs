//! The agent's protocol, driven over `--stdio` on the host (the same code path as the port,
//! without a VM): the ping, sequential execs, stdin, a terminal, signals, a missing program.

use std::io::Write;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use vessel_api::stream::{self, FrameKind};
use vessel_api::ExecRequest;

struct Agent {
    child: Child,
    input: Option<ChildStdin>,
    output: ChildStdout,
}

impl Agent {
    fn start() -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vessel-agent"))
            .arg("--stdio")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn vessel-agent");
        let input = child.stdin.take();
        let output = child.stdout.take().expect("stdout");
        Agent {
            child,
            input,
            output,
        }
    }

    fn request(&mut self, req: &ExecRequest) {
        let mut line = serde_json::to_vec(req).expect("json");
        line.push(b'\n');
        self.write(&line);
    }

    fn write(&mut self, bytes: &[u8]) {
        let input = self.input.as_mut().expect("stdin open");
        input.write_all(bytes).expect("write");
        input.flush().expect("flush");
    }

    fn frame(&mut self) -> (FrameKind, Vec<u8>) {
        stream::read_frame(&mut self.output)
            .expect("read frame")
            .expect("a frame, not end of stream")
    }

    /// Reads frames until Exit or Error: (stdout, stderr, exit code or error message).
    fn collect(&mut self) -> (String, String, Result<i32, String>) {
        let ack = self.frame();
        assert_eq!(ack, (FrameKind::Stdout, vec![]), "acknowledgement first");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match self.frame() {
                (FrameKind::Stdout, p) => out.extend(p),
                (FrameKind::Stderr, p) => err.extend(p),
                (FrameKind::Exit, p) => {
                    let code = stream::parse_i32(&p).expect("exit payload");
                    return (s(out), s(err), Ok(code));
                }
                (FrameKind::Error, p) => return (s(out), s(err), Err(s(p))),
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s(v: Vec<u8>) -> String {
    String::from_utf8_lossy(&v).into_owned()
}

fn req(cmd: &[&str]) -> ExecRequest {
    // Through JSON, so that fields added to the request later keep their defaults here.
    serde_json::from_value(serde_json::json!({ "command": cmd })).expect("exec request")
}

#[test]
fn sequential_execs_with_output_stdin_and_exit_codes() {
    let mut a = Agent::start();
    // The host's ping is answered at once with its number, runs nothing, and the exec
    // after it works.
    a.write(&stream::agent_ping(7351));
    assert_eq!(a.frame(), (FrameKind::Exit, 7351i32.to_be_bytes().to_vec()));
    a.request(&req(&["sh", "-c", "echo hi; echo oops >&2; exit 3"]));
    assert_eq!(a.collect(), ("hi\n".into(), "oops\n".into(), Ok(3)));

    let mut r = req(&["sh", "-c", "cat; pwd; echo $GREETING"]);
    r.cwd = Some("/tmp".into());
    r.environment.insert("GREETING".into(), "hello".into());
    a.request(&r);
    a.write(&stream::encode(FrameKind::Stdin, b"abc\n"));
    a.write(&stream::encode(FrameKind::CloseStdin, b""));
    assert_eq!(a.collect(), ("abc\n/tmp\nhello\n".into(), "".into(), Ok(0)));

    a.request(&req(&["/nonexistent/program"]));
    let (_, _, res) = a.collect();
    assert!(
        res.as_ref().is_err_and(|e| e.contains("not found")),
        "{res:?}"
    );

    a.request(&req(&["sleep", "30"]));
    assert_eq!(a.frame(), (FrameKind::Stdout, vec![]));
    a.write(&stream::encode(FrameKind::Signal, &15i32.to_be_bytes()));
    assert_eq!(
        a.frame(),
        (FrameKind::Exit, (128 + 15i32).to_be_bytes().to_vec())
    );

    // End of input ends the agent.
    drop(a.input.take());
    let status = a.child.wait().expect("wait");
    assert!(status.success(), "{status}");
}

#[test]
fn terminal_exec_and_late_frames_are_skipped() {
    let mut a = Agent::start();
    let mut r = req(&["sh", "-c", "tty; stty size; exit 7"]);
    r.tty = true;
    r.width = Some(100);
    r.height = Some(30);
    a.request(&r);
    let (out, _, code) = a.collect();
    assert_eq!(code, Ok(7));
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("30 100"), "{out:?}");

    // Stdin for a command that already ended is dropped; the next request still works.
    a.write(&stream::encode(FrameKind::Stdin, b"late"));
    a.request(&req(&["echo", "next"]));
    assert_eq!(a.collect(), ("next\n".into(), "".into(), Ok(0)));
}
