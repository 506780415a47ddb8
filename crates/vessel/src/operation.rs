//! Waiting for asynchronous operations: progress on the terminal, Ctrl-C to cancel.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, bail, Result};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use vessel_api::{Operation, OperationStatus};

use crate::client::Client;
use crate::encode::encode_segment;

/// Seconds each wait request lets the daemon hold the answer.
const WAIT_SLICE_SECONDS: u32 = 1;

/// Ctrl-C presses seen while waiting.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// Presses after which the client gives up at once, even when the daemon does not answer.
const HARD_EXIT_PRESSES: usize = 3;

extern "C" fn on_interrupt(_: libc::c_int) {
    let n = INTERRUPTS.fetch_add(1, Ordering::SeqCst) + 1;
    if n >= HARD_EXIT_PRESSES {
        // SAFETY: _exit is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(130) };
    }
}

/// Counts SIGINT instead of dying while installed; puts the previous handler back on drop.
struct InterruptGuard {
    previous: Option<SigAction>,
}

impl InterruptGuard {
    fn install() -> Self {
        INTERRUPTS.store(0, Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(on_interrupt),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler only touches an atomic and calls the async-signal-safe _exit.
        let previous = unsafe { signal::sigaction(Signal::SIGINT, &action) }.ok();
        Self { previous }
    }
}

impl Drop for InterruptGuard {
    fn drop(&mut self) {
        if let Some(prev) = &self.previous {
            // SAFETY: restores the handler that was in place before `install`.
            let _ = unsafe { signal::sigaction(Signal::SIGINT, prev) };
        }
    }
}

/// The client stopped waiting on the user's request; the operation goes on in the daemon.
#[derive(Debug)]
pub struct StoppedWaiting;

impl std::fmt::Display for StoppedWaiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped waiting")
    }
}

impl std::error::Error for StoppedWaiting {}

/// A one-line progress bar on standard error, drawn only when it is a terminal.
pub struct Progress {
    enabled: bool,
    drawn: bool,
}

impl Progress {
    /// A bar that draws when standard error is a terminal.
    pub fn for_stderr() -> Self {
        Self::new(std::io::stderr().is_terminal())
    }

