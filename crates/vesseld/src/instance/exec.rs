//! `exec`: runs a command inside a running instance through `vessel-runc exec` and carries its
//! terminal or pipes over a framed stream (`vessel_api::stream`), ending with its exit code.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use vessel_api::stream::{self, FrameKind};
use vessel_api::ExecRequest;

use super::InstanceService;
use crate::error::{Error, Result};

/// Checks an exec request before anything runs: a command, no NUL byte anywhere (no program
/// argument can carry one), environment names, and user and group ids the instance can have:
/// within the id map of an unprivileged container, and never `u32::MAX`, which the kernel's
/// set*id calls read as "leave unchanged" (it ran the command as root).
pub fn validate_request(req: &ExecRequest, privileged: bool) -> Result<()> {
    check_command(&req.command)?;
    if req
        .cwd
        .as_deref()
        .is_some_and(|c| c.contains('\0') || c.len() > 4096)
    {
        return Err(Error::invalid(
            "the working directory must be a path of at most 4096 bytes without NUL",
        ));
    }
    check_environment(&req.environment)?;
    let limit = if privileged {
        u32::MAX
    } else {
        super::driver::IDMAP_SIZE
    };
    for (what, id) in [("user", req.uid), ("group", req.gid)] {
        if let Some(id) = id.filter(|id| *id >= limit) {
            return Err(Error::invalid(format!(
                "{what} id {id} is outside the instance's ids (0-{})",
                limit - 1
            )));
        }
    }
    Ok(())
}

/// Most arguments of a command, and most bytes of them together (Linux's own limit for one
/// argument is 128 KiB; a command an instance keeps in the store stays small).
const MAX_ARGS: usize = 1024;
const MAX_COMMAND_BYTES: usize = 128 << 10;
/// Most environment variables, and most bytes of them together.
const MAX_ENV: usize = 512;
const MAX_ENV_BYTES: usize = 128 << 10;

/// Checks a command: a program, no NUL byte (no argument can hold one), bounded size.
pub fn check_command(command: &[String]) -> Result<()> {
    if command.is_empty() || command[0].is_empty() {
        return Err(Error::invalid(
            "the command is empty: give a program to run",
        ));
    }
    if command.iter().any(|a| a.contains('\0')) {
        return Err(Error::invalid(
            "the command contains a NUL byte, which no program argument can hold",
        ));
    }
    let bytes: usize = command.iter().map(|a| a.len() + 1).sum();
    if command.len() > MAX_ARGS || bytes > MAX_COMMAND_BYTES {
        return Err(Error::invalid(format!(
            "the command has {} arguments of {bytes} bytes; at most {MAX_ARGS} arguments of \
             {MAX_COMMAND_BYTES} bytes together",
            command.len()
        )));
    }
    Ok(())
}

/// Checks environment variables: names without '=' or NUL, values without NUL, bounded size.
pub fn check_environment(env: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(Error::invalid(format!(
                "invalid environment variable {:?}: a name without '=' and no NUL byte",
                crate::error::truncated(k, 64)
            )));
        }
    }
    let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if env.len() > MAX_ENV || bytes > MAX_ENV_BYTES {
        return Err(Error::invalid(format!(
            "{} environment variables of {bytes} bytes; at most {MAX_ENV} of {MAX_ENV_BYTES} \
             bytes together",
            env.len()
        )));
    }
    Ok(())
}

/// A started exec: the `vessel-runc exec` child and its I/O.
pub enum ExecSession {
    /// `vessel-runc exec` in a container, with its terminal or pipes.
    Process {
        /// The runtime process; its exit code is the command's.
        child: Box<tokio::process::Child>,
        /// Its I/O.
        io: ExecIo,
    },
    /// A VM's guest agent, which speaks the same frames as the client.
    Agent(tokio::net::UnixStream),
}

