//! Real signals sent to a real process: the `02_dependency_graph` example, run as a child
//! on each runtime compiled into this test (`LIFECYCLE_RUNTIME` picks it), signalled with
//! `kill`, its stdout lines (`starting db`, `stopped db`, `ready`, `flushed metrics`, then
//! the report) and exit code checked.
#![cfg(all(unix, any(feature = "smol", feature = "tokio")))]

mod common;

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::child::Process;

const EXAMPLE: &str = "02_dependency_graph";
const COMPONENTS: [&str; 4] = ["metrics", "db", "cache", "http"];

/// The example running as a child process.
struct Demo(Process);

impl Demo {
    fn spawn(runtime: &'static str, env: &[(&str, &str)]) -> Demo {
        Demo(Process::spawn(EXAMPLE, runtime, &[], env))
    }

    fn wait_for(&mut self, expected: &str) {
        self.0.wait_for(expected);
    }

    fn signal(&self, name: &str) {
        self.0.signal(name);
    }

    fn wait_for_exit(&mut self) -> (ExitStatus, Instant) {
        self.0.wait_for_exit()
    }

    /// The position of `line` in stdout; fails if it is absent or appears twice.
    fn position(&self, line: &str) -> usize {
        let mut found = self.0.stdout.iter().enumerate().filter(|(_, l)| *l == line);
        match (found.next(), found.next()) {
            (Some((i, _)), None) => i,
            (None, _) => self.fail(&format!("no line {line:?}")),
            (Some(_), Some(_)) => self.fail(&format!("the line {line:?} appears twice")),
        }
    }

    fn has(&self, line: &str) -> bool {
        self.0.stdout.iter().any(|l| l == line)
    }

    /// Asserts that `earlier` was printed before `later`.
    fn assert_before(&self, earlier: &str, later: &str) {
        if self.position(earlier) >= self.position(later) {
            self.fail(&format!("{earlier:?} should come before {later:?}"));
        }
    }

    /// Asserts that some line of the report starts with `prefix` and contains `part`.
    fn assert_report_line(&self, prefix: &str, part: &str) {
        if !self
            .0
            .stdout
            .iter()
            .any(|l| l.starts_with(prefix) && l.contains(part))
        {
            self.fail(&format!("no report line {prefix:?}...{part:?}"));
        }
    }

    fn fail(&self, problem: &str) -> ! {
        self.0.fail(problem)
    }
}

/// SIGTERM while running: a clean shutdown in reverse dependency order, flush last.
fn sigterm_stops_in_reverse_order(runtime: &'static str) {
    let mut demo = Demo::spawn(runtime, &[]);
    demo.wait_for("ready");
    demo.signal("TERM");
    let (status, _) = demo.wait_for_exit();

    assert_eq!(status.code(), Some(0), "[{runtime}] {status}");
    // db and cache started concurrently.
    demo.assert_before("starting cache", "started db");
    demo.assert_before("starting db", "started cache");
    // The reverse order.
    demo.assert_before("stopped http", "stopping db");
    demo.assert_before("stopped http", "stopping cache");
    demo.assert_before("stopped db", "stopping metrics");
    demo.assert_before("stopped cache", "stopping metrics");
    demo.assert_before("stopped metrics", "flushed metrics");
    demo.assert_report_line("shutdown by SIGTERM", "exit code 0");
}

/// SIGTERM during startup: the start is aborted, exactly what started is stopped, and
/// the process exits 1 naming the starts it cancelled.
fn sigterm_during_startup_aborts_and_exits_1(runtime: &'static str) {
    // db and cache take 5 s to start: the signal surely lands while they do.
    let mut demo = Demo::spawn(runtime, &[("DEMO_SLOW_START_MS", "5000")]);
    demo.wait_for("starting db");
    demo.signal("TERM");
    let (status, _) = demo.wait_for_exit();

    assert_eq!(status.code(), Some(1), "[{runtime}] {status}");
    for line in ["starting http", "started http", "ready"] {
        if demo.has(line) {
            demo.fail(&format!("{line:?} although startup was aborted"));
        }
    }
    for name in COMPONENTS {
        let started = demo.has(&format!("started {name}"));
        let stopping = demo.has(&format!("stopping {name}"));
        let stopped = demo.has(&format!("stopped {name}"));
        if started != stopped || stopping != started {
            demo.fail(&format!(
                "{name}: started {started}, stopping {stopping}, stopped {stopped}"
            ));
        }
    }
    // metrics had started (db was starting), so it is stopped, then flushed.
    demo.assert_before("stopped metrics", "flushed metrics");
    demo.assert_report_line("start aborted by SIGTERM", "exit code 1");
    demo.assert_report_line("  start of db cancelled by SIGTERM", "");
}

