//! Tracked tasks: long-running work a component spawns through its context, so the
//! engine cancels it on stop and notices when it fails or panics.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_channel::mpsc::UnboundedSender;
use futures_channel::oneshot;
use futures_util::future::CatchUnwind;
use futures_util::{ready, FutureExt};
use tracing::Instrument;

use crate::engine::Notice;
use crate::error::{error_chain, panic_message, BoxError};
use crate::report::Outcome;
use crate::runtime::Runtime;
use crate::sync::{wait_until, AtomicUsize, Event, Flag, FlagWaitOn, Ordering};

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
/// A tracked task runs inside its component's `task` tracing span. A task that returns
/// an error or panics while the app runs triggers shutdown, naming the component. When
/// the component has stopped (or its stop timed out), its remaining tracked tasks are
/// cancelled: dropped at their next wake-up. Tasks spawned after that are dropped
/// without being polled. When the app's run future is dropped, every tracked task is
/// cancelled the same way.
#[derive(Debug, Clone)]
pub struct Spawner {
    /// One allocation for what every clone shares: a clone is one reference count.
    pub(crate) shared: Arc<SpawnerShared>,
    /// Whether this is the start's own spawner: the end of its tasks restarts a component
    /// whose policy is [`Restart::always`](crate::Restart::always).
    pub(crate) main: bool,
}

/// What the clones of a [`Spawner`] share.
#[derive(Debug)]
pub(crate) struct SpawnerShared {
    pub(crate) node: usize,
    pub(crate) name: Arc<str>,
    pub(crate) tasks: Arc<TaskSet>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) notices: UnboundedSender<Notice>,
}

impl Spawner {
    /// Spawns `task` on the app's runtime, tracked under this component. A panic in it
    /// triggers shutdown. For a task that can fail, see [`spawn_fallible`](Self::spawn_fallible).
    ///
    /// The returned [`Task`] can be awaited or aborted; dropping it detaches the task.
    pub fn spawn<F>(&self, task: F) -> Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // A map, not an `async` block: see [`Tracked`].
        self.spawn_fallible(task.map(Ok::<(), BoxError>))
    }

    /// Spawns `task` on the app's runtime, tracked under this component. An error it
    /// returns, or a panic, triggers shutdown naming this component (and is what the
    /// returned [`Task`] resolves to).
    pub fn spawn_fallible<F, E>(&self, task: F) -> Task
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        // A root: see the module `telemetry`.
        let span = tracing::info_span!(parent: None, "task", component = %self.shared.name);
        self.spawn_in(span, task)
    }

    /// As [`spawn_fallible`](Self::spawn_fallible), with the task inside `span` instead
    /// of its own root span `task{component}`: a span of your own for the task (a job's,
    /// a connection's), or [`Span::none()`](tracing::Span::none) for a task whose work has
    /// its own root spans (the HTTP component's HTTP/2 streams, each a `request`).
    ///
    /// ```
    /// # use lifecycle_core::{BoxError, StartContext};
    /// # fn start(ctx: &StartContext) {
    /// let span = tracing::info_span!(parent: None, "import", file = "orders.csv");
    /// ctx.helper_spawner()
    ///     .spawn_in(span, async { Ok::<(), BoxError>(()) });
    /// # }
    /// ```
    pub fn spawn_in<F, E>(&self, span: tracing::Span, task: F) -> Task
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let (ended, result) = oneshot::channel();
        let aborted = Arc::new(Flag::default());
        let handle = Task {
            result,
            aborted: aborted.clone(),
        };
        let shared = &*self.shared;
        if shared.tasks.cancel.is_set() {
            handle.abort();
            return handle;
        }
        shared.tasks.live.fetch_add(1, Ordering::AcqRel);
        let tracked = Tracked {
            task: Running::Yes {
                task: AssertUnwindSafe(task).catch_unwind(),
            },
            cancelled: Cancelled {
                component: FlagWaitOn::new(CancelOf(shared.tasks.clone())),
                task: FlagWaitOn::new(aborted),
            },
            end: Some(End {
                alive: Alive(shared.tasks.clone()),
                ended,
                notices: shared.notices.clone(),
                node: shared.node,
                main: self.main,
            }),
        };
        // A span no subscriber wants is not entered at each poll (a connection is
        // polled at every request).
        if span.is_disabled() {
            shared.runtime.spawn(Box::pin(tracked));
        } else {
            shared.runtime.spawn(Box::pin(tracked.instrument(span)));
        }
        handle
    }
}

