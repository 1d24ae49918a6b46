//! Tracked tasks: long-running work a component spawns through its context, so the
//! engine cancels it on stop and notices when it fails or panics.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_channel::mpsc::UnboundedSender;
use futures_util::future::{select, Either};
use futures_util::FutureExt;

use crate::error::{error_chain, panic_message, BoxError};
use crate::report::Outcome;
use crate::runtime::Runtime;
use crate::shutdown::Notice;
use crate::sync::{wait_until, AtomicUsize, Event, Flag, Ordering};

/// The live tracked tasks of one component.
#[derive(Debug, Default)]
pub(crate) struct TaskSet {
    cancel: Flag,
    live: AtomicUsize,
    idle: Event,
}

impl TaskSet {
    /// Cancels every task of the set, now and spawned later: each is dropped at its next
    /// wake-up.
    pub(crate) fn cancel(&self) {
        self.cancel.set();
    }

    /// Completes once no task of the set is alive.
    pub(crate) async fn idle(&self) {
        wait_until(&self.idle, || self.live.load(Ordering::Acquire) == 0).await
    }
}

/// Decrements the live count when a task ends, however it ends (completion,
/// cancellation, or the runtime dropping it).
struct Alive(Arc<TaskSet>);

impl Drop for Alive {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify(usize::MAX);
        }
    }
}

/// Spawns tracked tasks for one component. Cheap to clone and `'static`, so an accept
/// loop can keep one and spawn a task per connection.
///
/// A tracked task that returns an error or panics while the app runs triggers shutdown,
/// naming the component. When the component has stopped (or its stop timed out), its
/// remaining tracked tasks are cancelled: dropped at their next wake-up. Tasks spawned
/// after that are dropped without being polled.
#[derive(Debug, Clone)]
pub struct Spawner {
    pub(crate) node: usize,
    pub(crate) tasks: Arc<TaskSet>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) notices: UnboundedSender<Notice>,
}

impl Spawner {
    /// Spawns `task` on the app's runtime, tracked under this component. A panic in it
    /// triggers shutdown. For a task that can fail, see [`spawn_fallible`](Self::spawn_fallible).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_fallible(async move {
            task.await;
            Ok::<(), BoxError>(())
        })
    }

    /// Spawns `task` on the app's runtime, tracked under this component. An error it
    /// returns, or a panic, triggers shutdown naming this component.
    pub fn spawn_fallible<F, E>(&self, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        if self.tasks.cancel.is_set() {
            return;
        }
        self.tasks.live.fetch_add(1, Ordering::AcqRel);
        let alive = Alive(self.tasks.clone());
        let node = self.node;
        let notices = self.notices.clone();
        self.runtime.spawn(Box::pin(async move {
            let tasks = alive.0.clone();
            let cancelled = std::pin::pin!(tasks.cancel.wait());
            let task = std::pin::pin!(AssertUnwindSafe(task).catch_unwind());
            let outcome = match select(cancelled, task).await {
                Either::Left(_) | Either::Right((Ok(Ok(())), _)) => return,
                Either::Right((Ok(Err(error)), _)) => Outcome::Failed(error_chain(&*error.into())),
                Either::Right((Err(panic), _)) => Outcome::Panicked(panic_message(&*panic)),
            };
            drop(alive);
            let _ = notices.unbounded_send(Notice::TaskFailed { node, outcome });
        }));
    }
}

/// Models of task tracking: `RUSTFLAGS="--cfg loom" cargo test -p lifecycle-core --lib
/// --release loom`.
#[cfg(all(test, loom))]
mod loom {
    use std::sync::Arc;

    use loom::future::block_on;
    use loom::thread;

    use super::{Alive, Ordering, TaskSet};

    #[test]
    fn loom_idle_sees_the_last_task_end_on_other_threads() {
        loom::model(|| {
            let tasks = Arc::new(TaskSet::default());
            tasks.live.fetch_add(2, Ordering::AcqRel);
            let ends: Vec<_> = (0..2)
                .map(|_| {
                    let alive = Alive(tasks.clone());
                    thread::spawn(move || drop(alive))
                })
                .collect();
            block_on(tasks.idle());
            assert_eq!(tasks.live.load(Ordering::Acquire), 0);
            for end in ends {
                end.join().unwrap();
            }
        });
    }

    #[test]
    fn loom_cancel_reaches_a_task_waiting_on_another_thread() {
        loom::model(|| {
            let tasks = Arc::new(TaskSet::default());
            let waiting = tasks.clone();
            let task = thread::spawn(move || block_on(waiting.cancel.wait()));
            tasks.cancel();
            task.join().unwrap();
        });
    }
}
