//! An example binary run as a child process: built once per test run with the test's
//! own features, its stdout read line by line, signalled (rustix's `kill`), killed if the test
//! fails before it exits.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Runs each named `fn(runtime: &str)` scenario of the calling file as a test on each
/// runtime compiled in: `mod smol { #[test] fn name() }`, `mod tokio { ... }`, the
/// runtime given by the name `LIFECYCLE_RUNTIME` takes.
#[macro_export]
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

/// How long to wait for an expected line or for the exit: generous, so a slow machine
/// passes and a hang fails instead of blocking the test run.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The runtimes compiled into this test, each as `LIFECYCLE_RUNTIME` names it.
pub fn runtimes() -> Vec<&'static str> {
    [
        cfg!(feature = "smol").then_some("smol"),
        cfg!(feature = "tokio").then_some("tokio"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The example `name`, built once per test run with this test's features (a binary
/// left by another build may have other features, or be stale).
pub fn example_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let features: Vec<&str> = [
        cfg!(feature = "smol").then_some("smol"),
        cfg!(feature = "tokio").then_some("tokio"),
        cfg!(feature = "http").then_some("http"),
        cfg!(feature = "serde").then_some("serde"),
        cfg!(feature = "systemd").then_some("systemd"),
        cfg!(feature = "metrics").then_some("metrics"),
        cfg!(feature = "otel").then_some("otel"),
    ]
    .into_iter()
    .flatten()
    .collect();
    // target/<profile>/deps/<test>-<hash> -> target/<profile>
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
            name,
            "--no-default-features",
        ])
        .args(["--features", &features.join(",")]);
    if profile_dir.file_name().is_some_and(|dir| dir == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("running cargo build");
    assert!(
        status.success(),
        "cargo build --example {name} failed: {status}"
    );
    let binary = profile_dir.join("examples").join(name);
    assert!(binary.exists(), "{} was not built", binary.display());
    built.insert(name.to_owned(), binary.clone());
    binary
}

/// A running example.
pub struct Process {
    label: String,
    child: Child,
    lines: Receiver<String>,
    /// Every stdout line received so far, in order.
    pub stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
    /// Reads stderr until EOF; joined once the process has exited.
    stderr_reader: Option<thread::JoinHandle<()>>,
}

impl Process {
    /// Runs example `name` on `runtime` with `args`, `RUST_LOG=info` and `env`, and no
    /// Kubernetes (so no default drain delay).
    pub fn spawn(name: &str, runtime: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
        Self::spawn_wrapped(&[], name, runtime, args, env)
    }

    /// As [`spawn`](Process::spawn), run by `wrapper` (a program and its first
    /// arguments, followed by the example's path and `args`), which must `exec` it.
    pub fn spawn_wrapped(
        wrapper: &[&str],
        name: &str,
        runtime: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        let binary = example_binary(name);
        let mut command = match wrapper.split_first() {
            None => Command::new(&binary),
            Some((program, first)) => {
                let mut command = Command::new(program);
                command.args(first).arg(&binary);
                command
            }
        };
        let mut child = command
            .args(args)
            .env("LIFECYCLE_RUNTIME", runtime)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning the example {name}: {e}"));
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
        let stderr_reader = thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Process {
            label: format!("{name} on {runtime}"),
            child,
            lines,
            stdout: Vec::new(),
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads stdout until a line matches `wanted`, and returns it.
    pub fn wait_for_line(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no line {what} within {PATIENCE:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("stdout closed before a line {what}"))
                }
            }
        }
    }

    /// Reads stdout until the line `expected` arrives.
    pub fn wait_for(&mut self, expected: &str) {
        self.wait_for_line(&format!("{expected:?}"), |line| line == expected);
    }

    /// Sends a signal (`"TERM"`, `"INT"`, `"HUP"`, `"KILL"`).
    pub fn signal(&self, name: &str) {
        use rustix::process::{kill_process, Pid, Signal};
        let signal = match name {
            "TERM" => Signal::TERM,
            "INT" => Signal::INT,
            "HUP" => Signal::HUP,
            "KILL" => Signal::KILL,
            other => panic!("no signal {other} in the tests"),
        };
        let pid = Pid::from_raw(self.child.id() as i32).expect("a child's pid is positive");
        kill_process(pid, signal).unwrap_or_else(|e| panic!("kill -{name} failed: {e}"));
    }

    /// Waits for the process to exit and for the rest of its stdout and stderr; returns
    /// its status and when it exited.
    pub fn wait_for_exit(&mut self) -> (ExitStatus, Instant) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the example") {
                let exited = Instant::now();
                // The reader thread ends at EOF, which follows the exit.
                while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
                    self.stdout.push(line);
                }
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                return (status, exited);
            }
            if Instant::now() >= deadline {
                self.fail(&format!("still running after {PATIENCE:?}"));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("waiting for the example")
            .is_none()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Fails the test, showing the process's output.
    pub fn fail(&self, problem: &str) -> ! {
        panic!(
            "[{}] {problem}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.label,
            self.stdout.join("\n"),
            self.stderr.lock().unwrap()
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A no-op once the child has exited and been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
