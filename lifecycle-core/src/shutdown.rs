//! Triggering shutdown from code, learning that it has begun, and counting the work in
//! flight that a stop waits for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_channel::mpsc::UnboundedSender;

use crate::engine::Notice;
use crate::sync::{wait_until, AtomicU64, Event, Flag, FlagWait, FlagWaitOn, Ordering};

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
#[expect(
    clippy::redundant_allocation,
    reason = "the outer reference count is a fork's own (see `fork`)"
)]
pub struct ShutdownToken(Arc<Arc<Flag>>);

impl ShutdownToken {
    /// A token that sees the same trigger as this one, with a reference count of its own
    /// for its clones: for code that clones a token very often on many threads (a server
    /// hands one to each request), so that those clones do not all write the one count
    /// that every clone of the app's token shares (a cache line that would go from core
    /// to core at each clone and drop). Fork once per connection, say, and clone that.
    ///
    /// ```
    /// let token = lifecycle_core::ShutdownToken::default();
    /// let connection = token.fork(); // once per connection
    /// let request = connection.clone(); // per request: counted on `connection` alone
    /// assert_eq!(request.is_triggered(), token.is_triggered());
    /// ```
    pub fn fork(&self) -> ShutdownToken {
        ShutdownToken(Arc::new(Arc::clone(&self.0)))
    }

    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        self.0.is_set()
    }

    /// Completes once shutdown has begun (at once if it already has).
    ///
    /// ```
    /// # futures_executor::block_on(async {
    /// let token = lifecycle_core::ShutdownToken::default(); // one that is never triggered
    /// assert!(!token.is_triggered());
    /// # let _ = token.wait();
    /// # });
    /// ```
    pub fn wait(&self) -> WaitForShutdown<'_> {
        WaitForShutdown(self.0.wait())
    }

    /// Like [`wait`](ShutdownToken::wait), owning the token: a `'static` future to move
    /// into a task.
    ///
    /// ```
    /// # let token = lifecycle_core::ShutdownToken::default();
    /// let shutdown = token.clone().wait_owned(); // no borrow of `token`
    /// # drop(shutdown);
    /// ```
    pub fn wait_owned(self) -> WaitForShutdownOwned {
        WaitForShutdownOwned(FlagWaitOn::new(Arc::clone(&self.0)))
    }

    pub(crate) fn trigger(&self) -> bool {
        self.0.set()
    }
}

/// The future of [`ShutdownToken::wait`]: completes once shutdown has begun.
///
/// # Cancellation safety
///
/// It can be dropped and made again at any time; no trigger is lost.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct WaitForShutdown<'a>(FlagWait<'a>);

impl Future for WaitForShutdown<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// The future of [`ShutdownToken::wait_owned`]: [`WaitForShutdown`], owning its token.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct WaitForShutdownOwned(FlagWaitOn<Arc<Flag>>);

impl Future for WaitForShutdownOwned {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Asks a running app to shut down, from anywhere: another task, a component, an admin
/// endpoint. Cheap to clone.
///
/// A request is handled like `SIGTERM`: readiness off, drain, stop, flush, exit code 0
/// if everything went well. Requests after the first change nothing (only a second
/// *signal* forces an early exit). A request after the app exited is ignored.
///
/// During startup, a request is seen when the engine next wakes: if starts are still
/// in flight or due then (a request made before `run`, or from a task while components
/// start), it aborts the start like a signal does (exit code 1: the app never ran). A
/// request made by the last start itself, with nothing left to start, is handled once
/// the app runs (exit code 0): that is how a component asks for a run that ends as soon
/// as everything has started (a one-shot job, a test).
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

/// Asks the running app to reload its components
/// ([`Component::reload`](crate::Component::reload)), as `SIGHUP` does with
/// [`Config::reload_on_sighup`](crate::Config::reload_on_sighup): for an admin endpoint
/// or a file watcher. From [`App::reload_handle`](crate::App::reload_handle) or
/// [`StartContext::reload_handle`](crate::StartContext::reload_handle); cheap to clone.
///
/// A request while a reload runs makes one more reload once it ends (however many came:
/// they coalesce); one during startup makes a reload once the app runs; one during the
/// shutdown, or after the app exited, is ignored (and logged).
///
/// ```
/// # fn admin(app: &lifecycle_core::App) {
/// let reload = app.reload_handle();
/// // in the admin endpoint's handler, or when the watched file changes:
/// reload.reload();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    pub(crate) notices: UnboundedSender<Notice>,
}

