//! The synchronisation primitives of the crate, in one place so that `--cfg loom` can
//! swap them for loom's models, and the one-shot [`Flag`] built on them.
//!
//! The shutdown token, the in-flight counter and task tracking import their atomics (and
//! the flag its mutex) from here. `event-listener` follows the same cfg.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::PoisonError;
use std::task::{Context, Poll, Waker};

#[cfg(loom)]
pub(crate) use ::loom::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(loom)]
use ::loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::sync::{Mutex, MutexGuard};

pub(crate) use event_listener::Event;

/// A flag that goes from unset to set once, waking everyone waiting for it.
///
/// Its own waiter list rather than an [`Event`]: the flag is the shutdown token and the
/// cancellation of every tracked task, so (1) a waiter polled again with the same waker
/// returns `Pending` from two loads, without the lock (a tracked task polls its
/// cancellation at each of its wake-ups), and (2) [`set`](Flag::set) takes the wakers out
/// under the lock and wakes them after releasing it, and woken waiters find the flag set
/// without locking again, so a fan-out to thousands of tasks on other threads does not
/// contend on the lock.
#[derive(Debug, Default)]
pub(crate) struct Flag {
    set: AtomicBool,
    waiters: Mutex<Waiters>,
}

/// Wakers by slot; `free` lists the empty slots for reuse.
#[derive(Debug, Default)]
struct Waiters {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Flag {
    /// Sets the flag; returns `true` if this call was the one that set it.
    pub(crate) fn set(&self) -> bool {
        let first = !self.set.swap(true, Ordering::AcqRel);
        if first {
            // No waiter registers after this (registration re-checks the flag under the
            // lock), so the list is taken for good.
            let wakers = std::mem::take(&mut self.lock().wakers);
            for waker in wakers.into_iter().flatten() {
                waker.wake();
            }
        }
        first
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Completes once the flag is set. Can be dropped and created again at any time.
    pub(crate) fn wait(&self) -> FlagWait<'_> {
        FlagWaitOn::new(self)
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        // Nothing panics under this lock; a poisoned one is still consistent.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The future of [`Flag::wait`].
#[derive(Debug)]
pub(crate) struct FlagWaitOn<F: Deref<Target = Flag>> {
    flag: F,
    /// The slot of the waker registered last, and a clone of it to compare with.
    registered: Option<(usize, Waker)>,
}

/// The future of [`Flag::wait`], borrowing the flag.
pub(crate) type FlagWait<'a> = FlagWaitOn<&'a Flag>;

impl<F: Deref<Target = Flag>> FlagWaitOn<F> {
    /// Completes once `flag` is set; owns (or borrows) it.
    pub(crate) fn new(flag: F) -> Self {
        FlagWaitOn {
            flag,
            registered: None,
        }
    }
}

impl<F: Deref<Target = Flag> + Unpin> Future for FlagWaitOn<F> {
    type Output = ();

    // Inlined into a tracked task's poll, which looks at two flags at each wake.
    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.flag.is_set() {
            return Poll::Ready(());
        }
        if let Some((_, waker)) = &self.registered {
            if waker.will_wake(cx.waker()) {
                // Registered, unchanged: `set` will wake it.
                return Poll::Pending;
            }
        }
        let mut waiters = self.flag.lock();
        // Checked again under the lock: `set` sets the flag before taking the lock, so
        // either it is seen here or the waker registered below is woken.
        if self.flag.is_set() {
            return Poll::Ready(());
        }
        let waker = cx.waker().clone();
        let slot = match self.registered {
            Some((slot, _)) => slot,
            None => match waiters.free.pop() {
                Some(slot) => slot,
                None => {
                    waiters.wakers.push(None);
                    waiters.wakers.len() - 1
                }
            },
        };
        waiters.wakers[slot] = Some(waker.clone());
        drop(waiters);
        self.registered = Some((slot, waker));
        Poll::Pending
    }
}

impl<F: Deref<Target = Flag>> Drop for FlagWaitOn<F> {
    fn drop(&mut self) {
        let Some((slot, _)) = self.registered.take() else {
            return;
        };
        if self.flag.is_set() {
            return; // the list is gone with the wakers in it
        }
        let mut waiters = self.flag.lock();
        if !self.flag.is_set() {
            waiters.wakers[slot] = None;
            waiters.free.push(slot);
        }
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

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn poll(wait: &mut Pin<Box<FlagWait<'_>>>, waker: &Waker) -> Poll<()> {
        wait.as_mut().poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn set_wakes_every_registered_waiter_once_and_the_latest_waker_of_each() {
        let flag = Flag::default();
        let counters: Vec<Arc<Counter>> = (0..3).map(|_| Arc::default()).collect();
        let wakers: Vec<Waker> = counters.iter().map(|c| Waker::from(c.clone())).collect();
        let mut waits: Vec<_> = (0..2).map(|_| Box::pin(flag.wait())).collect();
        assert!(poll(&mut waits[0], &wakers[0]).is_pending());
        assert!(
            poll(&mut waits[0], &wakers[0]).is_pending(),
            "same waker: no new slot"
        );
        assert!(poll(&mut waits[1], &wakers[1]).is_pending());
        assert!(
            poll(&mut waits[1], &wakers[2]).is_pending(),
            "moved to another task"
        );
        assert_eq!(flag.lock().wakers.len(), 2);

        assert!(flag.set());
        assert!(!flag.set(), "a second set is not the first");
        let woken: Vec<usize> = counters
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .collect();
        assert_eq!(woken, [1, 0, 1]);
        assert!(poll(&mut waits[0], &wakers[0]).is_ready());
        assert!(poll(&mut waits[1], &wakers[2]).is_ready());
        assert!(flag.lock().wakers.is_empty());
    }

    #[test]
    fn a_dropped_waiter_is_not_woken_and_its_slot_is_reused() {
        let flag = Flag::default();
        let counter = Arc::new(Counter::default());
        let waker = Waker::from(counter.clone());
        for _ in 0..100 {
            let mut wait = Box::pin(flag.wait());
            assert!(poll(&mut wait, &waker).is_pending());
        }
        assert_eq!(flag.lock().wakers.len(), 1, "each drop frees its slot");
        flag.set();
        assert_eq!(counter.0.load(Ordering::Relaxed), 0);
        let mut late = Box::pin(flag.wait());
        assert!(poll(&mut late, &waker).is_ready());
    }
}

/// Models of the flag's waiter list: `RUSTFLAGS="--cfg loom" cargo test -p lifecycle-core
/// --lib --release loom`.
#[cfg(all(test, loom))]
mod loom {
    use std::sync::Arc;

    use loom::future::block_on;
    use loom::thread;

    use std::future::Future;

    use super::Flag;

    #[test]
    fn loom_flag_set_races_a_waiter_that_registers_and_one_that_leaves() {
        loom::model(|| {
            let flag = Arc::new(Flag::default());
            let setter = {
                let flag = flag.clone();
                thread::spawn(move || flag.set())
            };
            let leaver = {
                let flag = flag.clone();
                thread::spawn(move || {
                    // Registers (or sees the flag), then leaves before it is set, or not.
                    let mut wait = Box::pin(flag.wait());
                    let waker = futures_util::task::noop_waker();
                    let _ = wait
                        .as_mut()
                        .poll(&mut std::task::Context::from_waker(&waker));
                })
            };
            block_on(flag.wait());
            assert!(flag.is_set());
            assert!(setter.join().unwrap());
            leaver.join().unwrap();
        });
    }
}
