//! A tracked task logs inside its component's span (`task{component=...}`), on each
//! runtime, so a worker's lines name the worker like its hooks' lines do.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lifecycle::prelude::*;

/// Collects what the fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Ticker(&'static str);

#[async_trait]
impl Component for Ticker {
    fn name(&self) -> &str {
        self.0
    }
    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let handle = ctx.shutdown_handle();
        let runtime = ctx.runtime().clone();
        ctx.spawn(async move {
            runtime.sleep(Duration::from_millis(5)).await;
            tracing::info!("tick from the task");
            handle.shutdown();
        });
        Ok(())
    }
    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }
}

#[test]
fn tracked_tasks_log_in_their_components_span() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    #[allow(unused_mut)] // tokio adds a run when compiled in
    let mut runs = vec![("smol", App::builder().add(Ticker("on-smol")).run())];
    #[cfg(feature = "tokio")]
    runs.push(("tokio", App::builder().add(Ticker("on-tokio")).run_tokio()));
    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for (runtime, report) in runs {
        assert_eq!(report.unwrap().exit_code(), 0);
        let line = output
            .lines()
            .find(|line| {
                line.contains(&format!("on-{runtime}")) && line.contains("tick from the task")
            })
            .unwrap_or_else(|| panic!("no tick line of on-{runtime}:\n{output}"));
        assert!(
            line.contains(&format!("task{{component=on-{runtime}}}")),
            "{line}"
        );
    }
}
