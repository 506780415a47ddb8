//! OCI hooks (runtime spec, config.md "POSIX-platform Hooks"): programs the spec names to run at
//! points of the lifecycle, each given the container's state as JSON on stdin.
//!
//! Where each kind runs (see `docs/runtime.md`): `prestart` and `createRuntime` in the runtime
//! once the init has made the namespaces and mounts, `createContainer` in the init before
//! pivot_root, `startContainer` in the init once `start` has opened the exec fifo, `poststart`
//! in `start` once the user process is executed, `poststop` in `delete`. A failure of the first
//! four fails the operation; `poststart` and `poststop` failures are logged as warnings.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use oci_spec::runtime::{Hook, Spec};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::state::{Status, OCI_VERSION};

/// Output of a failed hook kept for its error message, per stream.
const OUTPUT_KEPT: usize = 4096;

/// The kinds of hook, in lifecycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Prestart,
        Kind::CreateRuntime,
        Kind::CreateContainer,
        Kind::StartContainer,
        Kind::Poststart,
        Kind::Poststop,
    ];

    /// The name used in the spec.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }
}

/// The hooks of `kind` in `spec` (empty when there are none).
pub(crate) fn of(spec: &Spec, kind: Kind) -> &[Hook] {
    let Some(hooks) = spec.hooks().as_ref() else {
        return &[];
    };
    #[allow(deprecated)] // prestart is deprecated in the spec but still to be run
    let list = match kind {
        Kind::Prestart => hooks.prestart(),
        Kind::CreateRuntime => hooks.create_runtime(),
        Kind::CreateContainer => hooks.create_container(),
        Kind::StartContainer => hooks.start_container(),
        Kind::Poststart => hooks.poststart(),
        Kind::Poststop => hooks.poststop(),
    };
    list.as_deref().unwrap_or(&[])
}

/// Checks every hook of the spec before anything is made: `path` absolute, `timeout` > 0.
pub(crate) fn validate(spec: &Spec) -> Result<()> {
    for kind in Kind::ALL {
        for (i, hook) in of(spec, kind).iter().enumerate() {
            if !hook.path().is_absolute() {
                return Err(Error::InvalidSpec(format!(
                    "hooks.{}[{i}].path {} is not absolute",
                    kind.name(),
                    hook.path().display()
                )));
            }
            if hook.timeout().is_some_and(|t| t <= 0) {
                return Err(Error::InvalidSpec(format!(
                    "hooks.{}[{i}].timeout must be greater than zero (or left out)",
                    kind.name()
                )));
            }
        }
    }
    Ok(())
}

/// The OCI state a hook reads on stdin.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HookState {
    #[serde(rename = "ociVersion")]
    oci_version: String,
    id: String,
    status: Status,
    #[serde(skip_serializing_if = "is_zero")]
    pid: i32,
    bundle: String,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    annotations: HashMap<String, String>,
}

fn is_zero(pid: &i32) -> bool {
    *pid == 0
}

impl HookState {
    /// The state of container `id` made from `spec` in `bundle`, with `status` and the init's
    /// pid as the host sees it (0 once it is gone).
    pub(crate) fn new(spec: &Spec, id: &str, bundle: &Path, status: Status, pid: i32) -> Self {
        HookState {
            oci_version: OCI_VERSION.into(),
            id: id.to_string(),
            status,
            pid,
            bundle: bundle.to_string_lossy().into_owned(),
            annotations: spec.annotations().clone().unwrap_or_default(),
        }
    }

    /// The same state with another status.
    pub(crate) fn with_status(&self, status: Status) -> Self {
        HookState {
            status,
            ..self.clone()
        }
    }
}

/// Runs the hooks of `kind` in order; the first failure stops and is returned.
pub(crate) fn run(spec: &Spec, kind: Kind, state: &HookState) -> Result<()> {
    let hooks = of(spec, kind);
    if hooks.is_empty() {
        return Ok(());
    }
    let input = serde_json::to_vec(state).map_err(|e| Error::Init(e.to_string()))?;
    for (index, hook) in hooks.iter().enumerate() {
        tracing::debug!(kind = kind.name(), index, path = %hook.path().display(), "running hook");
        run_one(hook, &input).map_err(|reason| Error::Hook {
            kind: kind.name(),
            index,
            path: hook.path().display().to_string(),
            reason,
        })?;
    }
    Ok(())
}