/// I/O of a command run through the runtime.
pub enum ExecIo {
    /// The terminal's master, and the runtime's own error output.
    Tty(AsyncFd<OwnedFd>, Option<tokio::process::ChildStderr>),
    Pipes {
        stdin: Option<tokio::process::ChildStdin>,
        stdout: tokio::process::ChildStdout,
        stderr: tokio::process::ChildStderr,
    },
}

impl InstanceService {
    /// Checks the request and starts the command.
    pub fn exec(&self, name: &str, req: ExecRequest) -> Result<ExecSession> {
        let inst = self.get_stored(name)?;
        self.require_running(&inst)?;
        let mut req = req;
        if let Some(spec) = req.user.take() {
            if req.uid.is_some() || req.gid.is_some() {
                return Err(Error::invalid("give either user or uid and gid, not both"));
            }
            if inst.instance_type == vessel_api::InstanceType::Vm {
                return Err(Error::invalid(
                    "a VM's users live in the guest: give numeric ids (--user UID[:GID])",
                ));
            }
            let root: OwnedFd = std::fs::File::open(self.driver.rootfs(name))
                .map_err(|e| Error::internal(format!("opening the root of {name}: {e}")))?
                .into();
            let what = format!("instance {name}");
            let (uid, gid) = super::users::resolve(&spec, &what, |file| {
                super::users::read_db_file(&root, file)
                    .map_err(|e| Error::invalid(format!("{what}'s /{file} cannot be used: {e}")))
            })?;
            req.uid = Some(uid);
            req.gid = Some(gid);
        }
        validate_request(&req, inst.privileged)?;
        if inst.instance_type == vessel_api::InstanceType::Vm {
            return self.exec_vm(name, &req);
        }
        let mut cmd = tokio::process::Command::new(self.driver.libexec.join("vessel-runc"));
        cmd.arg("--root")
            .arg(&self.driver.state_root)
            .arg("exec")
            .arg("--cwd")
            .arg(match &req.cwd {
                Some(c) => c.clone(),
                // Like docker exec: the image's working directory by default.
                None => self
                    .images
                    .get(&inst.image)
                    .ok()
                    .and_then(|i| i.working_dir)
                    .unwrap_or_else(|| "/".into()),
            });
        for (k, v) in &req.environment {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        if req.uid.is_some() || req.gid.is_some() {
            cmd.arg("--user")
                .arg(format!("{}:{}", req.uid.unwrap_or(0), req.gid.unwrap_or(0)));
        }
        if req.tty {
            // The terminal is made inside the container's own devpts by the runtime, which
            // sends us its master over a console socket (as conmon receives it from runc).
            let sock_path = self
                .driver
                .monitors_dir
                .join(format!("exec-{}.sock", uuid::Uuid::new_v4().simple()));
            let listener = std::os::unix::net::UnixListener::bind(&sock_path)
                .map_err(|e| Error::internal(format!("console socket: {e}")))?;
            cmd.arg("--tty")
                .arg("--console-socket")
                .arg(&sock_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            cmd.arg(name).arg("--").args(&req.command);
            let spawned = spawn(&mut cmd);
            let master = spawned.and_then(|mut child| {
                let got = vessel_monitor::receive_console(
                    &listener,
                    std::time::Duration::from_secs(10),
                    || matches!(child.try_wait(), Ok(Some(_))),
                )
                .map_err(|e| Error::internal(format!("receiving the exec terminal: {e}")));
                let _ = std::fs::remove_file(&sock_path);
                match got {
                    Ok(fd) => Ok((child, fd)),
                    Err(e) => {
                        let _ = child.start_kill();
                        Err(e)
                    }
                }
            });
            let _ = std::fs::remove_file(&sock_path);
            let (mut child, master) = master?;
            set_winsize(&master, req.width.unwrap_or(80), req.height.unwrap_or(24));
            nix::fcntl::fcntl(
                master.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .map_err(|e| Error::internal(format!("terminal: {e}")))?;
            // SAFETY: the master OwnedFd is moved into the AsyncFd, which owns it until
            // dropped, so the descriptor stays open and the same for the AsyncFd's life.
            let master = unsafe { AsyncFd::register(master) }
                .map_err(|e| Error::internal(format!("terminal: {e}")))?;
            let stderr = child.stderr.take();
            return Ok(ExecSession::Process {
                child: Box::new(child),
                io: ExecIo::Tty(master, stderr),
            });
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.arg(name).arg("--").args(&req.command);
        let mut child = spawn(&mut cmd)?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(Error::internal("exec child has no output pipes"));
        };
        Ok(ExecSession::Process {
            io: ExecIo::Pipes {
                stdin: child.stdin.take(),
                stdout,
                stderr,
            },
            child: Box::new(child),
        })
    }
}

impl InstanceService {
    /// Starts a command in a VM through its guest agent.
    fn exec_vm(&self, name: &str, req: &ExecRequest) -> Result<ExecSession> {
        let vm = self
            .vms
            .get(name)
            .ok_or_else(|| Error::conflict(format!("VM {name} is not running")))?;
        let socket = vm.agent_socket.clone().ok_or_else(|| {
            Error::conflict(format!(
                "VM {name} has no guest agent port, so exec cannot reach it"
            ))
        })?;
        // A guest still booting is waited for: its agent may answer only some time after
        // its QEMU started (`vessel launch --vm` and an exec right after, under TCG on a busy
        // host, take more than the 10 s an exec otherwise waits).
        const AGENT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
        const BOOT_WAIT: std::time::Duration = std::time::Duration::from_secs(180);
        let up = std::fs::metadata(&vm.pidfile)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        let wait = match up {
            Some(up) if up < BOOT_WAIT => (BOOT_WAIT - up).max(AGENT_WAIT),
            _ => AGENT_WAIT,
        };
        let session = vessel_vm::agent_exec(&socket, req, wait).map_err(|e| {
            Error::conflict(format!(
                "the guest agent of {name} did not answer ({}); is the guest booted? \
                     `vessel console {name}` shows it",
                crate::error::chain(&e)
            ))
        })?;
        let stream = session.into_stream();
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::internal(format!("agent stream: {e}")))?;
        let stream = tokio::net::UnixStream::from_std(stream)
            .map_err(|e| Error::internal(format!("agent stream: {e}")))?;
        Ok(ExecSession::Agent(stream))
    }
}

fn spawn(cmd: &mut tokio::process::Command) -> Result<tokio::process::Child> {
    cmd.kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::internal(format!("starting vessel-runc exec: {e}")))
}

fn set_winsize(fd: &OwnedFd, cols: u16, rows: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct that lives on our stack.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

async fn pty_read(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|f| nix::unistd::read(f.as_raw_fd(), buf).map_err(io::Error::from)) {
            Ok(r) => return r,
            Err(_) => continue,
        }
    }
}

