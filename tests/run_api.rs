//! The entry points: `run`, `run_tokio`, and `run_async` inside a runtime the user
//! already has.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lifecycle::prelude::*;

/// Counts its starts and stops, and asks the app to stop once it has started.
struct StopsItself(Arc<AtomicUsize>);

#[async_trait]
impl Component for StopsItself {
    fn name(&self) -> &str {
        "stops-itself"
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let handle = ctx.shutdown_handle();
        let runtime = ctx.runtime().clone();
        ctx.spawn(async move {
            runtime.sleep(std::time::Duration::from_millis(20)).await;
            handle.shutdown();
        });
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        self.0.fetch_add(10, Ordering::SeqCst);
        Ok(())
    }
}

fn app(counter: &Arc<AtomicUsize>) -> Builder {
    App::builder().add(StopsItself(counter.clone()))
}

use lifecycle::Builder;

#[test]
fn run_blocks_on_smol_until_exit() {
    let counter = Arc::new(AtomicUsize::new(0));
    let report = app(&counter).run().unwrap();
    assert_eq!(report.exit_code(), 0);
    assert_eq!(
        counter.load(Ordering::SeqCst),
        11,
        "started once and stopped once"
    );
}

#[test]
fn run_async_inside_smol() {
    let counter = Arc::new(AtomicUsize::new(0));
    let report = smol::block_on(app(&counter).run_async()).unwrap();
    assert_eq!(report.exit_code(), 0);
    assert_eq!(counter.load(Ordering::SeqCst), 11);
}

#[cfg(feature = "tokio")]
#[test]
fn run_tokio_blocks_until_exit() {
    let counter = Arc::new(AtomicUsize::new(0));
    let report = app(&counter).run_tokio().unwrap();
    assert_eq!(report.exit_code(), 0);
    assert_eq!(counter.load(Ordering::SeqCst), 11);
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn run_async_inside_tokio_main() {
    let counter = Arc::new(AtomicUsize::new(0));
    // Spawnable: the run future is Send.
    let report = tokio::spawn(app(&counter).run_async())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.exit_code(), 0);
    assert_eq!(counter.load(Ordering::SeqCst), 11);
}

/// Records whether its start ran inside a tokio runtime.
struct WhichRuntime(Arc<AtomicUsize>);

#[async_trait]
impl Component for WhichRuntime {
    fn name(&self) -> &str {
        "which-runtime"
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        #[cfg(feature = "tokio")]
        let on_tokio = tokio::runtime::Handle::try_current().is_ok();
        #[cfg(not(feature = "tokio"))]
        let on_tokio = false;
        self.0.store(1 + usize::from(on_tokio), Ordering::SeqCst);
        ctx.shutdown_handle().shutdown();
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
}

/// `run()` runs on smol whatever features are compiled in (a dependency enabling
/// `tokio` does not move the app), unless `LIFECYCLE_RUNTIME` says tokio.
#[test]
fn run_picks_the_documented_runtime() {
    let seen = Arc::new(AtomicUsize::new(0));
    let report = App::builder()
        .add(WhichRuntime(seen.clone()))
        .run()
        .unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
    let expected_tokio = match std::env::var("LIFECYCLE_RUNTIME").as_deref() {
        Ok("smol") => false,
        Ok("tokio") => true,
        _ => false,
    };
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1 + usize::from(expected_tokio),
        "1: started on smol, 2: on tokio"
    );
}

/// Blocking inside a tokio runtime would panic in tokio (or block a worker, for smol's
/// `run()`); it is its own error kind, naming the fix, and nothing starts.
#[cfg(feature = "tokio")]
#[tokio::test]
async fn blocking_entry_points_inside_a_tokio_runtime_are_an_error() {
    let counter = Arc::new(AtomicUsize::new(0));
    let mut errors = vec![app(&counter).run_tokio().unwrap_err()];
    #[cfg(feature = "smol")]
    errors.push(app(&counter).run().unwrap_err());
    for error in errors {
        assert!(
            matches!(error, lifecycle::Error::InsideRuntime(_)),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "run() and run_tokio() block the thread, and were called inside a tokio runtime \
             (`#[tokio::main]`?): call `run_async().await` there, or drop `#[tokio::main]` and \
             call `run_tokio()` from a plain `fn main`"
        );
    }
    assert_eq!(counter.load(Ordering::SeqCst), 0);
}

/// A tokio runtime without timers is refused before anything starts, rather than
/// panicking in the middle of a run; one without IO runs an app that opens no socket
/// (signals come from `lifecycle::signals`, not from tokio's IO driver).
#[cfg(feature = "tokio")]
#[test]
fn run_async_on_a_tokio_runtime_without_timers_is_an_error() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let counter = Arc::new(AtomicUsize::new(0));
    let error = runtime.block_on(app(&counter).run_async()).unwrap_err();
    assert_eq!(
        format!("{error:?}"),
        "could not register signal handlers: the tokio runtime was built without time: \
         build it with `enable_all()`"
    );
    assert_eq!(counter.load(Ordering::SeqCst), 0, "nothing started");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let report = runtime.block_on(app(&counter).run_async()).unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}

/// A library that needs tokio, started by an app on smol (the runtime trap): the start
/// fails, and its message says which runtime the app is on and how to switch. The same app
/// on tokio runs.
#[cfg(all(feature = "smol", feature = "tokio"))]
#[test]
fn a_tokio_library_on_smol_says_how_to_switch() {
    struct NeedsTokio;

    #[async_trait]
    impl Component for NeedsTokio {
        fn name(&self) -> &str {
            "db"
        }
        async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
            // What a tokio-only client does when it connects.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            ctx.shutdown_handle().shutdown();
            Ok(())
        }
        async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
            Ok(())
        }
    }

    let report = App::builder().add(NeedsTokio).run().unwrap();
    assert_eq!(report.exit_code(), 1, "{report}");
    let failure = &report.failures()[0];
    assert!(failure.starts_with("start of db panicked"), "{failure}");
    assert!(
        failure.contains("this app runs on smol")
            && failure.contains("`tokio` feature")
            && failure.contains("run_tokio()"),
        "{failure}"
    );
    let report = App::builder().add(NeedsTokio).run_tokio().unwrap();
    assert_eq!(report.exit_code(), 0, "{report}");
}