/// Runs every hook of `kind`, logging failures as warnings (poststart, poststop).
pub(crate) fn run_warn(spec: &Spec, kind: Kind, state: &HookState) {
    let hooks = of(spec, kind);
    if hooks.is_empty() {
        return;
    }
    let input = match serde_json::to_vec(state) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(kind = kind.name(), error = %e, "hooks not run");
            return;
        }
    };
    for (index, hook) in hooks.iter().enumerate() {
        if let Err(reason) = run_one(hook, &input) {
            tracing::warn!(
                container = %state.id,
                kind = kind.name(),
                index,
                path = %hook.path().display(),
                %reason,
                "hook failed; going on"
            );
        }
    }
}

/// Runs one hook with `input` on its stdin; the error says why it failed, with what it printed.
fn run_one(hook: &Hook, input: &[u8]) -> std::result::Result<(), String> {
    let mut cmd = Command::new(hook.path());
    if let Some((first, rest)) = hook.args().as_deref().and_then(|a| a.split_first()) {
        cmd.arg0(first).args(rest);
    }
    cmd.env_clear();
    for entry in hook.env().as_deref().unwrap_or(&[]) {
        match entry.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                cmd.env(key, value);
            }
            _ => tracing::debug!(%entry, "hook environment entry without a name; skipped"),
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A hook that exits without reading its stdin must not kill the writer (the init resets
    // SIGPIPE to its default).
    let _sigpipe = IgnoreSigpipe::new();
    let child = cmd.spawn().map_err(|e| format!("cannot run it: {e}"))?;
    let timeout = hook
        .timeout()
        .map(|t| Duration::from_secs(u64::try_from(t).unwrap_or(1)));
    let (status, stdout, stderr) = supervise(child, input, timeout)?;
    if status.success() {
        return Ok(());
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{status}"),
    };
    Err(format!(
        "{how}, stdout: {}, stderr: {}",
        String::from_utf8_lossy(&stdout).trim_end(),
        String::from_utf8_lossy(&stderr).trim_end()
    ))
}

/// Ignores SIGPIPE while it lives, then puts the previous disposition back.
struct IgnoreSigpipe(Option<SigAction>);

impl IgnoreSigpipe {
    fn new() -> Self {
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: SIG_IGN runs no handler code.
        IgnoreSigpipe(unsafe { sigaction(Signal::SIGPIPE, &ignore) }.ok())
    }
}

impl Drop for IgnoreSigpipe {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            // SAFETY: puts back the disposition that was in place before, as it was.
            let _ = unsafe { sigaction(Signal::SIGPIPE, old) };
        }
    }
}

/// Feeds `input` to the child's stdin and collects its output until it exits, killing it when
/// `timeout` passes. Single-threaded (this runs in forked children too): one poll loop.
fn supervise(
    mut child: Child,
    input: &[u8],
    timeout: Option<Duration>,
) -> std::result::Result<(ExitStatus, Vec<u8>, Vec<u8>), String> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    for fd in [
        stdin.as_ref().map(|s| s.as_raw_fd()),
        stdout.as_ref().map(|s| s.as_raw_fd()),
        stderr.as_ref().map(|s| s.as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    {
        let _ = fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut written = 0;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for it: {e}"))?
        {
            drain(&mut stdout, &mut out);
            drain(&mut stderr, &mut err);
            return Ok((status, out, err));
        }
        let wait = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => left.min(Duration::from_millis(100)),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let secs = timeout.map_or(0, |t| t.as_secs());
                    return Err(format!("ran past its timeout of {secs}s and was killed"));
                }
            },
            None => Duration::from_millis(100),
        };
        {
            let mut fds = Vec::new();
            if let Some(s) = &stdin {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLOUT));
            }
            if let Some(s) = &stdout {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            if let Some(s) = &stderr {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            let ms = u16::try_from(wait.as_millis()).unwrap_or(100).max(1);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(format!("poll on its pipes: {e}")),
            }
        }
        if let Some(s) = &mut stdin {
            match s.write(&input[written..]) {
                Ok(n) => written += n,
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                // The hook does not read its stdin (EPIPE): that is its business.
                Err(_) => written = input.len(),
            }
            if written >= input.len() {
                stdin = None; // closes it: end of file for the hook
            }
        }
        read_some(&mut stdout, &mut out);
        read_some(&mut stderr, &mut err);
    }
}