async fn pty_write(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|f| nix::unistd::write(f.get_ref(), data).map_err(io::Error::from)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_) => continue,
        }
    }
    Ok(())
}

/// Reads one frame from an async stream; `None` at a clean end.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> io::Result<Option<(FrameKind, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..]).await?;
    let (kind, len) = stream::parse_header(&head)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((kind, payload)))
}

/// Carries a session over `conn` until the command ends; sends its exit code last.
pub async fn serve<S>(conn: S, session: ExecSession)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut child, io) = match session {
        ExecSession::Agent(mut agent) => {
            let mut conn = Box::pin(conn);
            let _ = tokio::io::copy_bidirectional(&mut conn, &mut agent).await;
            return;
        }
        ExecSession::Process { child, io } => (child, io),
    };
    let (mut rd, mut wr) = tokio::io::split(conn);
    let (out_tx, mut out_rx) = mpsc::channel::<(FrameKind, Vec<u8>)>(64);
    let child_pid = child.id().map(|p| p as i32);
    let signal = move |payload: &[u8]| {
        if let (Some(sig), Some(pid)) = (stream::parse_i32(payload), child_pid) {
            // SAFETY: kill takes plain integers; vessel-runc forwards the signal.
            unsafe { libc::kill(pid, sig) };
        }
    };
    let readers = match io {
        ExecIo::Tty(master, stderr) => {
            let master = std::sync::Arc::new(master);
            let runtime_errors = stderr.map(|mut r| {
                let tx = out_tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = r.read(&mut buf).await {
                        if n == 0
                            || tx
                                .send((FrameKind::Stderr, buf[..n].to_vec()))
                                .await
                                .is_err()
                        {
                            break;
                        }
                    }
                })
            });
            let m = master.clone();
            let tx = out_tx.clone();
            let output = tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                while let Ok(n) = pty_read(&m, &mut buf).await {
                    if n == 0
                        || tx
                            .send((FrameKind::Stdout, buf[..n].to_vec()))
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
            });
            let input = tokio::spawn(async move {
                while let Ok(Some((kind, p))) = read_frame(&mut rd).await {
                    match kind {
                        FrameKind::Stdin if pty_write(&master, &p).await.is_err() => return false,
                        FrameKind::Stdin => {}
                        FrameKind::Resize => {
                            if let Some((c, r)) = stream::parse_resize(&p) {
                                set_winsize(master.get_ref(), c, r);
                            }
                        }
                        FrameKind::Signal => signal(&p),
                        FrameKind::CloseStdin => {
                            // End of input on a terminal is ^D.
                            let _ = pty_write(&master, &[4]).await;
                        }
                        _ => {}
                    }
                }
                // The client went away with the session running (a closed browser tab, a
                // dropped connection): its terminal is hung up (below).
                true
            });
            let mut tasks: Vec<_> = runtime_errors.into_iter().collect();
            tasks.push(output);
            (tasks, input)
        }
        ExecIo::Pipes {
            mut stdin,
            stdout,
            stderr,
        } => {
            let pump = |mut r: Box<dyn AsyncRead + Unpin + Send>, kind, tx: mpsc::Sender<_>| {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    while let Ok(n) = r.read(&mut buf).await {
                        if n == 0 || tx.send((kind, buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                })
            };
            let o = pump(Box::new(stdout), FrameKind::Stdout, out_tx.clone());
            let e = pump(Box::new(stderr), FrameKind::Stderr, out_tx.clone());
            let input = tokio::spawn(async move {
                while let Ok(Some((kind, p))) = read_frame(&mut rd).await {
                    match kind {
                        FrameKind::Stdin => {
                            if let Some(s) = stdin.as_mut() {
                                if s.write_all(&p).await.is_err() {
                                    stdin = None;
                                }
                            }
                        }
                        FrameKind::CloseStdin => stdin = None,
                        FrameKind::Signal => signal(&p),
                        _ => {}
                    }
                }
                // Without a terminal, a client that leaves closes the input only.
                false
            });
            (vec![o, e], input)
        }
    };
    drop(out_tx);
    let (output_tasks, mut input_task) = readers;
    let writer = tokio::spawn(async move {
        // The start of the error output: where the runtime says it could not run the command.
        let mut first_err = Vec::new();
        while let Some((kind, data)) = out_rx.recv().await {
            if kind == FrameKind::Stderr && first_err.len() < 1024 {
                first_err.extend_from_slice(&data[..data.len().min(1024 - first_err.len())]);
            }
            if wr.write_all(&stream::encode(kind, &data)).await.is_err() {
                break;
            }
        }
        (wr, first_err)
    });
    let status = tokio::select! {
        s = child.wait() => s,
        left = &mut input_task => {
            if matches!(left, Ok(true)) {
                // Not reaped yet, so the pid is still the child's: SIGHUP, which vessel-runc
                // forwards to the process on the terminal.
                if let Some(pid) = child.id() {
                    // SAFETY: kill takes plain integers.
                    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
                }
            }
            child.wait().await
        }
    };
    // The child is reaped: its pid may be anyone's from now on, so no Signal frame may
    // reach `kill` any more.
    input_task.abort();
    for mut t in output_tasks {
        // Output still buffered in the pipe or terminal is delivered before the exit code;
        // a terminal whose slave a background process still holds is not waited for long.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut t).await;
        t.abort();
    }
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + s.signal().unwrap_or(0)
        }),
        Err(_) => 255,
    };
    if let Ok((mut wr, first_err)) = writer.await {
        let code = exit_code_of(code, &first_err);
        let _ = wr
            .write_all(&stream::encode(FrameKind::Exit, &code.to_be_bytes()))
            .await;
        let _ = wr.shutdown().await;
    }
}

