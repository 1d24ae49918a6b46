//! The `worker` example end to end: a job queue in SQLite, run as a child process on each
//! runtime compiled into this test (`LIFECYCLE_RUNTIME` picks it), interrupted with real
//! signals, restarted, and its database then read here: every job done exactly once.
#![cfg(all(unix, any(feature = "smol", feature = "tokio")))]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::child::{example_binary, Process};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::SqlitePool;

const EXAMPLE: &str = "worker";
/// How many runs with `--exit-when-empty` may be needed to empty the queue.
const MAX_RESTARTS: usize = 5;

/// A fresh data directory under the system's temp dir, removed when dropped (kept, and
/// named, if the test is failing).
struct DataDir(PathBuf);

impl DataDir {
    fn new(runtime: &str, scenario: &str) -> DataDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "lifecycle-worker-test-{scenario}-{runtime}-{}-{nanos}",
            std::process::id()
        ));
        assert!(!path.exists(), "{} already exists", path.display());
        DataDir(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp dir")
    }

    fn db(&self) -> PathBuf {
        self.0.join("jobs.db")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("the data dir is left for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// One row of the `jobs` table.
#[derive(Debug)]
struct Job {
    id: i64,
    state: String,
    attempts: i64,
    done_count: i64,
}

/// Reads the whole queue, with sqlx on smol (no tokio context here: sqlx picks smol).
fn read_jobs(db: &Path) -> Vec<Job> {
    ::smol::block_on(async {
        let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(db))
            .await
            .unwrap_or_else(|e| panic!("opening {}: {e}", db.display()));
        let rows: Vec<(i64, String, i64, i64)> =
            sqlx::query_as("SELECT id, state, attempts, done_count FROM jobs ORDER BY id")
                .fetch_all(&pool)
                .await
                .expect("reading the jobs");
        pool.close().await;
        rows.into_iter()
            .map(|(id, state, attempts, done_count)| Job {
                id,
                state,
                attempts,
                done_count,
            })
            .collect()
    })
}

fn count(jobs: &[Job], state: &str) -> usize {
    jobs.iter().filter(|job| job.state == state).count()
}

/// The example running as a child process, killed if the test fails before it exits.
struct Worker(Process);

impl Worker {
    fn spawn(runtime: &str, dir: &DataDir, args: &[&str], env: &[(&str, &str)]) -> Worker {
        let mut all = vec!["--data-dir", dir.path()];
        all.extend_from_slice(args);
        let mut env = env.to_vec();
        env.push(("RUST_LOG", "info,worker=debug")); // a line per job claimed and done
        Worker(Process::spawn(EXAMPLE, runtime, &all, &env))
    }

    /// Reads stdout until `n` lines containing `part` have arrived in all.
    fn wait_for_lines(&mut self, part: &str, n: usize) {
        while self.lines_with(part) < n {
            self.0
                .wait_for_line(&format!("{part:?} (the {n}th)"), |l| l.contains(part));
        }
    }

    fn lines_with(&self, part: &str) -> usize {
        self.0.stdout.iter().filter(|l| l.contains(part)).count()
    }

    fn signal(&self, name: &str) {
        self.0.signal(name);
    }

    fn wait_for_exit(&mut self) -> (ExitStatus, Instant) {
        self.0.wait_for_exit()
    }

    fn fail(&self, problem: &str) -> ! {
        self.0.fail(problem)
    }

    /// Waits for the exit and checks it was clean (code 0, the report says so).
    fn wait_for_clean_exit(&mut self, trigger: &str) -> Instant {
        let (status, exited) = self.wait_for_exit();
        if status.code() != Some(0) {
            self.fail(&format!("exited with {status}, not 0"));
        }
        let report = format!("shutdown by {trigger}: exit code 0");
        if !self.0.stdout.iter().any(|l| l.starts_with(&report)) {
            self.fail(&format!("no report line {report:?}"));
        }
        exited
    }

    /// The counts of the exit line `worker: completed N jobs, released M`.
    fn summary(&self) -> (usize, usize) {
        const PREFIX: &str = "worker: completed ";
        let parsed = self.0.stdout.iter().find_map(|line| {
            let rest = &line[line.find(PREFIX)? + PREFIX.len()..];
            let (completed, rest) = rest.split_once(" jobs, released ")?;
            Some((completed.parse().ok()?, rest.trim().parse().ok()?))
        });
        parsed.unwrap_or_else(|| self.fail("no line \"worker: completed N jobs, released M\""))
    }
}

/// Runs the example with `--exit-when-empty` until no job is queued or claimed (at most
/// `MAX_RESTARTS` runs, each exiting 0); returns the jobs it completed and the runs it
/// took.
fn finish_the_queue(runtime: &str, dir: &DataDir) -> (usize, usize) {
    let mut completed = 0;
    for run in 1..=MAX_RESTARTS {
        let mut worker = Worker::spawn(
            runtime,
            dir,
            &["--exit-when-empty", "--workers", "4", "--job-ms", "5"],
            &[],
        );
        worker.wait_for_clean_exit("shutdown requested");
        completed += worker.summary().0;
        let jobs = read_jobs(&dir.db());
        if count(&jobs, "queued") + count(&jobs, "claimed") == 0 {
            return (completed, run);
        }
    }
    panic!("[{runtime}] jobs still queued after {MAX_RESTARTS} runs with --exit-when-empty");
}

/// Every one of `total` jobs is done, exactly once; returns them.
fn assert_all_done_once(runtime: &str, dir: &DataDir, total: usize) -> Vec<Job> {
    let jobs = read_jobs(&dir.db());
    assert_eq!(jobs.len(), total, "[{runtime}] jobs in the table");
    let wrong: Vec<String> = jobs
        .iter()
        .filter(|job| job.state != "done" || job.done_count != 1)
        .map(|job| format!("job {} {} done {} times", job.id, job.state, job.done_count))
        .collect();
    assert!(
        wrong.is_empty(),
        "[{runtime}] {} jobs not done exactly once: {}",
        wrong.len(),
        wrong.join(", ")
    );
    jobs
}

/// SIGTERM while 4 workers work through 200 jobs of 20 ms: a clean exit, the jobs in
/// progress finished; then restarts finish the queue; every job is done exactly once.
fn sigterm_then_restart_does_every_job_once(runtime: &'static str) {
    const JOBS: usize = 200;
    let dir = DataDir::new(runtime, "sigterm");
    let mut first = Worker::spawn(
        runtime,
        &dir,
        &["--enqueue", "200", "--workers", "4", "--job-ms", "20"],
        &[],
    );
    first.wait_for_lines("job done", 8);
    first.signal("TERM");
    let signalled = Instant::now();
    let exited = first.wait_for_clean_exit("SIGTERM");
    let took = exited - signalled;
    let (completed, released) = first.summary();
    if completed >= JOBS {
        first.fail(&format!("completed all {JOBS} jobs: SIGTERM came too late"));
    }
    if took > Duration::from_secs(5) {
        first.fail(&format!("exited {took:?} after SIGTERM"));
    }
    // Whatever this run did not finish, it left queued, not claimed.
    let jobs = read_jobs(&dir.db());
    assert_eq!(
        count(&jobs, "claimed"),
        0,
        "[{runtime}] claimed after a clean stop"
    );
    assert_eq!(
        count(&jobs, "done"),
        completed,
        "[{runtime}] done after the first run"
    );

    let (rest, runs) = finish_the_queue(runtime, &dir);
    assert_all_done_once(runtime, &dir, JOBS);
    assert_eq!(
        completed + rest,
        JOBS,
        "[{runtime}] the runs' summaries add up to every job"
    );
    eprintln!(
        "[{runtime}] first run: completed {completed}, released {released}, exited {took:?} \
         after SIGTERM; then {rest} jobs in {runs} run(s)"
    );
}

/// SIGTERM when the jobs in progress (5 s each) cannot finish within the stop timeout
/// (300 ms): they are released, the exit is still clean and prompt, and the next run
/// does them.
fn sigterm_releases_unfinished_jobs(runtime: &'static str) {
    const JOBS: usize = 20;
    let dir = DataDir::new(runtime, "release");
    let mut first = Worker::spawn(
        runtime,
        &dir,
        &["--enqueue", "20", "--workers", "4", "--job-ms", "5000"],
        &[("LIFECYCLE_STOP_TIMEOUT", "300ms")],
    );
    first.wait_for_lines("job claimed", 4);
    first.signal("TERM");
    let signalled = Instant::now();
    let exited = first.wait_for_clean_exit("SIGTERM");
    let took = exited - signalled;
    assert_eq!(first.summary(), (0, 4), "[{runtime}] completed, released");
    if took > Duration::from_secs(3) {
        first.fail(&format!(
            "exited {took:?} after SIGTERM, with a 300 ms stop timeout"
        ));
    }
    let jobs = read_jobs(&dir.db());
    assert_eq!(count(&jobs, "queued"), JOBS, "[{runtime}] all queued again");

    let (rest, _) = finish_the_queue(runtime, &dir);
    assert_eq!(rest, JOBS, "[{runtime}] completed by the restarts");
    let jobs = assert_all_done_once(runtime, &dir, JOBS);
    // The 4 released jobs were claimed twice; the others once.
    let retried = jobs.iter().filter(|job| job.attempts == 2).count();
    let once = jobs.iter().filter(|job| job.attempts == 1).count();
    assert_eq!((retried, once), (4, JOBS - 4), "[{runtime}] attempts");
    eprintln!("[{runtime}] released 4 jobs, exited {took:?} after SIGTERM");
}

/// SIGKILL while 4 jobs are claimed: they stay claimed in the file; the next run puts
/// them back in the queue and does them, once.
fn sigkill_leaves_claims_the_next_run_releases(runtime: &'static str) {
    const JOBS: usize = 20;
    let dir = DataDir::new(runtime, "sigkill");
    let mut first = Worker::spawn(
        runtime,
        &dir,
        &["--enqueue", "20", "--workers", "4", "--job-ms", "5000"],
        &[],
    );
    first.wait_for_lines("job claimed", 4);
    first.signal("KILL");
    let (status, _) = first.wait_for_exit();
    assert_eq!(status.signal(), Some(9), "[{runtime}] {status}");
    let jobs = read_jobs(&dir.db());
    assert_eq!(
        count(&jobs, "claimed"),
        4,
        "[{runtime}] claimed after SIGKILL"
    );

    let mut next = Worker::spawn(runtime, &dir, &["--exit-when-empty", "--job-ms", "5"], &[]);
    next.wait_for_clean_exit("shutdown requested");
    if next.lines_with("released 4 jobs left claimed by an earlier process") != 1 {
        next.fail("no line saying the 4 claimed jobs were released");
    }
    assert_eq!(next.summary(), (JOBS, 0), "[{runtime}] completed, released");
    let jobs = assert_all_done_once(runtime, &dir, JOBS);
    let retried = jobs.iter().filter(|job| job.attempts == 2).count();
    assert_eq!(retried, 4, "[{runtime}] jobs claimed twice");
}

/// A bad flag value, an unknown flag or a missing value: exit code 2, the flag named on
/// stderr, nothing created. `--help`: exit code 0, the usage on stdout.
#[test]
fn bad_flags_exit_2_and_name_the_flag() {
    let dir = DataDir::new("none", "flags");
    for (args, named) in [
        (&["--workers", "zero"][..], "--workers"),
        (&["--workers", "0"], "--workers"),
        (&["--job-ms=-5"], "--job-ms"),
        (&["--enqueue"], "--enqueue"),
        (&["--wrokers", "4"], "--wrokers"),
    ] {
        let output = Command::new(example_binary(EXAMPLE))
            .args(["--data-dir", dir.path()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running the example");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?}: stderr does not name {named}: {stderr}"
        );
        assert!(!dir.0.exists(), "{args:?}: the data dir was created");
    }
    let output = Command::new(example_binary(EXAMPLE))
        .arg("--help")
        .output()
        .expect("running the example");
    assert_eq!(output.status.code(), Some(0));
    let usage = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--data-dir",
        "--enqueue",
        "--workers",
        "--job-ms",
        "--exit-when-empty",
    ] {
        assert!(
            usage.contains(flag),
            "--help does not mention {flag}: {usage}"
        );
    }
}

/// A worker crashes holding a job (`--crash-after 20`): the workers are restarted (their
/// stop releases what they held, `db` runs on), the run goes on to empty the queue, and
/// every job is done exactly once, in one run that exits 0.
fn a_crashed_worker_restarts_without_losing_a_job(runtime: &'static str) {
    const JOBS: usize = 120;
    let dir = DataDir::new(runtime, "crash");
    let mut worker = Worker::spawn(
        runtime,
        &dir,
        &[
            "--enqueue",
            "120",
            "--workers",
            "4",
            "--job-ms",
            "5",
            "--crash-after",
            "20",
            "--exit-when-empty",
        ],
        &[],
    );
    worker.wait_for_clean_exit("shutdown requested");
    let restart = worker
        .0
        .stdout
        .iter()
        .find(|l| {
            l.contains("restart of workers after its task failed: injected crash holding job")
        })
        .cloned()
        .unwrap_or_else(|| worker.fail("no restart in the report"));
    assert!(
        restart.contains("cycled workers; running again"),
        "{restart}"
    );
    assert_eq!(
        worker
            .0
            .stdout
            .iter()
            .filter(|l| l.contains("database open"))
            .count(),
        1,
        "[{runtime}] db kept running: it was not restarted"
    );
    let (completed, _) = worker.summary();
    assert_eq!(completed, JOBS, "[{runtime}] one run did every job");
    assert_all_done_once(runtime, &dir, JOBS);
}

on_each_runtime!(
    a_crashed_worker_restarts_without_losing_a_job,
    sigterm_then_restart_does_every_job_once,
    sigterm_releases_unfinished_jobs,
    sigkill_leaves_claims_the_next_run_releases,
);