pin_project_lite::pin_project! {
    /// A tracked task's future: `task`, dropped at its first wake-up once its component
    /// cancels its tasks or it is aborted; then how it ended, sent to its [`Task`] and
    /// (an error, a panic, or the end of a main task) to the engine.
    ///
    /// Written out, not as an `async` block: a block holds what it captured for as long
    /// as it lives, so one that awaits a future it captured holds that future twice, and
    /// each such wrapper doubles a task's memory. The HTTP server's connections are
    /// kilobytes each, ten thousand at a time.
    struct Tracked<F> {
        // First: a task the runtime drops unfinished is dropped before its `Task` hears
        // of it and before the live count falls (fields drop in this order).
        #[pin]
        task: Running<F>,
        cancelled: Cancelled,
        end: Option<End>,
    }
}

pin_project_lite::pin_project! {
    /// The task until it ends; dropped in place then, before anyone learns that it ended.
    #[project = RunningProj]
    enum Running<F> {
        Yes { #[pin] task: CatchUnwind<AssertUnwindSafe<F>> },
        Ended,
    }
}

/// What a tracked task tells when it ends; dropped unsent (its `Task` then says
/// cancelled) if the runtime drops the task first. `alive` goes last.
struct End {
    ended: oneshot::Sender<Result<(), TaskError>>,
    notices: UnboundedSender<Notice>,
    node: usize,
    main: bool,
    alive: Alive,
}

impl End {
    fn send(self, outcome: Result<(), TaskError>) {
        let tasks = &self.alive.0;
        let notice = match &outcome {
            Err(TaskError::Cancelled) => None,
            Ok(()) if !self.main => None,
            Ok(()) => Some(Notice::TaskEnded {
                node: self.node,
                tasks: tasks.clone(),
            }),
            Err(TaskError::Failed(error)) => Some(Notice::TaskFailed {
                node: self.node,
                tasks: tasks.clone(),
                outcome: Outcome::Failed(error_chain(&**error)),
            }),
            Err(TaskError::Panicked(panic)) => Some(Notice::TaskFailed {
                node: self.node,
                tasks: tasks.clone(),
                outcome: Outcome::Panicked(panic.clone()),
            }),
        };
        let _ = self.ended.send(outcome);
        drop(self.alive);
        if let Some(notice) = notice {
            let _ = self.notices.unbounded_send(notice);
        }
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let outcome = if Pin::new(&mut *this.cancelled).poll(cx).is_ready() {
            Err(TaskError::Cancelled)
        } else {
            let RunningProj::Yes { task } = this.task.as_mut().project() else {
                return Poll::Ready(()); // polled after its end
            };
            match ready!(task.poll(cx)) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(TaskError::Failed(Arc::from(error.into()))),
                Err(panic) => Err(TaskError::Panicked(panic_message(&*panic))),
            }
        };
        this.task.set(Running::Ended);
        if let Some(end) = this.end.take() {
            end.send(outcome);
        }
        Poll::Ready(())
    }
}

/// Completes once the task's component cancels its tasks or the task is aborted. Each
/// is a flag: polled again with the same waker, two loads (a tracked task polls this at
/// each of its wake-ups).
struct Cancelled {
    component: FlagWaitOn<CancelOf>,
    task: FlagWaitOn<Arc<Flag>>,
}

impl Future for Cancelled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Pin::new(&mut self.component).poll(cx).is_ready() {
            return Poll::Ready(());
        }
        Pin::new(&mut self.task).poll(cx)
    }
}

/// The cancel flag of a component's tasks, held by each of them.
struct CancelOf(Arc<TaskSet>);

impl std::ops::Deref for CancelOf {
    type Target = Flag;

