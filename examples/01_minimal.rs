//! The smallest app: two components, one depending on the other.
//!
//! `ticker` starts first and spawns a tracked task that prints a tick every second;
//! `greeter` depends on it, so it starts second and stops first. Run it with
//! `cargo run --example 01_minimal` (smol; `LIFECYCLE_RUNTIME=tokio` with `--features
//! tokio` for tokio), watch a few ticks, then press Ctrl-C (or `kill -TERM` the process): `greeter`
//! stops, then `ticker`, whose task is cancelled, and the report is logged to stderr.
//! The process exits with the report's exit code, 0 after a clean shutdown (press Ctrl-C
//! twice quickly to see 130).

use std::io::IsTerminal;
use std::time::Duration;

use lifecycle::prelude::*;

/// Prints a tick every second from a tracked task, until it is stopped.
struct Ticker;

#[async_trait]
impl Component for Ticker {
    fn name(&self) -> &str {
        "ticker"
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        let runtime = ctx.runtime().clone();
        // Long-running work goes to a tracked task: the engine cancels it once `ticker`
        // has stopped, and would shut the app down if it failed or panicked.
        ctx.spawn(async move {
            let mut tick = 0u64;
            loop {
                runtime.sleep(Duration::from_secs(1)).await;
                tick += 1;
                println!("tick {tick}");
            }
        });
        Ok(())
    }

    async fn stop(&mut self, _ctx: &StopContext) -> Result<(), BoxError> {
        println!("ticker stopped");
        Ok(())
    }
}

/// Says hello once `ticker` runs, and goodbye before it stops.
struct Greeter;

#[async_trait]
impl Component for Greeter {
    fn name(&self) -> &str {
        "greeter"
    }

    fn options(&self) -> Options {
        Options::new().depends_on("ticker")
    }

    async fn start(&mut self, _ctx: &StartContext) -> Result<(), BoxError> {
        println!("hello (press Ctrl-C to stop)");
        Ok(())
    }

    async fn stop(&mut self, _ctx: &StopContext) -> Result<(), BoxError> {
        println!("goodbye");
        Ok(())
    }
}

fn main() -> Result<Report, lifecycle::Error> {
    // First, before any setup: a signal from here on is handled, never fatal.
    lifecycle::signals::catch()?;
    // Logs (and the report the engine logs at exit) go to stderr; RUST_LOG overrides
    // the level.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    // `Report` implements `Termination`: returning it sets the exit code.
    App::builder().add(Ticker).add(Greeter).run()
}