impl ReloadHandle {
    /// Asks for a reload; returns at once (the reload runs in the engine, and its
    /// outcome is in the log, the health snapshot's
    /// [`last_reload`](crate::Snapshot::last_reload) and the report).
    pub fn reload(&self) {
        // The receiver is gone only once the app has exited: nothing left to reload.
        let _ = self.notices.unbounded_send(Notice::Reload);
    }
}

/// The in-flight unit: the low 31 bits of a shard count its work in flight.
const ONE: u64 = 1;
/// Set once someone has waited for idle: only then does a drop that empties a shard
/// notify. (In each shard, not on its own: a drop learns it from the atomic operation
/// that counts it, so that either it sees the bit or the waiter sees its count.)
const WAITED: u64 = 1 << 31;
/// The arrival unit: the high 32 bits of a shard count (wrapping) every guard it took.
const ARRIVAL: u64 = 1 << 32;
const IN_FLIGHT_MASK: u64 = WAITED - 1;

/// How many parts the count is split into: a guard counts on its thread's part, so that
/// threads taking and dropping guards at once (a server's workers, at every request) do
/// not write the same cache line. More than the cores of most machines that run a
/// service; threads beyond it share parts. (Two under loom, which explores every order
/// of each shard's operations: the models use two.)
#[cfg(not(loom))]
const SHARDS: usize = 8;
#[cfg(loom)]
const SHARDS: usize = 2;

/// One part of the count, on a cache line of its own (two, for the CPUs that fetch lines
/// in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(AtomicU64);

#[derive(Debug, Default)]
struct InFlightState {
    /// Arrivals in the high half, work in flight in the low half: one atomic add counts
    /// both, so taking a guard costs one atomic operation, on its thread's shard.
    shards: [Shard; SHARDS],
    idle: Event,
}

/// Counts work in flight (requests, jobs, queries) so that a component's `stop` can wait
/// for it to finish, with a deadline.
///
/// Take a guard when the work arrives and drop it when the work is done: one atomic
/// operation each, on a part of the count kept for the thread that took it (so that
/// threads do not contend). [`wait_idle`](InFlight::wait_idle) completes once nothing is
/// in flight; once something has waited, a drop that empties its part also notifies.
/// Cheap to clone; clones share the count. A guard taken through a
/// [`fork`](InFlight::fork) holds that fork's reference, not the one every clone shares.
///
/// Each component gets one from [`StartContext::in_flight`](crate::StartContext::in_flight)
/// (the same one is in its [`StopContext`](crate::StopContext::in_flight)); the arrivals
/// on those are what the drain's quiet period
/// ([`Config::drain_quiet_period`](crate::Config::drain_quiet_period)) watches.
///
/// # Examples
///
/// ```
/// use lifecycle_core::InFlight;
///
/// let in_flight = InFlight::new();
/// let request = in_flight.enter_owned(); // a request arrives; move the guard into its task
/// assert_eq!(in_flight.count(), 1);
/// drop(request); // the response is written
/// assert_eq!(in_flight.count(), 0);
/// # futures_executor::block_on(in_flight.wait_idle());
/// ```
#[derive(Debug, Clone, Default)]
#[expect(
    clippy::redundant_allocation,
    reason = "the outer reference count is a fork's own (see `fork`)"
)]
pub struct InFlight(Arc<Arc<InFlightState>>);

impl InFlight {
    /// A counter with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same counter, with a reference count of its own for the owned guards taken
    /// through it: for code that takes guards very often on many threads (a server, one
    /// per request), so that they do not all write the one reference count every clone
    /// shares. Fork once per connection, say, and take that connection's guards from it.
    ///
    /// ```
    /// let in_flight = lifecycle_core::InFlight::new();
    /// let connection = in_flight.fork(); // once per connection
    /// let request = connection.enter_owned(); // per request
    /// assert_eq!(in_flight.count(), 1);
    /// drop(request);
    /// assert_eq!(in_flight.count(), 0);
    /// ```
    pub fn fork(&self) -> InFlight {
        InFlight(Arc::new(Arc::clone(&self.0)))
    }

