//! A stream that is polled only when it has asked to be.
//!
//! The engine selects on its events (signals, shutdown requests, task failures) and on the
//! hooks of a phase, and a `select` polls both sides every time either wakes it. Hooks
//! complete thousands of times in a big app, signals almost never: without the gate, each
//! hook's completion would also poll the signal stream, which on smol is a read on
//! async-signal's pipe (a system call per poll). The gate gives the inner stream its own
//! waker and polls it only after that waker fired.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_core::Stream;
use futures_util::task::AtomicWaker;

/// `inner`, polled only on its first poll, after it woke its waker, and after it yielded
/// an item (it may hold more).
pub(crate) struct Gated<S> {
    inner: S,
    gate: Arc<Gate>,
    waker: Waker,
}

struct Gate {
    /// Whether the inner stream must be polled on the next poll.
    open: AtomicBool,
    /// The task polling the gated stream, to wake when the inner stream wakes.
    task: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.open.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<S> Gated<S> {
    pub(crate) fn new(inner: S) -> Self {
        let gate = Arc::new(Gate {
            open: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(gate.clone());
        Self { inner, gate, waker }
    }
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        // Register first: a wake from here on reaches this task, and one before the swap
        // below is seen by it.
        self.gate.task.register(cx.waker());
        if !self.gate.open.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_next(&mut Context::from_waker(&this.waker));
        if polled.is_ready() {
            this.gate.open.store(true, Ordering::Release);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures_channel::mpsc;
    use futures_util::StreamExt;

    use super::*;

    /// Counts the polls of the stream it wraps.
    struct Counted<S>(S, Arc<AtomicUsize>);

    impl<S: Stream + Unpin> Stream for Counted<S> {
        type Item = S::Item;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
            self.1.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.0).poll_next(cx)
        }
    }

    #[test]
    fn polls_the_inner_stream_only_when_it_woke_and_loses_no_item() {
        let (sender, receiver) = mpsc::unbounded::<u32>();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut gated = Gated::new(Counted(receiver, polls.clone()));
        let task = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&task);

        // The first poll goes through and leaves the inner stream waiting.
        assert!(gated.poll_next_unpin(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        // Polls without a wake (another branch of a select woke the task) stay outside.
        for _ in 0..100 {
            assert!(gated.poll_next_unpin(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);

        // Two items arrive: the inner waker opens the gate, and both come out.
        sender.unbounded_send(1).unwrap();
        sender.unbounded_send(2).unwrap();
        assert_eq!(gated.poll_next_unpin(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(gated.poll_next_unpin(&mut cx), Poll::Ready(Some(2)));
        assert!(gated.poll_next_unpin(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 4);

        drop(sender);
        assert_eq!(gated.poll_next_unpin(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn an_item_sent_from_another_thread_wakes_the_task() {
        let (sender, receiver) = mpsc::unbounded::<u32>();
        let mut gated = Gated::new(receiver);
        let sent = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            sender.unbounded_send(7).unwrap();
            sender
        });
        assert_eq!(futures_executor::block_on(gated.next()), Some(7));
        drop(sent.join());
    }
}
