//! The synchronisation primitives of the crate, in one place so that `--cfg loom` can
//! swap them for loom's models, and the one-shot [`Flag`] built on them.
//!
//! Everything lock-free in the crate (the shutdown token, the in-flight counter, task
//! cancellation) imports its atomics from here. `event-listener` follows the same cfg.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

pub(crate) use event_listener::Event;

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
        wait_until(&self.event, || self.is_set()).await
    }
}

/// Completes once `done()` holds, waking on `event`.
///
/// Check, listen, re-check: a change between the first check and `listen` is seen by the
/// second check, so no notification is lost. Whoever makes `done()` true must notify
/// `event` after doing so.
pub(crate) async fn wait_until(event: &Event, done: impl Fn() -> bool) {
    loop {
        if done() {
            return;
        }
        let listener = event.listen();
        if done() {
            return;
        }
        listener.await;
    }
}