    /// Counts one piece of work in flight until the guard is dropped.
    pub fn enter(&self) -> InFlightGuard<'_> {
        InFlightGuard(&self.0, self.0.enter())
    }

    /// Like [`enter`](InFlight::enter), with a guard that owns a reference to the counter,
    /// to move into a spawned task.
    pub fn enter_owned(&self) -> OwnedInFlightGuard {
        let shard = self.0.enter();
        OwnedInFlightGuard(self.0.clone(), shard)
    }

    /// How much work is in flight now.
    pub fn count(&self) -> usize {
        self.0.snapshot().1 as usize
    }

    /// Guards taken so far, wrapping at 2^32: it changes whenever work arrives.
    pub(crate) fn arrivals(&self) -> u32 {
        self.0.snapshot().0
    }

    /// Completes once nothing is in flight (at once if nothing is).
    pub async fn wait_idle(&self) {
        // Before the first listen, so that every drop that empties a shard from then on
        // notifies.
        for shard in &self.0.shards {
            shard.0.fetch_or(WAITED, Ordering::AcqRel);
        }
        wait_until(&self.0.idle, || self.0.snapshot().1 == 0).await
    }
}

impl InFlightState {
    /// Counts a guard on the calling thread's shard, and says which.
    fn enter(&self) -> usize {
        let shard = shard();
        self.shards[shard]
            .0
            .fetch_add(ARRIVAL + ONE, Ordering::AcqRel);
        shard
    }

    fn leave(&self, shard: usize) {
        let before = self.shards[shard].0.fetch_sub(ONE, Ordering::AcqRel);
        if before & (WAITED | IN_FLIGHT_MASK) == WAITED | ONE {
            self.idle.notify(usize::MAX);
        }
    }

    /// The arrivals (wrapping) and the work in flight, summed over the shards as they
    /// were at one instant: the shards are read until two reads in a row agree. (One
    /// read could see a guard's shard before it entered and another's after it left,
    /// and sum to nothing in flight while the first is; a shard whose value did not
    /// change between two reads took no guard meanwhile, as every guard adds an arrival,
    /// and lost none, so the second read is the state at the end of the first.)
    fn snapshot(&self) -> (u32, u64) {
        let read = || {
            self.shards
                .each_ref()
                .map(|shard| shard.0.load(Ordering::Acquire))
        };
        let mut last = read();
        loop {
            let now = read();
            if now == last {
                return now
                    .iter()
                    .fold((0u32, 0u64), |(arrivals, in_flight), &shard| {
                        (
                            arrivals.wrapping_add((shard >> 32) as u32),
                            in_flight + (shard & IN_FLIGHT_MASK),
                        )
                    });
            }
            last = now;
        }
    }
}

/// The shard of the calling thread: given in turn to threads as they first take a guard.
fn shard() -> usize {
    #[cfg(not(loom))]
    {
        use std::cell::Cell;
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // A constant, given its shard at first use: a thread-local read, where a lazy
        // thread-local would check its initialisation at each access.
        thread_local! {
            static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        SHARD.with(|shard| {
            if shard.get() == usize::MAX {
                shard.set(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SHARDS);
            }
            shard.get()
        })
    }
    // Under loom, what the model sets (`LOOM_SHARD`, 0 unless set): the same at each of
    // its runs.
    #[cfg(loom)]
    {
        LOOM_SHARD.with(|shard| shard.get())
    }
}

#[cfg(loom)]
::loom::thread_local! {
    static LOOM_SHARD: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

/// Work in flight on an [`InFlight`], until dropped.
#[derive(Debug)]
#[must_use = "the work counts as in flight only while the guard is alive"]
pub struct InFlightGuard<'a>(&'a InFlightState, usize);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

/// Work in flight on an [`InFlight`], until dropped; `'static`, to move into a task.
#[derive(Debug)]
#[must_use = "the work counts as in flight only while the guard is alive"]
#[expect(
    clippy::redundant_allocation,
    reason = "the outer reference count is a fork's own (see `fork`)"
)]
pub struct OwnedInFlightGuard(Arc<Arc<InFlightState>>, usize);

