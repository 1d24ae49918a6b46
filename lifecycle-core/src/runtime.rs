//! The seam between the engine and an async runtime.
//!
//! The engine never names an executor, a timer or a signal API. It holds an
//! `Arc<dyn Runtime>` and asks it for the four things it needs: spawning detached
//! tasks, sleeping until an instant, reading the clock, and a stream of termination
//! signals. `lifecycle-smol` and `lifecycle-tokio` implement it in about a hundred lines
//! each; a test can implement it to run on a virtual clock or inject signals.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;

/// A boxed, `Send` future, as the [`Runtime`] trait passes them around.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A stream of termination signals, as returned by [`Runtime::signals`].
pub type SignalStream = Pin<Box<dyn Stream<Item = Signal> + Send + 'static>>;

/// What the engine needs from an async runtime.
///
/// Object safe: the engine holds an `Arc<dyn Runtime>`. Implementations exist for smol
/// (`lifecycle_smol::SmolRuntime`) and tokio (`lifecycle_tokio::TokioRuntime`).
///
/// # Examples
///
/// A runtime of plain threads (one per task and per timer: a toy, but a whole one), on
/// which an app runs:
///
/// ```
/// use std::sync::Arc;
/// use std::time::Instant;
/// use lifecycle_core::runtime::{BoxFuture, Runtime, SignalStream};
/// use lifecycle_core::App;
///
/// #[derive(Debug)]
/// struct Threads;
///
/// impl Runtime for Threads {
///     fn spawn(&self, future: BoxFuture<()>) {
///         std::thread::spawn(move || futures_executor::block_on(future));
///     }
///
///     fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
///         let (wake, woken) = futures_channel::oneshot::channel::<()>();
///         std::thread::spawn(move || {
///             std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
///             let _ = wake.send(());
///         });
///         Box::pin(async move {
///             let _ = woken.await;
///         })
///     }
///
///     fn signals(&self) -> std::io::Result<SignalStream> {
///         Ok(Box::pin(futures_util::stream::pending())) // a test injects none
///     }
/// }
///
/// let app = App::builder().build()?;
/// app.handle().shutdown();
/// let report = futures_executor::block_on(app.run_on(Arc::new(Threads)))?;
/// assert_eq!(report.exit_code(), 0);
/// # Ok::<(), lifecycle_core::Error>(())
/// ```
pub trait Runtime: Send + Sync + fmt::Debug + 'static {
    /// Runs `future` to completion in the background.
    ///
    /// The task is detached: the engine tracks completion itself, so the runtime must
    /// not cancel the task when it forgets about it (a smol `Task` must be detached,
    /// not dropped).
    fn spawn(&self, future: BoxFuture<()>);

    /// Returns a future that completes at `deadline` (at once if it has passed).
    ///
    /// It may be called from any thread, outside any task of the runtime, and the future
    /// polled later: a timeout ([`timeout_at`](#method.timeout_at), the contexts'
    /// `until_deadline`) makes its sleep when it is made. (tokio's `sleep_until` takes the
    /// timer of the calling thread's runtime: enter the runtime's handle first, as
    /// `lifecycle_tokio::TokioRuntime` does.)
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()>;

    /// The current instant on this runtime's clock.
    ///
    /// Overridable so that a runtime with a virtual clock (tokio's paused time, a test
    /// runtime) keeps every deadline the engine computes on that clock.
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// Registers the termination signals (SIGTERM and SIGINT on Unix, Ctrl-C on Windows)
    /// and returns a stream that yields each one received from now on.
    ///
    /// The engine calls this once, before the first component starts; registration must
    /// happen inside this call, not lazily on first poll.
    ///
    /// # Errors
    ///
    /// Returns the operating system's error when the handlers cannot be installed.
    fn signals(&self) -> io::Result<SignalStream>;

    /// The runtime's name, for messages that depend on it: a start that fails because a
    /// library needs another runtime (tokio's "there is no reactor running") says which
    /// one the app runs on. `"smol"` and `"tokio"` for lifecycle's backends.
    fn name(&self) -> &'static str {
        "custom"
    }
}

impl dyn Runtime {
    /// Returns a future that completes after `duration` on this runtime's clock (never,
    /// for a duration past what the clock can count).
    pub fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        match self.now().checked_add(duration) {
            Some(deadline) => self.sleep_until(deadline),
            None => Box::pin(std::future::pending()),
        }
    }

    /// Runs `future` until it completes or `deadline` passes on this runtime's clock,
    /// whichever comes first; on the deadline the future is dropped (cancelled) and
    /// [`Elapsed`] returned. The future is polled before the timer, so one that is ready
    /// is never reported as timed out. The contexts' `until_deadline` is this with the
    /// hook's deadline.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use std::time::Duration;
    /// # use lifecycle_core::runtime::Runtime;
    /// # async fn example(runtime: Arc<dyn Runtime>) {
    /// let slow = runtime.sleep(Duration::from_secs(60));
    /// assert!(runtime.timeout(Duration::from_millis(1), slow).await.is_err());
    /// # }
    /// ```
    pub fn timeout_at<F: Future>(&self, deadline: Instant, future: F) -> Timeout<F> {
        timeout_at(self, deadline, future)
    }

    /// [`timeout_at`](#method.timeout_at) `duration` from now (no timeout, for a duration
    /// past what the clock can count).
    pub fn timeout<F: Future>(&self, duration: Duration, future: F) -> Timeout<F> {
        Timeout::new(future, self.sleep(duration))
    }
}