    fn deref(&self) -> &Flag {
        &self.0.cancel
    }
}

/// A tracked task, as [`Spawner::spawn`] returns it: await it for how it ended, or
/// [`abort`](Task::abort) it.
///
/// Dropping a `Task` detaches it: the task goes on, still tracked by its component (it
/// is cancelled when the component stops, as every tracked task is).
///
/// # Examples
///
/// ```
/// # use lifecycle_core::{BoxError, StartContext, StopContext, Task};
/// # struct Worker { task: Option<Task> }
/// # impl Worker {
/// async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
///     let token = ctx.shutdown_token();
///     self.task = Some(ctx.spawn(async move {
///         while !token.is_triggered() {
///             // take a job, do it
/// #           break;
///         }
///     }));
///     Ok(())
/// }
///
/// async fn stop(&mut self, ctx: &StopContext) -> Result<(), BoxError> {
///     // The loop ends its current job once shutdown has begun: wait for it, until the deadline.
///     if let Some(task) = self.task.take() {
///         ctx.until_deadline(task).await??;
///     }
///     Ok(())
/// }
/// # }
/// ```
///
/// # Cancellation safety
///
/// Awaiting a `Task` can be dropped and resumed with no effect on the task.
#[derive(Debug)]
pub struct Task {
    result: oneshot::Receiver<Result<(), TaskError>>,
    aborted: Arc<Flag>,
}

impl Task {
    /// Cancels the task: it is dropped at its next wake-up (at once if it has not been
    /// polled yet), and awaiting it gives [`TaskError::Cancelled`]. Nothing is reported:
    /// an aborted task is not a failure. Does nothing if the task has ended.
    pub fn abort(&self) {
        self.aborted.set();
    }
}

impl Future for Task {
    type Output = Result<(), TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // A sender dropped without a word: the runtime dropped the task.
        Pin::new(&mut self.result)
            .poll(cx)
            .map(|ended| ended.unwrap_or(Err(TaskError::Cancelled)))
    }
}

/// How a tracked [`Task`] ended, when not by completing.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task returned this error (it also triggered shutdown, naming its component):
    /// the task's own, which `downcast_ref` gets back.
    #[error("task failed")]
    Failed(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The task panicked (it also triggered shutdown, naming its component).
    #[error("task panicked: {0}")]
    Panicked(String),
    /// The task was cancelled: [`Task::abort`], its component's stop, or the end of the app.
    #[error("task cancelled")]
    Cancelled,
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use futures_channel::mpsc;

    use super::{Spawner, SpawnerShared};
    use crate::runtime::{BoxFuture, Runtime, SignalStream};

    /// Keeps the size of each future it is given to run, and drops it unpolled.
    #[derive(Debug, Default)]
    struct Sizes(Mutex<Vec<usize>>);

    impl Runtime for Sizes {
        fn spawn(&self, future: BoxFuture<()>) {
            self.0.lock().unwrap().push(std::mem::size_of_val(&*future));
        }

        fn sleep_until(&self, _: Instant) -> BoxFuture<()> {
            Box::pin(std::future::pending())
        }

        fn signals(&self) -> std::io::Result<SignalStream> {
            Ok(Box::pin(futures_util::stream::pending()))
        }
    }

    #[test]
    fn a_tracked_task_holds_its_future_once() {
        let runtime = Arc::new(Sizes::default());
        let (notices, _ignored) = mpsc::unbounded();
        let spawner = Spawner {
            main: false,
            shared: Arc::new(SpawnerShared {
                node: 0,
                name: "worker".into(),
                tasks: Arc::default(),
                runtime: runtime.clone(),
                notices,
            }),
        };
        const HELD: usize = 16 * 1024;
        let task = async {
            let buffer = [7u8; HELD];
            std::future::ready(()).await;
            std::hint::black_box(&buffer);
        };
        let own = std::mem::size_of_val(&task);
        assert!(own >= HELD);
        drop(spawner.spawn(task));
        let spawned = runtime.0.lock().unwrap()[0];
        assert!(
            spawned < own + 1024,
            "a task of {own} bytes is a future of {spawned}"
        );
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