/// Reads what is available; drops the pipe at end of file.
fn read_some<R: Read>(pipe: &mut Option<R>, buf: &mut Vec<u8>) {
    let Some(p) = pipe else { return };
    let mut chunk = [0u8; 4096];
    loop {
        match p.read(&mut chunk) {
            Ok(0) => {
                *pipe = None;
                return;
            }
            Ok(n) => {
                let room = OUTPUT_KEPT.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..n.min(room)]);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return, // WouldBlock: nothing more for now
        }
    }
}

/// Reads what is left once the hook has exited (a process it left behind may hold the pipe
/// open, so this does not wait for end of file).
fn drain<R: Read>(pipe: &mut Option<R>, buf: &mut Vec<u8>) {
    read_some(pipe, buf);
    *pipe = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: &str) -> Hook {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn state_is_the_oci_state() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"annotations":{"a":"b"}}"#,
        )
        .unwrap();
        let s = HookState::new(&spec, "c1", Path::new("/b"), Status::Creating, 42);
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ociVersion": OCI_VERSION, "id": "c1", "status": "creating",
                "pid": 42, "bundle": "/b", "annotations": {"a": "b"}})
        );
        let v = serde_json::to_value(s.with_status(Status::Stopped)).unwrap();
        assert_eq!(v["status"], "stopped");
        let gone = HookState::new(&spec, "c1", Path::new("/b"), Status::Stopped, 0);
        assert!(serde_json::to_value(gone).unwrap().get("pid").is_none());
    }

    #[test]
    fn hooks_get_stdin_args_env_and_fail_with_their_output() {
        let dir = std::env::temp_dir().join(format!("vessel-hooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let h = hook(&format!(
            r#"{{"path":"/bin/sh","args":["sh","-c","echo \"$0 $1 $X\" > {0}; cat >> {0}","me","one"],"env":["X=y"]}}"#,
            out.display()
        ));
        run_one(&h, b"{\"state\":1}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "me one y\n{\"state\":1}"
        );
        let h = hook(r#"{"path":"/bin/sh","args":["sh","-c","echo out; echo err >&2; exit 3"]}"#);
        assert_eq!(
            run_one(&h, b"{}").unwrap_err(),
            "exit status 3, stdout: out, stderr: err"
        );
        let h = hook(r#"{"path":"/bin/sh","args":["sh","-c","exec sleep 30"],"timeout":1}"#);
        let t = Instant::now();
        assert!(run_one(&h, b"{}").unwrap_err().contains("timeout of 1s"));
        assert!(t.elapsed() < Duration::from_secs(10));
        let h = hook(r#"{"path":"/nonexistent/hook"}"#);
        assert!(run_one(&h, b"{}").unwrap_err().starts_with("cannot run it"));
        // A hook that never reads its stdin still runs (a big state does not block).
        let h = hook(r#"{"path":"/bin/true"}"#);
        run_one(&h, &vec![b' '; 1 << 20]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_hooks_are_refused() {
        let spec = |hooks: &str| -> Spec {
            serde_json::from_str(&format!(
                r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"hooks":{hooks}}}"#
            ))
            .unwrap()
        };
        assert!(validate(&spec(r#"{"prestart":[{"path":"relative"}]}"#)).is_err());
        assert!(validate(&spec(r#"{"poststop":[{"path":"/bin/true","timeout":0}]}"#)).is_err());
        validate(&spec(
            r#"{"createRuntime":[{"path":"/bin/true","timeout":5}]}"#,
        ))
        .unwrap();
    }
}
