//! The smol backend of [lifecycle](https://docs.rs/lifecycle): tasks on smol's global
//! executor, timers from async-io, signals from async-signal.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use lifecycle_core::{App, Runtime};
//! use lifecycle_smol::SmolRuntime;
//!
//! let app = App::builder().build().unwrap();
//! let handle = app.handle();
//! handle.shutdown(); // an empty app that is asked to stop at once
//! let report = smol::block_on(app.run_on(Arc::new(SmolRuntime::new()))).unwrap();
//! assert_eq!(report.exit_code(), 0);
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

use std::io;
use std::time::Instant;

use futures_core::Stream;
use lifecycle_core::runtime::{BoxFuture, Runtime, Signal, SignalStream};

/// [`Runtime`] on smol: spawns on smol's global executor (detached), sleeps with
/// [`async_io::Timer`], receives signals through [`async_signal`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolRuntime {
    _private: (),
}

impl SmolRuntime {
    /// The smol runtime. Works inside any executor: async-io drives its own reactor.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Runtime for SmolRuntime {
    fn name(&self) -> &'static str {
        "smol"
    }

    fn spawn(&self, future: BoxFuture<()>) {
        smol::spawn(future).detach();
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(async move {
            async_io::Timer::at(deadline).await;
        })
    }

    fn signals(&self) -> io::Result<SignalStream> {
        #[cfg(unix)]
        let signals =
            async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])?;
        #[cfg(windows)]
        let signals = async_signal::Signals::new([async_signal::Signal::Int])?;
        Ok(Box::pin(SignalsStream(signals)))
    }
}

/// Maps async-signal's stream to [`Signal`]s. An interrupted read of its pipe is retried;
/// any other error will not go away (the pipe is broken), so it ends the stream, logged,
/// instead of being retried in a loop that would never yield.
struct SignalsStream<S>(S);

impl<S> Stream for SignalsStream<S>
where
    S: Stream<Item = io::Result<async_signal::Signal>> + Unpin,
{
    type Item = Signal;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Signal>> {
        use std::task::Poll;
        loop {
            return match std::pin::Pin::new(&mut self.0).poll_next(cx) {
                Poll::Ready(Some(Ok(async_signal::Signal::Term))) => {
                    Poll::Ready(Some(Signal::Terminate))
                }
                Poll::Ready(Some(Ok(_))) => Poll::Ready(Some(Signal::Interrupt)),
                Poll::Ready(Some(Err(error))) if error.kind() == io::ErrorKind::Interrupted => {
                    continue
                }
                Poll::Ready(Some(Err(error))) => {
                    tracing::error!(%error, "cannot read signals any more: SIGTERM and SIGINT are no longer seen");
                    Poll::Ready(None)
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

/// Runs `future` to completion on the current thread, as `smol::block_on` does.
pub fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    smol::block_on(future)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::stream::StreamExt;

    /// A pipe that fails for good ends the stream at once; an interrupted read is retried.
    #[test]
    fn a_broken_signal_pipe_ends_the_stream_instead_of_spinning() {
        let reads = smol::stream::iter([
            Err(io::Error::from(io::ErrorKind::Interrupted)),
            Ok(async_signal::Signal::Term),
        ])
        .chain(smol::stream::repeat_with(|| {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }));
        let mut signals = SignalsStream(reads);
        smol::block_on(async {
            assert_eq!(signals.next().await, Some(Signal::Terminate));
            assert_eq!(signals.next().await, None);
        });
    }
}