/// A signal received by the process: `Terminate` and `Interrupt` trigger the shutdown,
/// `Hangup` a reload (when [`Config::reload_on_sighup`](crate::Config::reload_on_sighup)
/// is on; otherwise it is ignored, and never forces an exit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// `SIGTERM`: what Kubernetes, systemd and `kill` send.
    Terminate,
    /// `SIGINT`: Ctrl-C in a terminal (also Ctrl-C on Windows).
    Interrupt,
    /// `SIGHUP`: what `systemctl reload` and `kill -HUP` send to reload the configuration.
    Hangup,
}

impl Signal {
    /// The conventional Unix signal number (15 for `SIGTERM`, 2 for `SIGINT`, 1 for
    /// `SIGHUP`).
    ///
    /// The exit code of a process forced down by a second signal is `128 + number()`.
    pub fn number(self) -> i32 {
        match self {
            Signal::Terminate => 15,
            Signal::Interrupt => 2,
            Signal::Hangup => 1,
        }
    }

    /// The signal's name, `"SIGTERM"`, `"SIGINT"` or `"SIGHUP"`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
            Signal::Hangup => "SIGHUP",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of a timeout (`Runtime::timeout_at`, the contexts' `until_deadline`): the
/// deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// Runs `future` until it completes or `deadline` passes, whichever comes first; on the
/// deadline the future is dropped (cancelled). The future is polled before the timer, so
/// one that is ready is never reported as timed out.
pub(crate) fn timeout_at<F: Future>(
    runtime: &dyn Runtime,
    deadline: Instant,
    future: F,
) -> Timeout<F> {
    Timeout::new(future, runtime.sleep_until(deadline))
}

pin_project_lite::pin_project! {
    /// The future of [`Runtime::timeout_at`] and of the contexts' `until_deadline`: the
    /// given future's output, or [`Elapsed`] once the deadline passed first, the given
    /// future then dropped. It holds the given future once, next to the runtime's sleep
    /// (made with it: see [`Runtime::sleep_until`]): written out, not as an `async`
    /// block, which would keep its argument beside the future it awaits.
    ///
    /// # Panics
    ///
    /// When polled again after it completed.
    #[must_use = "a timeout does nothing unless awaited"]
    pub struct Timeout<F> {
        #[pin]
        future: Option<F>,
        sleep: BoxFuture<()>,
    }
}

impl<F> Timeout<F> {
    fn new(future: F, sleep: BoxFuture<()>) -> Self {
        Timeout {
            future: Some(future),
            sleep,
        }
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout").finish_non_exhaustive()
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let future = this
            .future
            .as_mut()
            .as_pin_mut()
            .expect("a `Timeout` polled after it completed");
        let ended = match future.poll(cx) {
            Poll::Ready(output) => Ok(output),
            Poll::Pending if this.sleep.as_mut().poll(cx).is_ready() => Err(Elapsed),
            Poll::Pending => return Poll::Pending,
        };
        // At the deadline, the future is dropped now, not with the `Timeout`.
        this.future.set(None);
        Poll::Ready(ended)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{BoxFuture, Runtime, SignalStream};

    /// A runtime whose sleeps end at once or never, as their deadline has passed or not.
    #[derive(Debug)]
    struct Now;

    impl Runtime for Now {
        fn spawn(&self, _: BoxFuture<()>) {}

        fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
            if deadline <= Instant::now() {
                Box::pin(std::future::ready(()))
            } else {
                Box::pin(std::future::pending())
            }
        }

        fn signals(&self) -> std::io::Result<SignalStream> {
            Ok(Box::pin(futures_util::stream::pending()))
        }
    }

    #[test]
    fn a_timeout_holds_its_future_once_and_polls_it_before_the_timer() {
        let runtime: &dyn Runtime = &Now;
        let large = async {
            let buffer = [7u8; 16 * 1024];
            std::future::ready(()).await;
            buffer[100]
        };
        let size = std::mem::size_of_val(&large);
        let timeout = runtime.timeout(Duration::from_secs(60), large);
        assert!(
            std::mem::size_of_val(&timeout) < size + 64,
            "{} bytes for a {size}-byte future",
            std::mem::size_of_val(&timeout)
        );
        assert_eq!(futures_executor::block_on(timeout), Ok(7));
        // A deadline passed: a ready future still gives its output, a pending one `Elapsed`.
        let passed = Instant::now();
        let ready = runtime.timeout_at(passed, std::future::ready(1));
        assert_eq!(futures_executor::block_on(ready), Ok(1));
        let pending = runtime.timeout_at(passed, std::future::pending::<()>());
        assert_eq!(futures_executor::block_on(pending), Err(super::Elapsed));
        // At the deadline the future is dropped, the `Timeout` still alive.
        struct Dropped(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = Dropped(dropped.clone());
        let hanging = async move {
            let _held = held;
            std::future::pending::<()>().await;
        };
        let mut timeout = std::pin::pin!(runtime.timeout_at(passed, hanging));
        assert_eq!(
            futures_executor::block_on(timeout.as_mut()),
            Err(super::Elapsed)
        );
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
        // A duration past what the clock counts: no timeout.
        let forever = runtime.timeout(Duration::MAX, std::future::ready(2));
        assert_eq!(futures_executor::block_on(forever), Ok(2));
    }
}
