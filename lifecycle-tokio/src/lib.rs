//! The tokio backend of [lifecycle](https://docs.rs/lifecycle): tasks with
//! `Handle::spawn`, timers from `tokio::time` (so tokio's paused clock is honoured), and
//! signals from `tokio::signal`, registered eagerly.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use lifecycle_core::App;
//! use lifecycle_tokio::TokioRuntime;
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! let report = runtime.block_on(async {
//!     let app = App::builder().build().unwrap();
//!     app.handle().shutdown(); // an empty app that is asked to stop at once
//!     app.run_on(Arc::new(TokioRuntime::new())).await.unwrap()
//! });
//! assert_eq!(report.exit_code(), 0);
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_core::Stream;
use lifecycle_core::runtime::{BoxFuture, Runtime, Signal, SignalStream};
use tokio::runtime::Handle;

/// [`Runtime`] on tokio. Holds a [`Handle`], so it can be used from any thread.
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    handle: Handle,
}

impl TokioRuntime {
    /// The runtime of the current tokio context.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime; use [`TokioRuntime::try_current`] to get an error instead.
    pub fn new() -> Self {
        Self::try_current().expect("TokioRuntime::new must be called inside a tokio runtime")
    }

    /// The runtime of the current tokio context, or an error outside one.
    ///
    /// # Errors
    ///
    /// When called outside a tokio runtime.
    pub fn try_current() -> io::Result<Self> {
        Handle::try_current()
            .map(Self::from_handle)
            .map_err(|error| io::Error::other(format!("not inside a tokio runtime: {error}")))
    }

    /// A runtime spawning onto `handle`.
    pub fn from_handle(handle: Handle) -> Self {
        TokioRuntime { handle }
    }
}

impl Default for TokioRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime for TokioRuntime {
    fn name(&self) -> &'static str {
        "tokio"
    }

    fn spawn(&self, future: BoxFuture<()>) {
        // The JoinHandle is dropped: the task is detached, as the engine expects.
        drop(self.handle.spawn(future));
    }

    /// A sleep on this runtime's timer, made from any thread: tokio's `sleep_until`
    /// takes the timer of the thread's runtime context, and panics outside one.
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        let _guard = self.handle.enter();
        Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
            deadline,
        )))
    }

    /// The clock of the calling thread's tokio runtime: tokio's paused clock (its
    /// `test-util`) on the runtime's threads, the real one elsewhere. (Entering the
    /// handle here would cost every reading; the engine reads it in its tasks.)
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    /// Registers `SIGTERM` and `SIGINT` (Ctrl-C on Windows). The engine calls this first,
    /// so it also checks that the runtime has the drivers the engine needs: a runtime
    /// built without `enable_io` or `enable_time` gives an error here, not a panic later.
    fn signals(&self) -> io::Result<SignalStream> {
        self.check_drivers()?;
        let _guard = self.handle.enter();
        let signals =
            std::panic::catch_unwind(Signals::register).map_err(|_| missing_driver("IO"))??;
        Ok(Box::pin(signals))
    }
}

impl TokioRuntime {
    /// Checks that the runtime has the time driver the engine's timeouts need, so that a
    /// runtime built without it gives an error before anything starts rather than a
    /// panic in the middle of a run. [`Runtime::signals`] calls it (and needs the IO
    /// driver as well, for tokio's signals).
    ///
    /// # Errors
    ///
    /// Says that the time driver is missing and to build the runtime with `enable_all()`.
    pub fn check_drivers(&self) -> io::Result<()> {
        let _guard = self.handle.enter();
        // tokio panics when a driver is missing; caught here to become an error.
        std::panic::catch_unwind(|| drop(tokio::time::sleep(std::time::Duration::ZERO)))
            .map_err(|_| missing_driver("time"))
    }
}

fn missing_driver(driver: &str) -> io::Error {
    io::Error::other(format!(
        "the tokio runtime was built without {driver}: build it with `enable_all()`"
    ))
}

/// Termination signals, registered when created (unlike `tokio::signal::ctrl_c`, which
/// registers on first poll).
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(windows)]
    ctrl_c: tokio::signal::windows::CtrlC,
}

impl Signals {
    #[cfg(unix)]
    fn register() -> io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    #[cfg(windows)]
    fn register() -> io::Result<Self> {
        Ok(Signals {
            ctrl_c: tokio::signal::windows::ctrl_c()?,
        })
    }
}

impl Stream for Signals {
    type Item = Signal;

    #[cfg(unix)]
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Signal>> {
        if let Poll::Ready(Some(())) = self.terminate.poll_recv(cx) {
            return Poll::Ready(Some(Signal::Terminate));
        }
        if let Poll::Ready(Some(())) = self.interrupt.poll_recv(cx) {
            return Poll::Ready(Some(Signal::Interrupt));
        }
        Poll::Pending
    }

    #[cfg(windows)]
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Signal>> {
        self.ctrl_c
            .poll_recv(cx)
            .map(|received| received.map(|()| Signal::Interrupt))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use lifecycle_core::runtime::Runtime;

    use super::TokioRuntime;

    #[test]
    fn a_sleep_and_a_timeout_are_made_and_awaited_outside_the_runtime() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let tokio: &dyn Runtime = &TokioRuntime::from_handle(runtime.handle().clone());
        // On this thread, which is in no runtime's context.
        let began = Instant::now();
        futures_executor::block_on(tokio.sleep_until(began + Duration::from_millis(20)));
        assert!(began.elapsed() >= Duration::from_millis(20));
        let never = std::future::pending::<()>();
        let timed_out = tokio.timeout(Duration::from_millis(20), never);
        assert!(futures_executor::block_on(timed_out).is_err());
    }
}
