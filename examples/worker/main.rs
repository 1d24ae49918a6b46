//! A job queue in SQLite, worked by a pool of workers that shut down without losing or
//! repeating a job.
//!
//! Two components: `db` (a sqlx SQLite pool on `DIR/jobs.db`, WAL mode) and `workers`
//! (K loops, depending on `db`). A worker claims the oldest queued job in one atomic
//! `UPDATE ... RETURNING`, works on it (a sleep of `--job-ms`), and marks it done; that
//! update is the job's whole effect, so a job done twice would show `done_count = 2`.
//!
//! On SIGTERM or Ctrl-C the workers stop claiming at once; `workers`' stop lets the jobs
//! in progress finish until a little before its deadline, then puts back in the queue
//! (state `queued`) whatever is still unfinished, before `db` closes the pool. A job
//! left claimed by a process that could not release it (SIGKILL, a crash, an exit forced
//! by a second signal) is put back when the next one starts. That assumes one worker
//! process per database: a second process started on the same file would take the
//! first one's jobs in progress for abandoned ones.
//!
//! Try it:
//!
//! - `cargo run --example worker -- --enqueue 200`, then Ctrl-C halfway: the last log
//!   lines say `worker: completed N jobs, released 0` and the report; run
//!   `cargo run --example worker -- --exit-when-empty` to do the rest and exit;
//! - `LIFECYCLE_STOP_TIMEOUT=500ms cargo run --example worker -- --enqueue 20 --job-ms 5000`
//!   and Ctrl-C: the jobs in progress cannot finish in 500 ms, so they are released
//!   (`released 4`) and done by the next run;
//! - the same with `kill -KILL <pid>` instead: the next run releases the 4 jobs the dead
//!   process held, and does them;
//! - `RUST_LOG=info,worker=debug` logs every claim and completion;
//!   `LIFECYCLE_RUNTIME=tokio` with `--features tokio` runs it on tokio;
//! - inspect the queue: `sqlite3 data/jobs.db 'SELECT state, COUNT(*) FROM jobs GROUP BY 1'`.
//!
//! Logs (and the report) go to stdout; `--help` lists the flags.

mod db;
mod workers;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lifecycle::prelude::*;

use crate::db::Db;
use crate::workers::{Settings, Stats, Workers};

/// A job queue in SQLite (DIR/jobs.db), worked by K workers; SIGTERM or Ctrl-C stops
/// them gracefully: jobs in progress are finished, or put back in the queue.
///
/// Environment: RUST_LOG (default info), LIFECYCLE_RUNTIME=smol|tokio, and the
/// LIFECYCLE_* durations (LIFECYCLE_STOP_TIMEOUT=500ms, LIFECYCLE_SHUTDOWN_TIMEOUT=25s...).
#[derive(Debug, clap::Parser)]
#[command(name = "worker")]
struct Flags {
    /// Where jobs.db is kept; created if missing.
    #[arg(long, value_name = "DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Add N new jobs to the queue before starting.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    enqueue: u64,
    /// How many jobs to work on at a time.
    #[arg(long, value_name = "K", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    workers: u64,
    /// Simulated work per job, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    job_ms: u64,
    /// Shut down once no job is queued or claimed.
    #[arg(long)]
    exit_when_empty: bool,
    /// Crash a worker (holding a job) once N jobs are done; the workers restart and the
    /// job is released, not lost.
    #[arg(long, value_name = "N")]
    crash_after: Option<u64>,
}

impl Flags {
    fn settings(&self) -> Settings {
        Settings {
            workers: self.workers as usize,
            job: Duration::from_millis(self.job_ms),
            enqueue: self.enqueue,
            exit_when_empty: self.exit_when_empty,
            crash_after: self.crash_after,
        }
    }
}

fn main() -> Result<Report, lifecycle::Error> {
    // First: a SIGTERM from here on aborts the start instead of killing the process.
    lifecycle::signals::catch()?;
    // Bad flags exit 2 with clap's message naming them, before anything is created.
    let flags = <Flags as clap::Parser>::parse();

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stdout)
        .with_ansi(std::io::stdout().is_terminal())
        .init();

    if let Err(error) = std::fs::create_dir_all(&flags.data_dir) {
        tracing::error!(dir = %flags.data_dir.display(), "cannot create the data directory: {error}");
        process::exit(1);
    }
    // Workers spend most of their time working, not querying: a few connections serve
    // many workers. SQLite has one writer at a time anyway.
    let connections = (flags.workers as u32 + 1).min(8);
    let db = Db::new(flags.data_dir.join("jobs.db"), connections);
    let stats = Arc::new(Stats::default());
    let workers = Workers::new(flags.settings(), stats.clone());

    let report = App::builder()
        // The defaults (25 s budget, stops capped at 10 s), or LIFECYCLE_* variables.
        .config(Config::from_env()?)
        .add(db)
        .add(workers)
        .run()?;

    // The engine has logged the report; this run's share of the queue's work:
    tracing::info!(
        "completed {} jobs, released {}",
        stats.completed.load(Ordering::Relaxed),
        stats.released.load(Ordering::Relaxed)
    );
    // Returning the report makes its exit code the process's: 0 clean, 1 on a failure.
    Ok(report)
}
