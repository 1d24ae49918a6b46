//! The entry points: `run_smol`, `run_tokio`, and `run_async` inside a runtime the user
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
fn run_smol_blocks_until_exit() {
    let counter = Arc::new(AtomicUsize::new(0));
    let report = app(&counter).run_smol().unwrap();
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
