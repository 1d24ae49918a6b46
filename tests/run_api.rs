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

/// Blocking inside a tokio runtime would panic in tokio; it is an error naming the fix,
/// and nothing starts.
#[cfg(feature = "tokio")]
#[tokio::test]
async fn run_tokio_inside_a_tokio_runtime_is_an_error() {
    let counter = Arc::new(AtomicUsize::new(0));
    let error = app(&counter).run_tokio().unwrap_err();
    assert_eq!(
        error.to_string(),
        "could not create the async runtime: run() and run_tokio() block the thread and \
         cannot be called inside a tokio runtime: use `run_async().await` there"
    );
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
        error.to_string(),
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
