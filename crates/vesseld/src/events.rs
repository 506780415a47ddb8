//! The event bus behind `/1.0/events`: lifecycle and operation events, fanned out to every
//! listener. A slow listener loses old events rather than slowing the daemon.

use tokio::sync::broadcast;
use vessel_api::{Event, EventKind, Operation};

/// Sender side of the event bus; cheap to clone.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    /// A bus that keeps the last 1024 events for slow listeners.
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
        }
    }

    /// A new listener that sees events sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Announces that `source` (an API path) underwent `action` ("instance-started").
    pub fn lifecycle(&self, action: &str, source: &str) {
        tracing::info!(action, source, "lifecycle");
        let _ = self.tx.send(Event {
            kind: EventKind::Lifecycle,
            timestamp: crate::clock::now(),
            action: Some(action.to_string()),
            source: Some(source.to_string()),
            operation: None,
        });
    }

    /// Announces an operation's new state.
    pub fn operation(&self, op: &Operation) {
        let _ = self.tx.send(Event {
            kind: EventKind::Operation,
            timestamp: crate::clock::now(),
            action: None,
            source: None,
            operation: Some(op.clone()),
        });
    }
}