/// The exit code of an exec, as Docker and podman give it: when the runtime could not run the
/// command at all (it says so first on stderr and exits 1, as runc does), 127 for a command
/// that is not there and 126 for one that cannot be executed; otherwise the command's own.
pub fn exit_code_of(code: i32, first_stderr: &[u8]) -> i32 {
    if code != 1 {
        return code;
    }
    let text = String::from_utf8_lossy(first_stderr);
    let Some(line) = text.lines().next() else {
        return code;
    };
    if !line.starts_with("vessel-runc: exec failed:") {
        return code;
    }
    if line.contains("not found in $PATH") || line.contains("no such file or directory") {
        127
    } else if line.contains("permission denied") {
        126
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cmd: &[&str]) -> ExecRequest {
        ExecRequest {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            environment: Default::default(),
            cwd: None,
            tty: false,
            width: None,
            height: None,
            uid: None,
            gid: None,
            user: None,
        }
    }

    #[test]
    fn a_command_the_runtime_cannot_run_exits_as_with_docker() {
        let missing = b"vessel-runc: exec failed: exec: \"nosuch\": executable file not found in $PATH: check\n";
        assert_eq!(exit_code_of(1, missing), 127);
        let gone =
            b"vessel-runc: exec failed: exec: \"/x\": stat /x: no such file or directory: check\n";
        assert_eq!(exit_code_of(1, gone), 127);
        let denied = b"vessel-runc: exec failed: exec: \"/root\": permission denied: make it\n";
        assert_eq!(exit_code_of(1, denied), 126);
        // The command's own failures keep their codes, whatever it printed.
        assert_eq!(exit_code_of(1, b"grep: no such file or directory\n"), 1);
        assert_eq!(exit_code_of(2, missing), 2);
        assert_eq!(exit_code_of(1, b""), 1);
    }

    #[test]
    fn requests_are_checked() {
        validate_request(&req(&["ls"]), false).unwrap();
        assert!(validate_request(&req(&[]), false).is_err());
        assert!(validate_request(&req(&["ls", "a\0b"]), false).is_err());
        let mut r = req(&["id"]);
        r.uid = Some(65535);
        r.gid = Some(65535);
        validate_request(&r, false).unwrap();
        r.uid = Some(65536);
        assert!(validate_request(&r, false).is_err());
        r.uid = Some(u32::MAX);
        let e = validate_request(&r, true).unwrap_err();
        assert!(e.message.contains("4294967295"), "{}", e.message);
        r.uid = Some(100_000);
        validate_request(&r, true).unwrap();
        r.gid = Some(u32::MAX);
        assert!(validate_request(&r, false).is_err());
        let mut r = req(&["env"]);
        r.environment.insert("A".into(), "x\0y".into());
        assert!(validate_request(&r, false).is_err());
        let mut r = req(&["env"]);
        r.cwd = Some("/\0".into());
        assert!(validate_request(&r, false).is_err());
    }
}
