//! Long-running work as operations: an id, progress, cancel, and a record in the store so
//! that one interrupted by a daemon crash is reported as failed after the restart.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use vessel_api::{Operation, OperationStatus};

use crate::error::{Error, Result};
use crate::events::Events;
use crate::store::Store;

/// How many finished operations stay in memory.
const KEEP_FINISHED: usize = 200;

struct Entry {
    state: watch::Sender<Operation>,
    cancel: watch::Sender<bool>,
}

/// Registry of operations.
#[derive(Clone)]
pub struct Operations {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    store: Arc<dyn Store>,
    events: Events,
}

/// Handle given to an operation's body: report progress, notice cancellation.
#[derive(Clone)]
pub struct OpHandle {
    state: watch::Sender<Operation>,
    cancel: watch::Receiver<bool>,
    store: Arc<dyn Store>,
    events: Events,
}

impl OpHandle {
    /// Reports progress (0-100) and the current stage.
    pub fn progress(&self, percent: Option<u8>, stage: &str) {
        self.update(|op| {
            op.progress = percent;
            op.stage = Some(stage.to_string());
        });
    }

    /// Whether a cancel was requested.
    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Returns an error when a cancel was requested; call between steps.
    pub fn check_cancel(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::conflict("operation cancelled"))
        } else {
            Ok(())
        }
    }

    /// Adds the API path of an object the operation made, once it is known.
    pub fn add_resource(&self, path: String) {
        self.update(|op| {
            if !op.resources.contains(&path) {
                op.resources.push(path);
            }
        });
    }

    /// Whether the operation may still be cancelled from now on.
    pub fn set_may_cancel(&self, may: bool) {
        self.update(|op| op.may_cancel = may);
    }

    fn update(&self, f: impl FnOnce(&mut Operation)) {
        let mut snapshot = None;
        self.state.send_modify(|op| {
            f(op);
            op.updated_at = crate::clock::now();
            snapshot = Some(op.clone());
        });
        if let Some(op) = snapshot {
            if let Err(e) = self.store.operation_put(&op) {
                tracing::warn!(op = %op.id, error = %e, "could not record operation");
            }
            self.events.operation(&op);
        }
    }
}

impl Operations {
    /// An empty registry recording into `store`.
    pub fn new(store: Arc<dyn Store>, events: Events) -> Self {
        Self {
            entries: Arc::default(),
            store,
            events,
        }
    }

    /// Starts `body` as a new operation in the background and returns its first snapshot.
    pub fn spawn<F, Fut>(
        &self,
        description: String,
        resources: Vec<String>,
        may_cancel: bool,
        body: F,
    ) -> Operation
    where
        F: FnOnce(OpHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let now = crate::clock::now();
        let op = Operation {
            id: uuid::Uuid::new_v4().to_string(),
            description,
            status: OperationStatus::Running,
            resources,
            progress: None,
            stage: None,
            error: None,
            may_cancel,
            created_at: now.clone(),
            updated_at: now,
        };
        let (state, _) = watch::channel(op.clone());
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let handle = OpHandle {
            state: state.clone(),
            cancel: cancel_rx,
            store: self.store.clone(),
            events: self.events.clone(),
        };
        {
            let mut entries = self.lock();
            entries.insert(
                op.id.clone(),
                Entry {
                    state,
                    cancel: cancel_tx,
                },
            );
            Self::trim(&mut entries);
        }
        if let Err(e) = self.store.operation_put(&op) {
            tracing::warn!(op = %op.id, error = %e, "could not record operation");
        }
        self.events.operation(&op);
        tracing::info!(op = %op.id, description = %op.description, "operation started");
        tokio::spawn(async move {
            let result = body(handle.clone()).await;
            let cancelled = handle.is_cancelled();
            handle.update(|op| {
                op.may_cancel = false;
                match &result {
                    Ok(()) => {
                        op.status = OperationStatus::Success;
                        op.progress = Some(100);
                    }
                    Err(_) if cancelled => {
                        op.status = OperationStatus::Cancelled;
                        op.error = Some("cancelled on request".into());
                    }
                    Err(e) => {
                        op.status = OperationStatus::Failure;
                        op.error = Some(crate::error::redact_host_paths(&e.message).into_owned());
                    }
                }
            });
            match result {
                Ok(()) => tracing::info!(op = %handle.state.borrow().id, "operation succeeded"),
                Err(e) => {
                    tracing::warn!(op = %handle.state.borrow().id, error = %e, "operation failed")
                }
            }
        });
        op
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn trim(entries: &mut HashMap<String, Entry>) {
        let finished: Vec<(String, String)> = entries
            .iter()
            .filter(|(_, e)| e.state.borrow().status.is_final())
            .map(|(k, e)| (e.state.borrow().updated_at.clone(), k.clone()))
            .collect();
        if finished.len() > KEEP_FINISHED {
            let mut finished = finished;
            finished.sort();
            for (_, k) in finished.iter().take(finished.len() - KEEP_FINISHED) {
                entries.remove(k);
            }
        }
    }

    /// One operation, live or recorded.
    pub fn get(&self, id: &str) -> Result<Operation> {
        if let Some(e) = self.lock().get(id) {
            return Ok(e.state.borrow().clone());
        }
        self.store
            .operation_list(1000)?
            .into_iter()
            .find(|o| o.id == id)
            .ok_or_else(|| Error::not_found(format!("operation {id} not found")))
    }

    /// Recent operations, newest first.
    pub fn list(&self) -> Result<Vec<Operation>> {
        let mut ops = self.store.operation_list(100)?;
        let live = self.lock();
        for op in &mut ops {
            if let Some(e) = live.get(&op.id) {
                *op = e.state.borrow().clone();
            }
        }
        Ok(ops)
    }

    /// Waits until the operation ends or `timeout` passes, then returns it.
    pub async fn wait(&self, id: &str, timeout: Option<Duration>) -> Result<Operation> {
        let rx = self.lock().get(id).map(|e| e.state.subscribe());
        let Some(mut rx) = rx else {
            return self.get(id);
        };
        let done = async {
            loop {
                if rx.borrow_and_update().status.is_final() {
                    break;
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        };
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, done).await;
            }
            None => done.await,
        }
        let op = rx.borrow().clone();
        Ok(op)
    }

    /// Requests cancellation.
    pub fn cancel(&self, id: &str) -> Result<Operation> {
        let entries = self.lock();
        let Some(e) = entries.get(id) else {
            drop(entries);
            let op = self.get(id)?;
            return Err(Error::conflict(format!(
                "operation {id} has already ended ({:?})",
                op.status
            )));
        };
        let op = e.state.borrow().clone();
        if op.status.is_final() {
            return Err(Error::conflict(format!(
                "operation {id} has already ended ({:?})",
                op.status
            )));
        }
        if !op.may_cancel {
            return Err(Error::conflict(format!(
                "operation {id} ({}) cannot be cancelled at this stage",
                op.description
            )));
        }
        let _ = e.cancel.send(true);
        Ok(op)
    }
}