impl Drop for OwnedInFlightGuard {
    fn drop(&mut self) {
        self.0.leave(self.1);
    }
}

/// Models of the token and the in-flight counter: `RUSTFLAGS="--cfg loom" cargo test -p
/// lifecycle-core --lib --release loom`.
#[cfg(all(test, loom))]
mod loom {
    use loom::future::block_on;
    use loom::thread;

    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::sync::Arc;

    use super::{InFlight, ShutdownToken};

    #[test]
    fn loom_token_wakes_a_waiter_triggered_from_another_thread() {
        loom::model(|| {
            let token = ShutdownToken::default();
            let trigger = token.clone();
            let other = thread::spawn(move || assert!(trigger.trigger()));
            block_on(token.wait());
            assert!(token.is_triggered());
            other.join().unwrap();
            assert!(!token.trigger(), "a second trigger is not the first");
        });
    }

    #[test]
    fn loom_a_forked_token_and_its_clones_see_a_trigger_from_another_thread() {
        loom::model(|| {
            let token = ShutdownToken::default();
            let trigger = token.clone();
            let fork = token.fork();
            let request = fork.clone();
            let other = thread::spawn(move || assert!(trigger.trigger()));
            block_on(request.wait());
            assert!(fork.is_triggered() && token.is_triggered());
            other.join().unwrap();
            assert!(!fork.trigger(), "the fork's trigger is the same one");
        });
    }

    #[test]
    fn loom_token_wakes_two_waiters() {
        loom::model(|| {
            let token = ShutdownToken::default();
            let waiter = token.clone();
            let other = thread::spawn(move || block_on(waiter.wait()));
            token.trigger();
            block_on(token.wait());
            other.join().unwrap();
        });
    }

    #[test]
    fn loom_wait_idle_sees_the_last_guard_dropped_on_other_threads() {
        bounded().check(|| {
            let in_flight = InFlight::new();
            let first = in_flight.enter_owned();
            let second = in_flight.enter_owned();
            let one = thread::spawn(move || drop(first));
            let two = thread::spawn(move || drop(second));
            block_on(in_flight.wait_idle());
            assert_eq!(in_flight.count(), 0);
            one.join().unwrap();
            two.join().unwrap();
        });
    }

    /// A model explored with at most three preemptions per run: `wait_idle` reads every
    /// shard at least twice per look, and exploring every order of those reads takes
    /// hours.
    fn bounded() -> loom::model::Builder {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder
    }

    /// Work that moves from one shard to another while `wait_idle` reads them (a guard
    /// taken on the shard it read already, then one dropped on the shard it reads next)
    /// is never taken for nothing in flight.
    #[test]
    fn loom_wait_idle_is_not_fooled_by_work_moving_between_shards() {
        bounded().check(|| {
            let in_flight = InFlight::new();
            super::LOOM_SHARD.with(|shard| shard.set(1));
            let first = in_flight.enter_owned();
            let second_dropped = Arc::new(AtomicBool::new(false));
            let other = {
                let (in_flight, second_dropped) = (in_flight.clone(), second_dropped.clone());
                thread::spawn(move || {
                    let second = in_flight.enter_owned(); // on shard 0
                    drop(first);
                    second_dropped.store(true, Ordering::SeqCst);
                    drop(second);
                })
            };
            block_on(in_flight.wait_idle());
            assert!(
                second_dropped.load(Ordering::SeqCst),
                "idle while the second guard was alive"
            );
            other.join().unwrap();
        });
    }

    #[test]
    fn loom_concurrent_guards_are_all_counted() {
        loom::model(|| {
            let in_flight = InFlight::new();
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let in_flight = in_flight.clone();
                    thread::spawn(move || drop(in_flight.enter()))
                })
                .collect();
            for worker in workers {
                worker.join().unwrap();
            }
            assert_eq!(in_flight.count(), 0);
            assert_eq!(in_flight.arrivals(), 2);
        });
    }
}
