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

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lifecycle::prelude::*;

use crate::db::Db;
use crate::workers::{Settings, Stats, Workers};

const USAGE: &str = "\
Usage: worker [OPTIONS]

A job queue in SQLite (DIR/jobs.db), worked by K workers; SIGTERM or Ctrl-C stops them
gracefully: jobs in progress are finished, or put back in the queue.

Options:
  --data-dir DIR      where jobs.db is kept; created if missing [default: data]
  --enqueue N         add N new jobs to the queue before starting [default: 0]
  --workers K         how many jobs to work on at a time, 1 to 1024 [default: 4]
  --job-ms MS         simulated work per job, in milliseconds [default: 50]
  --exit-when-empty   shut down once no job is queued or claimed
  --crash-after N     crash a worker (holding a job) once N jobs are done; the
                      workers restart and the job is released, not lost
  -h, --help          print this help

Environment: RUST_LOG (default info), LIFECYCLE_RUNTIME=smol|tokio, and the
LIFECYCLE_* durations (LIFECYCLE_STOP_TIMEOUT=500ms, LIFECYCLE_SHUTDOWN_TIMEOUT=25s...).
";

/// The command line, parsed.
#[derive(Debug)]
struct Flags {
    data_dir: PathBuf,
    settings: Settings,
}

#[derive(Debug)]
enum Command {
    Run(Flags),
    Help,
}

/// Parses the arguments (without the program name). `--flag value` and `--flag=value`
/// are both accepted. The error is a message for stderr.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut flags = Flags {
        data_dir: PathBuf::from("data"),
        settings: Settings {
            workers: 4,
            job: Duration::from_millis(50),
            enqueue: 0,
            exit_when_empty: false,
            crash_after: None,
        },
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(OsString::from(value))),
            _ => (text, None),
        };
        match name {
            "-h" | "--help" => return Ok(Command::Help),
            "--exit-when-empty" => {
                if inline.is_some() {
                    return Err("--exit-when-empty takes no value".into());
                }
                flags.settings.exit_when_empty = true;
            }
            "--data-dir" | "--enqueue" | "--workers" | "--job-ms" | "--crash-after" => {
                let value = match inline.or_else(|| args.next()) {
                    Some(value) => value,
                    None => return Err(format!("{name} needs a value")),
                };
                if name == "--data-dir" {
                    if value.is_empty() {
                        return Err("--data-dir needs a non-empty path".into());
                    }
                    flags.data_dir = PathBuf::from(value);
                    continue;
                }
                let (min, max, what) = match name {
                    "--enqueue" | "--crash-after" => (0, 10_000_000, "a number of jobs"),
                    "--workers" => (1, 1024, "a number of workers"),
                    _ => (0, 3_600_000, "a number of milliseconds"),
                };
                let number = value
                    .to_str()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "invalid value {value:?} for {name}: expected {what}, \
                             a whole number from {min} to {max}"
                        )
                    })?;
                match name {
                    "--enqueue" => flags.settings.enqueue = number,
                    "--crash-after" => flags.settings.crash_after = Some(number),
                    "--workers" => flags.settings.workers = number as usize,
                    _ => flags.settings.job = Duration::from_millis(number),
                }
            }
            other if other.starts_with('-') => return Err(format!("unknown flag {other}")),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(Command::Run(flags))
}

fn main() -> Result<Report, lifecycle::Error> {
    // First: a SIGTERM from here on aborts the start instead of killing the process.
    lifecycle::signals::catch()?;
    let flags = match parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(flags)) => flags,
        Ok(Command::Help) => {
            print!("{USAGE}");
            process::exit(0);
        }
        Err(message) => {
            eprintln!("worker: {message}\nTry `worker --help`.");
            process::exit(2);
        }
    };

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
    let connections = (flags.settings.workers as u32 + 1).min(8);
    let db = Db::new(flags.data_dir.join("jobs.db"), connections);
    let stats = Arc::new(Stats::default());
    let workers = Workers::new(flags.settings, stats.clone());

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
