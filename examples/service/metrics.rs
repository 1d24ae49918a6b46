//! `metrics`: the `metrics` crate with a Prometheus recorder. The probe server serves it
//! at `/metrics`; the flush writes a last snapshot to a file, so the counts of the drain
//! itself (the requests served after the last scrape) are not lost.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lifecycle::prelude::*;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// How often histograms are compacted.
const UPKEEP: Duration = Duration::from_secs(5);

pub struct Metrics {
    handle: PrometheusHandle,
    snapshot: PathBuf,
}

impl Metrics {
    /// Installs the global recorder; the snapshot goes to `snapshot` at flush.
    pub fn install(snapshot: &Path) -> io::Result<Metrics> {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(io::Error::other)?;
        Ok(Metrics {
            handle,
            snapshot: snapshot.to_owned(),
        })
    }

    /// Renders the metrics in Prometheus' text format, for `/metrics`.
    pub fn renderer(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let handle = self.handle.clone();
        move || handle.render()
    }
}

#[async_trait]
impl Component for Metrics {
    fn name(&self) -> &str {
        "metrics"
    }

    fn options(&self) -> Options {
        Options::new()
            .depends_on("logs")
            .stop_timeout(Duration::from_secs(1))
            .flush_timeout(Duration::from_millis(500))
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let (handle, runtime) = (self.handle.clone(), ctx.runtime().clone());
        ctx.spawn(async move {
            loop {
                runtime.sleep(UPKEEP).await;
                handle.run_upkeep();
            }
        });
        metrics::gauge!("service_up").set(1.0);
        Ok(())
    }

    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        metrics::gauge!("service_up").set(0.0);
        Ok(())
    }

    /// Writes the final snapshot: written to a temporary file and renamed, so a reader
    /// never sees half of it.
    async fn flush(&mut self, _: &StopContext) -> Result<(), BoxError> {
        let partial = self.snapshot.with_extension("prom.partial");
        std::fs::write(&partial, self.handle.render())?;
        std::fs::rename(&partial, &self.snapshot)?;
        tracing::info!(file = %self.snapshot.display(), "final metrics snapshot written");
        Ok(())
    }
}
