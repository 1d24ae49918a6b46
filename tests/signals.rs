//! Real signals sent to a real process: the `02_dependency_graph` example, run as a child
//! on each runtime compiled into this test (`LIFECYCLE_RUNTIME` picks it), signalled with
//! `kill`, its stdout lines (`starting db`, `stopped db`, `ready`, `flushed metrics`, then
//! the report) and exit code checked.
#![cfg(all(unix, any(feature = "smol", feature = "tokio")))]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

const EXAMPLE: &str = "02_dependency_graph";
const COMPONENTS: [&str; 4] = ["metrics", "db", "cache", "http"];
/// How long to wait for any expected line or for the exit: generous, so a slow machine
/// passes and a hang fails instead of blocking the test run.
const PATIENCE: Duration = Duration::from_secs(20);

/// The example binary, built once per test run with this test's runtime features (a
/// binary left by another build may have other features or be stale).
fn example_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let features: Vec<&str> = [
            cfg!(feature = "smol").then_some("smol"),
            cfg!(feature = "tokio").then_some("tokio"),
        ]
        .into_iter()
        .flatten()
        .collect();
        // target/<profile>/deps/signals-<hash> -> target/<profile>
        let profile_dir = std::env::current_exe()
            .expect("the test binary's path")
            .parent()
            .and_then(Path::parent)
            .expect("the test binary is in target/<profile>/deps")
            .to_path_buf();
        let mut build = Command::new(env!("CARGO"));
        build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "build",
                "--quiet",
                "--example",
                EXAMPLE,
                "--no-default-features",
            ])
            .args(["--features", &features.join(",")]);
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(
            status.success(),
            "cargo build --example {EXAMPLE} failed: {status}"
        );
        let binary = profile_dir.join("examples").join(EXAMPLE);
        assert!(binary.exists(), "{} was not built", binary.display());
        binary
    })
}

/// The example running as a child process, killed if the test fails before it exits.
struct Demo {
    runtime: &'static str,
    child: Child,
    lines: Receiver<String>,
    /// Every stdout line received so far, in order.
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Demo {
    fn spawn(runtime: &'static str, env: &[(&str, &str)]) -> Demo {
        let mut child = Command::new(example_binary())
            .env("LIFECYCLE_RUNTIME", runtime)
            .env_remove("KUBERNETES_SERVICE_HOST") // no default drain delay
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the example");
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Demo {
            runtime,
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    /// Reads stdout until the line `expected` arrives.
    fn wait_for(&mut self, expected: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    let found = line == expected;
                    self.stdout.push(line);
                    if found {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no line {expected:?} within {PATIENCE:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("stdout closed before the line {expected:?}"))
                }
            }
        }
    }

    /// Sends a signal (`"TERM"`, `"INT"`) with the `kill` command.
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Waits for the process to exit; returns its status and when it exited.
    fn wait_for_exit(&mut self) -> (ExitStatus, Instant) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the example") {
                let exited = Instant::now();
                // The reader thread ends at EOF, which follows the exit.
                while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
                    self.stdout.push(line);
                }
                return (status, exited);
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "still running {PATIENCE:?} after it was signalled"
                ));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The position of `line` in stdout; fails if it is absent or appears twice.
    fn position(&self, line: &str) -> usize {
        let mut found = self.stdout.iter().enumerate().filter(|(_, l)| *l == line);
        match (found.next(), found.next()) {
            (Some((i, _)), None) => i,
            (None, _) => self.fail(&format!("no line {line:?}")),
            (Some(_), Some(_)) => self.fail(&format!("the line {line:?} appears twice")),
        }
    }

    fn has(&self, line: &str) -> bool {
        self.stdout.iter().any(|l| l == line)
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
            .stdout
            .iter()
            .any(|l| l.starts_with(prefix) && l.contains(part))
        {
            self.fail(&format!("no report line {prefix:?}...{part:?}"));
        }
    }

    fn fail(&self, problem: &str) -> ! {
        panic!(
            "[{}] {problem}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.runtime,
            self.stdout.join("\n"),
            self.stderr.lock().unwrap()
        );
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A no-op once the child has exited and been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// SIGTERM during startup: the start is aborted, and exactly what started is stopped.
fn sigterm_during_startup_aborts_cleanly(runtime: &'static str) {
    // db and cache take 5 s to start: the signal surely lands while they do.
    let mut demo = Demo::spawn(runtime, &[("DEMO_SLOW_START_MS", "5000")]);
    demo.wait_for("starting db");
    demo.signal("TERM");
    let (status, _) = demo.wait_for_exit();

    assert_eq!(status.code(), Some(0), "[{runtime}] {status}");
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
    demo.assert_report_line("shutdown by SIGTERM", "exit code 0");
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
    if took >= Duration::from_millis(1500) {
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

/// One test per scenario and per runtime compiled in.
macro_rules! on_each_runtime {
    ($($scenario:ident),* $(,)?) => {
        #[cfg(feature = "smol")]
        mod smol {
            $(#[test]
            fn $scenario() {
                super::$scenario("smol");
            })*
        }

        #[cfg(feature = "tokio")]
        mod tokio {
            $(#[test]
            fn $scenario() {
                super::$scenario("tokio");
            })*
        }
    };
}

on_each_runtime!(
    sigterm_stops_in_reverse_order,
    sigterm_during_startup_aborts_cleanly,
    two_sigterms_exit_143,
    two_sigints_exit_130,
);
