//! Triggering shutdown from code, and learning that it has begun.

use std::sync::Arc;

use futures_channel::mpsc::UnboundedSender;

use crate::report::Outcome;
use crate::sync::Flag;

/// What the engine hears from handles and tracked tasks while it runs.
#[derive(Debug)]
pub(crate) enum Notice {
    Requested,
    TaskFailed { node: usize, outcome: Outcome },
}

/// Resolves once shutdown has begun: at the trigger (signal, [`ShutdownHandle::shutdown`],
/// failure), before the drain delay. Cheap to clone; every clone sees the same trigger.
///
/// A server's accept loop can select on [`wait`](ShutdownToken::wait) to learn that the
/// process is going down; it should still keep serving until its component's `stop`,
/// which comes after the drain delay.
///
/// # Cancellation safety
///
/// [`wait`](ShutdownToken::wait) can be dropped and called again at any time; no trigger
/// is lost (check, listen, re-check).
#[derive(Debug, Clone, Default)]
pub struct ShutdownToken(Arc<Flag>);

impl ShutdownToken {
    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        self.0.is_set()
    }

    /// Completes once shutdown has begun (at once if it already has).
    pub async fn wait(&self) {
        self.0.wait().await
    }

    pub(crate) fn trigger(&self) -> bool {
        self.0.set()
    }
}

/// Asks a running app to shut down, from anywhere: another task, a component, an admin
/// endpoint. Cheap to clone.
///
/// A request is handled like `SIGTERM`: readiness off, drain, stop, flush, exit code 0
/// if everything went well. Requests after the first change nothing (only a second
/// *signal* forces an early exit). A request before `run` aborts the start at once, like a
/// signal during startup; a request after the app exited is ignored.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    pub(crate) notices: UnboundedSender<Notice>,
    pub(crate) token: ShutdownToken,
}

impl ShutdownHandle {
    /// Triggers shutdown.
    pub fn shutdown(&self) {
        // The receiver is gone only once the app has exited: nothing left to stop.
        let _ = self.notices.unbounded_send(Notice::Requested);
    }

    /// A token that resolves when shutdown begins, whatever triggered it.
    pub fn token(&self) -> ShutdownToken {
        self.token.clone()
    }
}