/// A second signal while `cache` takes 2 s to stop: the process exits at once with
/// `128 + signo`, still flushing.
fn second_signal_forces_exit(runtime: &'static str, signal: &str, code: i32) {
    let mut demo = Demo::spawn(runtime, &[]);
    demo.wait_for("ready");
    demo.signal(signal);
    demo.wait_for("stopping cache");
    demo.signal(signal);
    let second = Instant::now();
    let (status, exited) = demo.wait_for_exit();

    assert_eq!(status.code(), Some(code), "[{runtime}] {status}");
    let took = exited - second;
    if took >= Duration::from_millis(1000) {
        demo.fail(&format!("exited {took:?} after the second signal"));
    }
    for line in ["stopped cache", "stopping metrics"] {
        if demo.has(line) {
            demo.fail(&format!("{line:?} although the exit was forced"));
        }
    }
    demo.assert_before("stopping cache", "flushed metrics");
    demo.assert_report_line("shutdown by SIG", &format!("exit code {code}"));
}

fn two_sigterms_exit_143(runtime: &'static str) {
    second_signal_forces_exit(runtime, "TERM", 143);
}

fn two_sigints_exit_130(runtime: &'static str) {
    second_signal_forces_exit(runtime, "INT", 130);
}

/// The report reaches the operator whatever the log filter: under `RUST_LOG=warn` a clean
/// exit's report (an INFO event) is printed on stderr; under `RUST_LOG=info` it is logged,
/// and not printed a second time.
fn the_report_reaches_stderr_whatever_the_log_filter(runtime: &'static str) {
    for (filter, how) in [("warn", "printed"), ("info", "logged")] {
        let mut demo = Process::spawn("01_minimal", runtime, &[], &[("RUST_LOG", filter)]);
        demo.wait_for("hello (press Ctrl-C to stop)");
        demo.signal("TERM");
        let (status, _) = demo.wait_for_exit();
        assert_eq!(status.code(), Some(0), "{status}");
        let stderr = demo.stderr();
        assert_eq!(
            stderr.matches("shutdown by SIGTERM: exit code 0").count(),
            1,
            "the report should be {how} once under RUST_LOG={filter}:\n{stderr}"
        );
        assert!(stderr.contains("component  start"), "{stderr}");
    }
}

on_each_runtime!(
    the_report_reaches_stderr_whatever_the_log_filter,
    sigterm_stops_in_reverse_order,
    sigterm_during_startup_aborts_and_exits_1,
    two_sigterms_exit_143,
    two_sigints_exit_130,
);

/// `LIFECYCLE_RUNTIME` naming a runtime the program was not built with is refused before
/// anything starts, saying which ones it was built with.
#[test]
fn an_unknown_runtime_is_refused() {
    let mut demo = Demo::spawn("bogus", &[]);
    let (status, _) = demo.0.wait_for_exit();
    assert_eq!(status.code(), Some(1), "{status}");
    let stderr = demo.0.stderr();
    let built_with = [
        cfg!(feature = "smol").then_some("smol"),
        cfg!(feature = "tokio").then_some("tokio, tokio-current-thread"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    assert!(
        stderr.contains(&format!(
            "LIFECYCLE_RUNTIME=\"bogus\" is not a runtime this program was built with (built with: {built_with})"
        )),
        "{stderr}"
    );
    if demo.has("starting metrics") {
        demo.fail("a component started although the runtime was refused");
    }
}
