//! A one-shot flag that tasks can await: the primitive under the shutdown token and
//! the cancellation of tracked tasks.

use std::sync::atomic::{AtomicBool, Ordering};

use event_listener::Event;

/// A flag that goes from unset to set once, waking everyone waiting for it.
#[derive(Debug, Default)]
pub(crate) struct Flag {
    set: AtomicBool,
    event: Event,
}

impl Flag {
    /// Sets the flag; returns `true` if this call was the one that set it.
    pub(crate) fn set(&self) -> bool {
        let first = !self.set.swap(true, Ordering::AcqRel);
        if first {
            self.event.notify(usize::MAX);
        }
        first
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Completes once the flag is set.
    pub(crate) async fn wait(&self) {
        // Check, listen, re-check: a `set` between the first check and `listen` is seen
        // by the second check, so no notification is lost.
        loop {
            if self.is_set() {
                return;
            }
            let listener = self.event.listen();
            if self.is_set() {
                return;
            }
            listener.await;
        }
    }
}