    /// A bar that draws or stays quiet.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            drawn: false,
        }
    }

    /// Redraws the line for `op`.
    pub fn draw(&mut self, op: &Operation) {
        if !self.enabled {
            return;
        }
        let width = crate::terminal::size(libc::STDERR_FILENO).map_or(80, |(cols, _)| cols);
        let line = progress_line(op, usize::from(width).saturating_sub(1));
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        self.drawn = true;
    }

    /// Erases the line, before other output or at the end.
    pub fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }

    /// Prints a message on its own line, keeping the bar below it.
    fn note(&mut self, msg: &str) {
        self.clear();
        eprintln!("{msg}");
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The text of the progress line, at most `width` characters.
pub fn progress_line(op: &Operation, width: usize) -> String {
    let mut line = op.description.clone();
    if let Some(stage) = op.stage.as_deref().filter(|s| !s.is_empty()) {
        line.push_str(": ");
        line.push_str(stage);
    }
    if let Some(p) = op.progress {
        let p = p.min(100);
        const BAR: usize = 20;
        let filled = usize::from(p) * BAR / 100;
        line.push_str(&format!(
            " [{}{}] {p:>3}%",
            "#".repeat(filled),
            " ".repeat(BAR - filled)
        ));
    }
    line.chars().take(width).collect()
}

/// Waits for `op` to end, drawing progress; Ctrl-C cancels it when it allows that.
/// Fails with the operation's error when it fails or is cancelled.
pub fn wait(client: &Client, op: Operation) -> Result<Operation> {
    let _guard = InterruptGuard::install();
    let mut progress = Progress::for_stderr();
    wait_with(client, op, &mut progress, &INTERRUPTS)
}

/// Waits for `op` to end drawing nothing (for commands with a progress display of their
/// own); Ctrl-C is left to its default.
pub fn wait_quietly(client: &Client, op: Operation) -> Result<Operation> {
    wait_with(client, op, &mut Progress::new(false), &AtomicUsize::new(0))
}

/// [`wait`] with the progress bar and the interrupt counter given.
pub fn wait_with(
    client: &Client,
    mut op: Operation,
    progress: &mut Progress,
    interrupts: &AtomicUsize,
) -> Result<Operation> {
    let id = op.id.clone();
    let url = format!(
        "/1.0/operations/{}/wait?timeout={WAIT_SLICE_SECONDS}",
        encode_segment(&id)
    );
    let mut handled = 0;
    let mut cancel_sent = false;
    let mut warned = false;
    loop {
        if op.status.is_final() {
            break;
        }
        progress.draw(&op);
        let presses = interrupts.load(Ordering::SeqCst);
        if presses > handled {
            handled = presses;
            if op.may_cancel && !cancel_sent {
                progress.note(&format!("Cancelling operation {id} ..."));
                let cancel: Result<Operation> = client.call(
                    "DELETE",
                    &format!("/1.0/operations/{}", encode_segment(&id)),
                );
                match cancel {
                    Ok(now) => op = now,
                    Err(e) => progress.note(&format!("Error: cannot cancel: {e:#}")),
                }
                cancel_sent = true;
                continue;
            } else if warned || cancel_sent {
                progress.note(&format!(
                    "Stopped waiting; the operation goes on. Follow it with: vessel operation wait {id}"
                ));
                return Err(StoppedWaiting.into());
            } else {
                progress.note(
                    "This operation cannot be cancelled now. Press Ctrl-C again to stop \
                     waiting (it goes on in the daemon).",
                );
                warned = true;
            }
        }
        op = client.get(&url)?;
    }
    progress.clear();
    match op.status {
        OperationStatus::Success => Ok(op),
        OperationStatus::Cancelled => bail!("{}: cancelled", op.description),
        _ => Err(anyhow!(op
            .error
            .clone()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| format!("{} failed", op.description)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{json_response, operation_json, FakeServer};

    fn op(status: &str, progress: Option<u8>, error: Option<&str>) -> Operation {
        serde_json::from_str(&operation_json("op-1", status, progress, error)).unwrap()
    }

    #[test]
    fn waits_until_success() {
        let server = FakeServer::start(vec![
            json_response(200, &operation_json("op-1", "running", Some(40), None)),
            json_response(200, &operation_json("op-1", "running", Some(90), None)),
            json_response(200, &operation_json("op-1", "success", Some(100), None)),
        ]);
        let client = Client::new(server.path());
        let done = wait_with(
            &client,
            op("pending", None, None),
            &mut Progress::new(false),
            &AtomicUsize::new(0),
        )
        .unwrap();
        assert_eq!(done.status, OperationStatus::Success);
        let reqs = server.finish();
        assert_eq!(reqs.len(), 3);
        for r in &reqs {
            assert_eq!(r.method, "GET");
            assert_eq!(r.target, "/1.0/operations/op-1/wait?timeout=1");
        }
    }

    #[test]
    fn failure_carries_the_operation_error() {
        let server = FakeServer::start(vec![json_response(
            200,
            &operation_json("op-1", "failure", None, Some("image 'nope' not found")),
        )]);
        let client = Client::new(server.path());
        let err = wait_with(
            &client,
            op("running", None, None),
            &mut Progress::new(false),
            &AtomicUsize::new(0),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "image 'nope' not found");
        server.finish();
    }

    #[test]
    fn already_final_needs_no_request() {
        let client = Client::new("/nonexistent/socket");
        let done = wait_with(
            &client,
            op("success", None, None),
            &mut Progress::new(false),
            &AtomicUsize::new(0),
        )
        .unwrap();
        assert_eq!(done.status, OperationStatus::Success);
    }

    #[test]
    fn interrupt_cancels() {
        let server = FakeServer::start(vec![
            json_response(200, &operation_json("op-1", "running", None, None)),
            json_response(200, &operation_json("op-1", "cancelled", None, None)),
        ]);
        let client = Client::new(server.path());
        let err = wait_with(
            &client,
            op("running", None, None),
            &mut Progress::new(false),
            &AtomicUsize::new(1),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "Creating instance c1: cancelled");
        let reqs = server.finish();
        assert_eq!(reqs[0].method, "DELETE");
        assert_eq!(reqs[0].target, "/1.0/operations/op-1");
        assert_eq!(reqs[1].target, "/1.0/operations/op-1/wait?timeout=1");
    }

    #[test]
    fn progress_line_text() {
        let o = op("running", Some(42), None);
        assert_eq!(
            progress_line(&o, 200),
            "Creating instance c1: unpacking [########            ]  42%"
        );
        assert_eq!(progress_line(&o, 8), "Creating");
        assert_eq!(
            progress_line(&op("running", None, None), 80),
            "Creating instance c1"
        );
    }
}
