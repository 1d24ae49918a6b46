//! What a handler's panic does, and hyper's HTTP/2 stream tasks as tracked tasks that
//! catch theirs.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::future::FutureExt;
use lifecycle_core::PanicCounter;

use super::listen::Tasks;

/// hyper's executor in an [`HttpServer`](super::HttpServer): it runs HTTP/2 streams as the
/// component's tracked tasks, each catching its own panic (the request and its body catch
/// theirs; any other is that stream's, never the component's). It appears only in the
/// type of [`HttpServer::hyper`](super::HttpServer::hyper)'s builder.
#[derive(Clone)]
pub struct Executor(pub(super) Tasks, pub(super) Panics);

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

impl<F> hyper::rt::Executor<F> for Executor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        let panics = self.1.clone();
        // A combinator, not an `async` block, which would hold the stream twice.
        let stream = AssertUnwindSafe(future).catch_unwind().map(move |ended| {
            if let Err(panic) = ended {
                panics.caught(panic, format_args!("an HTTP/2 stream"));
            }
        });
        self.0.spawn_unspanned(stream);
    }
}

/// What a panic caught in a request, its body or its connection does: it is logged and
/// counted, and fails only what it happened in; or, with
/// [`fail_on_panic`](HttpServer::fail_on_panic), it goes on unwinding, to fail the
/// component.
#[derive(Clone)]
pub(crate) struct Panics {
    pub(crate) counter: PanicCounter,
    pub(crate) fail: bool,
}

impl Panics {
    pub(super) fn caught(&self, panic: Box<dyn std::any::Any + Send>, what: fmt::Arguments<'_>) {
        if self.fail {
            std::panic::resume_unwind(panic);
        }
        self.counter.record();
        tracing::error!(
            panic = %panic_message(&*panic),
            "a handler panicked: {what} failed, the server serves on"
        );
    }
}

/// The message of a caught panic.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "a panic with a non-string payload"
    }
}
